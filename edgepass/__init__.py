"""edgepass: per-layer width, kernel and precision chosen for a device budget, in one compile step."""
import importlib

from .api import analyze
from .errors import (DeviceError, EdgepassError, InfeasibleBudgetError, InputError, OptionError,
                     UnsupportedModelError)
from .ir import Graph, Op
from .rewrite import Verification, VerificationError, apply, verify
from .space import ChannelGroup, Design, DesignSpace, design_space

from .predict import predict  # noqa: E402  (after the submodule import, so the name is the function)
# (same: edgepass.compile is the function)
from .compile import CompileOptions, compile, compile_fleet, compile_with_report, report_of  # noqa: E402,A001

__version__ = "0.1.0"

__all__ = ["analyze", "Graph", "Op", "EdgepassError", "InputError", "OptionError", "UnsupportedModelError", "DeviceError",
           "InfeasibleBudgetError", "design_space", "DesignSpace", "Design", "ChannelGroup", "apply", "verify",
           "Verification", "VerificationError", "predict", "optimize", "compile", "compile_with_report",
           "compile_fleet", "CompileOptions", "report_of", "devices", "__version__"]

# heavier parts load on first use, so `edgepass --help` and `import edgepass` stay fast
_SUBPACKAGES = {"zoo", "dataset", "optimizers", "passes", "predictors", "frontends", "calibration"}


def __getattr__(name):
    if name in _SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)
    if name == "optimize":
        return importlib.import_module(".optimizers.api", __name__).optimize
    if name == "devices":  # a callable module: edgepass.devices() lists the database
        return importlib.import_module(".devices", __name__)
    raise AttributeError(f"module 'edgepass' has no attribute {name!r}")
