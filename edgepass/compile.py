"""``edgepass.compile``: model + device + budget -> a verified, rewritten model with a report.

One compile = trace -> IR -> design space (restricted by ``ignore`` and the device's precisions)
-> predictors (latency table for the device, accuracy from calibration data) -> optimizer ->
passes (width, kernel, recalibration, fine-tuning, precision) -> verify -> report. This module is
the public face; the stages are :mod:`edgepass.stages` (docs/architecture.md), the options
:mod:`edgepass.compile_options`, the report :mod:`edgepass.report`.
"""
from __future__ import annotations

from .compile_options import EVALUATE_MAX_MACS, EVALUATE_TOP, CompileOptions
from .errors import InfeasibleBudgetError
from .fileio import write_atomic
from .report import LayerReport, Report, report_of


def compile(model, device, options: CompileOptions | None = None, /, **kwargs):
    """Compile ``model`` for ``device`` within the budget; returns the type it was given with a report.

    Options are :class:`CompileOptions` fields, as keywords (``latency_ms=``, ``latency_fraction=``,
    ``energy_mj=``, ``max_accuracy_drop=``, ``example_inputs=``, ``calibration_data=``, ``labels=``,
    ``method=``, ``precisions=``, ``ignore=``, ``seed=``, ``finetune=``, ``finetune_steps=``,
    ``measure=``, ``input_shapes=``, ``cache_dir=``, ``plot=``, ``accuracy_options=``,
    ``optimizer_options=``) and/or as an
    options object.

    ``nn.Module`` -> rewritten ``nn.Module`` with ``.report`` (a :class:`Report`); ONNX
    ``ModelProto`` or path -> ``ModelProto`` with the report's stable part in its metadata (key
    ``edgepass.report``, see :func:`report_of`). ``device``: a database id, a device-file path or a
    ``Device``. An impossible budget raises :class:`InfeasibleBudgetError` whose ``closest`` is
    ``(model, report)`` for the closest design.
    """
    out, report, feasible = compile_with_report(model, device, options, **kwargs)
    if not feasible:
        raise InfeasibleBudgetError(f"no design meets the budget on {report.device}: closest predicted "
                                    f"{report.predicted['latency_ms'][1]:.3f} ms", closest=(out, report))
    return out


def compile_with_report(model, device, options: CompileOptions | None = None, /, **kwargs):
    """:func:`compile` without raising on an infeasible budget: ``(model, Report, feasible)``."""
    opts = CompileOptions.of(options, **kwargs)
    # the stages load torch, onnx and the optimizers: only once a compile runs (`import edgepass` stays light)
    from .stages import compile_model

    return compile_model(model, device, opts)


def compile_fleet(model, devices, outdir, options: CompileOptions | None = None, /, **kwargs) -> dict:
    """One model for many devices into ``outdir``: see :func:`edgepass.fleet.compile_fleet`."""
    # (as compile_with_report: the fleet's stages load only when a fleet compiles)
    from .fleet import compile_fleet as run_fleet

    return run_fleet(model, devices, outdir, options, **kwargs)


__all__ = ["compile", "compile_with_report", "compile_fleet", "CompileOptions", "Report", "LayerReport", "report_of",
           "write_atomic", "EVALUATE_TOP", "EVALUATE_MAX_MACS"]
