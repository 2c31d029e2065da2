"""A data-free, weight-based score of a model's designs: the share of weight energy a design keeps.

Used when no accuracy predictor is given (and ``edgepass.predictors.accuracy`` offers no data-free
function): it needs no data and no forward pass, only the model's weights, and it is what the
rewrite passes actually remove.

Per knob, the share ``s`` of weight energy (sum of squares) a choice loses:

* width ``w`` of a channel group of width ``W``: the passes keep the ``w`` channels with the largest
  weight norm, so ``s`` = energy of the dropped output filters of the group's producing layers;
* kernel ``k``: energy of the producing conv's weights outside the centred ``k x k`` crop;
* precision: relative energy of the weight rounding error (per-output-channel symmetric int8,
  IEEE fp16).

A design's score is the geometric mean of ``1 - s`` over its knobs (1.0 = the original model; the
mean rather than the product so that the score of a half-width model stays in a readable range,
about 0.8 for resnet18, instead of vanishing): monotone in every knob and log-additive, so the
optimizers' repair and the amortized labels see a real trade-off.
It is a proxy of fidelity, not accuracy: pass ``accuracy_fn`` (e.g. an ``AccuracyPredictor``
fitted on calibration data) for accuracy.
"""
from __future__ import annotations

import numpy as np


def _weights(space) -> dict:
    """{const name: ndarray} of the model's weights (FX graph modules); {} when unavailable."""
    gm = space.graph.graph.get("gm")
    if gm is None:
        return {}
    try:
        return {k: v.detach().cpu().numpy() for k, v in gm.state_dict().items()}
    except Exception:  # noqa: BLE001 - a backend without a state dict: fall back to uniform importance
        return {}


def _weight_of(space, weights, op_name):
    op = space.graph.op(op_name)
    c = op.const("weight") if op is not None else None
    return None if c is None else weights.get(c.name)


def _int8_error(w: np.ndarray) -> float:
    flat = w.reshape(w.shape[0], -1).astype(np.float64)
    scale = np.abs(flat).max(1, keepdims=True) / 127.0
    scale[scale == 0] = 1.0
    err = flat - np.round(flat / scale) * scale
    return float((err ** 2).sum() / max((flat ** 2).sum(), 1e-30))


def _fp16_error(w: np.ndarray) -> float:
    flat = w.astype(np.float64)
    err = flat - flat.astype(np.float16).astype(np.float64)
    return float((err ** 2).sum() / max((flat ** 2).sum(), 1e-30))


def knob_losses(space) -> list[np.ndarray]:
    """Per knob (order of ``space.knobs()``): the energy share lost by each choice (0 for the identity)."""
    weights = _weights(space)
    out = []
    for knob, key, choices in space.knobs():
        loss = np.zeros(len(choices))
        if knob == "widths":
            g = space.group(key)
            imp = np.zeros(g.width)
            for op_name, role in g.members:
                w = _weight_of(space, weights, op_name) if role == "out" else None
                if w is not None and w.shape[0] == g.width:
                    imp += (w.reshape(g.width, -1).astype(np.float64) ** 2).sum(1)
            if not imp.any():
                imp[:] = 1.0                                   # no weights: every channel counts the same
            kept = np.cumsum(np.sort(imp)[::-1]) / imp.sum()
            loss = np.array([1.0 - kept[c - 1] for c in choices])
        elif knob == "kernels":
            w = _weight_of(space, weights, key)
            if w is not None and w.ndim == 4:
                total = float((w.astype(np.float64) ** 2).sum()) or 1.0
                k0 = w.shape[-1]
                for i, k in enumerate(choices):
                    a = (k0 - k) // 2
                    inner = float((w[..., a:a + k, a:a + k].astype(np.float64) ** 2).sum())
                    loss[i] = 1.0 - inner / total
            else:
                loss = np.array([1.0 - (k / choices[0]) ** 2 for k in choices])
        else:
            w = _weight_of(space, weights, key)
            for i, p in enumerate(choices):
                if p == "int8":
                    loss[i] = _int8_error(w) if w is not None else 1e-3
                elif p == "fp16":
                    loss[i] = _fp16_error(w) if w is not None else 1e-6
        ident = space.encode(space.identity())[len(out)]
        loss = np.clip(loss - loss[ident], 0.0, 0.999999)        # the original design loses nothing
        out.append(loss)
    return out


def weight_energy_fn(space):
    """codes -> share of weight energy kept (vectorised; see the module doc)."""
    logs = [np.log1p(-loss) for loss in knob_losses(space)]
    flat = np.concatenate(logs) if logs else np.zeros(0)
    offsets = np.concatenate([[0], np.cumsum([len(t) for t in logs])[:-1]]).astype(np.int64)

    def score(codes) -> np.ndarray:
        codes = np.atleast_2d(np.asarray(codes, dtype=np.int64))
        if not logs:
            return np.ones(len(codes))
        return np.exp(flat[codes + offsets].sum(1) / len(logs))      # one gather for the whole batch

    def moves(code, knob, new) -> np.ndarray:
        """score of ``code`` with ``code[knob[m]] = new[m]`` for every move m (the repair's neighbours)."""
        code = np.asarray(code, dtype=np.int64)
        if not logs:
            return np.ones(len(knob))
        at = code + offsets
        total = flat[at].sum()
        return np.exp((total + flat[offsets[knob] + new] - flat[at[knob]]) / len(logs))

    score.moves = moves
    score.description = "data-free weight-energy score (share of weight energy kept; not accuracy)"
    return score
