"""The optimizers' registry: every ``method`` a compile or ``optimize`` accepts, with what it does.
The CLI's ``--method`` and :class:`~edgepass.compile_options.CompileOptions` take their choices from here."""
from __future__ import annotations

METHODS_HELP = {
    "amortized": "the amortized optimizer: device features and budget -> design in one forward pass (trained once "
                 "per design space, cached), then repaired",
    "search": "evolutionary search over the design space for this device and budget",
    "exhaustive": "every design (small spaces only)",
}
METHODS = tuple(METHODS_HELP)

__all__ = ["METHODS", "METHODS_HELP"]
