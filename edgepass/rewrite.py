"""``edgepass.apply`` (design -> rewritten model, through :func:`build_pipeline`) and ``edgepass.verify``
(did it do exactly that?)."""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field

import numpy as np

import onnx
import onnx_ir as ir

from .api import analyze
from .errors import EdgepassError, InputError
from .frontends.fx import analyze_fx, trace
from .frontends.onnx import analyze_onnx, load_model
from .frontends.run import inputs_for, run_model
from .passes.base import Pipeline
from .passes.finetune import FinetunePassFX
from .passes.kernel import KernelPassFX, KernelPassONNX
from .passes.precision_fx import PrecisionPassFX
from .passes.precision_onnx import PrecisionPassONNX
from .passes.recalibrate import RecalibratePassFX, RecalibratePassONNX
from .passes.reconstruct import ReconstructPassFX, ReconstructPassONNX, enabled
from .passes.width import WidthPassFX, WidthPassONNX
from .space import Design, DesignSpace, build_space
from .util import example_inputs_for, is_torch_module


class VerificationError(EdgepassError):
    """The rewritten model does not run, changed its output shape, or does not show the design."""

    exit_code = 4


def _needs_precision(space: DesignSpace, design: Design) -> bool:
    return any(design.precisions.get(layer, space.graph.op(layer).precision) != space.graph.op(layer).precision
               for layer in space.precisions)


def _onnx_passes(space, design, *, calibration_data, importance, original=None, recalibrate=True,
                   reconstruct=None):
    width, kernel = WidthPassONNX(space, design, importance=importance), KernelPassONNX(space, design)
    passes = [width, kernel]
    if recalibrate and calibration_data is not None and original is not None:
        refit = None
        if enabled(space, reconstruct):
            refit = ReconstructPassONNX(original, space, width, kernel, calibration_data)
            passes.append(refit)
        passes.append(RecalibratePassONNX(original, space, width, kernel, calibration_data, after=refit))
    if _needs_precision(space, design):
        # the rewrite keeps every node and its name: the original's IR locates the int8 layers
        passes.append(PrecisionPassONNX(design.precisions, calibration_data, graph=space.graph))
    return Pipeline(*passes)


def _fx_passes(space, design, *, calibration_data, importance, example_inputs=None, recalibrate=True,
                 teacher=None, finetune=None, finetune_steps=200, seed=0, reconstruct=None,
                 precision_mode: str = "convert"):
    """The FX passes of ``design``; ``precision_mode="fake"`` simulates int8 without converting (what
    the accuracy predictor measures)."""
    width, kernel = WidthPassFX(space, design, importance=importance), KernelPassFX(space, design)
    passes = [width, kernel]
    changes_shape = design.widths != space.identity().widths or design.kernels != space.identity().kernels
    if recalibrate and calibration_data is not None and changes_shape:
        traced = space.graph.graph.get("gm")    # the original, traced: same node names as the rewrite
        if traced is not None and enabled(space, reconstruct):
            passes.append(ReconstructPassFX(traced, space, width, kernel, calibration_data, example_inputs))

        passes.append(RecalibratePassFX(calibration_data, example_inputs))
    if finetune is not None and changes_shape:
        passes.append(FinetunePassFX(teacher, finetune, steps=finetune_steps, seed=seed,
                                     example_inputs=example_inputs))
    if _needs_precision(space, design):
        passes.append(PrecisionPassFX(design.precisions, calibration_data, mode=precision_mode,
                                      example_inputs=example_inputs, graph=space.graph))
    return Pipeline(*passes)


def build_pipeline(space, design, *, framework: str, calibration_data=None, importance: str = "l1", **options):
    """The passes that rewrite a model of ``space`` to ``design``, in order, as one
    :class:`~edgepass.passes.base.Pipeline`: width, kernel, (reconstruction, recalibration with
    calibration data), (fine-tuning), precision. ``framework``: ``"onnx"`` (options: ``original``,
    ``recalibrate``, ``reconstruct``) or ``"torch"`` (options: ``example_inputs``, ``recalibrate``,
    ``teacher``, ``finetune``, ``finetune_steps``, ``seed``, ``reconstruct``, ``precision_mode``:
    ``"fake"`` simulates int8 without converting, what the accuracy predictor measures)."""
    builders = {"onnx": _onnx_passes, "torch": _fx_passes}
    if framework not in builders:
        raise InputError(f"framework must be one of {', '.join(builders)}, not {framework!r}")
    return builders[framework](space, design, calibration_data=calibration_data, importance=importance, **options)


@dataclass
class Applied:
    """What :func:`apply_design` returns: the model plus the space it was read from and the changes."""

    model: object
    space: DesignSpace
    design: Design
    changes: list = field(default_factory=list)


def apply_design(model, design: Design, *, example_inputs=None, calibration_data=None, importance: str = "l1",
                 input_shapes: dict | None = None, recalibrate: bool = True, finetune=None,
                 finetune_steps: int = 200, seed: int = 0, reconstruct: bool | None = None,
                 graph=None) -> Applied:
    """Run the width, kernel, recalibration (with calibration data), fine-tuning (PyTorch input with
    ``finetune`` data) and precision passes, in that order, and keep the bookkeeping. ``graph``:
    the IR of the ONNX ``model`` with these ``input_shapes`` when the caller has it (compile does),
    so it is not analysed again."""
    if isinstance(design, dict):
        design = Design.from_dict(design)
    if is_torch_module(model):
        gm = trace(model)
        space = build_space(analyze_fx(gm, example_inputs_for(model, example_inputs)))
        design = space.validate(design)
        gm = copy.deepcopy(gm)  # symbolic_trace shares submodules with the user's model
        result = _fx_passes(space, design, calibration_data=calibration_data, importance=importance,
                            example_inputs=example_inputs_for(model, example_inputs), recalibrate=recalibrate,
                              teacher=model, finetune=finetune, finetune_steps=finetune_steps, seed=seed,
                              reconstruct=reconstruct)(gm)
        return Applied(result.model, space, design, result.changes)
    if not isinstance(model, (str, os.PathLike, bytes, bytearray, onnx.ModelProto)):
        raise InputError(f"cannot rewrite a {type(model).__name__}: give an nn.Module, an onnx.ModelProto or a path")
    if finetune is not None:
        raise InputError("fine-tuning needs the PyTorch model (ONNX weights cannot be trained here); "
                         "pass the nn.Module, or drop finetune")
    proto = load_model(model)
    space = build_space(graph if graph is not None else analyze_onnx(proto, input_shapes=input_shapes))
    design = space.validate(design)
    if design == space.identity():
        return Applied(onnx.ModelProto.FromString(proto.SerializeToString()), space, design, [])
    irm = ir.from_proto(proto)
    result = _onnx_passes(space, design, calibration_data=calibration_data, importance=importance,
                            original=proto, recalibrate=recalibrate, reconstruct=reconstruct)(irm)
    return Applied(ir.to_proto(result.model), space, design, result.changes)


def apply(model, design: Design, *, example_inputs=None, calibration_data=None, importance: str = "l1",
          recalibrate: bool = True, finetune=None, finetune_steps: int = 200, seed: int = 0,
          reconstruct: bool | None = None):
    """Rewrite ``model`` to ``design``; returns the type it was given.

    ``nn.Module`` in -> ``torch.fx.GraphModule`` (an ``nn.Module``) out; ONNX ``ModelProto`` or path
    in -> ``ModelProto`` out. ``importance`` picks the channels a narrowed group keeps: ``"l1"``
    (filter L1 norm, default) or ``"bn"`` (batch-norm scale). With calibration data, narrowed or
    kernel-shrunk models are recalibrated (batch-norm statistics re-estimated; ``recalibrate=False``
    turns it off) before int8 ranges are calibrated. ONNX input is also reconstructed first: every
    conv/linear after the first change refitted by least squares to the original's outputs on the
    calibration data (``reconstruct``: ``None`` = for small models, see
    :func:`edgepass.passes.reconstruct.default_on`; ``True``/``False`` force it). ``finetune`` (PyTorch input: inputs, or an
    ``(inputs, labels)`` pair) trains the rewritten module for ``finetune_steps`` steps to match the
    original's outputs (distillation), deterministically under ``seed``.
    """
    return apply_design(model, design, example_inputs=example_inputs, calibration_data=calibration_data,
                        importance=importance, recalibrate=recalibrate, finetune=finetune,
                        finetune_steps=finetune_steps, seed=seed, reconstruct=reconstruct).model


# --------------------------------------------------------------------------------------------
# verification
# --------------------------------------------------------------------------------------------
@dataclass
class Verification:
    ok: bool
    problems: list
    max_rel_diff: float | None = None
    output_shapes: list = field(default_factory=list)

    def raise_if_failed(self) -> "Verification":
        if not self.ok:
            raise VerificationError("verification failed: " + "; ".join(self.problems[:3]))
        return self


def _strip_metadata(proto):
    p = onnx.ModelProto.FromString(proto.SerializeToString())
    del p.metadata_props[:]
    p.doc_string = ""
    p.producer_name = p.producer_version = ""
    for n in p.graph.node:
        del n.metadata_props[:]
        n.doc_string = ""
    return p.SerializeToString(deterministic=True)


def verify(original, rewritten, design: Design | None = None, *, example_inputs=None, rtol: float = 1e-5,
           space: DesignSpace | None = None) -> Verification:
    """Check that ``rewritten`` runs, keeps the output shapes and shows exactly ``design``.

    With the identity design (or ``design=None``) the outputs must also match (max relative
    difference <= ``rtol``) and an ONNX model must be unchanged apart from metadata.
    """
    problems = []
    inputs = inputs_for(original, example_inputs)
    try:
        ref = run_model(original, inputs)
        out = run_model(rewritten, inputs)
    except EdgepassError:
        raise
    except Exception as exc:
        return Verification(False, [f"rewritten model does not run: {str(exc).splitlines()[0][:200]}"])
    shapes = [tuple(o.shape) for o in out]
    if [tuple(r.shape) for r in ref] != shapes:
        problems.append(f"output shapes changed: {[tuple(r.shape) for r in ref]} -> {shapes}")
    if space is None:
        space = build_space(analyze(original, [__import__("torch").from_numpy(x) for x in inputs]
                                    if is_torch_module(original) else None))
    identity = space.identity()
    design = identity if design is None else space.validate(design)
    rel = None
    if design == identity and not problems:
        rel = max(float(np.max(np.abs(r - o)) / (np.max(np.abs(r)) + 1e-12)) for r, o in zip(ref, out))
        if rel > rtol:
            problems.append(f"identity design changed the outputs (max relative difference {rel:.2e})")
        if isinstance(rewritten, onnx.ModelProto) and not is_torch_module(original):
            if _strip_metadata(load_model(original, check=False)) != _strip_metadata(rewritten):
                problems.append("identity design changed the ONNX graph")
    problems += _check_design(space, design, rewritten, inputs)
    return Verification(not problems, problems, rel, shapes)


def _check_design(space: DesignSpace, design: Design, rewritten, inputs) -> list:
    """The rewritten model's own IR must show the design's widths, kernels and precisions."""
    problems = []
    try:
        if is_torch_module(rewritten):
            import torch

            g = analyze(rewritten, [torch.from_numpy(x) for x in inputs])
        else:
            g = analyze(rewritten)
    except EdgepassError as exc:
        return [f"cannot analyse the rewritten model: {exc}"]
    layers = {op.name: op for op in g.layers()}
    for grp in space.groups:
        want = design.widths[grp.id]
        for name, role in grp.members:
            if role != "out":
                continue
            op = layers.get(name)
            if op is None:
                problems.append(f"layer {name} missing from the rewritten model")
                continue
            got = op.attrs.get("out_channels", op.attrs.get("out_features"))
            if got != want:
                problems.append(f"group {grp.id}: {name} has {got} output channels, design says {want}")
    for name, k in design.kernels.items():
        op = layers.get(name)
        if op is not None and op.attrs["kernel"][0] != k:
            problems.append(f"{name}: kernel {op.attrs['kernel']}, design says {k}")
    for name, p in design.precisions.items():
        op = layers.get(name)
        if op is not None and op.precision != p:
            problems.append(f"{name}: precision {op.precision}, design says {p}")
    return problems


__all__ = ["apply", "apply_design", "Applied", "build_pipeline", "verify", "Verification", "VerificationError",
           "run_model"]
