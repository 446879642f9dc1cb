"""Per-arm scoring counters of one service process, for the rollout's guardrails.

Each arm (champion, challenger) counts its scoring calls, rows and failed calls, and keeps
a histogram of the calls' scoring time on fixed, geometric bucket bounds. Scoring time is
the CPU time of the scoring thread during the call: both arms' calls of a batch run side by
side on two threads, and on a wall clock the champion's calls would also count the time
they wait for the interpreter while the challenger's run (measured: a challenger 12x the
trees showed only 2.4x the champion's wall-clock p99). Everything is cumulative
since the process started, so a reader takes the difference of two snapshots for any window
(the rollout flow does, per step) and reads a percentile off the summed buckets: exact
counts, and a percentile within one bucket's width (25%), at no cost per request beyond a
lock and a bisect. `/model` shows them with the process's id, so a reader sees a restart
(or another worker) as a new process rather than as counters that went backwards.
"""

from __future__ import annotations

import bisect
import os
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

# Upper bounds in ms: 0.05 ms .. about 60 s, each 25% above the one before; the last bucket
# counts everything beyond.
SCORING_BOUNDS_MS: tuple[float, ...] = tuple(round(0.05 * 1.25**i, 6) for i in range(64))


class ArmStats:
    def __init__(self) -> None:
        self.calls = 0
        self.rows = 0
        self.errors = 0
        self.scoring_ms_counts = [0] * (len(SCORING_BOUNDS_MS) + 1)

    def record(self, rows: int, cpu_seconds: float, failed: bool) -> None:
        self.calls += 1
        self.rows += rows
        self.errors += failed
        self.scoring_ms_counts[bisect.bisect_left(SCORING_BOUNDS_MS, cpu_seconds * 1000.0)] += 1

    def describe(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "rows": self.rows,
            "errors": self.errors,
            "scoring_ms_counts": list(self.scoring_ms_counts),
        }


class ArmCounters:
    """The counters of every arm that scored in this process (thread-safe)."""

    def __init__(self) -> None:
        self._arms: dict[str, ArmStats] = {}
        self._lock = threading.Lock()
        # Unique per process start (a pid can be reused), and when it started: see CounterWindow.
        started = datetime.now(UTC).isoformat(timespec="microseconds")
        self.process = f"{os.getpid()}-{uuid.uuid4().hex[:8]}@{started}"

    def record(self, arm: str, rows: int, cpu_seconds: float, failed: bool) -> None:
        with self._lock:
            stats = self._arms.get(arm)
            if stats is None:
                stats = self._arms[arm] = ArmStats()
            stats.record(rows, cpu_seconds, failed)

    def describe(self) -> dict[str, Any]:
        with self._lock:
            arms = {arm: stats.describe() for arm, stats in self._arms.items()}
        return {"process": self.process, "scoring_bounds_ms": list(SCORING_BOUNDS_MS), "arms": arms}
