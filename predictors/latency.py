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

Modules (this one re-exports their public names, so ``from edgepass.predictors.latency import X``
keeps working), each importing only those above it:

* :mod:`~edgepass.predictors.latency_ops` -- per-op correction terms as inference evaluates them
  (correction basis, residual-network forward pass, op classes and op-class residual ms);
* :mod:`~edgepass.predictors.latency_model` -- artifact, device vectors, :class:`LatencyModel`,
  :func:`load_model`, :func:`predict_matrices`, :func:`check_latencies`, :func:`artifact_sha`;
* :mod:`~edgepass.predictors.latency_predict` -- :func:`predict`, :func:`predict_latency`,
  :func:`predict_many` and :class:`LatencyTable` (over :mod:`edgepass.knob_tables`);
* :mod:`~edgepass.predictors.latency_correction` -- a trained device's own corrections
  (:func:`fit_correction`, :func:`fit_op_net`);
* :mod:`~edgepass.predictors.latency_residual` -- the few-shot op-class residual, op-count model and
  trained-device mixture (:func:`fit_op_residual`);
* :mod:`~edgepass.predictors.latency_fit` -- few-shot device fit (:func:`fit_state`, :func:`fit_device`);
* :mod:`~edgepass.predictors.latency_calibration` -- :func:`calibrate_on_designs`.
"""
from __future__ import annotations

from edgepass.knob_tables import MAX_COMBOS, designed_ops, op_combos, summed_tables, table_sums

from .base import Estimate, LayerEstimate
from .features import N_OP, graph_matrix, op_features
from .latency_calibration import calibrate_on_designs
from .latency_correction import GRAPH_OVERHEAD_MS, correction_rows, fit_correction, fit_op_net
from .latency_fit import (fit_device, fit_embeddings, fit_quality, fit_state, init_residual, model_matrix,
                          read_measurements)
from .latency_model import (ARTIFACT, CALIBRATION_KEY, DEVICE_CORRECTIONS, FIT_KEY, FORMAT, LATENCY_MODEL_ENV,
                            SIGNATURE_KEYS, LatencyModel, artifact_sha, check_latencies, device_precision,
                            device_raw_vector, fit_source, load_cached, load_model, predict_matrices, trained_vectors)
from .latency_ops import (CORR_GROUPS, CORR_TERMS, N_CORR_OP, OPNET_ALIGN, OPNET_ARRAYS, correction_basis, op_classes,
                          op_residual_ms, op_terms, opnet_inputs, opnet_log_gain, opres_state)
from .latency_predict import LatencyTable, predict, predict_latency, predict_many
from .latency_residual import (MIX_DEVICES, MIX_MARGIN, OPRES_ALPHAS, class_matrix, device_totals, distinct_ops,
                               fit_op_residual, ridge_loo)

__all__ = [
    # the model: artifact, device vectors, inference
    "ARTIFACT", "FORMAT", "SIGNATURE_KEYS", "FIT_KEY", "LATENCY_MODEL_ENV", "CALIBRATION_KEY", "DEVICE_CORRECTIONS",
    "device_raw_vector", "device_precision", "fit_source", "LatencyModel", "load_cached", "load_model",
    "check_latencies", "predict_matrices", "trained_vectors", "artifact_sha",
    # predictions of graphs and designs
    "predict", "predict_latency", "predict_many", "LatencyTable",
    "MAX_COMBOS", "op_combos", "designed_ops", "summed_tables", "table_sums",
    # per-op correction terms
    "CORR_GROUPS", "CORR_TERMS", "N_CORR_OP", "correction_basis", "OPNET_ARRAYS", "OPNET_ALIGN", "opnet_inputs",
    "opnet_log_gain", "op_classes", "op_terms", "op_residual_ms", "opres_state",
    # a trained device's own corrections
    "correction_rows", "GRAPH_OVERHEAD_MS", "fit_correction", "fit_op_net",
    # few-shot residual / op-count model / mixture
    "MIX_DEVICES", "MIX_MARGIN", "OPRES_ALPHAS", "class_matrix", "fit_op_residual", "ridge_loo", "distinct_ops",
    "device_totals",
    # few-shot device fit and calibration on designs
    "model_matrix", "init_residual", "fit_embeddings", "fit_state", "fit_quality", "read_measurements", "fit_device",
    "calibrate_on_designs",
    # op features and estimates, as this module has always offered them
    "N_OP", "graph_matrix", "op_features", "Estimate", "LayerEstimate",
]
