"""Optimizers: evolutionary search and exhaustive enumeration (per device), the amortized optimizer
(device vector + budget -> design in one forward pass), and the feasibility repair both go through.

The names below load on first use (PEP 562), so that the registry (:mod:`.methods`) and
:mod:`.budget` can be imported without the optimizers' own imports."""
import importlib

_HOMES = {
    "AmortizedOptimizer": "amortized", "TrainingPair": "amortized",
    "CallableProblem": "problem", "OptimizeResult": "api", "optimize": "api",
    "Budget": "budget", "METHODS": "methods",
    "ModelSpaceOptimizer": "model_space",
    "AdditiveProblem": "problem", "LookupProblem": "problem", "Problem": "problem", "Term": "problem",
    "SearchResult": "search", "evolutionary": "search", "exhaustive": "search", "repair": "search",
}

__all__ = sorted(_HOMES)


def __getattr__(name):
    if name in _HOMES:
        value = getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
