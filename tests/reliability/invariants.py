"""The reliability invariants of issue 6, as functions that count violations.

Every fault test ends by calling these (or `assert_invariants`), and records what they
found in the session's fault report (`fault_report` in conftest.py):

1. no landing file is lost: each is in a complete snapshot (its manifest exists, and the
   snapshot's bytes hash to the landing file's sha256) or in quarantine beside a reason.json;
2. at most one registered model version per `training_fingerprint` tag;
3. the `champion` alias points only at a version whose decision record passed (the
   promotion flow's records: the version's `promotion` tag says promoted, and every gate of the
   decision file of the run that tag names passed or was skipped);
4. the prediction service answers from a valid model (ready, and /predict scores a record
   with probabilities in [0, 1] from a version that exists in the registry).

The functions return what is wrong (empty: all holds), so a test can both count and assert.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import httpx

from mlops.errors import BadBatchError, LandingError
from mlops.names import DECISION_FILE, PROMOTION_TAG
from mlops.storage import Store, sha256_bytes
from tasks.ingest import read_table

CHAMPION = "champion"
FINGERPRINT_TAG = "training_fingerprint"


@dataclass
class LandingAudit:
    """Where each landing file ended up; `lost` lists the ones found nowhere."""

    snapshotted: list[str] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    rows_lost: int = 0
    problems: list[str] = field(default_factory=list)  # why each lost file counts as lost

    @property
    def violations(self) -> int:
        return len(self.lost)


def _complete_snapshots(snapshots: Store) -> dict[str, str]:
    """sha256 -> snapshot key, for snapshots whose manifest exists and whose bytes match it.

    A data file without its manifest (a write interrupted between the two) does not count:
    that is the "half-written snapshot taken as complete" the issue forbids.
    """
    complete: dict[str, str] = {}
    for key in snapshots.list():
        if not key.endswith(".json"):
            continue
        try:
            manifest = json.loads(snapshots.read_bytes(key))
            data = snapshots.read_bytes(manifest["key"])
        except (LandingError, ValueError, KeyError, TypeError):
            continue
        if sha256_bytes(data) == manifest.get("sha256"):
            complete[manifest["sha256"]] = manifest["key"]
    return complete


def _quarantined(quarantine: Store) -> dict[str, str]:
    """sha256 -> quarantined key, for files that sit beside a readable reason.json naming a reason."""
    found: dict[str, str] = {}
    keys = quarantine.list()
    reasons = {str(PurePosixPath(k).parent) for k in keys if PurePosixPath(k).name == "reason.json"}
    for key in keys:
        folder = str(PurePosixPath(key).parent)
        if PurePosixPath(key).name == "reason.json" or folder not in reasons:
            continue
        try:
            reason = json.loads(quarantine.read_bytes(f"{folder}/reason.json"))
        except (LandingError, ValueError):
            continue
        if reason.get("reason"):
            found[sha256_bytes(quarantine.read_bytes(key))] = key
    return found


def _rows(data: bytes, name: str) -> int:
    try:
        return len(read_table(data, name))
    except BadBatchError:
        return 0  # unreadable: no rows could be counted, the file itself is the loss


def audit_landing(
    landing: Store, snapshots: Store, quarantine: Store, keys: Iterable[str] | None = None
) -> LandingAudit:
    """Check invariant 1 for `keys` (default: every landing file)."""
    complete = _complete_snapshots(snapshots)
    quarantined = _quarantined(quarantine)
    audit = LandingAudit()
    for key in sorted(keys if keys is not None else landing.list()):
        data = landing.read_bytes(key)
        digest = sha256_bytes(data)
        if digest in complete:
            audit.snapshotted.append(key)
        elif digest in quarantined:
            audit.quarantined.append(key)
        else:
            audit.lost.append(key)
            audit.rows_lost += _rows(data, key)
            audit.problems.append(
                f"{landing.uri_for(key)} (sha256 {digest[:12]}) is in no complete snapshot and not"
                " quarantined with a reason.json"
            )
    return audit


def duplicate_registrations(versions: Iterable[Any]) -> dict[str, list[str]]:
    """Invariant 2: fingerprint -> versions, for fingerprints registered more than once.

    `versions`: MLflow ModelVersion objects (anything with `.version` and `.tags`).
    """
    by_fingerprint: dict[str, list[str]] = defaultdict(list)
    for v in versions:
        fingerprint = (v.tags or {}).get(FINGERPRINT_TAG)
        if fingerprint:
            by_fingerprint[fingerprint].append(str(v.version))
    return {fp: sorted(vs, key=int) for fp, vs in by_fingerprint.items() if len(vs) > 1}


def decision_passed(tags: Mapping[str, str]) -> bool:
    """A version's recorded promotion decision passed: promoted, at least one gate passed and
    none failed. A skipped gate (no champion to compare with yet, approval not required) never
    blocks a promotion (`tasks.gates.verdict`), so it does not fail the record either."""
    gates = {k: v for k, v in tags.items() if k.startswith("promotion.gate.")}
    return (
        tags.get("promotion") == "promoted"
        and any(v.startswith("passed") for v in gates.values())
        and all(v.startswith(("passed", "skipped")) for v in gates.values())
    )


def decision_record(tracker: Any, tags: Mapping[str, str]) -> dict[str, str]:
    """A version's decision record, flat: its `promotion` tag beside `promotion.gate.<name>` ->
    passed | failed | skipped, read from the decision file of the run the version names."""
    record = {k: v for k, v in tags.items() if k == PROMOTION_TAG}
    run_id = tags.get("promotion.mlflow_run_id")
    decision = tracker.read_json(run_id, DECISION_FILE) if run_id else None
    for gate in (decision or {}).get("gates", []):
        status = "skipped" if gate["skipped"] else "passed" if gate["passed"] else "failed"
        record[f"promotion.gate.{gate['name']}"] = status
    return record


def champion_problems(aliases: Mapping[str, str], tags_of: Mapping[str, Mapping[str, str]]) -> list[str]:
    """Invariant 3. `aliases`: alias -> version; `tags_of`: version -> its tags."""
    champion = aliases.get(CHAMPION)
    if champion is None:
        return []
    tags = tags_of.get(champion)
    if tags is None:
        return [f"champion points at v{champion}, which does not exist"]
    if not decision_passed(tags):
        recorded = {k: v for k, v in tags.items() if k == "promotion" or k.startswith("promotion.gate.")}
        return [f"champion points at v{champion}, whose decision record did not pass: {recorded}"]
    return []


def registry_problems(tracker: Any, model_name: str) -> list[str]:
    """Invariants 2 and 3 read from the registry through the project's `Tracker`."""
    versions = tracker.client.search_model_versions(f"name = '{model_name}'")
    problems = [
        f"fingerprint {fp[:12]} registered {len(vs)} times: versions {vs}"
        for fp, vs in duplicate_registrations(versions).items()
    ]
    tags_of = {str(v.version): decision_record(tracker, dict(v.tags or {})) for v in versions}
    problems += champion_problems(tracker.aliases(model_name), tags_of)
    return problems


def service_problems(
    base_url: str, records: Sequence[Mapping[str, Any]], valid_versions: Iterable[str], timeout: float = 30
) -> list[str]:
    """Invariant 4: the service is ready and scores `records` from one of `valid_versions`."""
    valid = {str(v) for v in valid_versions}
    problems: list[str] = []
    try:
        ready = httpx.get(f"{base_url}/ready", timeout=timeout)
        if ready.status_code != 200:
            return [f"{base_url}/ready answered {ready.status_code}: {ready.text[:300]}"]
        version = str(ready.json().get("model_version"))
        if version not in valid:
            problems.append(f"service serves v{version}, not one of the valid versions {sorted(valid)}")
        answer = httpx.post(f"{base_url}/predict", json={"records": list(records)}, timeout=timeout)
    except httpx.HTTPError as exc:
        return [f"service at {base_url} did not answer: {exc}"]
    if answer.status_code != 200:
        return [*problems, f"/predict answered {answer.status_code}: {answer.text[:300]}"]
    predictions = answer.json().get("predictions", [])
    if len(predictions) != len(records):
        problems.append(f"/predict returned {len(predictions)} predictions for {len(records)} records")
    for p in predictions:
        probability = p.get("probability") if isinstance(p, Mapping) else None
        if not isinstance(probability, int | float) or not 0.0 <= probability <= 1.0:
            problems.append(f"/predict returned an invalid prediction {p!r}")
            break
        if str(p.get("model_version")) not in valid:
            problems.append(f"/predict answered from v{p.get('model_version')}, not one of {sorted(valid)}")
            break
    return problems


def assert_no_problems(problems: Sequence[str], what: str) -> None:
    assert not problems, f"{what}: {len(problems)} invariant violation(s):\n" + "\n".join(problems)
