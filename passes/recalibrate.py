"""Recalibration after width/kernel rewrites: give every layer back the activation statistics it had.

Narrowing a group removes inputs from every consumer, and cropping a kernel removes taps; the
outputs of the affected layers shift in mean and scale, and the error compounds through the
network. Batch norm absorbed exactly that during training, so the fix is to re-estimate it:

* **FX** (batch-norm modules present): reset the running statistics of every batch norm and
  re-estimate them on the calibration data (cumulative average, model otherwise in eval mode).
* **ONNX** (exporters fold batch norm into the preceding conv, so there are no statistics left to
  re-estimate): match per channel, on the calibration data, the mean and standard deviation of each
  affected conv/linear output to those of the same channels in the original model, and fold the
  correction into the layer (``W <- a W``, ``b <- a (b - m) + m_orig``, ``a = s_orig / s``). That is
  batch-norm recalibration with the original model as the target, folded back into the graph.
  Layers are corrected one at a time in graph order (upstream corrections move downstream
  statistics). Producers of model outputs (logits) are left alone.

Requires: calibration data; guarantees: same graph structure, only weights/biases change.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir

from edgepass.calibration import calibration_feeds, calibration_tensors

from . import onnx_edit
from .base import RewritePass

MAX_SAMPLES = 64


class RecalibratePassFX(RewritePass):
    name = "recalibrate"

    def __init__(self, calibration, example_inputs=None, *, max_samples: int = MAX_SAMPLES):
        self.calibration, self.example_inputs, self.max_samples = calibration, example_inputs, max_samples

    def call(self, gm):
        import torch

        bns = [m for m in gm.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        if not bns or self.calibration is None:
            return self.result(gm, [])
        batches = calibration_tensors(self.calibration, gm, self.example_inputs, max_samples=self.max_samples,
                                      what="batch-norm recalibration")
        saved = {m: (getattr(m, "momentum", None), m.training) for m in gm.modules()}
        gm.eval()
        for m in bns:
            m.reset_running_stats()
            m.momentum = None      # cumulative average over the calibration batches
            m.train()
        with torch.no_grad():
            for b in batches:
                gm(*b)
        for m, (momentum, training) in saved.items():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.momentum = momentum
            m.training = training
        gm.eval()
        return self.result(gm, [f"re-estimated {len(bns)} batch norms on {sum(len(b[0]) for b in batches)} samples"])


def _layer_outputs(proto: onnx.ModelProto, names: list[str], feeds: list[dict]) -> dict:
    """Per-channel mean and std of the named tensors over the calibration feeds."""
    import onnxruntime as ort

    m = onnx.ModelProto.FromString(proto.SerializeToString())
    have = {o.name for o in m.graph.output}
    for n in names:
        if n not in have:
            m.graph.output.append(onnx.ValueInfoProto(name=n))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    acc: dict = {n: [] for n in names}
    for f in feeds:
        for n, v in zip(names, sess.run(names, f)):
            acc[n].append(np.asarray(v, dtype=np.float64))
    stats = {}
    for n, vs in acc.items():
        v = np.concatenate(vs, axis=0)
        axis = 1 if v.ndim >= 3 else v.ndim - 1
        moved = np.moveaxis(v, axis, 0).reshape(v.shape[axis], -1)
        stats[n] = (moved.mean(1), moved.std(1))
    return stats


class RecalibratePassONNX(RewritePass):
    name = "recalibrate"

    def __init__(self, original: onnx.ModelProto, space, width_pass, kernel_pass, calibration, *,
                 max_samples: int = MAX_SAMPLES):
        """``width_pass`` / ``kernel_pass``: the passes that ran before (their ``edits`` say what changed)."""
        self.original, self.space, self.max_samples = original, space, max_samples
        self.width_pass, self.kernel_pass, self.calibration = width_pass, kernel_pass, calibration

    def _targets(self):
        """Affected layers -> (output tensor, kept output channel indices or None)."""
        g = self.space.graph
        width_edits, kernel_edits = self.width_pass.edits, self.kernel_pass.edits
        changed_in = {e.op for e in width_edits
                      if e.kind in ("conv", "linear") and ("in_channels" in e.attrs or "in_features" in e.attrs)}
        kept = {}
        for e in width_edits:
            for s in e.slices:
                op = g.op(e.op)
                if op.kind in ("conv", "linear") and s.const == op.const("weight").name and \
                        s.axis == (1 if op.attrs.get("weight_transposed") else 0):
                    kept[e.op] = s.indices
        changed = changed_in | set(kept) | {e.op for e in kernel_edits}
        # downstream of a change every layer's statistics move: correct all layers after the first change
        order = [op.name for op in g.layers()]
        first = min((order.index(n) for n in changed if n in order), default=len(order))
        outputs = set(g.graph["outputs"])
        return {n: (g.op(n).outputs[0], kept.get(n)) for n in order[first:] if g.op(n).outputs[0] not in outputs}

    def call(self, model: ir.Model):
        if self.calibration is None:
            return self.result(model, [])
        targets = self._targets()
        if not targets:
            return self.result(model, [])
        feeds = calibration_feeds(self.calibration, self.original, max_samples=self.max_samples,
                                  what="recalibration")
        names = sorted({t for t, _ in targets.values()})
        want = _layer_outputs(self.original, names, feeds)
        nodes = onnx_edit.node_index(model)
        writer = onnx_edit._Writer(model)
        corrected = set()
        # in graph order, each layer measured after every layer before it was corrected: exact,
        # one onnxruntime pass over the calibration data per layer
        for layer, (tensor, kept) in targets.items():
            op = self.space.graph.op(layer)
            node = nodes.get(op.ref)
            if node is None or node.op_type not in ("Conv", "Gemm"):
                continue  # a MatMul has no bias to fold the shift into
            m_t, s_t = want[tensor]
            if kept is not None:
                m_t, s_t = m_t[kept], s_t[kept]
            m, s = _layer_outputs(ir.to_proto(model), [tensor], feeds)[tensor]
            if m.shape != m_t.shape:
                continue
            a = np.clip(np.where(s > 1e-8, s_t / np.maximum(s, 1e-8), 1.0), 0.1, 10.0)
            w = onnx_edit.const_array(node.inputs[1]).astype(np.float64)
            transposed = node.op_type == "Gemm" and not (node.attributes.get("transB") and
                                                          node.attributes["transB"].value)
            shape = [1] * w.ndim
            shape[1 if transposed else 0] = -1
            has_bias = len(node.inputs) > 2 and node.inputs[2] is not None
            b = onnx_edit.const_array(node.inputs[2]).astype(np.float64) if has_bias else np.zeros(len(a))
            writer.set_input(node, 1, (w * a.reshape(shape)).astype(np.float32))
            if not has_bias:
                node.resize_inputs(3)
            writer.set_input(node, 2, (a * (b - m) + m_t).astype(np.float32))
            corrected.add(layer)
        return self.result(model, [f"matched output statistics of {len(corrected)} layers to the original on "
                                   f"{sum(len(next(iter(f.values()))) for f in feeds)} samples"] if corrected else [])
