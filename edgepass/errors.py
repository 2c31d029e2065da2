"""Errors with documented exit codes.

Every failure a user can cause (bad file, unknown device, impossible budget...) is raised as an
:class:`EdgepassError` subclass; the CLI prints its message on one line and exits with its code.
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_USAGE = 2          # bad command line, unreadable / corrupt input, unwritable output
EXIT_INFEASIBLE = 3     # no design meets the budget (the closest one is still reported)
EXIT_UNSUPPORTED = 4    # the model cannot be traced / analysed
EXIT_DEVICE = 5         # unknown device id or invalid device file
EXIT_INTERNAL = 70      # a bug: an unexpected exception (EX_SOFTWARE); the CLI prints one line

# limits of numbers a user gives (larger ones are typos, and would fail deep inside a library)
MAX_THREADS = 1024      # intra-op threads / worker processes: more than any machine has
MAX_SEED = 2**32 - 1    # seeds go to numpy and torch: the range both accept


class EdgepassError(Exception):
    """Base class: a one-line, user-facing error with an exit code."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str):
        super().__init__(one_line(message))


MAX_MESSAGE_CHARS = 600


def one_line(message, limit: int = MAX_MESSAGE_CHARS) -> str:
    """A message on one line, cut to a readable length (a user's 1 MB value must not come back whole)."""
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[: limit - 15] + " ... (cut)"


class InputError(EdgepassError):
    """The input model (or another input file) is missing, unreadable or corrupt."""

    exit_code = EXIT_USAGE


class OptionError(InputError, TypeError):
    """An option of the Python API or the command line with a wrong type or value, or an unknown one
    (also a ``TypeError``, what Python raises for a wrong call)."""


class UnsupportedModelError(EdgepassError):
    """The model can be read but not analysed (e.g. data-dependent control flow under FX)."""

    exit_code = EXIT_UNSUPPORTED


class DeviceError(EdgepassError):
    """Unknown device id or malformed device file."""

    exit_code = EXIT_DEVICE


class InfeasibleBudgetError(EdgepassError):
    """No design meets the budget; ``closest`` holds the best effort."""

    exit_code = EXIT_INFEASIBLE

    def __init__(self, message: str, closest=None):
        super().__init__(message)
        self.closest = closest
