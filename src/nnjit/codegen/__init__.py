"""Graph -> kernel IR, once for every native backend (see `program.lower_graph`)."""
from .lower import Lowered, lower_graph

__all__ = ["Lowered", "lower_graph"]
