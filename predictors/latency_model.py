"""The latency predictor's model: artifact, device vectors and numpy inference.

What the model is and why: :mod:`edgepass.predictors.latency` (the public facade). This module reads
and checks the artifact (``edgepass/data/predictors/latency.npz``, or ``$EDGEPASS_LATENCY_MODEL``),
turns a Device into its vector, and runs the MLP in numpy float64 (no torch) with the per-device
corrections and few-shot fits a device carries: per op (:meth:`LatencyModel.op_latency`) and summed
over op matrices (:func:`predict_matrices`). Predictions of graphs and designs on a device:
:mod:`edgepass.predictors.latency_predict`.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import zipfile
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from edgepass.devices import get_device
from edgepass.errors import DeviceError, InputError

from .features import N_OP, OP_FEATURE_INDEX
from .latency_ops import N_CORR_OP, OPNET_ARRAYS, correction_basis, op_residual_ms, opnet_log_gain, opres_state

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
        dev = get_device(device)
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
            per = per * np.where(np.asarray(X)[:, OP_FEATURE_INDEX["prec_int8"]] > 0, gain[1], gain[0])
        return per

    def basis_ms(self, X: np.ndarray, z: np.ndarray) -> np.ndarray:
        """MLP ms per op as the correction uses it: int8 ops get the MLP's ms of their fp32 twin
        (same op, fp32 flag), because on a corrected device int8 is fitted as a multiple of fp32
        (+ per-MAC, per-byte and per-op terms) -- the shared MLP learned int8 from phones and NPUs
        and was 35x off for small int8 convs on this CPU."""
        X = np.asarray(X, dtype=np.float64)
        j = OP_FEATURE_INDEX
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
def load_cached(path: str | None) -> LatencyModel:
    """:meth:`LatencyModel.load`, cached per path (None: the shipped artifact or
    ``$EDGEPASS_LATENCY_MODEL``); ``load_cached.cache_clear()`` forgets the loaded models."""
    return LatencyModel.load(path)


def load_model(path: str | Path | None = None) -> LatencyModel:
    """The shipped latency model (cached after the first call)."""
    return load_cached(str(path) if path is not None else None)


# ---------------------------------------------------------------------- checks and matrix predictions
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


def predict_matrices(mats: list, state: dict, m: LatencyModel) -> np.ndarray:
    if not mats:
        return np.zeros(0)
    X = np.concatenate(mats)
    per = m.op_latency(X, state)
    idx = np.repeat(np.arange(len(mats)), [len(x) for x in mats])
    tot = np.bincount(idx, weights=per, minlength=len(mats)) + m.overhead_ms(state)
    return np.asarray(m.correct(tot, state), dtype=np.float64)


def trained_vectors(m: LatencyModel) -> np.ndarray:
    """Device vector ``z = [normalised datasheet, embedding P d + R]`` of every trained device, one
    row per ``m.devices`` entry (cached on the model)."""
    if getattr(m, "_Z", None) is None:
        rows = []
        for i, d in enumerate(m.devices):
            try:
                raw = device_raw_vector(get_device(d))
            except Exception:  # noqa: BLE001 -- a device dropped from the database since training
                raw = m.a["dev_mu"]
            rows.append(m.z_from(raw, m.a["R"][i]))
        m._Z = np.asarray(rows)
    return m._Z


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


__all__ = ["ARTIFACT", "FORMAT", "SIGNATURE_KEYS", "FIT_KEY", "LATENCY_MODEL_ENV", "CALIBRATION_KEY",
           "DEVICE_CORRECTIONS", "device_raw_vector", "device_precision", "fit_source", "LatencyModel", "load_cached",
           "load_model", "check_latencies", "predict_matrices", "trained_vectors", "artifact_sha"]
