"""edgepass: per-layer width, kernel and precision chosen for a device budget, in one compile step."""
from .api import analyze
from .errors import (DeviceError, EdgepassError, InfeasibleBudgetError, InputError,
                     UnsupportedModelError)
from .ir import Graph, Op

__version__ = "0.1.0"

__all__ = ["analyze", "Graph", "Op", "EdgepassError", "InputError", "UnsupportedModelError", "DeviceError",
           "InfeasibleBudgetError", "__version__"]

from .space import ChannelGroup, Design, DesignSpace, design_space  # noqa: E402

__all__ += ["design_space", "DesignSpace", "Design", "ChannelGroup"]

from .rewrite import Verification, VerificationError, apply, verify  # noqa: E402

__all__ += ["apply", "verify", "Verification", "VerificationError"]
