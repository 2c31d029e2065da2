"""Optimizers: search, exhaustive enumeration, repair, the amortized network, the NB201 zoo space."""
from __future__ import annotations

import numpy as np
import pytest

import edgepass
from edgepass.optimizers import (AdditiveProblem, AmortizedOptimizer, Budget, LookupProblem, Term, evolutionary,
                               exhaustive, repair)
from edgepass.optimizers.population import (budget_feature, reference_designs, reference_vector,
                                          synthetic_devices, training_pairs)
from edgepass.zoo.spaces import space


def toy_additive(seed=0, knobs=6, choices=4):
    """Each knob: choice 0 is the widest (slow, accurate), later choices are cheaper and less accurate."""
    rng = np.random.default_rng(seed)
    lat = [Term((k,), np.sort(rng.uniform(1, 5, choices))[::-1].copy()) for k in range(knobs)]
    acc = [Term((k,), -np.sort(rng.uniform(0, 2, choices))) for k in range(knobs)]
    pair = Term((0, 1), rng.uniform(0, 0.5, (choices, choices)))
    return AdditiveProblem([choices] * knobs, lat + [pair], acc, latency_base=1.0, accuracy_base=90.0)


def brute_force(problem, budget):
    n = problem.n_choices
    grids = np.stack(np.meshgrid(*[np.arange(c) for c in n], indexing="ij"), -1).reshape(-1, len(n))
    ev = problem.evaluate(grids)
    ok = ev["latency_ms"] <= budget.latency_ms
    return float(ev["accuracy"][ok].max()) if ok.any() else None


@pytest.mark.parametrize("seed", range(5))
def test_exhaustive_is_the_optimum(seed):
    p = toy_additive(seed)
    lat = p.evaluate(np.zeros((1, 6), dtype=int))["latency_ms"][0]
    b = Budget(latency_ms=float(lat * 0.6))
    assert exhaustive(p, b).accuracy == pytest.approx(brute_force(p, b))


@pytest.mark.parametrize("seed", range(5))
def test_repair_meets_every_feasible_budget(seed):
    p = toy_additive(seed)
    rng = np.random.default_rng(seed)
    cheapest = p.evaluate(np.full((1, 6), 3))["latency_ms"][0]
    widest = p.evaluate(np.zeros((1, 6), dtype=int))["latency_ms"][0]
    for L in rng.uniform(cheapest, widest, 10):
        r = repair(p, Budget(latency_ms=float(L)), np.zeros(6, dtype=int))
        assert r.feasible and r.latency_ms <= L + 1e-9


def test_infeasible_budget_is_reported_with_the_closest_design():
    p = toy_additive(0)
    grids = np.stack(np.meshgrid(*[np.arange(4)] * 6, indexing="ij"), -1).reshape(-1, 6)
    cheapest = p.evaluate(grids)["latency_ms"].min()
    r = repair(p, Budget(latency_ms=float(cheapest * 0.5)), np.zeros(6, dtype=int))
    assert not r.feasible
    assert r.latency_ms <= cheapest * 1.05               # it went (nearly) as far as it could
    e = exhaustive(p, Budget(latency_ms=float(cheapest * 0.5)))
    assert not e.feasible


def test_min_latency_under_accuracy_drop():
    p = toy_additive(1)
    ref = p.evaluate(np.zeros((1, 6), dtype=int))["accuracy"][0]
    b = Budget(max_accuracy_drop=1.0)
    e = exhaustive(p, b, reference_accuracy=ref)
    assert e.feasible and e.accuracy >= ref - 1.0
    assert e.latency_ms < p.evaluate(np.zeros((1, 6), dtype=int))["latency_ms"][0]


def test_search_is_deterministic_and_good():
    p = toy_additive(2)
    b = Budget(latency_ms=15.0)
    a, c = evolutionary(p, b, seed=3, iterations=60), evolutionary(p, b, seed=3, iterations=60)
    assert np.array_equal(a.code, c.code) and a.accuracy == c.accuracy
    assert a.feasible and a.accuracy >= brute_force(p, b) - 0.5


def test_budget_validation():
    with pytest.raises(edgepass.InputError):
        Budget()
    with pytest.raises(edgepass.InputError):
        Budget(latency_ms=-1)


def test_expected_cost_matches_enumeration():
    torch = pytest.importorskip("torch")
    p = toy_additive(3)
    rng = np.random.default_rng(0)
    probs = [torch.tensor(rng.dirichlet(np.ones(4), size=2)) for _ in range(6)]
    expected = p.expected(probs, p.latency_terms, p.latency_base).numpy()
    grids = np.stack(np.meshgrid(*[np.arange(4)] * 6, indexing="ij"), -1).reshape(-1, 6)
    lat = p.evaluate(grids)["latency_ms"]
    for b in range(2):
        w = np.prod([probs[k][b].numpy()[grids[:, k]] for k in range(6)], axis=0)
        assert expected[b] == pytest.approx(float((w * lat).sum()))


def test_nb201_space_accuracy_table():
    sp = space("nb201")
    assert len(sp.accuracy) == 15625 and sp.accuracy.max() == pytest.approx(91.61)
    resnet = "nb201:|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|"
    code = sp.code(resnet)
    assert sp.spec(code) == resnet
    assert sp.accuracy[sp.code_index(code)] == pytest.approx(90.86)
    p = sp.problem(np.ones(15625))
    assert np.array_equal(p.codes(p.index(code[None]))[0], code)


def test_amortized_optimizer_learns_and_round_trips(tmp_path):
    sp = space("nb201")
    rng = np.random.default_rng(0)
    # synthetic devices with a latency structure: each op has a device-specific cost per edge
    tables = {}
    for d in range(6):
        op_cost = rng.uniform(0.1, 2.0, size=5)
        tables[f"dev{d}"] = 1.0 + op_cost[sp.problem(np.ones(15625)).all_codes()].sum(1)
    refs = reference_designs(15625)
    pairs = training_pairs(sp.problem, {**tables, **synthetic_devices(tables, 20)}, refs, budgets_per_device=8)
    opt = AmortizedOptimizer(sp.n_choices, device_dim=len(refs), hidden=64)
    opt.fit(pairs, epochs=30, progress=False)
    path = opt.save(tmp_path / "opt.npz")
    again = AmortizedOptimizer.load(path)
    lat = tables["dev3"]
    vec, centre = reference_vector(lat, refs)
    L = float(np.percentile(lat, 50))
    a = opt.optimize(sp.problem(lat), Budget(latency_ms=L), vec, budget_feature(L, centre))
    b = again.optimize(sp.problem(lat), Budget(latency_ms=L), vec, budget_feature(L, centre))
    assert np.array_equal(a.code, b.code)
    best = exhaustive(sp.problem(lat), Budget(latency_ms=L))
    assert a.feasible and best.accuracy - a.accuracy < 2.0


def test_optimize_api_on_nb201(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPASS_CACHE", str(tmp_path))
    sp = edgepass.zoo.space("nb201")
    best = edgepass.optimize(sp, "hwnasbench/raspi4", latency_ms=20.0, method="exhaustive")
    assert best.feasible and best.latency_ms <= 20.0 and best.design.startswith("nb201:|")
    evo = edgepass.optimize(sp, "hwnasbench/raspi4", latency_ms=20.0, method="search", seed=1)
    assert evo.feasible and evo.accuracy <= best.accuracy
    assert evo.design == edgepass.optimize(sp, "hwnasbench/raspi4", latency_ms=20.0, method="search", seed=1).design
    am = edgepass.optimize(sp, "hwnasbench/raspi4", latency_ms=20.0)          # trains once, then cached
    assert am.feasible and am.latency_ms <= 20.0 and best.accuracy - am.accuracy < 3.0
    assert list(tmp_path.glob("amortized-nb201-*.npz"))
    again = edgepass.optimize(sp, "hwnasbench/raspi4", latency_ms=20.0)
    assert again.design == am.design and again.seconds < 1.0


def test_optimize_reports_infeasible_budgets():
    sp = edgepass.zoo.space("nb201")
    r = edgepass.optimize(sp, "hwnasbench/raspi4", latency_ms=0.001, method="exhaustive")
    assert not r.feasible and r.latency_ms > 0.001
    with pytest.raises(edgepass.InfeasibleBudgetError) as err:
        edgepass.optimize(sp, "hwnasbench/raspi4", latency_ms=0.001, method="exhaustive", strict=True)
    assert err.value.closest.design == r.design and err.value.exit_code == 3
    with pytest.raises(edgepass.DeviceError):
        edgepass.optimize(sp, "anb/a100", latency_ms=5.0)
    with pytest.raises(edgepass.InputError):
        edgepass.optimize(sp, "hwnasbench/raspi4", latency_ms=5.0, method="guess")
