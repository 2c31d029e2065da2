"""Optimizers: search, exhaustive enumeration, repair, the amortized network, the NB201 zoo space."""
from __future__ import annotations

import numpy as np
import pytest

import edgepass
from edgepass.optimizers import (AdditiveProblem, AmortizedOptimizer, Budget, CallableProblem, LookupProblem, Term,
                                 evolutionary, exhaustive, repair)
from edgepass.optimizers.population import (budget_feature, reference_designs, reference_vector,
                                          synthetic_devices, training_pairs)
from edgepass.optimizers.zoo_space import space


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
    with pytest.raises(edgepass.InputError, match="energy budgets need a model"):   # refused, not ignored
        edgepass.optimize(sp, "hwnasbench/raspi4", energy_mj=50.0, method="search")


# ------------------------------------------------------------------------------------------------
# the amortized optimizer on a real model's design space (resnet18, random weights)
# ------------------------------------------------------------------------------------------------
TRAIN_DEVICES = ["eagle/core-i7-7820x", "eagle/gtx1080ti", "eagle/jetson-nano-fp32", "eagle/sd855-cpu-int8",
                 "help/titan-rtx-b256", "help/xeon-gold-6226", "hwnasbench/raspi4", "hwnasbench/fpga",
                 "eagle/edgetpu-int8", "eagle/sd855-gpu-int8"]
HELD_DEVICE = "help/pixel2"
SMALL = {"devices": TRAIN_DEVICES, "synthetic": 30, "budgets_per_device": 4, "epochs": 15, "hidden": 64}


@pytest.fixture(scope="module")
def resnet18_space():
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    from edgepass.space import design_space

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    return design_space(model, (torch.randn(1, 3, 224, 224),))


@pytest.fixture(scope="module")
def trained_cache(resnet18_space, tmp_path_factory):
    """One small trained optimizer shared by the tests below (trained through the public API)."""
    from edgepass.optimizers import model_space as ms

    cache = tmp_path_factory.mktemp("amortized")
    lo, hi = ms.feasible_range(ms.device_costs(resnet18_space, [HELD_DEVICE])[HELD_DEVICE],
                               ms.reference_codes(resnet18_space))
    r = edgepass.optimize(resnet18_space, HELD_DEVICE, latency_ms=float(np.sqrt(lo * hi)), cache=cache,
                          train_options=SMALL)
    return cache, r, (lo, hi)


def test_table_costs_match_the_latency_table(resnet18_space):
    from edgepass.optimizers import model_space as ms
    from edgepass.predictors.latency import LatencyTable

    codes = np.stack([resnet18_space.encode(resnet18_space.sample(i)) for i in range(20)])
    table = LatencyTable(resnet18_space, "eagle/gtx1080ti")
    costs = ms.device_costs(resnet18_space, ["eagle/gtx1080ti"])["eagle/gtx1080ti"]
    assert np.allclose(costs.predict(codes), table.predict(codes), rtol=1e-9)
    mixed = costs.mixed(costs, 0.3, 2.0, None, "x")                 # mixing a device with itself: a scaled copy
    assert np.allclose(mixed.predict(codes), 2.0 * costs.predict(codes))


def test_weight_energy_score_is_monotone(resnet18_space):
    from edgepass.optimizers.sensitivity import weight_energy_fn

    fn = weight_energy_fn(resnet18_space)
    sp = resnet18_space
    scores = fn(np.stack([sp.encode(sp.identity()), sp.encode(sp.uniform(0.75)), sp.encode(sp.uniform(0.5)),
                          sp.encode(sp.uniform(0.25))]))
    assert scores[0] == pytest.approx(1.0) and np.all(np.diff(scores) < 0)
    assert 1.0 > fn(sp.encode(sp.uniform(1.0, precision="int8"))[None])[0] > scores[1]   # int8 costs a little


def test_incremental_neighbour_scores_match_full_evaluation(resnet18_space):
    """The repair scores a design's neighbours incrementally (latency tables and accuracy terms a
    move touches): same values as scoring each neighbour in full, and the same repaired designs."""
    from edgepass.optimizers import model_space as ms
    from edgepass.optimizers.problem import Problem
    from edgepass.optimizers.search import moves, neighbours, repair
    from edgepass.optimizers.sensitivity import weight_energy_fn

    sp = resnet18_space
    costs = ms.device_costs(sp, ["eagle/gtx1080ti"])["eagle/gtx1080ti"]
    fn = weight_energy_fn(sp)
    n_choices = [len(c) for _, _, c in sp.knobs()]
    for i in range(5):
        code = sp.encode(sp.sample(100 + i))
        knob, new = moves(code, n_choices)
        nbs = neighbours(code, n_choices)
        assert np.allclose(costs.predict_moves(code, knob, new), costs.predict(nbs), rtol=1e-12, atol=0)
        assert np.allclose(fn.moves(code, knob, new), fn(nbs), rtol=1e-12, atol=0)

    class Full(Problem):            # the same problem without the incremental path
        def __init__(self, inner):
            self.inner, self.n_choices = inner, inner.n_choices

        def evaluate(self, codes):
            return self.inner.evaluate(codes)

    fast = CallableProblem(n_choices, fn, costs.predict)
    lo, hi = ms.feasible_range(costs, ms.reference_codes(sp))
    for f in (0.1, 0.5, 0.9):
        b = Budget(latency_ms=float(lo * (hi / lo) ** f))
        a, r = repair(fast, b, sp.encode(sp.identity()), polish=10), repair(Full(fast), b, sp.encode(sp.identity()),
                                                                         polish=10)
        assert a.feasible and a.latency_ms <= b.latency_ms and np.array_equal(a.code, r.code)
    # what compile and edgepass.optimize use: the same incremental path through the callables
    from edgepass.optimizers.api import model_problem

    problem, _ = model_problem(sp, "eagle/gtx1080ti", accuracy_fn=fn)
    code = sp.encode(sp.sample(7))
    knob, new = moves(code, n_choices)
    nbs = neighbours(code, n_choices)
    full, inc = problem.evaluate(nbs), problem.evaluate_neighbours(code, nbs, knob, new)
    assert np.allclose(inc["latency_ms"], full["latency_ms"], rtol=1e-12, atol=0)
    assert np.allclose(inc["accuracy"], full["accuracy"], rtol=1e-12, atol=0)


def test_amortized_model_space_trains_caches_and_loads(resnet18_space, trained_cache, monkeypatch):
    from edgepass.optimizers import model_space as ms

    cache, first, (lo, hi) = trained_cache
    L = float(np.sqrt(lo * hi))
    assert first.method == "amortized" and first.feasible and first.latency_ms <= L
    assert first.front and all(len(p) == 2 for p in first.front)
    files = list(cache.glob(f"amortized-{resnet18_space.hash()}-*.npz"))
    assert len(files) == 1

    def no_training(*a, **k):
        raise AssertionError("retrained instead of loading the cached optimizer")

    monkeypatch.setattr(ms, "train", no_training)
    again = edgepass.optimize(resnet18_space, HELD_DEVICE, latency_ms=L, cache=cache, train_options=SMALL)
    assert np.array_equal(again.code, first.code) and again.seconds < 5.0
    # another accuracy function is another optimizer: it would train (and here fails loudly)
    with pytest.raises(AssertionError, match="retrained"):
        edgepass.optimize(resnet18_space, HELD_DEVICE, latency_ms=L, cache=cache, train_options=SMALL,
                          accuracy_fn=lambda codes: 1.0 - 0.01 * np.asarray(codes).sum(1))


def test_amortized_training_is_deterministic(resnet18_space, trained_cache, tmp_path):
    cache, first, (lo, hi) = trained_cache
    r = edgepass.optimize(resnet18_space, HELD_DEVICE, latency_ms=float(np.sqrt(lo * hi)), cache=tmp_path,
                          train_options=SMALL)
    assert np.array_equal(r.code, first.code)
    a = np.load(next(cache.glob("amortized-*.npz")))
    b = np.load(next(tmp_path.glob("amortized-*.npz")))
    assert sorted(a.files) == sorted(b.files) and all(np.array_equal(a[k], b[k]) for k in a.files)


def test_amortized_meets_every_feasible_budget_and_is_close_to_search(resnet18_space, trained_cache):
    cache, _, (lo, hi) = trained_cache
    for f in (0.05, 0.3, 0.6, 0.95):
        L = float(np.exp(np.log(lo * 1.01) + f * (np.log(hi) - np.log(lo * 1.01))))
        r = edgepass.optimize(resnet18_space, HELD_DEVICE, latency_ms=L, cache=cache, train_options=SMALL)
        assert r.feasible and r.latency_ms <= L
        if f == 0.6:
            evo = edgepass.optimize(resnet18_space, HELD_DEVICE, latency_ms=L, method="search")
            assert evo.feasible and r.accuracy >= evo.accuracy - 0.02


def test_amortized_reports_infeasible_budgets(resnet18_space, trained_cache):
    from edgepass.optimizers import model_space as ms

    cache, _, _ = trained_cache
    costs = ms.device_costs(resnet18_space, [HELD_DEVICE])[HELD_DEVICE]
    n_choices = [len(c) for _, _, c in resnet18_space.knobs()]
    floor = float(costs.predict(ms.smallest_code(n_choices))[0])
    r = edgepass.optimize(resnet18_space, HELD_DEVICE, latency_ms=0.5 * floor, cache=cache, train_options=SMALL)
    assert not r.feasible and r.latency_ms > 0.5 * floor
    assert r.latency_ms <= 1.1 * floor                    # the closest design: (nearly) the cheapest one
    with pytest.raises(edgepass.InfeasibleBudgetError):
        edgepass.optimize(resnet18_space, HELD_DEVICE, latency_ms=0.5 * floor, cache=cache, train_options=SMALL,
                          strict=True)
    with pytest.raises(edgepass.InputError, match="bogus"):
        edgepass.optimize(resnet18_space, HELD_DEVICE, latency_ms=floor, cache=cache, train_options={"bogus": 1})


def test_candidates_are_distinct_feasible_and_include_the_uniform_baselines(resnet18_space):
    from edgepass.optimizers.api import model_problem
    from edgepass.optimizers.candidates import candidate_codes, widest_uniform

    problem, _ = model_problem(resnet18_space, "local/cpu-ort-1t")
    full = float(problem.evaluate(resnet18_space.encode(resnet18_space.identity())[None])["latency_ms"][0])
    budget = Budget(latency_ms=0.5 * full)
    pick = repair(problem, budget, resnet18_space.encode(resnet18_space.identity()), polish=5)
    codes = candidate_codes(problem, budget, resnet18_space, pick.code, k=5)
    assert np.array_equal(codes[0], pick.code) and len(codes) == 5
    assert len({c.tobytes() for c in codes}) == len(codes)
    assert (problem.evaluate(np.stack(codes))["latency_ms"] <= budget.latency_ms * (1 + 1e-9)).all()
    for precision in (None, "int8"):
        u = widest_uniform(problem, budget, resnet18_space, precision)
        assert u is not None and any(np.array_equal(u, c) for c in codes)
    assert len(candidate_codes(problem, budget, resnet18_space, pick.code, k=1)) == 1
