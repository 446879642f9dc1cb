"""Where a progressive canary stands, as the registry records it: the one owner of the
`rollout` tag on the registered model, written by the rollout flow and read by every
serving process on each registry poll (so a share change needs no restart, and a service
that restarts mid-rollout comes back at the recorded share).

The tag names the challenger version it applies to: a newer challenger never inherits an
older one's share, and the service falls back to `serving.canary_share` for it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

ROLLOUT_TAG = "rollout"  # registered-model tag: JSON of `RolloutState`


@dataclass(frozen=True)
class RolloutState:
    version: str  # the challenger version being rolled out
    share: float  # of the routing keys it answers, in [0, 1]
    step: int  # 1-based position of `share` among the configured shares
    steps: int
    started_at: str  # ISO time the rollout began (its first step)
    flow_run_id: str = ""

    def to_tag(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> RolloutState | None:
        """The recorded state, or None when there is none or it cannot be read (a hand-edited
        tag must not take the service down: it then serves the configured share)."""
        raw = tags.get(ROLLOUT_TAG)
        if not raw:
            return None
        try:
            fields: dict[str, Any] = json.loads(raw)
            state = cls(
                version=str(fields["version"]),
                share=float(fields["share"]),
                step=int(fields["step"]),
                steps=int(fields["steps"]),
                started_at=str(fields["started_at"]),
                flow_run_id=str(fields.get("flow_run_id", "")),
            )
        except (ValueError, KeyError, TypeError):
            return None
        return state if 0.0 <= state.share <= 1.0 else None

    def share_for(self, challenger_version: str | None) -> float | None:
        return self.share if challenger_version == self.version else None
