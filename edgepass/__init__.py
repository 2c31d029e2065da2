"""edgepass: per-layer width, kernel and precision chosen for a device budget, in one compile step.

``import edgepass`` is light: the public names load their modules on first use (PEP 562), except
``compile`` and ``predict``, whose light public modules share their names."""
import importlib

from .errors import (DeviceError, EdgepassError, InfeasibleBudgetError, InputError, OptionError,
                     UnsupportedModelError)
from .predict import predict  # noqa: E402  (after the submodule import, so the name is the function)
# (same: edgepass.compile is the function)
from .compile import CompileOptions, compile, compile_fleet, compile_with_report, report_of  # noqa: E402,A001

__version__ = "0.1.0"

__all__ = ["analyze", "Graph", "Op", "EdgepassError", "InputError", "OptionError", "UnsupportedModelError", "DeviceError",
           "InfeasibleBudgetError", "design_space", "DesignSpace", "Design", "ChannelGroup", "apply", "verify",
           "Verification", "VerificationError", "predict", "optimize", "compile", "compile_with_report",
           "compile_fleet", "CompileOptions", "report_of", "devices", "__version__"]

#: public name -> the module that defines it (loaded on first use)
_HOMES = {
    "analyze": "api", "Graph": "ir", "Op": "ir",
    "apply": "rewrite", "verify": "rewrite", "Verification": "rewrite", "VerificationError": "rewrite",
    "design_space": "space", "DesignSpace": "space", "Design": "space", "ChannelGroup": "space",
    "optimize": "optimizers.api",
}
# heavier parts load on first use, so `edgepass --help` and `import edgepass` stay fast
_SUBPACKAGES = {"zoo", "dataset", "optimizers", "passes", "predictors", "frontends", "calibration", "devices"}


def __getattr__(name):
    if name in _HOMES:
        value = getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
        globals()[name] = value
        return value
    if name in _SUBPACKAGES:   # edgepass.devices is a callable module: edgepass.devices() lists the database
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'edgepass' has no attribute {name!r}")
