"""Pass interface, shared by the ONNX and the FX back ends.

It is onnx-ir's pass infrastructure (``onnx_ir.passes``): a pass declares ``requires`` and
``ensures`` (checked around ``call``), says whether it works in place, and returns a result with
the model and whether it changed. edgepass adds what it changed (``changes``: one line each) and
a :class:`Pipeline` that is itself a pass and gathers its members' changes.

ONNX passes take and return an ``onnx_ir.Model``, FX passes a ``torch.fx.GraphModule``; both work
in place on it, and ``edgepass.apply`` gives them a private copy (an ``onnx_ir.Model`` built from
the user's proto, a deep copy of the traced module), so the user's model is never touched.
"""
from __future__ import annotations

import dataclasses
from onnx_ir.passes import (InPlacePass, PassBase, PassResult, PostconditionError, PreconditionError,
                            Sequential)

__all__ = ["RewriteResult", "RewritePass", "Pipeline", "PassBase", "PreconditionError",
           "PostconditionError"]


@dataclasses.dataclass
class RewriteResult(PassResult):
    """``PassResult`` plus a list of human-readable changes (``"layer1.0.conv1: 64 -> 32 out channels"``)."""

    changes: list = dataclasses.field(default_factory=list)


class _Changes:
    name = "pass"

    def result(self, model, changes: list) -> RewriteResult:
        return RewriteResult(model=model, modified=bool(changes), changes=list(changes))


class RewritePass(_Changes, InPlacePass):
    """An in-place rewrite of an ``onnx_ir.Model`` or a ``torch.fx.GraphModule``."""


class Pipeline(Sequential):
    """Passes run in order; itself a pass. ``changes`` concatenates the members' changes."""

    def call(self, model) -> RewriteResult:
        changes: list = []
        modified = False
        for p in self.passes:
            r = p(model)
            model = r.model
            modified = modified or r.modified
            changes.extend(f"{getattr(p, 'name', type(p).__name__)}: {c}" for c in getattr(r, "changes", []))
        return RewriteResult(model=model, modified=modified, changes=changes)
