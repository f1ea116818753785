"""The reference library's result types, as rlm.core.types exports them."""
from .._compat import ModelUsageSummary, RLMChatCompletion, UsageSummary

__all__ = ["ModelUsageSummary", "RLMChatCompletion", "UsageSummary"]
