"""The reference library's rlm.core.rlm.RLM."""
from .._compat import RLM

__all__ = ["RLM"]
