"""The reference library's RLMLogger, as far as rlm uses it: log_dir makes
each completion() write its trace there (rlm's JSONL trace, docs/trace.md),
and result.metadata then holds {"trace": path, "report": the run's report}."""
from typing import Optional


class RLMLogger:
    def __init__(self, log_dir: Optional[str] = None, **_ignored):
        self.log_dir = log_dir

    def get_trajectory(self):
        return None


__all__ = ["RLMLogger"]
