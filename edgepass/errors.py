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


class EdgepassError(Exception):
    """Base class: a one-line, user-facing error with an exit code."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # always one line


class InputError(EdgepassError):
    """The input model (or another input file) is missing, unreadable or corrupt."""

    exit_code = EXIT_USAGE


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
