"""Team-draft interleaving, the `/rank` request's contract, and the credit of labelled requests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlops.config import FeaturesConfig
from mlops.names import CHALLENGER, CHAMPION
from serving.interleaving import ranking, request_seed, team_draft
from serving.schema import FeatureSchema, InputError
from tasks.compare import interleaving_credit


def test_each_arm_adds_its_best_record_not_yet_picked_in_turns() -> None:
    rng = np.random.default_rng(0)
    for trial in range(50):
        n, k = int(rng.integers(2, 30)), None
        k = int(rng.integers(1, n + 1))
        a, b = rng.normal(size=n), rng.normal(size=n)
        merged = team_draft(a, b, k, seed=trial)
        assert len(merged.rows) == len(set(merged.rows)) == k
        picks = {
            arm: [r for r, t in zip(merged.rows, merged.teams, strict=True) if t == arm]
            for arm in (CHAMPION, CHALLENGER)
        }
        assert abs(len(picks[CHAMPION]) - len(picks[CHALLENGER])) <= 1
        for arm, scores in ((CHAMPION, a), (CHALLENGER, b)):
            order = list(ranking(scores))  # an arm's picks come in its own order
            assert [order.index(r) for r in picks[arm]] == sorted(order.index(r) for r in picks[arm])
        # The first pick is the best record of whichever arm won the toss.
        assert merged.rows[0] == ranking(a if merged.teams[0] == CHAMPION else b)[0]


def test_the_draft_is_reproducible_from_the_request_id_and_agreeing_arms_change_nothing() -> None:
    a, b = np.random.default_rng(1).normal(size=(2, 20))
    seed = request_seed("req-42")
    assert team_draft(a, b, 10, seed).rows == team_draft(a, b, 10, request_seed("req-42")).rows
    assert team_draft(a, a, 8, seed).rows == ranking(a)[:8].tolist()
    with pytest.raises(ValueError, match="between 1 and the 20"):
        team_draft(a, b, 21, seed)


def _stream(requests: int, seed: int) -> pd.DataFrame:
    """A seeded stream of /rank requests as the labelled log holds them: the challenger's
    score knows the outcome, the champion's is noise, ten records per request, top 4 shown."""
    rng = np.random.default_rng(seed)
    rows = []
    for r in range(requests):
        y = (rng.random(10) < 0.3).astype(int)
        mine = y + rng.normal(0, 0.5, 10)
        theirs = rng.normal(0, 1, 10)
        request_id = f"req-{r}"
        merged = team_draft(theirs, mine, 4, request_seed(request_id))
        for arm, scores in ((CHAMPION, theirs), (CHALLENGER, mine)):
            position = {
                row: p for p, (row, t) in enumerate(zip(merged.rows, merged.teams, strict=True)) if t == arm
            }
            for i in range(10):
                rows.append(
                    {
                        "request_id": request_id,
                        "key": f"{r}-{i}",
                        "arm": arm,
                        "model_version": "2" if arm == CHALLENGER else "1",
                        "mode": "interleave",
                        "served": True,
                        "score": scores[i],
                        "position": position.get(i),
                        "label": float(y[i]),
                        "label_status": "joined",
                    }
                )
    return pd.DataFrame(rows)


def test_credit_goes_to_the_arm_that_placed_each_positive_and_finds_the_better_arm() -> None:
    credit = interleaving_credit(_stream(300, seed=7))
    assert credit is not None and credit.requests <= 300
    assert credit.wins + credit.losses + credit.ties == credit.requests
    assert credit.preference > 0.7 and credit.p_value < 1e-6
    assert credit.requests_needed is not None and credit.requests_needed < 300
    # Swap the arms' names: the same evidence, the other way round.
    swapped = _stream(300, seed=7).replace({"arm": {CHAMPION: CHALLENGER, CHALLENGER: CHAMPION}})
    other = interleaving_credit(swapped)
    assert (other.wins, other.losses) == (credit.losses, credit.wins)


def test_records_an_arm_did_not_place_earn_it_nothing_and_unlabelled_requests_are_no_evidence() -> None:
    stream = _stream(200, seed=3)
    noise = stream[stream["arm"] == CHAMPION]
    twin = noise.assign(arm=CHALLENGER, model_version="2", position=None)
    # Both arms noise: give the challenger the champion's scores, credit split by the draft.
    log = pd.concat([noise, twin], ignore_index=True)
    credit = interleaving_credit(log)
    assert credit is not None and credit.wins == 0  # the twin placed nothing
    assert interleaving_credit(stream.assign(label_status="no_label_yet")) is None


@pytest.fixture(scope="module")
def schema() -> FeatureSchema:
    return FeatureSchema(FeaturesConfig(numeric=["distance"], categorical=["origin"]))


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (b'{"records": [], "k": 1}', "records"),
        (b'{"records": [{"distance": 1.0, "origin": "EWR", "key": "a"}], "k": 0}', "k"),
        (b'{"records": [{"distance": 1.0, "origin": "EWR", "key": "a"}], "k": 2}', "k"),
        (b'{"records": [{"distance": 1.0, "origin": "EWR", "key": "a"}]}', "k"),
        (b'{"records": [{"distance": 1.0, "origin": "EWR", "key": "a"}], "k": true}', "k"),
        (b'{"records": [{"distance": 1.0, "origin": "EWR"}], "k": 1}', "records.0.key"),
        (
            b'{"records": [{"distance": 1.0, "origin": "EWR", "key": "a"},'
            b' {"distance": 2.0, "origin": "JFK", "key": "a"}], "k": 1}',
            "records.1.key",
        ),
    ],
)
def test_a_bad_ranking_request_is_a_422_naming_the_field(
    schema: FeatureSchema, body: bytes, where: str
) -> None:
    with pytest.raises(InputError) as caught:
        schema.parse_rank(body, 100)
    assert caught.value.status == 422
    loc = caught.value.errors[0]["loc"]
    assert ".".join(str(part) for part in loc[1:]) == where, caught.value.errors


def test_a_good_ranking_request_parses(schema: FeatureSchema) -> None:
    body = b'{"records": [{"distance": 1.0, "origin": "EWR", "key": "a"}, {"distance": 2, "origin": null, "key": "b"}], "k": 2}'
    parsed, k = schema.parse_rank(body, 100)
    assert k == 2 and [r.key for r in parsed.records] == ["a", "b"]
