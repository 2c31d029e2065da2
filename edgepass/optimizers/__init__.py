"""Optimizers: evolutionary search and exhaustive enumeration (per device), the amortized optimizer
(device vector + budget -> design in one forward pass), and the feasibility repair both go through."""
from .amortized import AmortizedOptimizer, TrainingPair
from .api import CallableProblem, OptimizeResult, optimize
from .budget import Budget
from .model_space import ModelSpaceOptimizer
from .problem import AdditiveProblem, LookupProblem, Problem, Term
from .search import SearchResult, evolutionary, exhaustive, repair

__all__ = ["Budget", "Problem", "LookupProblem", "AdditiveProblem", "Term", "SearchResult", "evolutionary",
           "exhaustive", "repair", "AmortizedOptimizer", "TrainingPair", "optimize", "OptimizeResult",
           "CallableProblem", "ModelSpaceOptimizer"]
