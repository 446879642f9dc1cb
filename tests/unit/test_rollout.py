"""The rollout's arithmetic: which steps remain, counter windows across processes, the
guardrails, and the registry tag the service reads its share from."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from pydantic import ValidationError

from mlops.config import RolloutConfig
from mlops.rollout import ROLLOUT_TAG, RolloutState
from serving.arm_stats import SCORING_BOUNDS_MS, ArmCounters
from tasks.gates import MetricComparison, OnlineEvidence
from tasks.rollout import ArmWindow, CounterWindow, breached, guardrails, remaining_shares

SETTINGS = RolloutConfig(min_calls=20, min_score_rows=50, max_score_ks=0.3)


def test_remaining_shares_resume_at_the_recorded_step_never_below_it() -> None:
    shares = [0.05, 0.25, 0.5, 1.0]
    assert remaining_shares(shares, None) == [(1, 0.05), (2, 0.25), (3, 0.5), (4, 1.0)]
    assert remaining_shares(shares, 0.25) == [(2, 0.25), (3, 0.5), (4, 1.0)]
    assert remaining_shares(shares, 0.3) == [(3, 0.5), (4, 1.0)]  # shares changed since: the next one up
    assert remaining_shares(shares, 1.0) == [(4, 1.0)]


@pytest.mark.parametrize("shares", [[0.5, 0.25, 1.0], [0.1, 0.5], [], [0.0, 1.0], [0.5, 0.5, 1.0]])
def test_shares_must_increase_to_one(shares: list[float]) -> None:
    with pytest.raises(ValidationError, match=r"shares|share must"):
        RolloutConfig(shares=shares)


def test_the_tag_round_trips_and_applies_to_its_version_only() -> None:
    state = RolloutState("7", 0.25, 2, 4, "2026-12-07T10:00:00+00:00", "run-1")
    read = RolloutState.from_tags({ROLLOUT_TAG: state.to_tag()})
    assert read == state
    assert read.share_for("7") == 0.25 and read.share_for("8") is None
    assert RolloutState.from_tags({}) is None
    assert RolloutState.from_tags({ROLLOUT_TAG: "{not json"}) is None  # hand-edited: ignored
    assert RolloutState.from_tags({ROLLOUT_TAG: state.to_tag().replace("0.25", "7.5")}) is None


def snapshot(counters: ArmCounters) -> dict:
    return counters.describe()


def test_a_window_counts_what_happened_after_it_opened_in_every_process() -> None:
    running = ArmCounters()
    for _ in range(30):
        running.record("champion", 10, 0.001, failed=False)
    window = CounterWindow(opened_at=datetime.now(UTC))
    window.observe(snapshot(running))  # what it had counted before the window is not the window's
    for _ in range(5):
        running.record("champion", 10, 0.001, failed=False)
    running.record("challenger", 4, 0.020, failed=True)
    window.observe(snapshot(running))
    restarted = ArmCounters()  # a process started inside the window: all of it counts
    restarted.record("challenger", 6, 0.020, failed=False)
    window.observe(snapshot(restarted))

    champion, challenger = window.arm("champion"), window.arm("challenger")
    assert (champion.calls, champion.rows, champion.errors) == (5, 50, 0)
    assert (challenger.calls, challenger.rows, challenger.errors) == (2, 10, 1)
    p99 = challenger.scoring_quantile_ms(window.bounds_ms, 0.99)
    assert p99 is not None and 20.0 <= p99 < 20.0 * 1.25  # within one bucket above the truth
    assert window.arm("nobody") == ArmWindow(0, 0, 0, ())


def test_a_process_that_started_before_the_window_counts_from_its_first_sighting() -> None:
    early = ArmCounters()
    early.record("champion", 1, 0.001, failed=False)
    window = CounterWindow(opened_at=datetime.now(UTC) + timedelta(seconds=1))
    window.observe(snapshot(early))
    assert window.arm("champion").calls == 0


def arm(calls: int, errors: int, latency_s: float) -> ArmWindow:
    counts = [0] * (len(SCORING_BOUNDS_MS) + 1)
    counts[int(np.searchsorted(SCORING_BOUNDS_MS, latency_s * 1000))] = calls
    return ArmWindow(calls, calls * 10, errors, tuple(counts))


BOUNDS = list(SCORING_BOUNDS_MS)
NO_SCORES = (np.empty(0), np.empty(0))


def statuses(results) -> dict[str, str]:
    return {r.name: r.status for r in results}


def test_a_healthy_challenger_holds_every_guardrail() -> None:
    rng = np.random.default_rng(0)
    scores = (rng.uniform(size=500), rng.uniform(size=500))
    results = guardrails(arm(100, 0, 0.002), arm(300, 0, 0.002), BOUNDS, scores, None, SETTINGS)
    assert statuses(results) == {
        "rollout.error_rate": "passed",
        "rollout.p99_scoring_ratio": "passed",
        "rollout.score_ks": "passed",
        "rollout.quality_ci_high": "skipped",
    }
    assert breached(results) == []


def test_too_few_calls_skip_the_checks_rather_than_judge_on_noise() -> None:
    results = guardrails(arm(5, 1, 0.5), arm(300, 0, 0.002), BOUNDS, NO_SCORES, None, SETTINGS)
    assert statuses(results)["rollout.error_rate"] == "skipped"
    assert statuses(results)["rollout.p99_scoring_ratio"] == "skipped"
    assert statuses(results)["rollout.score_ks"] == "skipped"


def test_errors_latency_and_drift_each_breach() -> None:
    failing = guardrails(arm(100, 5, 0.002), arm(300, 0, 0.002), BOUNDS, NO_SCORES, None, SETTINGS)
    assert [g.name for g in breached(failing)] == ["rollout.error_rate"]
    slow = guardrails(arm(100, 0, 0.050), arm(300, 0, 0.002), BOUNDS, NO_SCORES, None, SETTINGS)
    assert [g.name for g in breached(slow)] == ["rollout.p99_scoring_ratio"]
    assert breached(slow)[0].value == pytest.approx(25, rel=0.3)
    rng = np.random.default_rng(1)
    shifted = (rng.uniform(0.5, 1.0, size=300), rng.uniform(0.0, 1.0, size=300))
    drifted = guardrails(arm(100, 0, 0.002), arm(300, 0, 0.002), BOUNDS, shifted, None, SETTINGS)
    assert [g.name for g in breached(drifted)] == ["rollout.score_ks"]


def test_a_challenger_whose_every_call_fails_breaches_even_with_no_champion_calls() -> None:
    results = guardrails(arm(20, 20, 0.002), ArmWindow(), BOUNDS, NO_SCORES, None, SETTINGS)
    assert [g.name for g in breached(results)] == ["rollout.error_rate"]


def test_live_quality_breaches_only_when_the_whole_interval_lies_below_the_loss_allowed() -> None:
    def evidence(low: float, high: float) -> OnlineEvidence:
        comparison = MetricComparison("roc_auc", 0.7, 0.72, (low + high) / 2, low, high, 0.95, 500, 0.1)
        return OnlineEvidence("unpaired (A/B)", 400, 1200, comparison)

    healthy = (arm(100, 0, 0.002), arm(300, 0, 0.002), BOUNDS, NO_SCORES)
    assert breached(guardrails(*healthy, evidence(-0.04, 0.01), SETTINGS)) == []
    worse = breached(guardrails(*healthy, evidence(-0.06, -0.01), SETTINGS))
    assert [g.name for g in worse] == ["rollout.quality_ci_high"]
    tolerant = RolloutConfig(max_quality_loss=0.02)
    assert breached(guardrails(*healthy, evidence(-0.06, -0.01), tolerant)) == []
