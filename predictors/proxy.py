"""Approach 1 of the seed paper: reuse a proxy device's latencies for another device (monotonicity).

    from edgepass.predictors.proxy import ProxyPredictor, choose_proxy
    proxy = ProxyPredictor(choose_proxy("help/pixel2", space="nb201"))
    report = proxy.fit(specs_measured, target_ms)       # k measurements on the target
    report.spearman, report.kendall, report.map_kind, report.needs_more, report.message
    target_ms_pred = proxy.predict(other_specs)          # monotone map of the proxy's latencies
    order = proxy.rank(other_specs)                      # fastest first (needs no target data)

Proxy latencies
    For a zoo spec (``nb201:...``, ``fbnet:...``) the proxy's *measured* latency from the training
    set (:func:`edgepass.dataset.load`) is used when it exists; otherwise, and for IR graphs, the
    device-conditioned latency predictor's prediction for the proxy (``edgepass.predictors.latency``).
    :attr:`ProxyPredictor.last_sources` counts which was used.

Monotone map (proxy ms -> target ms), fitted in log-log space on the k target measurements
    * ``log-linear``: ``log t = a + b log p`` (least squares, b clipped to >= 0.001 so the
      map stays strictly increasing);
    * ``isotonic``: scikit-learn's IsotonicRegression (increasing) on (log p, log t), interpolated
      between its thresholds and extrapolated linearly outside the measured range with the
      log-linear slope.
    The one with the lower leave-one-out MAPE on the k samples is used (``map_kind``; both LOO
    errors are in the report). With k <= 10 log-linear usually wins (isotonic steps overfit); see
    ``benchmarks/predictors_extra.py`` for measured held-out errors of both.

Monotonicity check and adaptation
    Spearman and Kendall between proxy latency and target truth on the k samples. Below
    ``threshold`` (0.9, as OneProxy) the predictor tries to adapt with the same k samples: it mixes
    a second proxy (``log t = a + w1 log p1 + w2 log p2``, w >= 0, fitted on the k samples), picking
    the second proxy among ``candidates`` by leave-one-out Spearman. If the adapted predictor's
    leave-one-out Spearman reaches the threshold it is used (``adapted=True``); otherwise the report
    says plainly that more measurements are needed (``needs_more=True`` and ``message``).

Proxy choice (:func:`choose_proxy`), in order of preference
    1. target measurements given (``measurements=(specs, ms)``): the candidate whose measured
       latencies on those specs have the highest Spearman with the target's;
    2. both devices have a profiler signature (``edgepass profile``): the smallest scale-free
       signature distance, std over common entries of ``log(sig_target) - log(sig_candidate)``
       (a constant speed factor does not matter for ranking, only the relative profile);
    3. otherwise the Euclidean distance between :meth:`Device.features` vectors (log1p datasheet
       numbers with missing flags, batch size, threads, precision/kind/runtime one-hots); ties go
       to the candidate with more measurements.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import lru_cache

import numpy as np

from edgepass import dataset
from edgepass.dataset import PRECISIONS
from edgepass.devices import get_device, list_devices

from .latency_fit import model_matrix
from .latency_model import device_precision, load_model, predict_matrices
from .stats import kendall, mape, spearman

DEFAULT_THRESHOLD = 0.9


# ---------------------------------------------------------------------- measured latencies
@lru_cache(maxsize=1)
def _table():
    return dataset.load()


def device_id_of(device) -> str:
    """The database id of ``device`` (an id, alias, device file or Device)."""
    return get_device(device).id


@lru_cache(maxsize=256)
def measured_table(device_id: str, precision: str | None) -> dict:
    """``{spec: ms}`` of a device (by database id, :func:`device_id_of`) from the training set
    (throughput rows as 1000/value); ``precision`` None: fp32 where measured."""
    ts = _table()
    if device_id not in ts.devices:
        return {}
    sub = ts.select(device=device_id)
    if precision is None:
        precs = set(int(p) for p in sub.precision_code)
        precision_code = 0 if 0 in precs else (min(precs) if precs else 0)
    else:
        precision_code = PRECISIONS.index(precision)
    out: dict = {}
    for metric_code, transform in ((2, lambda v: 1000.0 / v), (0, lambda v: v)):  # latency overrides
        m = (sub.precision_code == precision_code) & (sub.metric_code == metric_code) & (sub.design_code == 0)
        for code, v in zip(sub.spec_code[m], sub.value[m]):
            if v > 0:
                out[sub.specs[code]] = float(transform(float(v)))
    return out


def measured_latency(device, specs, *, precision: str | None = None) -> np.ndarray:
    """Measured latency (ms) of each spec on ``device`` from the training set; nan where absent."""
    table = measured_table(device_id_of(device), precision)
    return np.array([table.get(s, np.nan) if isinstance(s, str) else np.nan for s in specs], dtype=np.float64)


def predicted_latency(device, archs, *, precision: str | None = None) -> np.ndarray:
    """The device-conditioned latency predictor's latency (ms) for specs or IR graphs."""
    dev = get_device(device)
    m = load_model()
    state = m.device_state(dev)
    prec = precision or device_precision(dev)
    mats = [model_matrix(a, prec) for a in archs]
    return np.asarray(predict_matrices(mats, state, m), dtype=np.float64)


def proxy_latency(device, archs, *, precision: str | None = None, use_predictor: bool = True) -> tuple[np.ndarray, dict]:
    """Measured latency where the training set has it, else the predictor's; and counts per source."""
    archs = list(archs)
    lat = measured_latency(device, archs, precision=precision)
    miss = np.flatnonzero(~np.isfinite(lat))
    if len(miss) and use_predictor:
        lat[miss] = predicted_latency(device, [archs[i] for i in miss], precision=precision)
    return lat, {"measured": int(len(archs) - len(miss)), "predicted": int(len(miss) if use_predictor else 0),
                 "missing": int(0 if use_predictor else len(miss))}


# ---------------------------------------------------------------------- monotone maps
@dataclass
class MonotoneMap:
    """Monotone map from proxy latency to target latency, fitted in log-log space."""

    kind: str = "log-linear"          # log-linear | isotonic
    a: float = 0.0
    b: float = 1.0
    xs: list = field(default_factory=list)   # isotonic thresholds (log proxy ms)
    ys: list = field(default_factory=list)   # isotonic values (log target ms)

    @classmethod
    def fit(cls, proxy_ms, target_ms, kind: str = "log-linear") -> "MonotoneMap":
        lx, ly = np.log(np.asarray(proxy_ms, float)), np.log(np.asarray(target_ms, float))
        a, b = _loglinear(lx, ly)
        if kind == "log-linear":
            return cls("log-linear", a, b)
        if kind != "isotonic":
            raise ValueError(f"kind must be 'log-linear' or 'isotonic', not {kind!r}")
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(increasing=True, out_of_bounds="clip").fit(lx, ly)
        return cls("isotonic", a, b, [float(v) for v in iso.X_thresholds_], [float(v) for v in iso.y_thresholds_])

    def __call__(self, proxy_ms) -> np.ndarray:
        lx = np.log(np.asarray(proxy_ms, dtype=np.float64))
        if self.kind == "log-linear" or len(self.xs) < 2:
            return np.exp(self.a + self.b * lx)
        xs, ys = np.asarray(self.xs), np.asarray(self.ys)
        out = np.interp(lx, xs, ys)
        lo, hi = lx < xs[0], lx > xs[-1]        # linear extrapolation with the log-linear slope
        out[lo] = ys[0] + self.b * (lx[lo] - xs[0])
        out[hi] = ys[-1] + self.b * (lx[hi] - xs[-1])
        return np.exp(out)


def _loglinear(lx, ly) -> tuple[float, float]:
    if len(lx) < 2 or np.ptp(lx) == 0:
        return float(np.mean(ly) - np.mean(lx)), 1.0
    b, a = np.polyfit(lx, ly, 1)
    b = max(float(b), 1e-3)   # strictly increasing: the map never erases the proxy's ranking
    return float(np.mean(ly) - b * np.mean(lx)), b


def loo_mape(proxy_ms, target_ms, kind: str) -> float:
    """Leave-one-out MAPE (%) of a monotone map on k samples."""
    p, t = np.asarray(proxy_ms, float), np.asarray(target_ms, float)
    errs = []
    for i in range(len(p)):
        keep = np.arange(len(p)) != i
        f = MonotoneMap.fit(p[keep], t[keep], kind)
        errs.append(abs(float(f(p[i:i + 1])[0]) / t[i] - 1))
    return float(100 * np.mean(errs))


def fit_monotone_map(proxy_ms, target_ms, kind: str = "auto") -> tuple[MonotoneMap, dict]:
    """Fit ``kind`` (or pick the lower leave-one-out MAPE of the two when ``"auto"``)."""
    errs = {}
    if len(proxy_ms) >= 3:
        errs = {k: loo_mape(proxy_ms, target_ms, k) for k in ("log-linear", "isotonic")}
    if kind == "auto":
        kind = min(errs, key=lambda k: (errs[k], k != "log-linear")) if errs else "log-linear"
    return MonotoneMap.fit(proxy_ms, target_ms, kind), errs


# ---------------------------------------------------------------------- mixing a second proxy
def _mix_fit(L: np.ndarray, ly: np.ndarray, ridge: float = 1e-3) -> np.ndarray:
    """``log t = c0 + sum_j w_j L[:, j]`` with w >= 0 (drop negative weights and refit)."""
    active = list(range(L.shape[1]))
    while True:
        A = np.column_stack([np.ones(len(ly))] + [L[:, j] for j in active])
        reg = ridge * np.eye(A.shape[1])
        reg[0, 0] = 0
        coef = np.linalg.solve(A.T @ A + reg, A.T @ ly)
        w = coef[1:]
        if (w >= 0).all() or len(active) == 1:
            full = np.zeros(L.shape[1] + 1)
            full[0] = coef[0]
            for j, v in zip(active, w):
                full[j + 1] = max(v, 0.0)
            return full
        active.pop(int(np.argmin(w)))


def _mix_predict(coef, L) -> np.ndarray:
    return np.exp(coef[0] + L @ coef[1:])


def _loo_mix_spearman(L, ly) -> float:
    preds = np.empty(len(ly))
    for i in range(len(ly)):
        keep = np.arange(len(ly)) != i
        preds[i] = _mix_predict(_mix_fit(L[keep], ly[keep]), L[i:i + 1])[0]
    return spearman(preds, np.exp(ly))


# ---------------------------------------------------------------------- the predictor
@dataclass
class ProxyReport:
    """What :meth:`ProxyPredictor.fit` found on the k target measurements."""

    proxy: str
    k: int
    spearman: float
    kendall: float
    threshold: float
    monotone: bool                 # spearman >= threshold: the proxy's ranking carries over
    map_kind: str                  # the monotone map used (log-linear | isotonic)
    map_loo_mape: dict = field(default_factory=dict)   # LOO MAPE (%) of both maps on the k samples
    fit_mape: float = float("nan")                     # in-sample MAPE of the chosen map (%)
    adapted: bool = False          # a second proxy was mixed in with the k samples
    second_proxy: str | None = None
    mix_weights: list = field(default_factory=list)
    adapted_loo_spearman: float | None = None
    needs_more: bool = False       # the check failed and adaptation did not fix it
    message: str = ""
    sources: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


class ProxyPredictor:
    """Ranks architectures with a proxy device's latencies and maps them onto a target device.

    ``proxy_device``: id, alias, device file or Device. ``precision``: which of the proxy's measured
    precisions to read (default fp32 where measured). ``candidates``: second proxies considered for
    adaptation (default: :func:`choose_proxy`'s ranking of the database, top ``max_candidates``).
    """

    def __init__(self, proxy_device, *, threshold: float = DEFAULT_THRESHOLD, precision: str | None = None,
                 candidates=None, max_candidates: int = 8, use_predictor: bool = True, map_kind: str = "auto"):
        self.proxy = device_id_of(proxy_device)
        self.threshold = float(threshold)
        self.precision = precision
        self.candidates = list(candidates) if candidates is not None else None
        self.max_candidates = max_candidates
        self.use_predictor = use_predictor
        self.map_kind = map_kind
        self.map: MonotoneMap | None = None
        self.report: ProxyReport | None = None
        self._mix: tuple | None = None      # (second proxy id, coef)
        self.last_sources: dict = {}

    # -- proxy side -------------------------------------------------------------------------
    def proxy_latency(self, archs, device=None) -> np.ndarray:
        lat, src = proxy_latency(device or self.proxy, archs, precision=self.precision if device is None else None,
                                 use_predictor=self.use_predictor)
        self.last_sources = src
        return lat

    def rank(self, archs) -> np.ndarray:
        """Indices of ``archs`` from fastest to slowest on the proxy (no target data needed)."""
        return np.argsort(self.proxy_latency(archs), kind="mergesort")

    # -- calibration on k target measurements ----------------------------------------------
    def fit(self, archs, target_ms, *, candidates=None, target=None) -> ProxyReport:
        """Check monotonicity on k target measurements and fit the map. ``target`` (the target's id,
        when it is in the database) is never used as a second proxy; ``candidates`` overrides the
        second-proxy candidates given to the constructor."""
        archs = list(archs)
        t = np.asarray(target_ms, dtype=np.float64)
        if len(archs) != len(t):
            raise ValueError("archs and target_ms must have the same length")
        p = self.proxy_latency(archs)
        ok = np.isfinite(p) & (p > 0) & np.isfinite(t) & (t > 0)
        archs, p, t = [a for a, o in zip(archs, ok) if o], p[ok], t[ok]
        k = len(t)
        rho = spearman(p, t) if k >= 3 else float("nan")
        tau = kendall(p, t) if k >= 3 else float("nan")
        self.map, errs = fit_monotone_map(p, t, self.map_kind) if k >= 1 else (MonotoneMap(), {})
        fit_err = mape(self.map(p), t) if k else float("nan")
        monotone = bool(k >= 5 and np.isfinite(rho) and rho >= self.threshold)
        rep = ProxyReport(self.proxy, k, rho, tau, self.threshold, monotone, self.map.kind, errs, fit_err,
                          sources=dict(self.last_sources))
        self._mix = None
        if k < 5:
            rep.needs_more = True
            rep.message = (f"only {k} usable target measurements: the monotonicity check needs at least 5 "
                           f"(10 recommended); the map is a rough log-linear fit")
        elif not monotone:
            self._adapt(archs, p, t, rep, candidates, target)
        else:
            rep.message = (f"proxy {self.proxy} ranks the {k} measured architectures like the target "
                           f"(Spearman {rho:.3f} >= {self.threshold}); {rep.map_kind} map, LOO MAPE "
                           f"{errs.get(rep.map_kind, float('nan')):.1f} %")
        self.report = rep
        return rep

    def _adapt(self, archs, p, t, rep: ProxyReport, candidates, target) -> None:
        cands = candidates if candidates is not None else self.candidates
        if cands is None:
            cands = [c for c, _, _ in rank_proxies(self.proxy, measurements=(archs, t))]
        skip = {self.proxy} | ({device_id_of(target)} if target is not None else set())
        cands = [c for c in (device_id_of(c) for c in cands) if c not in skip]
        ly = np.log(t)
        scored = []
        for c in cands:
            q = measured_latency(c, archs)
            if not np.all(np.isfinite(q) & (q > 0)):
                continue
            scored.append((spearman(q, t), c, q))
        scored.sort(key=lambda s: -s[0])
        best = None
        for _, c, q in scored[: self.max_candidates]:
            L = np.column_stack([np.log(p), np.log(q)])
            s = _loo_mix_spearman(L, ly)
            if best is None or s > best[0]:
                best = (s, c, L)
        rho = rep.spearman
        if best is not None and best[0] >= self.threshold and best[0] > rho:
            coef = _mix_fit(best[2], ly)
            self._mix = (best[1], coef)
            rep.adapted, rep.second_proxy = True, best[1]
            rep.mix_weights = [float(v) for v in coef]
            rep.adapted_loo_spearman = float(best[0])
            rep.message = (f"proxy {self.proxy} alone ranks the {rep.k} measured architectures with Spearman "
                           f"{rho:.3f} < {self.threshold}; adapted by mixing {best[1]} (log-space weights "
                           f"{coef[1]:.2f}, {coef[2]:.2f}; leave-one-out Spearman {best[0]:.3f})")
            return
        if best is not None:
            rep.adapted_loo_spearman = float(best[0])
        rep.needs_more = True
        more = max(2 * rep.k, 20)
        rep.message = (f"monotonicity check failed: Spearman {rho:.3f} < {self.threshold} between proxy "
                       f"{self.proxy} and the target on {rep.k} measurements, and mixing a second proxy did not "
                       f"reach it ({'best LOO Spearman %.3f' % best[0] if best else 'no candidate measured these'}"
                       f"). Reusing this proxy is not safe: measure more architectures on the target (about "
                       f"{more}) and fit the device-conditioned predictor (edgepass device fit) instead")

    # -- prediction ---------------------------------------------------------------------------
    def predict(self, archs) -> np.ndarray:
        """Target latency (ms) of ``archs``: the monotone map (or the adapted mix) of proxy latencies;
        the proxy's own latencies before :meth:`fit`."""
        archs = list(archs)
        p = self.proxy_latency(archs)
        if self._mix is not None:
            second, coef = self._mix
            q, _ = proxy_latency(second, archs, use_predictor=self.use_predictor)
            return _mix_predict(coef, np.column_stack([np.log(p), np.log(q)]))
        if self.map is None:
            return p
        return self.map(p)


# ---------------------------------------------------------------------- proxy choice
def _signature_distance(a: dict, b: dict) -> float | None:
    common = [k for k in a if k in b and a[k] > 0 and b[k] > 0]
    if len(common) < 5:
        return None
    d = np.log([a[k] for k in common]) - np.log([b[k] for k in common])
    return float(np.std(d))


def rank_proxies(target_device, candidates=None, *, space: str | None = None, measurements=None) -> list:
    """Candidates sorted best first: ``[(device id, distance, metric)]``; ``metric`` is
    ``"spearman-on-measurements"`` (distance = 1 - rho), ``"signature"`` or ``"features"``."""
    target = get_device(target_device)
    if candidates is None:
        cands = [d for d in list_devices() if d.n_measurements > 0]
    else:
        cands = [get_device(c) for c in candidates]
    cands = [d for d in cands if d.id != target.id]
    if space is not None:
        cands = [d for d in cands if any(s == space or s.startswith(space + "-") or space.startswith(s)
                                         for s in d.measurements)]
    out = []
    if measurements is not None:
        specs, ms = measurements
        ms = np.asarray(ms, dtype=np.float64)
        for d in cands:
            q = measured_latency(d, specs)
            ok = np.isfinite(q)
            if ok.sum() >= max(3, int(0.8 * len(specs))):
                out.append((d.id, 1.0 - spearman(q[ok], ms[ok]), "spearman-on-measurements"))
        if out:
            return sorted(out, key=lambda r: (r[1], r[0]))
    if target.signature:
        for d in cands:
            dist = _signature_distance(target.signature, d.signature) if d.signature else None
            if dist is not None:
                out.append((d.id, dist, "signature"))
        if out:
            return sorted(out, key=lambda r: (r[1], r[0]))
    ft = np.asarray(target.features())
    for d in cands:
        out.append((d.id, float(np.linalg.norm(np.asarray(d.features()) - ft)), "features", -d.n_measurements))
    return [r[:3] for r in sorted(out, key=lambda r: (round(r[1], 9), r[3], r[0]))]


def choose_proxy(target_device, candidates=None, *, space: str | None = None, measurements=None) -> str:
    """The database device closest to ``target_device`` (see the module docstring for the metric)."""
    ranked = rank_proxies(target_device, candidates, space=space, measurements=measurements)
    if not ranked:
        raise ValueError(f"no proxy candidate for {target_device!r}" + (f" in space {space}" if space else ""))
    return ranked[0][0]


__all__ = ["ProxyPredictor", "ProxyReport", "MonotoneMap", "choose_proxy", "rank_proxies", "fit_monotone_map",
           "loo_mape", "measured_latency", "measured_table", "device_id_of", "predicted_latency", "proxy_latency"]
