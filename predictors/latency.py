"""Kernel-level, device-conditioned latency predictor (with few-shot device adaptation).

Model
-----
Every IR op gets a feature vector (:mod:`edgepass.predictors.features`: kind, log MACs, log bytes
read/written, log params, kernel, stride, grouped/depthwise, channels, spatial size, precision).
Every device gets a vector ``z = [datasheet features (Device.features), profiler-signature summary,
embedding e]`` where ``e = P z_datasheet + r_device``: a linear map of the datasheet vector plus a
learned per-device residual (zero for a device never seen, fitted from a few measurements by
:func:`fit_device`). An MLP maps ``[op features, z]`` to ``log(op latency)``; a model's latency is

    latency = sum_ops exp(MLP(op, z)) + exp(overhead(z))            (per-graph overhead)

and a device fitted from measurements adds a correction in log space, ``a + b * log(latency)``;
where leave-one-out on its measurements says so, the few-shot fit instead uses an op-class residual,
a linear op-count model, or a non-negative mixture of the trained devices' own predictors
(:func:`fit_op_residual`), each still a sum over ops.
A trained device with many own measurements (this CPU, ``local/cpu-ort-*``) also carries a per-op
correction fitted on its rows only (:func:`fit_correction`: non-negative weights on the MLP's op
latency, MACs, bytes and op count per op group and int8/not, plus a per-graph intercept), applied
per op so graph sums and :class:`LatencyTable` stay exact, and on top of it a small per-op residual
network (:func:`fit_op_net`: one tanh layer of 16 on the op's features and its channel alignment,
a multiplicative gain per op; still per op, so sums stay exact); ``benchmarks/predictors.py``
section (c) compares them with no correction, a GBM residual and the baselines on held-out models.

Public data only gives whole-model latency, so the per-op MLP is trained end to end on sums: per
minibatch the (op, device) pairs of its rows are evaluated once, exponentiated, multiplied by the op
counts and ``index_add``-ed per row; the loss is the squared error of ``log(sum)`` vs
``log(measured)``, devices balanced (weight ~ 1/sqrt(rows of the device)).

Why this family (measured, ``scripts/train_latency.py --compare --minutes 3``, 10 % of the graphs
held out, 2,740 test rows of trained devices, shared 2-core CPU while other jobs ran):

===============================================  ============  ===========  ================  =======
model                                            within +-10%  median err   CPU within +-10%  train s
===============================================  ============  ===========  ================  =======
HistGradientBoosting, log target, graph summary  0.787         3.9 %        0.421             69
summed per-op MLP (this module; 524 steps)       0.585         8.2 %        0.208             180
===============================================  ============  ===========  ================  =======

So on architectures of devices it was trained on, a whole-graph gradient-boosted model is *more*
accurate than the summed MLP at that training budget -- the simple thing wins there. The MLP is
kept because only a per-op model meets the rest of the brief: per-layer latencies, exact sums over
a :class:`LatencyTable` (>= 10k designs/s needs additivity), training on whole-model sums with per-op
outputs, graphs outside the trained spaces (user models, designs), and a device embedding that a few
measurements can fit. The benchmark (``benchmarks/predictors.py``) prints the least-squares FLOPs
baseline next to it on every figure. The inference side is plain numpy (float64), so loading the
artifact needs no torch.

API (stable)
------------
* :func:`load_model` -> :class:`LatencyModel` (cached; artifact ``edgepass/data/predictors/latency.npz``)
* :func:`predict(graph, device) -> Estimate` (per-op rows + total)
* :func:`predict_latency(graph, device) -> float` (ms)
* :class:`LatencyTable(space, device)` with ``predict(codes) -> ndarray`` and ``predict_design(design)``
* :func:`fit_device(pairs, name=..., base=None) -> Device` (few-shot adaptation; the fit is stored in
  ``device.provenance["latency_fit"]``)
"""
from __future__ import annotations

import hashlib
import io
import itertools
import json
import math
import os
import zipfile
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Iterable

import numpy as np

from edgepass.errors import DeviceError, InputError

from .base import Estimate, LayerEstimate
from .features import N_OP, graph_matrix, op_features

ARTIFACT = ("data", "predictors", "latency.npz")
FORMAT = "edgepass.latency-mlp/1"
#: profiler-signature entries summarised into the device vector (log1p ms + a missing flag each)
SIGNATURE_KEYS = ("conv_k3_s1_c64x64_h28_fp32", "conv_k1_s1_c64x64_h28_fp32", "dwconv_k3_s1_c192_h28_fp32",
                  "linear_1280x1000_fp32", "add_c64_h56_fp32", "conv_k3_s1_c64x64_h28_int8", "net_nb201a_fp32",
                  "net_mbv2wd4_fp32")
FIT_KEY = "latency_fit"
#: environment variable naming a latency artifact to use instead of the shipped one (a candidate under test)
LATENCY_MODEL_ENV = "EDGEPASS_LATENCY_MODEL"
#: device provenance key of :func:`calibrate_on_designs` (per-precision gains from measured designs)
CALIBRATION_KEY = "latency_calibration"
#: device-state keys of a trained device's own corrections (:func:`fit_correction`, :func:`fit_op_net`)
DEVICE_CORRECTIONS = ("corr", "opnet")


# ---------------------------------------------------------------------- device vectors
def device_raw_vector(device) -> np.ndarray:
    """Datasheet features (Device.features) + signature summary, unnormalised."""
    v = list(device.features())
    for k in SIGNATURE_KEYS:
        x = device.signature.get(k)
        v += [0.0, 1.0] if x is None else [math.log1p(float(x)), 0.0]
    return np.asarray(v, dtype=np.float64)


def device_precision(device) -> str | None:
    """Precision a device runs weighted layers in when it has no fp32 (int8-only NPUs/TFLite int8
    columns, fp16-only GPUs): their public latencies were measured that way, so fp32 layers of a
    graph are predicted in that precision. None when the device runs fp32."""
    precs = tuple(getattr(device, "precisions", ()) or ())
    if not precs or "fp32" in precs:
        return None
    return "int8" if "int8" in precs else precs[0]


def _resolve_device(device):
    from edgepass.devices import get_device

    return get_device(device)


# ---------------------------------------------------------------------- the model (numpy inference)
def fit_source(fit: dict) -> str:
    """Which predictor a few-shot fit (:func:`fit_state`) put in place, in words."""
    res = fit.get("op_residual")
    if not res:
        return "few-shot fit"
    if res.get("mode") == "mix":
        parts = ", ".join(f"{d} x{w:.2g}" for d, w in
                          zip(["adapted predictor", *res["devices"]], [res.get("own_w", 0.0), *res["w"]]) if w > 0) \
            or f"a constant {res['overhead_ms']:.3g} ms"
        return (f"few-shot mixture of trained devices' predictors ({parts}; leave-one-out preferred it "
                "to the adapted MLP)")
    if res.get("mode") == "replace":
        what = ("whole-graph op count/GMACs/MB" if res.get("model") == "totals"
                else f"{len(res['classes'])} op classes")
        return f"few-shot linear op-count model ({what}; leave-one-out preferred it to the adapted MLP)"
    return f"few-shot fit + op-class residual ({len(res['classes'])} classes)"


def _exp(x: float) -> float:
    """exp that overflows to inf (checked by :func:`check_latencies`), not to OverflowError."""
    return math.exp(x) if x < 700 else math.inf


def _read_artifact(data: bytes) -> tuple[dict, dict]:
    """Arrays and header of a latency artifact (no pickle), checked by :func:`_check_artifact`."""
    if not data.startswith(b"PK"):   # else numpy takes any other bytes for a pickle and says so
        raise ValueError("not an .npz file")
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k != "header"}
        header = json.loads(bytes(z["header"]).decode())
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"header format is not {FORMAT}")
    _check_artifact(arrays, header)
    return arrays, header


def _check_artifact(a: dict, header: dict) -> None:
    """The MLP's arrays chain together (op features -> layers -> one output; device vector ->
    embedding) and are finite: a mis-shaped artifact fails here, not as a matmul error mid-compile."""
    n_layers = header.get("n_layers")
    if not isinstance(n_layers, int) or not 1 <= n_layers <= 16:
        raise ValueError("header n_layers must be an integer from 1 to 16")
    if not isinstance(header.get("devices"), list) or not all(isinstance(d, str) for d in header["devices"]):
        raise ValueError("header devices must be a list of ids")
    names = ("op_mu", "op_sd", "dev_mu", "dev_sd", "P", "R", "ov_w", "ov_b",
             *(f"{p}{i}" for i in range(n_layers) for p in "Wb"))
    for name in names:
        if name not in a or a[name].dtype.kind != "f" or not np.isfinite(a[name]).all():
            raise ValueError(f"array {name} missing, not floating point or not finite")
    n_dev, emb = a["P"].shape if a["P"].ndim == 2 else (-1, -1)
    expected = {"op_mu": (N_OP,), "op_sd": (N_OP,), "dev_mu": (n_dev,), "dev_sd": (n_dev,),
                "R": (len(header["devices"]), emb), "ov_w": (n_dev + emb,), "ov_b": (1,)}
    width = N_OP + n_dev + emb
    for i in range(n_layers):
        out = 1 if i == n_layers - 1 else a[f"W{i}"].shape[-1]
        expected[f"W{i}"], expected[f"b{i}"], width = (width, out), (out,), out
    for name, shape in expected.items():
        if a[name].shape != shape:
            raise ValueError(f"array {name} has shape {a[name].shape}, expected {shape}")


class LatencyModel:
    """Trained weights + device table; numpy float64 inference."""

    def __init__(self, arrays: dict, header: dict):
        self.header = header
        self.a = {k: np.asarray(v, dtype=np.float64) for k, v in arrays.items()}
        self.devices = list(header["devices"])
        self.dev_index = {d: i for i, d in enumerate(self.devices)}
        self.n_layers = int(header["n_layers"])
        self.version = header.get("version", "")
        #: device id -> row of ``corr_w``: per-device op-level corrections (see :func:`fit_correction`)
        self.corr_index = dict(header.get("corrections", {}))
        #: device id -> row of the ``opnet_*`` arrays: per-op residual networks (see :func:`fit_op_net`)
        self.opnet_index = dict(header.get("opnets", {}))

    # -- persistence ------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path | None = None) -> "LatencyModel":
        """The shipped artifact, ``path``, or ``$EDGEPASS_LATENCY_MODEL`` (a candidate artifact under
        test); a missing or malformed file is a one-line InputError naming where it came from."""
        label = None
        if path is None and os.environ.get(LATENCY_MODEL_ENV):
            path, label = os.environ[LATENCY_MODEL_ENV], f"{LATENCY_MODEL_ENV}={os.environ[LATENCY_MODEL_ENV]}"
        label = label or (f"latency model {path}" if path is not None else "the shipped latency model")
        try:
            if path is None:
                data = resources.files("edgepass").joinpath(*ARTIFACT).read_bytes()
            else:
                data = Path(path).read_bytes()
            arrays, header = _read_artifact(data)
        except OSError as exc:
            raise InputError(f"{label}: cannot read ({exc.strerror or exc})") from None
        except (ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
            raise InputError(f"{label}: not a valid {FORMAT} artifact ({exc})") from None
        return cls(arrays, header)

    def save(self, path: str | Path) -> None:
        buf = io.BytesIO()
        arrays = {k: v.astype(np.float32) for k, v in self.a.items()}
        np.savez_compressed(buf, header=np.frombuffer(json.dumps(self.header).encode(), dtype=np.uint8), **arrays)
        Path(path).write_bytes(buf.getvalue())

    # -- device vector ----------------------------------------------------------------------
    def device_state(self, device) -> dict:
        """``{"z": device vector, "a": log offset, "b": log scale, "source": ...}`` for a Device
        (plus the per-precision gains of :func:`calibrate_on_designs` when the device carries them)."""
        dev = _resolve_device(device)
        st = self._device_state(dev)
        cal = dev.provenance.get(CALIBRATION_KEY) if isinstance(dev.provenance, dict) else None
        if cal and cal.get("model") == self.version:
            st["gain"] = (float(cal["fp"]), float(cal["int8"]))
            st["extra_ms"] = float(cal["extra_ms"])
            st["source"] += f"; calibrated on {cal['designs']} measured designs of one model"
        return st

    def uncorrected_state(self, device) -> dict:
        """:meth:`device_state` without the per-device corrections (``DEVICE_CORRECTIONS``): what
        :func:`fit_correction` and :func:`fit_op_net` are fitted on top of."""
        return {k: v for k, v in self.device_state(device).items() if k not in DEVICE_CORRECTIONS}

    def _device_state(self, dev) -> dict:
        raw = device_raw_vector(dev)
        fit = dev.provenance.get(FIT_KEY) if isinstance(dev.provenance, dict) else None
        if fit and fit.get("model") == self.version:
            self.check_fit(fit, dev.id)
            return self.state_from_fit(raw, fit)
        i = self.dev_index.get(dev.id)
        if i is None:
            for alias in dev.aliases:
                i = self.dev_index.get(alias)
                if i is not None:
                    break
        if i is not None:
            st = {"z": self.z_from(raw, self.a["R"][i]), "a": 0.0, "b": 1.0, "source": "trained device"}
            j = next((self.corr_index[d] for d in (dev.id, *dev.aliases) if d in self.corr_index), None)
            if j is not None:
                st["corr"] = self.a["corr_w"][j]
                st["source"] = "trained device + per-op correction fitted on its own measurements"
                k = next((self.opnet_index[d] for d in (dev.id, *dev.aliases) if d in self.opnet_index), None)
                if k is not None:
                    st["opnet"] = tuple(self.a[f"opnet_{n}"][k] for n in OPNET_ARRAYS)
                    st["source"] += " and a per-op residual network"
            return st
        # never measured: features far outside the trained devices' range extrapolate to absurd
        # latencies (1e20 ms for throughput-only accelerators), so they are held within 3 sd
        return {"z": self.z_from(raw, np.zeros(self.a["R"].shape[1]), clip=3.0), "a": 0.0, "b": 1.0,
                "source": "device features only (never measured: expect large errors; fit it with a few measurements)"}

    def check_fit(self, fit: dict, device_id: str) -> None:
        """Refuse a few-shot fit that does not fit this artifact (the device file's schema checked
        its types): a residual of another length, a mixture of devices the artifact never trained."""
        width = self.a["R"].shape[1]
        if len(fit.get("residual") or ()) != width:
            raise DeviceError(f"device {device_id}: provenance.{FIT_KEY}.residual must hold {width} numbers "
                              f"for latency model {self.version}, got {len(fit.get('residual') or ())}")
        res = fit.get("op_residual")
        unknown = sorted(set(res.get("devices", ())) - set(self.dev_index)) if isinstance(res, dict) else []
        if unknown:
            raise DeviceError(f"device {device_id}: provenance.{FIT_KEY}.op_residual names devices the latency "
                              f"model was not trained on: {', '.join(unknown[:3])}")

    def state_from_fit(self, raw: np.ndarray, fit: dict) -> dict:
        """Device state of a few-shot fit (:func:`fit_state`): embedding residual, log offset/scale and,
        when the fit kept one, the op-class residual (:func:`fit_op_residual`)."""
        r = np.asarray(fit["residual"], dtype=np.float64)
        st = {"z": self.z_from(raw, r), "a": float(fit.get("log_offset", 0.0)),
              "b": float(fit.get("log_scale", 1.0)), "source": fit_source(fit)}
        res = fit.get("op_residual")
        if res and res.get("mode") == "mix":  # trained devices' predictors, mixed, stand in for the MLP
            Z = np.vstack([st["z"][None], trained_vectors(self)[[self.dev_index[d] for d in res["devices"]]]])
            w = np.r_[float(res.get("own_w", 0.0)), np.asarray(res["w"], dtype=np.float64)]
            st.update(a=0.0, b=1.0, mlp_ab=(st["a"], st["b"]), mix=(Z[w > 0], w[w > 0], float(res["overhead_ms"])))
        elif res:
            st["opres"] = opres_state(res)
            if res.get("mode") == "replace":  # a linear model stands in for the MLP on this device
                st.update(a=0.0, b=1.0, opres_overhead=float(res["overhead_ms"]), mlp_ab=(st["a"], st["b"]))
        return st

    def z_from(self, raw: np.ndarray, residual: np.ndarray, clip: float | None = None) -> np.ndarray:
        dn = (raw - self.a["dev_mu"]) / self.a["dev_sd"]
        if clip is not None:
            dn = np.clip(dn, -clip, clip)
        e = dn @ self.a["P"] + residual
        return np.concatenate([dn, e])

    # -- forward ----------------------------------------------------------------------------
    def op_log_latency(self, X: np.ndarray, z: np.ndarray) -> np.ndarray:
        """log(ms) per op row of the raw feature matrix ``X`` (n x N_OP) on device vector ``z``."""
        if len(X) == 0:
            return np.zeros(0)
        h = (np.asarray(X, dtype=np.float64) - self.a["op_mu"]) / self.a["op_sd"]
        W0 = self.a["W0"]
        nx = h.shape[1]
        h = h @ W0[:nx] + (z @ W0[nx:] + self.a["b0"])
        h = np.maximum(h, 0.0)
        for i in range(1, self.n_layers):
            h = h @ self.a[f"W{i}"] + self.a[f"b{i}"]
            if i < self.n_layers - 1:
                h = np.maximum(h, 0.0)
        return h[:, 0]

    def overhead_log(self, z: np.ndarray) -> float:
        return float(z @ self.a["ov_w"] + self.a["ov_b"][0])

    def op_latency(self, X: np.ndarray, state: dict) -> np.ndarray:
        """Per-op latency (ms); a device with a fitted per-op correction (``state["corr"]``, and its
        residual network ``state["opnet"]``) gets it applied here, so sums (graphs,
        :class:`LatencyTable`) stay exact. Overflow gives inf quietly: :func:`check_latencies`
        turns it into one error line naming the op."""
        with np.errstate(over="ignore", invalid="ignore"):
            return self._op_latency(X, state)

    def _op_latency(self, X: np.ndarray, state: dict) -> np.ndarray:
        w = state.get("corr")
        if state.get("mix") is not None:
            # a mixture of trained devices' predictors stands in for the adapted MLP
            Zm, wm, _ = state["mix"]
            per = np.zeros(len(X))
            for z, wj in zip(Zm, wm):
                per = per + wj * np.exp(self.op_log_latency(X, z))
        elif state.get("opres_overhead") is not None:
            # op-count model; an op of a class no measured model had keeps the adapted MLP's ms
            extra, seen = op_residual_ms(X, state["opres"], with_seen=True)
            per = np.where(seen, extra, np.exp(self.op_log_latency(X, state["z"])) if len(X) else 0.0)
        elif w is None or len(X) == 0:
            per = np.exp(self.op_log_latency(X, state["z"]))
        else:
            per = correction_basis(X, self.basis_ms(X, state["z"])) @ w[:N_CORR_OP]
            if state.get("opnet") is not None:
                per = per * np.exp(opnet_log_gain(self, X, state["opnet"]))
        if state.get("opres") is not None and state.get("opres_overhead") is None and len(X):
            # not floored per op: the residual is a linear correction whose class weights are fitted
            # together (flooring at 0 cost HELP FBNet fpga's share within +-10 % 0.48 -> 0.13); a
            # single op's row can be negative, totals are clamped positive by ``correct``
            per = per + op_residual_ms(X, state["opres"])
        gain = state.get("gain")
        if gain is not None and len(X):
            per = per * np.where(np.asarray(X)[:, _feat_index()["prec_int8"]] > 0, gain[1], gain[0])
        return per

    def basis_ms(self, X: np.ndarray, z: np.ndarray) -> np.ndarray:
        """MLP ms per op as the correction uses it: int8 ops get the MLP's ms of their fp32 twin
        (same op, fp32 flag), because on a corrected device int8 is fitted as a multiple of fp32
        (+ per-MAC, per-byte and per-op terms) -- the shared MLP learned int8 from phones and NPUs
        and was 35x off for small int8 convs on this CPU."""
        X = np.asarray(X, dtype=np.float64)
        j = _feat_index()
        q = X[:, j["prec_int8"]] > 0
        if q.any():
            X = X.copy()
            X[q, j["prec_int8"]] = 0.0
            X[q, j["prec_fp16"]] = 0.0
            X[q, j["prec_fp32"]] = 1.0
        return np.exp(self.op_log_latency(X, z))

    def overhead_ms(self, state: dict) -> float:
        """Per-graph overhead (ms) of a device (corrected like the ops when it has a correction)."""
        ov = _exp(self.overhead_log(state["z"]))
        if state.get("mix") is not None:
            Zm, wm, c = state["mix"]
            ov = c + sum(wj * _exp(self.overhead_log(z)) for z, wj in zip(Zm, wm))
        elif state.get("opres_overhead") is not None:
            ov = state["opres_overhead"]
        w = state.get("corr")
        ov = ov if w is None else float(w[N_CORR_OP] + w[N_CORR_OP + 1] * ov)
        gain = state.get("gain")
        return ov if gain is None else ov * gain[0] + state["extra_ms"]

    def with_corrections(self, corrections: dict, nets: dict | None = None) -> "LatencyModel":
        """A copy carrying per-device corrections ``{device id: weight vector}`` and, optionally,
        per-op residual networks ``{device id: fit_op_net(...)}`` (only on corrected devices)."""
        ids = sorted(corrections)
        nets = {d: v for d, v in (nets or {}).items() if d in corrections}
        arrays = {k: v for k, v in self.a.items() if not k.startswith("opnet_")}
        header = json.loads(json.dumps(self.header))
        header.pop("opnets", None)
        if ids:
            arrays["corr_w"] = np.stack([np.asarray(corrections[d], dtype=np.float64) for d in ids])
            header["corrections"] = {d: j for j, d in enumerate(ids)}
        else:
            arrays.pop("corr_w", None)
            header.pop("corrections", None)
        if nets:
            nid = sorted(nets)
            for i, n in enumerate(OPNET_ARRAYS):
                arrays[f"opnet_{n}"] = np.stack([np.asarray(nets[d][i], dtype=np.float64) for d in nid])
            header["opnets"] = {d: k for k, d in enumerate(nid)}
        return LatencyModel(arrays, header)

    @staticmethod
    def correct(total_ms, state: dict):
        """Apply the few-shot log-space correction ``exp(a) * total^b`` (identity for trained devices)."""
        if state["a"] == 0.0 and state["b"] == 1.0:
            return total_ms if state.get("opres") is None else np.maximum(total_ms, 1e-9)
        with np.errstate(over="ignore", invalid="ignore"):   # inf is refused by check_latencies
            return np.exp(state["a"] + state["b"] * np.log(np.maximum(total_ms, 1e-9)))


@lru_cache(maxsize=4)
def _load_cached(path: str | None) -> LatencyModel:
    return LatencyModel.load(path)


def load_model(path: str | Path | None = None) -> LatencyModel:
    """The shipped latency model (cached after the first call)."""
    return _load_cached(str(path) if path is not None else None)


# ---------------------------------------------------------------------- predict
def _user_parameters(dev) -> bool:
    """Whether the device carries fitted predictor parameters from its file (fit or calibration)."""
    prov = dev.provenance if isinstance(dev.provenance, dict) else {}
    return FIT_KEY in prov or CALIBRATION_KEY in prov


def check_latencies(per_op, names, total, dev) -> None:
    """Refuse a prediction no device can have: a non-finite op latency (naming the op) or a total
    that is not a finite number >= 0. A device with fitted parameters gets the blame (exit 5: its
    file holds values the predictor cannot use), else the graph (exit 2: e.g. absurd sizes)."""
    per_op = np.asarray(per_op, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(per_op))
    error = DeviceError if _user_parameters(dev) else InputError
    if bad.size:
        i = int(bad[0])
        raise error(f"the latency predictor gave {per_op[i]} ms for op {names[i]} on device {dev.id}; "
                    "refusing to use it")
    totals = np.atleast_1d(np.asarray(total, dtype=np.float64))
    if not (np.isfinite(totals).all() and (totals >= 0).all()):
        worst = names[int(np.argmin(per_op))] if len(per_op) else "(per-graph overhead)"
        raise error(f"the latency predictor gave a total of {totals[~np.isfinite(totals) | (totals < 0)][0]} ms "
                    f"on device {dev.id} (smallest op: {worst}); refusing to use it")


def _graph_total(model: LatencyModel, X: np.ndarray, state: dict) -> tuple[float, np.ndarray, float]:
    per_op = model.op_latency(X, state)
    ov = model.overhead_ms(state)
    raw = float(per_op.sum() + ov)
    return raw, per_op, ov


def predict(graph, device, *, model: LatencyModel | None = None) -> Estimate:
    """Latency of an IR graph on a device: per-op rows (scaled so they sum to the total with the
    per-graph overhead as its own row) and the total in ms."""
    m = model or load_model()
    dev = _resolve_device(device)
    state = m.device_state(dev)
    X, ops = graph_matrix(graph, device_precision(dev))
    raw, per_op, ov = _graph_total(m, X, state)
    total = float(m.correct(raw, state))
    check_latencies(per_op, [op.name for op in ops], total, dev)
    scale = total / raw if raw > 0 else 1.0
    layers = [LayerEstimate(name=op.name, kind=op.kind, latency_ms=float(t * scale), macs=int(op.macs),
                            precision=op.precision) for op, t in zip(ops, per_op)]
    layers.append(LayerEstimate(name="(per-graph overhead)", kind="overhead", latency_ms=float(ov * scale)))
    notes = [f"latency: kernel-level MLP ({m.version}), device vector from {state['source']}"]
    if (state.get("opres") is not None or state.get("mix") is not None) and len(X):
        # the few-shot residual / linear model / mixture is fitted on the measured models only: say
        # when this graph is unlike them (unseen op classes, or the total > 2x off the adapted MLP's)
        plain = {k: v for k, v in state.items() if k not in ("opres", "opres_overhead", "mix")}
        if "mlp_ab" in state:
            plain["a"], plain["b"] = state["mlp_ab"]
        ref = float(m.correct(_graph_total(m, X, plain)[0], plain))
        index = state["opres"][0] if state.get("opres") is not None else None
        unseen = set() if index is None or "*" in index else set(op_classes(X)) - set(index)
        if not 0.5 <= total / max(ref, 1e-12) <= 2.0 or unseen:
            notes.append(f"warning: this model is unlike the device's measured models ({len(unseen)} op classes "
                         f"they lacked; {total:.3g} ms vs {ref:.3g} ms from the adapted predictor alone) -- "
                         "measure it or add it to the device fit")
    return Estimate(device=dev.id, latency_ms=total, layers=layers, notes=notes)


def predict_latency(graph, device, *, model: LatencyModel | None = None) -> float:
    """Total predicted latency (ms) of an IR graph."""
    m = model or load_model()
    dev = _resolve_device(device)
    state = m.device_state(dev)
    X, ops = graph_matrix(graph, device_precision(dev))
    raw, per_op, _ = _graph_total(m, X, state)
    total = float(m.correct(raw, state))
    check_latencies(per_op, [op.name for op in ops], total, dev)
    return total


def predict_many(graphs: Iterable, device, *, model: LatencyModel | None = None) -> np.ndarray:
    """Totals (ms) for several graphs on one device (one MLP pass over their stacked ops)."""
    m = model or load_model()
    dev = _resolve_device(device)
    state = m.device_state(dev)
    pairs = [graph_matrix(g, device_precision(dev)) for g in graphs]
    mats = [X for X, _ in pairs]
    totals = predict_matrices(mats, state, m)
    if not (np.isfinite(totals).all() and (totals >= 0).all()):   # find the op to blame
        for (X, ops), total in zip(pairs, totals):
            check_latencies(m.op_latency(X, state), [op.name for op in ops], total, dev)
    return totals


def predict_matrices(mats: list, state: dict, m: LatencyModel) -> np.ndarray:
    if not mats:
        return np.zeros(0)
    X = np.concatenate(mats)
    per = m.op_latency(X, state)
    idx = np.repeat(np.arange(len(mats)), [len(x) for x in mats])
    tot = np.bincount(idx, weights=per, minlength=len(mats)) + m.overhead_ms(state)
    return np.asarray(m.correct(tot, state), dtype=np.float64)


# ---------------------------------------------------------------------- design-space tables
MAX_COMBOS = 20_000


def _design_op(space, op, widths: dict, kernel: int | None, precision: str | None):
    """The op as :meth:`DesignSpace.design_graph` would produce it (same code path, one op)."""
    return space.design_op(op, widths, kernel, precision)


def op_combos(space) -> list:
    """Per op of ``space``: ``(knob indices it depends on, their sizes, [the op as designed under each
    combination of those knobs, row-major])`` -- an op depends only on the widths of the channel
    groups its tensors carry, its own kernel and its own precision."""
    knobs = space.knobs()
    kidx = {(k, key): i for i, (k, key, _) in enumerate(knobs)}
    offered = {g.id for g in space.groups}
    ident = space.identity()
    out = []
    for op in space.graph.ops():
        gids = []
        for t in list(op.inputs) + list(op.outputs):
            lay = space.layouts.get(t)
            if lay is None or space.graph.graph["tensors"].get(t) is None:
                continue
            for gid, _size, _rep in lay[1]:
                if gid in offered and gid not in gids:
                    gids.append(gid)
        ks = [kidx[("widths", g)] for g in gids]
        if op.name in space.kernels:
            ks.append(kidx[("kernels", op.name)])
        if op.name in space.precisions:
            ks.append(kidx[("precisions", op.name)])
        ks = sorted(ks)
        sizes = [len(knobs[k][2]) for k in ks]
        n = int(np.prod(sizes)) if sizes else 1
        if n > MAX_COMBOS:
            raise ValueError(f"op {op.name} has {n} knob combinations (> {MAX_COMBOS})")
        ops = []
        for combo in itertools.product(*[range(s) for s in sizes]):
            widths = dict(ident.widths)
            kernel = ident.kernels.get(op.name)
            prec = ident.precisions.get(op.name)
            for k, c in zip(ks, combo):
                knob, key, choices = knobs[k]
                if knob == "widths":
                    widths[key] = choices[c]
                elif knob == "kernels":
                    kernel = choices[c]
                else:
                    prec = choices[c]
            ops.append(_design_op(space, op, widths, kernel, prec))
        out.append((tuple(ks), tuple(sizes), ops))
    return out


def summed_tables(combos: list, values: np.ndarray) -> tuple[float, list]:
    """``(constant, tables)`` from one value per designed op of :func:`op_combos` (in its order):
    ops with the same knob set share one summed table; ops without knobs add to the constant."""
    per_set: dict[tuple, list] = {}
    pos = 0
    for ks, sizes, ops in combos:
        t = np.asarray(values[pos:pos + len(ops)], dtype=np.float64)
        pos += len(ops)
        if ks in per_set:
            per_set[ks][1] += t
        else:
            per_set[ks] = [sizes, t.copy()]
    constant = float(sum(t.sum() for ks, (_, t) in per_set.items() if not ks))
    tables = []  # (knob indices, strides, flat table)
    for ks, (sizes, t) in per_set.items():
        if ks:
            strides = np.cumprod([1] + list(sizes[::-1]))[:-1][::-1].astype(np.int64)
            tables.append((np.asarray(ks, dtype=np.int64), strides, t))
    return constant, tables


def table_sums(codes: np.ndarray, constant: float, tables: list) -> np.ndarray:
    """Per row of ``codes``: ``constant`` + one lookup per table of :func:`summed_tables`."""
    codes = np.asarray(codes, dtype=np.int64)
    if codes.ndim == 1:
        codes = codes[None]
    out = np.full(len(codes), constant, dtype=np.float64)
    for ks, strides, t in tables:
        out += t[codes[:, ks] @ strides]
    return out


class LatencyTable:
    """Per-op latency of every relevant knob combination of a design space on one device, so that a
    batch of encoded designs (``space.encode``) is scored with array lookups and sums.

    An op's latency depends only on the widths of the channel groups its tensors carry, its own
    kernel and its own precision: those combinations are enumerated per op, predicted in one MLP
    batch, and ops with the same knob set share one summed table.
    """

    def __init__(self, space, device, *, model: LatencyModel | None = None):
        self.space = space
        self.model = m = model or load_model()
        self.device = _resolve_device(device)
        self.state = m.device_state(self.device)
        dprec = device_precision(self.device)
        self.knobs = space.knobs()
        combos = op_combos(space)
        X = np.concatenate([np.stack([op_features(o, dprec) for o in ops]) for _, _, ops in combos])
        per_op = m.op_latency(X, self.state)
        self.constant, self.tables = summed_tables(combos, per_op)
        self.constant += m.overhead_ms(self.state)
        self.n_ops = len(combos)
        # every design's total lies between these bounds: checked once, not per batch of designs
        low, high = (self.constant + sum(f(t) for _, _, t in self.tables) for f in (np.min, np.max))
        check_latencies(per_op, [o.name for _, _, ops in combos for o in ops],
                        m.correct(np.array([low, high]), self.state), self.device)

    def predict_raw(self, codes: np.ndarray) -> np.ndarray:
        return table_sums(codes, self.constant, self.tables)

    def predict(self, codes: np.ndarray) -> np.ndarray:
        """Predicted latency (ms) per row of ``codes`` (n_designs x n_knobs, from ``space.encode``)."""
        return np.asarray(self.model.correct(self.predict_raw(codes), self.state), dtype=np.float64)

    def predict_design(self, design) -> float:
        return float(self.predict(self.space.encode(design)[None])[0])


# ---------------------------------------------------------------------- per-device correction
# A device with many own measurements (this CPU: ~4k rows) gets a correction of the shared MLP fitted
# on its rows only. Per op, latency = B(op) . w with B = [MLP ms, GMACs, MB moved, 1] for each
# (op group, int8 or not; an int8 op's "MLP ms" is that of its fp32 twin); per graph overhead = w0 + w1 * MLP overhead. w >= 0 (NNLS), so every op
# stays non-negative and a graph is still a sum of op latencies (LatencyTable stays exact). The
# int8/non-int8 split is what makes int8 convs ~2-3x faster than fp32 on this CPU, which the shared
# MLP (80k public rows, few int8 CPU rows) does not learn; the intercept absorbs the per-graph
# overhead that made tiny models +170 %.
CORR_GROUPS = ("conv", "dwconv", "linear", "other")
_CORR_TERMS = ("mlp_ms", "gmacs", "mbytes", "count")
N_CORR_OP = len(CORR_GROUPS) * 2 * len(_CORR_TERMS)


def _feat_index():
    from .features import OP_FEATURES

    return {n: i for i, n in enumerate(OP_FEATURES)}


def correction_basis(X: np.ndarray, per_op_ms: np.ndarray) -> np.ndarray:
    """(n_ops x N_CORR_OP) basis of :func:`fit_correction` from raw op features and MLP ms."""
    j = _feat_index()
    X = np.asarray(X, dtype=np.float64)
    conv = X[:, j["kind_conv"]] > 0
    grouped = X[:, j["grouped"]] > 0
    lin = (X[:, j["kind_linear"]] > 0) | (X[:, j["kind_matmul"]] > 0)
    group = np.where(conv & ~grouped, 0, np.where(conv, 1, np.where(lin, 2, 3)))
    slot = group * 2 + (X[:, j["prec_int8"]] > 0)
    terms = np.stack([per_op_ms, np.expm1(X[:, j["log_macs"]]) / 1e9,
                      (np.expm1(X[:, j["log_bytes_read"]]) + np.expm1(X[:, j["log_bytes_written"]])) / 1e6,
                      np.ones(len(X))], 1)
    B = np.zeros((len(X), N_CORR_OP))
    nt = len(_CORR_TERMS)
    for t in range(nt):
        B[np.arange(len(X)), slot * nt + t] = terms[:, t]
    return B


def correction_rows(m: LatencyModel, mats: list, state: dict) -> np.ndarray:
    """Per graph: summed basis of its ops ++ [1, MLP overhead ms] (uncorrected state)."""
    base = {k: v for k, v in state.items() if k not in DEVICE_CORRECTIONS}
    X = np.concatenate(mats)
    B = correction_basis(X, m.basis_ms(X, base["z"]))
    idx = np.repeat(np.arange(len(mats)), [len(x) for x in mats])
    A = np.zeros((len(mats), N_CORR_OP))
    np.add.at(A, idx, B)
    ov = math.exp(m.overhead_log(base["z"]))
    return np.concatenate([A, np.ones((len(mats), 1)), np.full((len(mats), 1), ov)], 1)


#: per-graph overhead of onnxruntime's session.run here, measured rather than fitted: a model of one
#: Relu on 1x1x8x8 takes 0.005 ms (median of 10,000 runs, 1 and 2 threads: `edgepass measure relu.onnx
#: --runs 200 --min-seconds 0.5 [--threads 2]`). Fitted, the intercept came out at 0.076 ms (the
#: training rows' smallest models take 0.28 ms, so nothing pins it down) and the bundled 0.042 ms
#: digits CNN was predicted at 0.123 ms; fixed, 0.055 ms, while the held-out share within +-10 % went
#: 0.824 -> 0.817 (``benchmarks/predictors.py`` sections (c) and (c')).
GRAPH_OVERHEAD_MS = {"local/cpu-ort-1t": 0.005, "local/cpu-ort-2t": 0.005}


def fit_correction(m: LatencyModel, mats: list, y, state: dict, *, ridge: float = 0.03,
                   min_share: float = 0.02, overhead_ms: float | None = None) -> np.ndarray:
    """Non-negative weights of the per-op correction: robust (soft-L1, scale 0.1) least squares of
    ``log(predicted / measured)`` with a small ridge pulling towards the identity (MLP as is).

    Why robust log error: busy-machine measurements have heavy tails (2-thread rows: median IQR 27 %
    of the median); plain least squares on relative error chased them and made 2-thread predictions
    worse than no correction (measured in ``benchmarks/predictors.py`` development: within +-10 %
    0.13 vs 0.26 uncorrected; soft-L1 log fit 0.34).

    ``overhead_ms``: the device's per-graph overhead, measured, instead of fitting it (rows of
    models much larger than the overhead cannot pin it down: see :data:`GRAPH_OVERHEAD_MS`)."""
    from scipy.optimize import least_squares

    y = np.asarray(y, dtype=np.float64)
    A = correction_rows(m, mats, state)
    nt = len(_CORR_TERMS)
    w0 = np.zeros(A.shape[1])
    w0[0:N_CORR_OP:nt] = 1.0
    w0[-1] = 1.0
    # an (op group, precision) slot that carries < 2 % of the measured latency in 9 of 10 graphs
    # that have it is not identifiable: its weights stay at the prior (the MLP as is; fp32-twin ms
    # for int8). Left free, the int8 Linear slot took ~1 ms per op (a stand-in for per-graph int8
    # overheads) and made the tiny digits CNN "10x slower" in int8.
    free = np.ones(A.shape[1], dtype=bool)
    for s in range(0, N_CORR_OP, nt):
        share = A[:, s][A[:, s] > 0] / y[A[:, s] > 0]
        if len(share) == 0 or np.quantile(share, 0.9) < min_share:
            free[s:s + nt] = False
    if overhead_ms is not None:   # a measured per-graph overhead, not a fitted one
        w0[-2:] = (overhead_ms, 0.0)
        free[-2:] = False
    fixed = A[:, ~free] @ w0[~free]
    Af = A[:, free]
    sc = np.sqrt(((Af / y[:, None]) ** 2).mean(0)) + 1e-12
    As = Af / sc
    w0f = w0[free]

    def resid(ws):
        return np.concatenate([np.log((As @ ws + fixed) / y + 1e-9), ridge * (ws - w0f * sc)])

    fit = least_squares(resid, w0f * sc, bounds=(0, np.inf), loss="soft_l1", f_scale=0.1, max_nfev=300)
    w = w0.copy()
    w[free] = fit.x / sc
    return w


# ---------------------------------------------------------------------- per-op residual network
#: arrays of a per-op residual network: tanh(inputs @ W0 + b0) @ w1 + b1 = log gain of the op
OPNET_ARRAYS = ("W0", "b0", "w1", "b1")
#: channel alignments the network sees as flags: onnxruntime's CPU kernels (AVX-512 here) run
#: fastest on channel counts that are multiples of 16 (a 24-channel conv measured as slow as 32)
OPNET_ALIGN = (16, 8)


def opnet_inputs(m: LatencyModel, X: np.ndarray) -> np.ndarray:
    """Network inputs per op row: the MLP's standardised features + "not a multiple of 16 / 8"
    flags of the input and output channels."""
    j = _feat_index()
    X = np.asarray(X, dtype=np.float64)
    ch = np.rint(np.expm1(X[:, [j["log_cin"], j["log_cout"]]]))
    flags = [(ch % a != 0).astype(np.float64) for a in OPNET_ALIGN]
    return np.concatenate([(X - m.a["op_mu"]) / m.a["op_sd"], *flags], 1)


def opnet_log_gain(m: LatencyModel, X: np.ndarray, net) -> np.ndarray:
    """log of the multiplicative gain the network puts on each op row's corrected latency."""
    W0, b0, w1, b1 = net
    return np.tanh(opnet_inputs(m, X) @ W0 + b0) @ w1 + float(np.asarray(b1).reshape(-1)[0])


def fit_op_net(m: LatencyModel, mats: list, y, state: dict, *, hidden: int = 16, weight_decay: float = 1e-3,
               steps: int = 1500, lr: float = 3e-3, seed: int = 0) -> tuple:
    """Per-op residual network of a device with many own measurements, on top of its per-op
    correction (``state["corr"]``): op ms x exp(net(op)), fitted end to end on graph totals
    (pseudo-Huber loss on log(predicted / measured), scale 0.05; weight decay on the hidden layer
    and on the gains; deterministic under ``seed``). Returns the ``OPNET_ARRAYS`` tuple.

    Why: the linear correction has one set of weights per op group and precision, so it cannot
    express effects of an op's shape taken jointly, such as channel alignment; on this CPU's
    held-out models the share within +-10 % went 0.665 -> 0.817 with it (``benchmarks/predictors.py``
    section (c), with the measured overhead; a wider layer, more steps or a lower weight decay did
    no better there)."""
    import torch

    if state.get("corr") is None:
        raise ValueError("fit_op_net needs a corrected device state (state['corr'])")
    y = np.asarray(y, dtype=np.float64)
    X = np.concatenate(mats)
    base = {k: v for k, v in state.items() if k != "opnet"}
    per = m.op_latency(X, base)
    # distinct op rows only (designs repeat most ops): the network runs once per distinct row
    U, inv = np.unique(np.concatenate([opnet_inputs(m, X), per[:, None]], 1), axis=0, return_inverse=True)
    graph = np.repeat(np.arange(len(mats)), [len(x) for x in mats])
    rng = np.random.default_rng(seed)
    n_in = U.shape[1] - 1
    bound = 1.0 / math.sqrt(n_in)
    W0 = torch.tensor(rng.uniform(-bound, bound, (n_in, hidden)), requires_grad=True)
    b0 = torch.tensor(rng.uniform(-bound, bound, hidden), requires_grad=True)
    w1 = torch.zeros(hidden, dtype=torch.float64, requires_grad=True)   # starts as the correction
    b1 = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    inp, per_u = torch.tensor(U[:, :-1]), torch.tensor(U[:, -1])
    inv_t, graph_t = torch.tensor(inv.ravel()), torch.tensor(graph)
    log_y = torch.tensor(np.log(y))
    overhead = m.overhead_ms(base)
    opt = torch.optim.Adam([W0, b0, w1, b1], lr=lr)
    for _ in range(steps):
        g = torch.tanh(inp @ W0 + b0) @ w1 + b1
        tot = torch.zeros(len(mats), dtype=torch.float64).index_add_(0, graph_t, (per_u * torch.exp(g))[inv_t])
        r = torch.log(torch.clamp(tot + overhead, min=1e-9)) - log_y
        loss = torch.sqrt(r ** 2 + 0.05 ** 2).mean() + weight_decay * ((W0 ** 2).sum() + (b0 ** 2).sum()
                                                                        + (g ** 2).mean())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return tuple(t.detach().numpy().copy() for t in (W0, b0, w1, b1))


# ---------------------------------------------------------------------- few-shot op-class residual
#: how many trained devices a few-shot mixture draws on
MIX_DEVICES = 5
#: the mixture replaces the best other few-shot predictor when its leave-one-out error is below this
#: fraction of that predictor's (0 turns it off)
MIX_MARGIN = 0.8
OPRES_ALPHAS = (1e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0)


def op_classes(X: np.ndarray) -> list[str]:
    """Class of each op row for the few-shot residual: kind, kernel (conv and pool only),
    depthwise, int8 -- e.g. ``pool|k3|dw0|q0``."""
    from .features import KIND_GROUPS

    j = _feat_index()
    X = np.asarray(X, dtype=np.float64)
    if len(X) == 0:
        return []
    kind = np.argmax(X[:, :len(KIND_GROUPS)], 1)
    spatial = np.isin(kind, [KIND_GROUPS.index("conv"), KIND_GROUPS.index("pool")])
    k = np.where(spatial, X[:, j["kernel"]], 0).astype(int)
    dw = (X[:, j["depthwise"]] > 0).astype(int)
    q = (X[:, j["prec_int8"]] > 0).astype(int)
    return [f"{KIND_GROUPS[a]}|k{b}|dw{c}|q{d}" for a, b, c, d in zip(kind, k, dw, q)]


def _op_terms(X: np.ndarray) -> np.ndarray:
    """[1, GMACs, MB moved] per op row: the residual is ms per op, per GMAC and per MB of its class."""
    j = _feat_index()
    return np.stack([np.ones(len(X)), np.expm1(X[:, j["log_macs"]]) / 1e9,
                     (np.expm1(X[:, j["log_bytes_read"]]) + np.expm1(X[:, j["log_bytes_written"]])) / 1e6], 1)


def op_residual_ms(X: np.ndarray, opres, *, with_seen: bool = False):
    """Per-op extra ms of a fitted op-class residual ``(class -> row, weights)``; 0 for unseen classes
    (and, with ``with_seen``, the mask of ops whose class the fit saw)."""
    index, W = opres
    X = np.asarray(X, dtype=np.float64)
    anyc = index.get("*", -1)  # a model on whole-graph totals: one row for every op
    rows = np.array([index.get(c, anyc) for c in op_classes(X)], dtype=int)
    seen = rows >= 0
    out = np.zeros(len(X))
    if seen.any():
        out[seen] = (_op_terms(X[seen]) * W[rows[seen]]).sum(1)
    return (out, seen) if with_seen else out


def _class_matrix(mats: list, classes: list[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """(graphs x 3 * classes) summed op terms per class."""
    cls = [op_classes(X) for X in mats]
    if classes is None:
        classes = sorted({c for cs in cls for c in cs})
    index = {c: i for i, c in enumerate(classes)}
    F = np.zeros((len(mats), 3 * len(classes)))
    for g, (X, cs) in enumerate(zip(mats, cls)):
        if not cs:
            continue
        T = _op_terms(np.asarray(X, dtype=np.float64))
        for c, t in zip(cs, T):
            if c in index:  # a class the fit never saw contributes nothing
                F[g, 3 * index[c]:3 * index[c] + 3] += t
    return F, classes


def fit_op_residual(m: LatencyModel, mats: list, y, state: dict, *, margin: float = 0.6,
                    mlp_loo_ms=None, count_margin: float = 0.4, count_max_rel_rmse: float = 0.1,
                    mix_margin: float | None = None, mlp_folds_ms=None, alphas=OPRES_ALPHAS) -> dict | None:
    """Additive per-op-class correction of a few-shot fit, or None when it does not pay.

    The shared MLP carries the cost *ratios* between op kinds that its training devices taught it;
    a device unlike them breaks exactly those (Eyeriss runs a 3x3 average pool as slowly as a 3x3
    conv, where every CPU/GPU finds pools cheap). So the k measured totals, mapped back through the
    state's log offset/scale, are fitted as MLP total + sum over op classes of (ms per op, per GMAC,
    per MB) -- ridge regression on relative error, the ridge strength chosen by closed-form
    leave-one-out error, and kept only when that error is below ``margin`` x the error of no
    correction (with 10 samples any free fit looks good in-sample; leave-one-out does not: on
    measurements that are the MLP's own predictions x 3 % noise, 10 torchvision models, it kept
    a residual in 2 of 30 draws at 0.6, 5 of 30 at 0.8).

    Given ``mlp_loo_ms`` (the adapted MLP's leave-one-out predictions, from k refits, as
    :func:`fit_state` makes them), a plain linear model (``mode: "replace"``: op counts per class,
    or whole-graph op count/GMACs/MB) is kept instead when its leave-one-out error is under
    ``count_margin`` x the best so far and its relative RMSE under ``count_max_rel_rmse``. The
    second bar is there because with 10 noisy measurements (HELP NB201 raspi4: the MLP itself is
    30 % off in leave-one-out) the leave-one-out errors are too noisy to choose by: one draw picked
    a count model that ranked the rest at Spearman 0.22.

    Last, given ``mlp_loo_ms``, a non-negative mixture of the trained devices' own predictors and the
    adapted MLP (``mode: "mix"``, :func:`_mix_fit`: the ``MIX_DEVICES`` trained devices whose
    predictions are closest to the measurements up to a scale, NNLS on relative error) replaces the
    choice so far when its leave-one-out error (device choice redone per fold, the MLP column from
    ``mlp_folds_ms``, the k refits) is under ``mix_margin`` (``MIX_MARGIN``) x that choice's; the
    replaced choice is kept under ``instead_of``. It is approach 1 without measuring a proxy: the new
    device is read as a blend of devices the MLP knows. Measured (benchmark model, 3 draws of 10):
    HELP FBNet fpga 0.78 -> 0.85, NB201 unchanged; held-out phones/boards jetson-nano 0.56 -> 0.71.
    At a margin of 1.0 it also replaced the MLP on NB201 raspi4 and lost 0.03 there.

    Measured in ``benchmarks/predictors.py`` (benchmark model, 10 samples, 3 draws): HELP NB201
    Spearman eyeriss 0.59 -> 0.99 (the count model), fpga 0.974 -> 0.999, titan_rtx 0.96 -> 1.00;
    FBNet fpga 0.51 -> 0.92, eyeriss 0.68 -> 0.89 (whole-graph totals; 0.70/0.68 when the
    count model was judged against the MLP's in-sample error); declined on pixel2/raspi4
    and on most leave-one-device-out phones."""
    y = np.asarray(y, dtype=np.float64)
    if len(y) < 4:
        return None
    base = {k: v for k, v in state.items() if k not in ("opres", "a", "b")}
    base.update(a=0.0, b=1.0)
    raw = predict_matrices(mats, base, m)
    t_raw = np.exp((np.log(y) - state.get("a", 0.0)) / state.get("b", 1.0))
    F, classes = _class_matrix(mats)
    if not np.any(F):
        return None
    t = (t_raw - raw) / t_raw
    none_err = float(np.mean(t ** 2))
    err, alpha, coef = _ridge_loo(F / t_raw[:, None], t, alphas)
    kept = alpha is not None and err < margin * none_err
    out = None
    if kept:
        out = {"mode": "add", "classes": classes, "w": coef.reshape(-1, 3).round(9).tolist(), "alpha": alpha,
               "loo_rel_rmse": round(math.sqrt(err), 5), "none_rel_rmse": round(math.sqrt(none_err), 5)}
    if mlp_loo_ms is None:
        return out
    # a linear model alone, for devices whose latency is a plain sum: ms per op of each class
    # (a simulated accelerator: HELP's NB201 Eyeriss) or ms per op, per GMAC and per MB of the
    # whole graph (FBNet on FPGA/Eyeriss), each + ms per graph. Compared with honest errors: the
    # MLP's from its k refits; the residual's scaled by how much leave-one-out inflates the MLP's
    # in-sample error (the residual is fitted on top of the MLP fitted to all k)
    mlp_err = float(np.mean(((y - np.asarray(mlp_loo_ms, dtype=np.float64)) / y) ** 2))
    ref = min(mlp_err, err * mlp_err / none_err) if kept and none_err > 0 else mlp_err
    best = ref  # the honest error of the best candidate so far
    if out is not None:
        out["expected_rel_rmse"] = round(math.sqrt(ref), 5)
    n_cls = len(classes)
    for name, C in (("counts", F[:, 0::3]), ("totals", F.reshape(len(F), n_cls, 3).sum(1))):
        y_err, lin = _linear_model(np.c_[C, np.ones(len(F))], y, alphas)
        if lin is None or not (y_err < count_margin * ref and y_err < count_max_rel_rmse ** 2):
            continue
        ref = y_err / count_margin  # the next candidate must beat this one outright
        if name == "counts":
            w = np.zeros((n_cls, 3))
            w[:, 0] = lin[:-1]
            cls = classes
        else:
            w, cls = lin[None, :-1], ["*"]
        out = {"mode": "replace", "model": name, "classes": cls, "w": w.round(9).tolist(),
               "overhead_ms": float(lin[-1]), "loo_rel_rmse": round(math.sqrt(y_err), 5),
               "none_rel_rmse": round(math.sqrt(none_err), 5), "mlp_loo_rel_rmse": round(math.sqrt(mlp_err), 5),
               "expected_rel_rmse": round(math.sqrt(y_err), 5)}
        best = y_err
    mix_margin = MIX_MARGIN if mix_margin is None else mix_margin
    if mix_margin > 0:
        # a non-negative mixture of the adapted MLP and of trained devices' own predictors: the new
        # device may share the latency structure of a few devices the MLP was trained on, which the
        # embedding fit, started from datasheet features, does not find with 10 samples
        T = device_totals(m, mats, trained_vectors(m))
        own = own_folds = None
        if mlp_folds_ms is not None and np.all(np.isfinite(mlp_folds_ms)):  # raw totals can overflow
            own, own_folds = mlp_folds_ms[0], mlp_folds_ms[1:]
        mix_err = float(np.mean((_mix_loo(T, y, own_folds=own_folds) / y - 1) ** 2))
        cols, w, c, w0 = _mix_fit(T, y, own=own)
        # NNLS leaves round-off weights on columns it does not use: drop parts under 1e-6 of the total
        share = np.r_[0.0 if own is None else w0 * own.max(), w * T[:, cols].max(0)] / y.min()
        w0, keep = (w0 if share[0] > 1e-6 else 0.0), share[1:] > 1e-6
        if mix_err < mix_margin * best and (keep.any() or w0 > 0 or c > 0):
            out = {"mode": "mix", "own_w": w0, "devices": [m.devices[j] for j in cols[keep]],
                   "w": w[keep].tolist(), "overhead_ms": c,
                   "loo_rel_rmse": round(math.sqrt(mix_err), 5), "none_rel_rmse": round(math.sqrt(none_err), 5),
                   "mlp_loo_rel_rmse": round(math.sqrt(mlp_err), 5), "expected_rel_rmse": round(math.sqrt(mix_err), 5),
                   "instead_of": out}  # what would be used without the mixture (None: the adapted MLP)
    return out


def _linear_model(C: np.ndarray, y: np.ndarray, alphas) -> tuple[float, np.ndarray | None]:
    """Ridge fit of ``y`` (ms) on the columns of ``C`` (relative error, strength by leave-one-out):
    (leave-one-out mean squared relative error, coefficients) or (inf, None)."""
    err, _, coef = _ridge_loo(C / y[:, None], np.ones(len(y)), alphas)
    return err, coef


def _ridge_loo(A: np.ndarray, t: np.ndarray, alphas, *, h0: float = 0.0):
    """Ridge regression of ``t`` on the columns of ``A`` (scaled to unit RMS; all-zero columns get 0),
    its strength chosen among ``alphas`` by closed-form leave-one-out error (``h0``: leverage every
    row has besides ``A``'s, 1/n for a centred intercept). Returns (leave-one-out mean squared error,
    alpha, coefficients on ``A``'s columns), or (inf, None, None) when ``A`` has no non-zero column."""
    sc = np.sqrt((A ** 2).mean(0))
    keep = sc > 1e-12
    if not keep.any():
        return np.inf, None, None
    As = A[:, keep] / sc[keep]
    U, s, Vt = np.linalg.svd(As, full_matrices=False)
    best_err, best_alpha, best_w = np.inf, None, None
    for a in alphas:
        w = Vt.T @ ((s / (s ** 2 + a)) * (U.T @ t))
        h = (U ** 2 * (s ** 2 / (s ** 2 + a))).sum(1) + h0
        err = float(np.mean(((t - As @ w) / np.maximum(1 - h, 1e-6)) ** 2))
        if err < best_err:
            best_err, best_alpha, best_w = err, a, w
    coef = np.zeros(A.shape[1])
    coef[keep] = best_w / sc[keep]
    return best_err, best_alpha, coef


# ---------------------------------------------------------------------- trained-device mixture
def distinct_ops(mats: list) -> tuple[np.ndarray, np.ndarray]:
    """(distinct op rows of ``mats``, graphs x distinct-rows count matrix): models of one space repeat
    the same ops (NB201: ~2,300 op rows in 10 cells, far fewer distinct ones), so the MLP runs on
    distinct rows and the count matrix sums them per graph."""
    Xu, inv = np.unique(np.concatenate(mats), axis=0, return_inverse=True)
    C = np.zeros((len(mats), len(Xu)))
    np.add.at(C, (np.repeat(np.arange(len(mats)), [len(x) for x in mats]), inv.ravel()), 1.0)
    return Xu, C


def device_totals(m: LatencyModel, mats: list, Z: np.ndarray) -> np.ndarray:
    """(graphs x devices) predicted totals in ms of the op matrices ``mats`` under each device vector
    of ``Z`` (MLP + per-graph overhead, no corrections)."""
    Xu, C = distinct_ops(mats)
    out = np.empty((len(mats), len(Z)))
    for j, z in enumerate(Z):
        out[:, j] = C @ np.exp(m.op_log_latency(Xu, z)) + math.exp(m.overhead_log(z))
    return out


def _mix_fit(T: np.ndarray, y: np.ndarray, n_devices: int = MIX_DEVICES, own: np.ndarray | None = None):
    """Non-negative mixture of trained devices' predictions: the ``n_devices`` columns of ``T``
    (graphs x devices, ms) closest to ``y`` up to a scale (variance of the log ratio), plus ``own``
    (the adapted MLP's raw totals) when given, then ``y ~ own w0 + T_sel w + c`` with all weights
    >= 0, on relative error (NNLS). Returns (columns, w, c, w0)."""
    from scipy.optimize import nnls

    score = (np.log(y)[:, None] - np.log(np.maximum(T, 1e-12))).var(0)
    cols = np.sort(np.argsort(score, kind="stable")[:n_devices])
    A = np.hstack(([] if own is None else [own[:, None]]) + [T[:, cols], np.ones((len(y), 1))]) / y[:, None]
    sc = np.median(A, 0)  # unit columns: a few-shot embedding's raw totals can be 1e17 ms (its offset rescales them)
    w, _ = nnls(A / sc, np.ones(len(y)))
    w = w / sc
    w0, w = (0.0, w) if own is None else (float(w[0]), w[1:])
    return cols, w[:-1], float(w[-1]), w0


def _mix_loo(T: np.ndarray, y: np.ndarray, n_devices: int = MIX_DEVICES, own_folds: np.ndarray | None = None):
    """Leave-one-out predictions of :func:`_mix_fit`; the device choice is redone in every fold and,
    given ``own_folds`` (k x k: row i = the totals of the adapted MLP fitted without measurement i),
    the adapted MLP's column is that fold's."""
    out = np.empty(len(y))
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        own = None if own_folds is None else own_folds[i]
        cols, w, c, w0 = _mix_fit(T[keep], y[keep], n_devices, None if own is None else own[keep])
        out[i] = T[i, cols] @ w + c + (0.0 if own is None else w0 * own[i])
    return out


def opres_state(res: dict) -> tuple[dict, np.ndarray]:
    """The ``state["opres"]`` form ``(class -> row, weights)`` of a :func:`fit_op_residual` dict."""
    return {k: i for i, k in enumerate(res["classes"])}, np.asarray(res["w"], dtype=np.float64)


# ---------------------------------------------------------------------- few-shot adaptation
def _graph_of(model_ref):
    """Graph of a CSV ``model`` cell: a zoo spec or an ONNX path."""
    from edgepass import zoo
    from edgepass.errors import InputError

    text = str(model_ref).strip()
    if text.endswith(".onnx") or Path(text).is_file():
        from edgepass.api import analyze

        if not Path(text).is_file():
            raise InputError(f"ONNX file not found: {text}")
        return analyze(text)
    from edgepass.dataset import features

    try:
        f = features(text)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"cannot build model {text!r}: {exc}") from None
    return f


def model_matrix(model_ref, precision: str | None = None) -> np.ndarray:
    """Op feature matrix of a zoo spec (via the cached dataset features), ONNX path or IR graph."""
    from edgepass.ir import Graph

    from .features import row_features

    if isinstance(model_ref, Graph):
        return graph_matrix(model_ref, precision)[0]
    g = _graph_of(model_ref)
    if isinstance(g, dict):
        return np.stack([row_features(r, precision) for r in g["ops"]])
    return graph_matrix(g, precision)[0]


def trained_vectors(m: LatencyModel) -> np.ndarray:
    """Device vector ``z = [normalised datasheet, embedding P d + R]`` of every trained device, one
    row per ``m.devices`` entry (cached on the model)."""
    if getattr(m, "_Z", None) is None:
        from edgepass.devices import get_device

        rows = []
        for i, d in enumerate(m.devices):
            try:
                raw = device_raw_vector(get_device(d))
            except Exception:  # noqa: BLE001 -- a device dropped from the database since training
                raw = m.a["dev_mu"]
            rows.append(m.z_from(raw, m.a["R"][i]))
        m._Z = np.asarray(rows)
    return m._Z


def _trained_embeddings(m: LatencyModel) -> np.ndarray:
    """Embedding ``e = P d + R`` of every trained device."""
    return trained_vectors(m)[:, len(m.a["dev_mu"]):]


def init_residual(m: LatencyModel, mats: list, y: np.ndarray, raw: np.ndarray, fit_scale: bool = True):
    """Start of the few-shot fit: the residual that gives the new device the embedding of the trained
    device whose predictions, after a log-linear map, fit the k measurements best (or zero: the
    device's own features). Gradient descent from zero stays near the feature-only guess; devices
    unlike any datasheet (Eyeriss) need a far-away embedding, and some trained device is usually
    close. Returns (residual, name of the device it came from or None)."""
    dn = (raw - m.a["dev_mu"]) / m.a["dev_sd"]
    base = dn @ m.a["P"]
    cands = np.vstack([base[None], _trained_embeddings(m)])
    X = np.concatenate(mats)
    idx = np.repeat(np.arange(len(mats)), [len(x) for x in mats])
    ly = np.log(y)
    best, best_sse = 0, np.inf
    for j, e in enumerate(cands):
        z = np.concatenate([dn, e])
        tot = np.bincount(idx, weights=np.exp(m.op_log_latency(X, z)), minlength=len(mats))
        lp = np.log(tot + math.exp(m.overhead_log(z)))
        if fit_scale and np.ptp(lp) > 1e-9:
            b, a0 = np.polyfit(lp, ly, 1)
            b = min(max(b, 0.5), 1.5)
        else:
            b = 1.0
        a0 = float(np.mean(ly - b * lp))
        sse = float(((a0 + b * lp - ly) ** 2).sum()) * (1.0 if j == 0 else 1.1)  # mild preference for own features
        if sse < best_sse:
            best, best_sse = j, sse
    r = cands[best] - base
    return r, (None if best == 0 else m.devices[best - 1])


def _fit_embeddings(m: LatencyModel, mats: list, y: np.ndarray, raw: np.ndarray, masks: np.ndarray, r0: np.ndarray,
                    *, steps: int, ridge: float, fit_scale: bool):
    """Few-shot fits of the device residual r, a log offset and a log scale, one per row of
    ``masks`` (folds x k: which measurements each fit sees), all in one batched optimisation.
    Adam is element-wise and each fold's parameters only enter its own loss, so the folds are
    exactly independent fits; batching makes k leave-one-out refits cost ~3 fits, not k.
    Returns (residuals F x E, offsets F, log scales F, log of each fold's predicted totals F x k,
    the same before the offset and scale)."""
    import torch

    a = m.a
    F, k = masks.shape
    dn = torch.tensor((raw - a["dev_mu"]) / a["dev_sd"])
    Xu, counts = distinct_ops(mats)
    X = torch.tensor((Xu - a["op_mu"]) / a["op_sd"])
    counts_t = torch.tensor(counts)
    Ws = [torch.tensor(a[f"W{i}"]) for i in range(m.n_layers)]
    bs = [torch.tensor(a[f"b{i}"]) for i in range(m.n_layers)]
    P, ovw, ovb = torch.tensor(a["P"]), torch.tensor(a["ov_w"]), torch.tensor(a["ov_b"])
    ly = torch.tensor(np.log(y))
    w = torch.tensor(masks, dtype=torch.float64)
    n_fit = w.sum(1).clamp(min=1)
    r0t = torch.tensor(np.tile(r0, (F, 1)))
    r = r0t.clone().requires_grad_(True)
    off = torch.zeros(F, dtype=torch.float64, requires_grad=True)
    lsc = torch.zeros(F, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([r, off] + ([lsc] if fit_scale else []), lr=0.05)
    nx = X.shape[1]
    xw = X @ Ws[0][:nx]                                       # the op part of layer 0, shared by all folds
    zd = (dn @ Ws[0][nx:nx + len(dn)])[None]

    def log_totals():
        e = dn @ P + r                                        # F x E
        h = torch.relu(xw[None] + (zd + e @ Ws[0][nx + len(dn):] + bs[0])[:, None, :])
        for i in range(1, m.n_layers):
            h = h @ Ws[i] + bs[i]
            if i < m.n_layers - 1:
                h = torch.relu(h)
        tot = torch.exp(h[..., 0]) @ counts_t.T                # F x k
        z_ov = torch.cat([dn.expand(F, -1), e], 1)
        return torch.log(tot + torch.exp(z_ov @ ovw + ovb[0])[:, None])

    for _ in range(steps):
        opt.zero_grad()
        pred = off[:, None] + (1 + lsc[:, None]) * log_totals()
        fold_loss = (w * (pred - ly) ** 2).sum(1) / n_fit + ridge / n_fit * ((r - r0t) ** 2).sum(1) * 0.1 \
            + 0.05 * lsc ** 2
        fold_loss.sum().backward()
        opt.step()
    with torch.no_grad():
        lraw = log_totals()
        pred = off[:, None] + (1 + lsc[:, None]) * lraw
    return r.detach().numpy(), off.detach().numpy(), 1 + lsc.detach().numpy(), pred.numpy(), lraw.numpy()


def fit_state(m: LatencyModel, mats: list, y: np.ndarray, raw: np.ndarray, *, steps: int = 200,
              ridge: float = 1.0, fit_scale: bool = True, nearest_init: bool = False,
              op_residual: bool = True) -> dict:
    """Fit the device residual r (embedding), a log offset and (optionally) a log scale to k
    measured totals ``y`` (ms) of the op matrices ``mats``, starting from zero or, with
    ``nearest_init``, from :func:`init_residual`; then, with ``op_residual``, the op-class residual
    or linear model of :func:`fit_op_residual` when leave-one-out error says it helps (the adapted
    MLP's own leave-one-out error comes from k refits, batched with the main fit). Returns the fit dict.

    ``nearest_init`` is off by default because it did not help when measured (benchmark model, HELP
    NB201 10-shot, 2 draws: eyeriss 0.590/0.586 -> same, pixel2 0.903/0.903 -> 0.869/0.905, raspi4
    0.897/0.869 -> 0.896/0.754; FBNet fpga 0.519/0.509 -> 0.578/0.510): choosing among ~200
    embeddings with 10 samples overfits about as often as it helps."""
    y = np.asarray(y, dtype=np.float64)
    E = m.a["R"].shape[1]
    r0, init_dev = (init_residual(m, mats, y, raw, fit_scale) if nearest_init else (np.zeros(E), None))
    k = len(mats)
    masks = np.ones((1, k), bool)
    loo = op_residual and k >= 4
    if loo:  # fold 0: all k; fold i: all but measurement i-1
        masks = np.vstack([masks, ~np.eye(k, dtype=bool)])
    rs, offs, scales, lpred, lraw = _fit_embeddings(m, mats, y, raw, masks, r0, steps=steps, ridge=ridge,
                                                    fit_scale=fit_scale)
    rmse = float(np.sqrt(np.mean((lpred[0] - np.log(y)) ** 2)))
    fit = {"model": m.version, "residual": [float(v) for v in rs[0]],
           "log_offset": float(offs[0]), "log_scale": float(scales[0]), "k": int(k),
           "init_from": init_dev, "fit_rmse_log": round(rmse, 5)}
    if loo:
        mlp_loo = np.exp(lpred[1:][np.arange(k), np.arange(k)])
        res = fit_op_residual(m, mats, y, m.state_from_fit(raw, fit), mlp_loo_ms=mlp_loo,
                              mlp_folds_ms=np.exp(lraw))
        fit["mlp_loo_rel_rmse"] = round(float(np.sqrt(np.mean(((y - mlp_loo) / y) ** 2))), 5)
        if res is not None:
            fit["op_residual"] = res
            p = predict_matrices(mats, m.state_from_fit(raw, fit), m)
            fit["fit_rmse_log"] = round(float(np.sqrt(np.mean((np.log(p) - np.log(y)) ** 2))), 5)
        # what a user can expect on models like the measured ones: the honest leave-one-out error of
        # the predictor kept (fit_op_residual's estimate when it kept a residual or linear model)
        fit["loo_rel_rmse"] = res["expected_rel_rmse"] if res is not None else fit["mlp_loo_rel_rmse"]
    return fit


def fit_quality(fit: dict) -> str:
    """What a few-shot fit promises on unmeasured models, and how well it fits the measured ones, in
    words (CLI line and device notes)."""
    loo = (f"leave-one-out error {100 * fit['loo_rel_rmse']:.1f} % RMS" if "loo_rel_rmse" in fit
           else "fewer than 4 models: no leave-one-out estimate")
    return f"{loo}; log-RMSE on the measured models {fit['fit_rmse_log']}"


def read_measurements(path: str | Path) -> list[tuple[str, float]]:
    """CSV with columns ``model,latency_ms`` -> [(model, ms)]."""
    import csv

    from edgepass.errors import InputError

    p = Path(path)
    try:
        with open(p, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise InputError(f"cannot read {p}: {exc.strerror or exc}") from None
    except (csv.Error, UnicodeDecodeError) as exc:  # a 1 MB field, NUL bytes, not UTF-8
        raise InputError(f"{p}: not a readable CSV ({type(exc).__name__}: {exc})") from None
    if not rows or not {"model", "latency_ms"} <= set(rows[0]):
        raise InputError(f"{p}: expected a CSV with columns model,latency_ms")
    out = []
    for i, r in enumerate(rows, 2):
        try:
            v = float(r["latency_ms"])
        except (TypeError, ValueError):
            raise InputError(f"{p}:{i}: latency_ms {r['latency_ms']!r} is not a number") from None
        if not v > 0:
            raise InputError(f"{p}:{i}: latency_ms must be > 0")
        if not isinstance(r["model"], str) or not r["model"].strip():
            raise InputError(f"{p}:{i}: the model column is empty")
        out.append((r["model"].strip(), v))
    return out


def fit_device(pairs, *, name: str = "fitted-device", base=None, device_id: str | None = None,
               model: LatencyModel | None = None, precision: str | None = None):
    """Few-shot adaptation: ``pairs`` = [(model, latency_ms)] measured on a new device (model: zoo
    spec, ONNX path or IR Graph), or a CSV path with columns ``model,latency_ms``. ``base``: a Device
    (or id/path) whose datasheet/kind/runtime describe the new device, if known. Returns a Device whose
    ``provenance["latency_fit"]`` holds the fitted embedding residual and log-space correction."""
    from edgepass.devices.schema import Device
    from edgepass.errors import InputError

    if isinstance(pairs, (str, Path)):
        pairs = read_measurements(pairs)
    pairs = list(pairs)
    if len(pairs) < 2:
        raise InputError("fit_device needs at least 2 measured models")
    m = model or load_model()
    if precision is None and base is not None:
        precision = device_precision(_resolve_device(base))
    mats = [model_matrix(ref, precision) for ref, _ in pairs]
    y = np.asarray([float(v) for _, v in pairs])
    if base is not None:
        bdev = _resolve_device(base)
        data = bdev.to_dict()
    else:
        data = {"schema": "edgepass.device/1", "kind": "cpu", "runtime": "unknown", "precisions": ["fp32"],
                "notes": ""}
    slug = "".join(c if c.isalnum() or c in "._-" else "-" for c in name.lower()).strip("-") or "device"
    data.update(id=device_id or f"user/{slug}", name=name, signature=data.get("signature", {}),
                aliases=[], n_measurements=len(pairs), measurements={})
    raw = device_raw_vector(Device.from_dict({**data, "provenance": {"source": "user", "licence": "user",
                                                                      "kind": "measured"}}))
    fit = fit_state(m, mats, y, raw, fit_scale=len(pairs) >= 5)
    fit["models"] = [str(ref) if not hasattr(ref, "graph") else "graph" for ref, _ in pairs]
    data["provenance"] = {"source": "edgepass device fit", "licence": "user", "kind": "measured",
                          FIT_KEY: fit}
    data["notes"] = (data.get("notes") or "") + (f" Latency predictor adapted from {len(pairs)} measured models "
                                                 f"(edgepass device fit; {fit_quality(fit)}).")
    data["notes"] = data["notes"].strip()
    return Device.from_dict(data, origin="fitted device")


def calibrate_on_designs(device, graphs: list, measured_ms, *, model: LatencyModel | None = None):
    """The device with the predictor calibrated on a few designs of *one* model measured on it:
    latency = fp32 gain x (non-int8 ops + per-graph overhead) + int8 gain x (int8 ops) + extra ms,
    gains and extra >= 0 fitted on relative error (non-negative least squares). Approach 1 on the
    user's own model: the predictor's ranking of designs is kept, its scale per precision is set by
    measurement (on this CPU the shared predictor gets int8 of small models wrong by up to 4x:
    quantize/dequantize boundaries are not ops it sees). Returns ``(Device, info)``."""
    from scipy.optimize import nnls

    from dataclasses import replace

    from .features import graph_matrix

    m = model or load_model()
    dev = _resolve_device(device)
    prov = dict(dev.provenance or {})
    prov.pop(CALIBRATION_KEY, None)
    base = replace(dev, provenance=dict(prov))
    st = m.device_state(base)
    dprec = device_precision(base)
    q = _feat_index()["prec_int8"]
    rows = []
    for g in graphs:
        X = graph_matrix(g, dprec)[0]
        per = m.op_latency(X, st)
        int8 = X[:, q] > 0 if len(X) else np.zeros(0, bool)
        rows.append([per[~int8].sum() + m.overhead_ms(st), per[int8].sum(), 1.0])
    A = np.asarray(rows, dtype=np.float64)
    y = np.asarray(measured_ms, dtype=np.float64)
    has_int8 = A[:, 1].sum() > 0
    cols = [0, 1, 2] if has_int8 else [0, 2]
    w, _ = nnls(A[:, cols] / y[:, None], np.ones(len(y)))
    coef = np.zeros(3)
    coef[cols] = w
    if not has_int8:
        coef[1] = coef[0]
    if coef[0] <= 0:   # degenerate fit (e.g. one design): a plain scale
        coef = np.array([1.0, 1.0, 0.0]) * float(np.median(y / (A[:, 0] + A[:, 1])))
    pred = A @ coef
    info = {"model": m.version, "fp": float(coef[0]), "int8": float(coef[1]), "extra_ms": float(coef[2]),
            "designs": int(len(y)), "max_rel_error": float(np.max(np.abs(pred / y - 1)))}
    prov[CALIBRATION_KEY] = info
    return replace(dev, provenance=prov), info


def artifact_sha() -> str:
    """Identifies the latency artifact in use (cache keys): ``$EDGEPASS_LATENCY_MODEL``'s when set."""
    candidate = os.environ.get(LATENCY_MODEL_ENV)
    if candidate:
        load_model()   # a one-line error for a missing or malformed candidate
        try:
            data = Path(candidate).read_bytes()
        except OSError as exc:
            raise InputError(f"{LATENCY_MODEL_ENV}={candidate}: cannot read ({exc.strerror or exc})") from None
    else:
        data = resources.files("edgepass").joinpath(*ARTIFACT).read_bytes()
    return hashlib.sha256(data).hexdigest()[:12]


__all__ = ["check_latencies", "calibrate_on_designs", "fit_correction", "fit_op_net", "fit_op_residual", "correction_basis", "LatencyModel", "LatencyTable", "load_model", "predict", "predict_latency", "predict_many",
           "fit_device", "fit_quality", "fit_source", "fit_state", "read_measurements", "model_matrix", "device_raw_vector"]
