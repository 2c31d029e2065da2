"""Accuracy (or fidelity) of designs of the user's model, from a knob-sensitivity sweep.

    from edgepass.predictors.accuracy import AccuracyPredictor
    ap = AccuracyPredictor(model, x_calib, y_calib)          # labels -> accuracy; none -> fidelity
    ap.fit()                                                 # sweep + correction (seconds for small CNNs)
    ap.predict(design) -> float;  ap.predict_codes(space.encode(d)[None]) -> ndarray
    ap.evaluate(design) -> float                             # the measured value (what the sweep uses)
    ap.info                                                  # metric, data-free flag, sweep size, timings

How
    1. *Sensitivity*: starting from the identity design, one knob at a time is moved to each of its
       choices -- a channel group narrowed to each offered width, a conv's kernel to each smaller
       choice, a layer to int8 / fp16 -- the design is realised with the rewrite passes (width,
       kernel, batch-norm recalibration on the given data when ``recalibrate``, precision with the
       FX *fake-quant* mode for PyTorch models: int8 numerics without convert) and the metric is
       measured on the data. ``delta[knob][choice] = metric(one-knob design) - metric(identity)``.
    2. *Additive estimate*: ``metric(identity) + sum_knobs delta[knob][choice]``, also split into
       the width, kernel and precision parts ``Dw, Dk, Dp``.
    3. *Correction*: ``n_fit`` sampled full designs are measured and a small model maps the additive
       parts to the measured metric; the one with the lowest leave-one-out error among
       "none" (additive as is), "isotonic" (monotone map of the additive estimate, ties broken by the
       additive estimate so the ranking stays strict) and "ridge"
       (linear in Dw, Dk, Dp and the product Dw*Dp, small ridge) is kept (``info["correction"]``).

Budget: widths with more than ``max_levels`` choices are swept at ``max_levels`` evenly spaced
choices (always including the narrowest) and interpolated linearly in between; with more than
``max_knobs`` knobs, only that many (the widest groups first, then kernels, then precisions of the
layers with most MACs) are swept and the rest get the mean delta of swept knobs of the same type
at the same choice. Both reductions are reported in ``info``.

Without calibration data the predictor is *data-free*: fidelity (top-1 agreement with the
original model) on ``synthetic_samples`` seeded N(0, 1) inputs of the model's input shape.
``info["data_free"]`` is True and every prediction is of that proxy, not of accuracy.

ONNX models work too (``edgepass.apply`` with the QDQ int8 pass, slower); PyTorch models use the
FX passes directly (traced once).
"""
from __future__ import annotations

import copy
import time
import warnings

import numpy as np

from .stats import spearman

KNOB_TYPES = ("widths", "kernels", "precisions")


class AccuracyPredictor:
    def __init__(self, model, calibration_data=None, labels=None, *, example_inputs=None, space=None,
                 recalibrate: bool = True, max_levels: int = 8, max_knobs: int = 64, n_fit: int = 12,
                 seed: int = 0, synthetic_samples: int = 256, batch_size: int = 512):
        from edgepass.api import is_torch_module

        self.model = model
        self.torch = is_torch_module(model)
        self.recalibrate = recalibrate
        self.max_levels, self.max_knobs, self.n_fit, self.seed = max_levels, max_knobs, n_fit, seed
        self.batch_size = batch_size
        self.data_free = calibration_data is None
        self.example_inputs = example_inputs
        if self.torch:
            import torch

            model.eval()
            if example_inputs is None and calibration_data is not None:
                self.example_inputs = (torch.from_numpy(np.asarray(calibration_data[:1], dtype=np.float32)),)
        self.space = space if space is not None else self._space()
        if self.data_free:
            shape = self._input_shape()
            rng = np.random.default_rng(seed)
            calibration_data = rng.standard_normal((synthetic_samples, *shape[1:])).astype(np.float32)
            labels = None
        self.x = np.asarray(calibration_data, dtype=np.float32)
        self.labels = None if labels is None else np.asarray(labels)
        self.metric = "accuracy" if self.labels is not None else "fidelity"
        self.reference = self._logits(model).argmax(1)
        self.knobs = self.space.knobs()
        self.delta: list[np.ndarray] | None = None
        self.base: float | None = None
        self.correction: dict = {"kind": "none"}
        self.info: dict = {"metric": self.metric, "data_free": self.data_free, "samples": int(len(self.x)),
                           "backend": "fx fake-quant" if self.torch else "onnx (edgepass.apply)"}
        if self.data_free:
            self.info["note"] = (f"data-free: fidelity to the original model on {synthetic_samples} seeded N(0,1) "
                                 f"inputs, not accuracy")

    # -- plumbing ----------------------------------------------------------------------------
    def _space(self):
        from edgepass.space import design_space

        return design_space(self.model, self.example_inputs)

    def _input_shape(self):
        if self.torch:
            if self.example_inputs is None:
                from edgepass.api import example_inputs_for

                self.example_inputs = example_inputs_for(self.model, None)
            return tuple(self.example_inputs[0].shape)
        g = self.space.graph
        return tuple(g.graph["tensors"][g.graph["inputs"][0]])

    def _logits(self, model) -> np.ndarray:
        from edgepass.rewrite import run_model

        outs = [run_model(model, [self.x[i:i + self.batch_size]])[0] for i in range(0, len(self.x), self.batch_size)]
        return np.concatenate(outs).reshape(len(self.x), -1)

    def realise(self, design):
        """The model of ``design`` as this predictor measures it (fake-quant int8 for PyTorch)."""
        design = self.space.validate(design)
        if not self.torch:
            from edgepass.rewrite import apply

            return apply(self.model, design, calibration_data=self.x, recalibrate=self.recalibrate)
        from edgepass.passes.base import Pipeline
        from edgepass.passes.kernel import KernelPassFX
        from edgepass.passes.precision_fx import PrecisionPassFX
        from edgepass.passes.width import WidthPassFX

        ident = self.space.identity()
        gm = copy.deepcopy(self.space.graph.graph["gm"])
        passes = []
        shape = design.widths != ident.widths or design.kernels != ident.kernels
        if shape:
            passes += [WidthPassFX(self.space, design), KernelPassFX(self.space, design)]
            if self.recalibrate:
                from edgepass.passes.recalibrate import RecalibratePassFX

                passes.append(RecalibratePassFX(self.x, self.example_inputs))
        if design.precisions != ident.precisions:
            passes.append(PrecisionPassFX(design.precisions, self.x, mode="fake", example_inputs=self.example_inputs))
        if not passes:
            return gm
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Pipeline(*passes)(gm).model

    def evaluate(self, design) -> float:
        """Measured metric of ``design`` on the predictor's data (accuracy or fidelity, in [0, 1])."""
        pred = self._logits(self.realise(design)).argmax(1)
        target = self.labels if self.labels is not None else self.reference
        return float((pred == target).mean())

    # -- sweep -------------------------------------------------------------------------------
    def _plan(self) -> tuple[list, dict]:
        """Which (knob index, choice index) pairs to measure."""
        order = list(range(len(self.knobs)))
        skipped = []
        if len(order) > self.max_knobs:
            g = self.space.graph
            macs = {op.name: op.macs for op in g.layers()}

            def key(i):
                knob, name, choices = self.knobs[i]
                if knob == "widths":
                    return (0, -self.space.group(name).width)
                return (1 if knob == "kernels" else 2, -macs.get(name, 0))
            order.sort(key=key)
            order, skipped = sorted(order[: self.max_knobs]), sorted(order[self.max_knobs:])
        plan = []
        reduced_levels = 0
        for i in order:
            knob, _, choices = self.knobs[i]
            idx = list(range(1, len(choices)))
            if knob == "widths" and len(idx) > self.max_levels:
                pick = np.unique(np.round(np.linspace(1, len(choices) - 1, self.max_levels)).astype(int))
                reduced_levels += 1
                idx = [int(j) for j in pick]
            plan += [(i, j) for j in idx]
        return plan, {"knobs_swept": len(order), "knobs_skipped": len(skipped), "width_groups_subsampled":
                      reduced_levels, "skipped": skipped}

    def sweep(self) -> "AccuracyPredictor":
        t0 = time.perf_counter()
        ident = self.space.identity()
        self.base = self.evaluate(ident)
        plan, meta = self._plan()
        measured = {}
        for i, j in plan:
            knob, key, choices = self.knobs[i]
            d = copy.deepcopy(ident)
            getattr(d, knob)[key] = choices[j]
            measured[(i, j)] = self.evaluate(d) - self.base
        delta = []
        for i, (knob, key, choices) in enumerate(self.knobs):
            row = np.zeros(len(choices))
            have = sorted(j for (ii, j) in measured if ii == i)
            if have:
                xs = [0] + have
                ys = [0.0] + [measured[(i, j)] for j in have]
                row = np.interp(np.arange(len(choices)), xs, ys)
            delta.append(row)
        for i in meta["skipped"]:           # unswept knobs: mean delta of swept knobs of the same type
            knob, _, choices = self.knobs[i]
            same = [delta[k] for k in range(len(self.knobs)) if self.knobs[k][0] == knob and k not in meta["skipped"]]
            if same:
                for j in range(len(choices)):
                    vals = [r[min(j, len(r) - 1)] for r in same]
                    delta[i][j] = float(np.mean(vals))
        self.delta = delta
        meta.pop("skipped")
        self.info.update(meta, base=self.base, sweep_evaluations=len(plan) + 1,
                         sweep_s=round(time.perf_counter() - t0, 2))
        return self

    # -- additive parts and correction -------------------------------------------------------
    def _parts(self, codes: np.ndarray) -> np.ndarray:
        """``[Dw, Dk, Dp]`` per row of ``codes`` (n x knobs)."""
        codes = np.atleast_2d(np.asarray(codes, dtype=np.int64))
        out = np.zeros((len(codes), 3))
        for i, (knob, _, _) in enumerate(self.knobs):
            out[:, KNOB_TYPES.index(knob)] += self.delta[i][codes[:, i]]
        return out

    @staticmethod
    def _ridge_X(P: np.ndarray) -> np.ndarray:
        return np.column_stack([np.ones(len(P)), P, P[:, 0] * P[:, 2]])

    def _fit_correction(self, P: np.ndarray, y: np.ndarray) -> dict:
        from sklearn.isotonic import IsotonicRegression

        add = self.base + P.sum(1)
        n = len(y)

        def fit(kind, idx):
            if kind == "none":
                return {"kind": "none"}
            if kind == "isotonic":
                iso = IsotonicRegression(out_of_bounds="clip", increasing=True).fit(add[idx], y[idx])
                return {"kind": "isotonic", "xs": iso.X_thresholds_.tolist(), "ys": iso.y_thresholds_.tolist()}
            X = self._ridge_X(P[idx])
            reg = 1e-3 * np.eye(X.shape[1])
            reg[0, 0] = 0
            w = np.linalg.solve(X.T @ X + reg, X.T @ y[idx])
            return {"kind": "ridge", "w": w.tolist()}

        errs = {}
        for kind in ("none", "isotonic", "ridge"):
            if kind == "ridge" and n < 6:
                continue
            e = []
            for i in range(n):
                idx = np.arange(n) != i
                e.append(abs(self._apply_corr(fit(kind, idx), P[i:i + 1])[0] - y[i]))
            errs[kind] = float(np.mean(e))
        best = min(errs, key=lambda k: (errs[k], ("none", "isotonic", "ridge").index(k)))
        corr = fit(best, np.arange(n))
        corr["loo_mae"] = errs
        return corr

    def _apply_corr(self, corr: dict, P: np.ndarray) -> np.ndarray:
        add = self.base + P.sum(1)
        if corr["kind"] == "isotonic" and len(corr["xs"]) >= 1:
            out = np.interp(add, corr["xs"], corr["ys"]) + 1e-3 * add   # tie-break: keep the additive order
        elif corr["kind"] == "ridge":
            out = self._ridge_X(P) @ np.asarray(corr["w"])
        else:
            out = add
        return np.clip(out, 0.0, 1.0)

    def fit(self, n_fit: int | None = None) -> "AccuracyPredictor":
        """Sensitivity sweep (if not done) plus the correction on ``n_fit`` sampled full designs."""
        if self.delta is None:
            self.sweep()
        n = self.n_fit if n_fit is None else n_fit
        t0 = time.perf_counter()
        if n >= 3:
            rng = np.random.default_rng(self.seed + 1)
            designs = [self.space.sample(rng) for _ in range(n)]
            codes = np.stack([self.space.encode(d) for d in designs])
            y = np.array([self.evaluate(d) for d in designs])
            self.correction = self._fit_correction(self._parts(codes), y)
        self.info.update(correction=self.correction["kind"], correction_loo_mae=self.correction.get("loo_mae"),
                         fit_designs=n, fit_s=round(time.perf_counter() - t0, 2))
        return self

    # -- prediction --------------------------------------------------------------------------
    def predict_codes(self, codes) -> np.ndarray:
        """Predicted metric for designs encoded with ``space.encode`` (n x knobs), vectorised."""
        if self.delta is None:
            self.fit()
        return self._apply_corr(self.correction, self._parts(codes))

    def predict(self, design) -> float:
        return float(self.predict_codes(self.space.encode(design)[None])[0])

    def additive(self, design) -> float:
        """The uncorrected additive estimate."""
        if self.delta is None:
            self.sweep()
        return float(np.clip(self.base + self._parts(self.space.encode(design)[None]).sum(), 0, 1))

    def score(self, designs, truth) -> dict:
        """Spearman of predictions (and of the additive estimate) against measured ``truth``."""
        codes = np.stack([self.space.encode(d) for d in designs])
        pred = self.predict_codes(codes)
        add = np.clip(self.base + self._parts(codes).sum(1), 0, 1)
        truth = np.asarray(truth, dtype=np.float64)
        return {"spearman": spearman(pred, truth), "spearman_additive": spearman(add, truth),
                "mae": float(np.mean(np.abs(pred - truth))), "n": len(truth)}


__all__ = ["AccuracyPredictor"]
