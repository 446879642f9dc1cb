"""A progressive canary's arithmetic, as plain functions: which steps remain, what the
service's counters say about one window of traffic, and the guardrails a step must hold.

The service (`serving.arm_stats`) keeps cumulative per-arm counters per process; a window
is the difference between the snapshots taken at its start and now, summed over every
process seen (a worker, or a service that restarted: a process that started inside the
window counts from zero). The guardrails compare the challenger's window with the
champion's over the whole rollout (at a share of 1.0 the champion scores nothing more),
and each returns a `GateResult` so the flow shows and records them like the promotion gates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from scipy.stats import ks_2samp

from mlops.config import RolloutConfig
from tasks.gates import GateResult, OnlineEvidence, check, skip


def remaining_shares(shares: list[float], recorded: float | None) -> list[tuple[int, float]]:
    """(1-based step, share) still to run: all of them, or from the recorded share on (a
    rollout that was interrupted resumes at the step it had reached, never below it)."""
    steps = list(enumerate(shares, start=1))
    if recorded is None:
        return steps
    return [(i, s) for i, s in steps if s >= recorded - 1e-9] or steps[-1:]


@dataclass(frozen=True)
class ArmWindow:
    """One arm's scoring calls in a window."""

    calls: int = 0
    rows: int = 0
    errors: int = 0
    scoring_ms_counts: tuple[int, ...] = ()

    @property
    def error_rate(self) -> float:
        return self.errors / self.calls if self.calls else 0.0

    def scoring_quantile_ms(self, bounds_ms: list[float], q: float) -> float | None:
        """The upper bound of the bucket holding quantile q (conservative: at most one
        bucket's width above the true value); None without calls."""
        counts = np.asarray(self.scoring_ms_counts, dtype=np.int64)
        total = int(counts.sum())
        if total == 0:
            return None
        at = int(np.searchsorted(np.cumsum(counts), q * total, side="left"))
        return float(bounds_ms[min(at, len(bounds_ms) - 1)])

    def as_metrics(self, prefix: str, bounds_ms: list[float]) -> dict[str, float]:
        p99 = self.scoring_quantile_ms(bounds_ms, 0.99)
        metrics = {
            f"{prefix}_calls": float(self.calls),
            f"{prefix}_rows": float(self.rows),
            f"{prefix}_error_rate": self.error_rate,
        }
        return metrics | ({f"{prefix}_p99_ms": p99} if p99 is not None else {})


def _arm(counters: dict[str, Any] | None) -> dict[str, Any]:
    return counters or {"calls": 0, "rows": 0, "errors": 0, "scoring_ms_counts": []}


def _minus(now: dict[str, Any], before: dict[str, Any]) -> ArmWindow:
    now, before = _arm(now), _arm(before)
    width = max(len(now["scoring_ms_counts"]), len(before["scoring_ms_counts"]))
    pad = lambda v: np.pad(np.asarray(v, dtype=np.int64), (0, width - len(v)))  # noqa: E731
    return ArmWindow(
        calls=now["calls"] - before["calls"],
        rows=now["rows"] - before["rows"],
        errors=now["errors"] - before["errors"],
        scoring_ms_counts=tuple(
            int(c) for c in pad(now["scoring_ms_counts"]) - pad(before["scoring_ms_counts"])
        ),
    )


def _plus(a: ArmWindow, b: ArmWindow) -> ArmWindow:
    width = max(len(a.scoring_ms_counts), len(b.scoring_ms_counts))
    pad = lambda v: np.pad(np.asarray(v, dtype=np.int64), (0, width - len(v)))  # noqa: E731
    return ArmWindow(
        a.calls + b.calls,
        a.rows + b.rows,
        a.errors + b.errors,
        tuple(int(c) for c in pad(a.scoring_ms_counts) + pad(b.scoring_ms_counts)),
    )


@dataclass
class CounterWindow:
    """The service's per-arm counters since `opened_at`, from the snapshots `/model` gives
    (`scoring.by_arm`)."""

    opened_at: datetime
    baselines: dict[str, dict[str, Any]] = field(default_factory=dict)  # process -> arms at first sight
    latest: dict[str, dict[str, Any]] = field(default_factory=dict)
    bounds_ms: list[float] = field(default_factory=list)

    def observe(self, snapshot: dict[str, Any]) -> None:
        process, arms = snapshot["process"], snapshot["arms"]
        if process not in self.baselines:
            started = datetime.fromisoformat(process.split("@", 1)[1])
            # Started inside the window: all it counted belongs to it. Running already: only
            # what it counts from now on can be told apart from earlier traffic.
            self.baselines[process] = {} if started >= self.opened_at else arms
        self.latest[process] = arms
        self.bounds_ms = list(snapshot["scoring_bounds_ms"])

    def arm(self, name: str) -> ArmWindow:
        total = ArmWindow()
        for process, arms in self.latest.items():
            total = _plus(total, _minus(arms.get(name), self.baselines[process].get(name)))
        return total


def score_distance(challenger: np.ndarray, champion: np.ndarray) -> float:
    """Kolmogorov-Smirnov distance between the arms' logged scores: the routing split is a
    hash of the key, so both arms see the same population, and a large distance means the
    challenger answers it differently."""
    return float(ks_2samp(challenger, champion).statistic)


def guardrails(
    challenger: ArmWindow,
    champion: ArmWindow,
    bounds_ms: list[float],
    scores: tuple[np.ndarray, np.ndarray],
    quality: OnlineEvidence | None,
    settings: RolloutConfig,
) -> list[GateResult]:
    """The checks a step must hold: the challenger's error rate and p99 scoring time against the
    champion's, the distance between their scores and, once labels joined, its live quality."""
    results = []
    enough = min(challenger.calls, champion.calls) >= settings.min_calls
    few = (
        f"{challenger.calls} challenger and {champion.calls} champion scoring calls:"
        f" fewer than serving.rollout.min_calls={settings.min_calls}"
    )
    if challenger.calls >= settings.min_calls and challenger.errors == challenger.calls:
        # Every call failing is a breach whatever the champion did (even with no champion calls).
        results.append(
            check(
                "rollout.error_rate",
                1.0 - champion.error_rate,
                "<=",
                settings.max_error_rate_increase,
                f"all {challenger.calls} challenger calls failed",
            )
        )
    elif enough:
        increase = challenger.error_rate - champion.error_rate
        detail = (
            f"challenger {challenger.errors}/{challenger.calls} calls failed,"
            f" champion {champion.errors}/{champion.calls}"
        )
        results.append(check("rollout.error_rate", increase, "<=", settings.max_error_rate_increase, detail))
    else:
        results.append(skip("rollout.error_rate", few))

    if enough:
        mine = challenger.scoring_quantile_ms(bounds_ms, 0.99)
        theirs = champion.scoring_quantile_ms(bounds_ms, 0.99)
        assert mine is not None and theirs is not None
        detail = f"p99 scoring time {mine:.3g} ms (CPU per call) vs the champion's {theirs:.3g} ms"
        results.append(
            check("rollout.p99_scoring_ratio", mine / theirs, "<=", settings.max_p99_scoring_ratio, detail)
        )
    else:
        results.append(skip("rollout.p99_scoring_ratio", few))

    mine_scores, their_scores = scores
    if settings.max_score_ks is None:
        results.append(skip("rollout.score_ks", "serving.rollout.max_score_ks is not set"))
    elif min(len(mine_scores), len(their_scores)) < settings.min_score_rows:
        detail = (
            f"{len(mine_scores)} challenger and {len(their_scores)} champion scores logged: fewer than"
            f" serving.rollout.min_score_rows={settings.min_score_rows}"
        )
        results.append(skip("rollout.score_ks", detail))
    else:
        distance = score_distance(mine_scores, their_scores)
        detail = (
            f"KS distance of {len(mine_scores)} challenger and {len(their_scores)} champion scores"
            f" (means {np.mean(mine_scores):.4g} vs {np.mean(their_scores):.4g})"
        )
        results.append(check("rollout.score_ks", distance, "<=", settings.max_score_ks, detail))

    if quality is None or quality.comparison is None:
        rows = 0 if quality is None else quality.challenger_rows
        detail = f"{rows} labelled challenger rows: fewer than serving.rollout.quality_min_rows"
        results.append(skip("rollout.quality_ci_high", detail))
    else:
        c = quality.comparison
        detail = (
            f"{quality.design} on {quality.challenger_rows} rows: {c.metric} {c.challenger_value:.4f} vs"
            f" {c.champion_value:.4f}, gain {c.gain:+.4f}, {c.confidence:.0%} CI [{c.ci_low:+.4f}, {c.ci_high:+.4f}]"
        )
        results.append(check("rollout.quality_ci_high", c.ci_high, ">=", -settings.max_quality_loss, detail))
    return results


def breached(results: list[GateResult]) -> list[GateResult]:
    return [r for r in results if not r.skipped and not r.passed]
