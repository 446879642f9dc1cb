"""Which arm scores a record: the champion, or the challenger under test.

Modes (`serving.mode`):
- `none`: the champion answers everything.
- `shadow`: the champion answers everything; the challenger scores every record too, and
  its answers are logged (served = false), never returned.
- `canary`: records whose routing key falls in the first `canary_share` of the hash space
  are answered by the challenger.
- `ab`: the same split with `ab_split` as arm B's (the challenger's) share: an experiment
  with both arms logged, usually near 50/50.
- `interleave`: `/predict` is the champion's alone; `/rank` merges both arms' rankings
  (`serving.interleaving`).

A routing key is hashed (BLAKE2b, salted with the mode and the challenger's version) to a
number in [0, 1): the same key always lands in the same arm while the same challenger is
under test, and raising the share only adds keys to the challenger, never moves one back.
A new challenger version draws a fresh set of keys. The key is the record's `key`, else
the request's routing header, else the request id (a request without any key is assigned
at random, and is not sticky).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

Mode = Literal["none", "shadow", "canary", "ab", "interleave"]
_SCALE = float(2**64)


def key_bucket(key: str, salt: str) -> float:
    """A key's fixed position in [0, 1), uniform over keys, stable across processes and versions."""
    digest = hashlib.blake2b(key.encode(), digest_size=8, salt=salt.encode()[:16]).digest()
    return int.from_bytes(digest, "big") / _SCALE


@dataclass(frozen=True)
class RoutingPlan:
    """How one batch of records is split, given what is loaded right now."""

    mode: Mode  # the mode in effect: a configured experiment mode falls back to none without a challenger
    challenger_share: float  # canary/ab: share of the hash space the challenger answers
    salt: str

    @classmethod
    def for_models(
        cls,
        configured: Mode,
        canary_share: float,
        ab_split: float,
        challenger_version: str | None,
    ) -> RoutingPlan:
        if configured == "none" or challenger_version is None:
            return cls("none", 0.0, "")
        share = {"canary": canary_share, "ab": ab_split}.get(configured, 0.0)
        # BLAKE2b takes a salt of at most 16 bytes: the mode's initial and the version fit.
        return cls(configured, share, f"{configured[0]}:{challenger_version}"[:16])

    @property
    def splits_traffic(self) -> bool:
        return self.mode in ("canary", "ab")

    @property
    def shadows(self) -> bool:
        return self.mode == "shadow"

    def to_challenger(self, keys: Sequence[str]) -> np.ndarray:
        """One boolean per routing key: True when the challenger answers that record."""
        if not self.splits_traffic or self.challenger_share <= 0.0:
            return np.zeros(len(keys), dtype=bool)
        if self.challenger_share >= 1.0:
            return np.ones(len(keys), dtype=bool)
        share, salt = self.challenger_share, self.salt
        # Records of one request often share a key (the header, or the request id): hash once.
        buckets: dict[str, bool] = {}
        out = np.empty(len(keys), dtype=bool)
        for i, key in enumerate(keys):
            hit = buckets.get(key)
            if hit is None:
                hit = buckets[key] = key_bucket(key, salt) < share
            out[i] = hit
        return out


def routing_keys(record_keys: Sequence[str | None], header_key: str | None, request_id: str) -> list[str]:
    """Each record's routing key: its own `key`, else the header's, else the request id."""
    fallback = header_key or request_id
    return [key if key is not None else fallback for key in record_keys]
