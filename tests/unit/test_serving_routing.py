"""Routing between champion and challenger: sticky hashing, shares, and the mode rules."""

from __future__ import annotations

import math

import numpy as np
import pytest

from serving.routing import RoutingPlan, key_bucket, routing_keys

KEYS = [f"2013|6|{d}|UA|{f}|900|EWR" for d in range(1, 31) for f in range(700)]  # 21,000 flights


def binomial_bounds(n: int, p: float, sigmas: float = 5.0) -> tuple[float, float]:
    """Where a Binomial(n, p) count falls except with probability < 1e-6."""
    spread = sigmas * math.sqrt(n * p * (1 - p))
    return n * p - spread, n * p + spread


def test_bucket_is_deterministic_uniform_and_salted() -> None:
    buckets = np.array([key_bucket(k, "c:3") for k in KEYS])
    assert ((buckets >= 0) & (buckets < 1)).all()
    assert key_bucket(KEYS[0], "c:3") == key_bucket(KEYS[0], "c:3")
    # Uniform: each decile holds a tenth of the keys, within binomial noise.
    counts = np.histogram(buckets, bins=10, range=(0, 1))[0]
    low, high = binomial_bounds(len(KEYS), 0.1)
    assert ((counts > low) & (counts < high)).all(), counts
    # Another salt (another challenger version) is an independent draw.
    other = np.array([key_bucket(k, "c:4") for k in KEYS])
    assert abs(np.corrcoef(buckets, other)[0, 1]) < 0.05


@pytest.mark.parametrize(("mode", "share"), [("canary", 0.05), ("canary", 0.3), ("ab", 0.5)])
def test_share_of_keys_sent_to_the_challenger(mode: str, share: float) -> None:
    plan = RoutingPlan.for_models(mode, canary_share=share, ab_split=share, challenger_version="7")
    hits = int(plan.to_challenger(KEYS).sum())
    low, high = binomial_bounds(len(KEYS), share)
    assert low < hits < high


def test_a_key_stays_in_its_arm_while_the_challenger_is_the_same() -> None:
    first = RoutingPlan.for_models("canary", 0.2, 0.5, "7").to_challenger(KEYS)
    again = RoutingPlan.for_models("canary", 0.2, 0.5, "7").to_challenger(list(reversed(KEYS)))[::-1]
    assert (first == again).all()
    # A new challenger version draws its canary afresh: about 2·p·(1-p) of the keys switch arm.
    new = RoutingPlan.for_models("canary", 0.2, 0.5, "8").to_challenger(KEYS)
    low, high = binomial_bounds(len(KEYS), 2 * 0.2 * 0.8)
    assert low < int((first != new).sum()) < high


def test_raising_the_canary_share_only_adds_keys() -> None:
    small = RoutingPlan.for_models("canary", 0.05, 0.5, "7").to_challenger(KEYS)
    large = RoutingPlan.for_models("canary", 0.25, 0.5, "7").to_challenger(KEYS)
    assert small.sum() < large.sum()
    assert not (small & ~large).any()


def test_canary_and_ab_assignments_are_independent() -> None:
    canary = RoutingPlan.for_models("canary", 0.5, 0.5, "7").to_challenger(KEYS)
    ab = RoutingPlan.for_models("ab", 0.5, 0.5, "7").to_challenger(KEYS)
    low, high = binomial_bounds(len(KEYS), 0.25)
    assert low < int((canary & ab).sum()) < high


@pytest.mark.parametrize("mode", ["none", "shadow"])
def test_modes_without_a_split_send_nothing_to_the_challenger(mode: str) -> None:
    plan = RoutingPlan.for_models(mode, 0.5, 0.5, "7")
    assert plan.mode == mode
    assert not plan.to_challenger(KEYS).any()
    assert plan.shadows == (mode == "shadow")


@pytest.mark.parametrize("mode", ["shadow", "canary", "ab"])
def test_without_a_challenger_every_mode_serves_the_champion_only(mode: str) -> None:
    plan = RoutingPlan.for_models(mode, 0.5, 0.5, challenger_version=None)
    assert plan.mode == "none" and not plan.shadows
    assert not plan.to_challenger(KEYS).any()


def test_shares_at_the_ends() -> None:
    assert not RoutingPlan.for_models("canary", 0.0, 0.5, "7").to_challenger(KEYS).any()
    assert RoutingPlan.for_models("ab", 0.5, 1.0, "7").to_challenger(KEYS).all()


def test_routing_key_prefers_the_record_then_the_header_then_the_request() -> None:
    assert routing_keys(["a", None], "h", "req") == ["a", "h"]
    assert routing_keys(["a", None], None, "req") == ["a", "req"]
