"""The reference library's RLMLogger, as far as rlm uses it. Each
completion() of an RLM given a logger records its trajectory (run_metadata
and one entry per root turn of the top RLM: prompt, response, code_blocks
with their output, final_answer, iteration_time — built from the run's
events), which result.metadata holds, with "trace" (the trace file, written
in log_dir when one is given: rlm's JSONL trace, docs/trace.md, not the
reference's file format) and "report" (the run's report)."""
from typing import Any, Dict, Optional


class RLMLogger:
    def __init__(self, log_dir: Optional[str] = None, **_ignored: Any):
        self.log_dir = log_dir
        self._trajectory: Optional[Dict[str, Any]] = None

    def get_trajectory(self) -> Optional[Dict[str, Any]]:
        """The last completion's trajectory (None before the first)."""
        return self._trajectory

    @property
    def iteration_count(self) -> int:
        return len(self._trajectory["iterations"]) if self._trajectory else 0


__all__ = ["RLMLogger"]
