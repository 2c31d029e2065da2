"""Old home of :mod:`edgepass.optimizers.zoo_space` (the zoo spaces priced for the optimizers); the names
stay importable from here."""
from ..optimizers.zoo_space import ZooSpace, nb201_accuracy, space, spec

__all__ = ["ZooSpace", "nb201_accuracy", "space", "spec"]
