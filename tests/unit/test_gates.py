"""Gate logic on constructed labels, scores and measurements: no server, no model registry."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from mlops.config import (
    ChampionGateConfig,
    FairnessGateConfig,
    OnlineGateConfig,
    OperationalGateConfig,
    QualityGateConfig,
    SliceGateConfig,
)
from mlops.errors import BadBatchError, PromotionError
from mlops.objective import BINARY, Objective
from mlops.periods import Periods
from tasks.gates import (
    DEMOGRAPHIC_PARITY,
    EQUALIZED_ODDS,
    METRIC_GAP,
    ApprovalAnswer,
    ProbeResult,
    approval_gate,
    bootstrap_counts,
    champion_gates,
    check,
    compare_roc_auc,
    data_gate,
    default_eval_period,
    fairness_figures,
    fairness_gates,
    measure_speed,
    online_evidence,
    online_gates,
    operational_gates,
    positive_proba,
    quality_gates,
    require_unseen,
    resampled_roc_auc,
    skip,
    slice_gates,
    verdict,
)


def _problem(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A latent signal and 0/1 labels that depend on it."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=rows)
    y = (rng.random(rows) < 1 / (1 + np.exp(-(1.5 * signal - 1.0)))).astype(int)
    return signal, y


def _scores(signal: np.ndarray, noise: float, seed: int) -> np.ndarray:
    """A model's scores: the signal seen through noise (more noise, lower ROC-AUC)."""
    return signal + np.random.default_rng(seed).normal(scale=noise, size=len(signal))


# -- the vectorised bootstrap ---------------------------------------------------------------


def test_resampled_auc_equals_weighted_sklearn_auc_with_ties() -> None:
    signal, y = _problem(3000, seed=1)
    scores = np.round(_scores(signal, 1.0, seed=2), 1)  # few distinct values: many ties
    counts = bootstrap_counts(np.random.default_rng(3), len(y), 7)
    expected = [roc_auc_score(y, scores, sample_weight=c) for c in counts]
    np.testing.assert_allclose(resampled_roc_auc(y, scores, counts), expected, rtol=1e-12)
    ones = np.ones((1, len(y)), dtype=int)
    assert resampled_roc_auc(y, scores, ones)[0] == pytest.approx(roc_auc_score(y, scores), rel=1e-12)


def test_bootstrap_counts_draw_every_resample_with_replacement() -> None:
    counts = bootstrap_counts(np.random.default_rng(0), 500, 40)
    assert counts.shape == (40, 500)
    assert (counts.sum(axis=1) == 500).all()
    assert (counts == 0).any(axis=1).all()  # with replacement: some rows are left out of each


def test_clearly_better_challenger_has_an_interval_above_zero() -> None:
    signal, y = _problem(4000, seed=4)
    champion = _scores(signal, 2.0, seed=5)
    challenger = _scores(signal, 0.5, seed=6)
    comparison = compare_roc_auc(y, challenger, champion, resamples=500, confidence=0.95, seed=0)
    assert comparison.gain == pytest.approx(roc_auc_score(y, challenger) - roc_auc_score(y, champion))
    assert 0 < comparison.ci_low < comparison.gain < comparison.ci_high
    gates = champion_gates(comparison, ChampionGateConfig(min_roc_auc_gain=0.01), "3")
    assert [g.status for g in gates] == ["passed", "passed"]
    assert verdict(gates)[0]


def test_better_on_average_but_not_significantly_is_rejected() -> None:
    signal, y = _problem(400, seed=7)
    champion = _scores(signal, 1.0, seed=107)
    # The challenger ranks 40 late flights higher than the champion does and 30 others lower:
    # a little better on average, with differences of both signs that 400 rows cannot tell
    # from luck (this construction gave gain > 0 with an interval around 0 for 19 of 20 seeds).
    challenger = champion.copy()
    late = np.flatnonzero(y == 1)
    challenger[late[:40]] += 0.5
    challenger[late[40:70]] -= 0.5
    comparison = compare_roc_auc(y, challenger, champion, resamples=1000, confidence=0.95, seed=0)
    assert comparison.gain > 0, "the construction must favour the challenger on average"
    assert comparison.ci_low <= 0 < comparison.ci_high

    gates = champion_gates(comparison, ChampionGateConfig(min_roc_auc_gain=0.0), "3")
    by_name = {g.name: g for g in gates}
    assert by_name["champion.roc_auc_gain"].passed  # the point estimate alone would promote
    assert not by_name["champion.ci_low"].passed
    promoted, reasons = verdict(gates)
    assert not promoted
    assert any("champion.ci_low" in r and "could be noise" in r for r in reasons)


def test_bootstrap_is_reproducible_by_seed() -> None:
    signal, y = _problem(1000, seed=10)
    a, b = _scores(signal, 1.0, seed=11), _scores(signal, 1.2, seed=12)
    first = compare_roc_auc(y, a, b, resamples=200, confidence=0.9, seed=5)
    again = compare_roc_auc(y, a, b, resamples=200, confidence=0.9, seed=5)
    other = compare_roc_auc(y, a, b, resamples=200, confidence=0.9, seed=6)
    assert (first.ci_low, first.ci_high) == (again.ci_low, again.ci_high)
    assert (first.ci_low, first.ci_high) != (other.ci_low, other.ci_high)


def test_bootstrap_chunks_do_not_change_the_result() -> None:
    signal, y = _problem(800, seed=13)
    a, b = _scores(signal, 1.0, seed=14), _scores(signal, 1.1, seed=15)
    whole = compare_roc_auc(y, a, b, resamples=120, confidence=0.95, seed=1, chunk=120)
    chunked = compare_roc_auc(y, a, b, resamples=120, confidence=0.95, seed=1, chunk=7)
    # Same generator, drawn in different slices: the resamples differ, the estimate is close.
    assert chunked.ci_low == pytest.approx(whole.ci_low, abs=0.02)
    assert chunked.ci_high == pytest.approx(whole.ci_high, abs=0.02)


def test_no_champion_skips_the_comparison_and_says_so() -> None:
    gates = champion_gates(None, ChampionGateConfig(), None)
    assert all(g.skipped and "no champion" in g.detail for g in gates)
    promoted, reasons = verdict([*gates, check("quality.roc_auc", 0.8, ">=", 0.6)])
    assert promoted
    assert any("champion.roc_auc_gain skipped: no champion" in r for r in reasons)


# -- single gates and the verdict -----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "op", "threshold", "passed"),
    [(0.7, ">=", 0.7, True), (0.69, ">=", 0.7, False), (0.2, "<=", 0.2, True), (0.0, ">", 0.0, False)],
)
def test_check_compares_value_with_threshold(value: float, op: str, threshold: float, passed: bool) -> None:
    assert check("g", value, op, threshold).passed is passed


def test_a_nan_value_fails_its_gate() -> None:
    assert check("g", float("nan"), ">=", 0.0).status == "failed"


def test_verdict_names_every_failed_gate_and_ignores_skipped_ones() -> None:
    gates = [
        check("quality.roc_auc", 0.6, ">=", 0.65, "ROC-AUC 0.60"),
        skip("slices.origin", "no champion yet"),
        check("quality.brier", 0.1, "<=", 0.2),
        check("operational.artifact_mb", 300.0, "<=", 100.0, "model files 300 MB"),
    ]
    promoted, reasons = verdict(gates)
    assert not promoted
    assert reasons == [
        "quality.roc_auc failed: ROC-AUC 0.60",
        "operational.artifact_mb failed: model files 300 MB",
    ]


def test_data_gate_requires_passed_validation() -> None:
    assert data_gate("passed").passed
    failed = data_gate(None)
    assert not failed.passed and "None" in failed.detail


def test_quality_gates_use_roc_auc_and_brier() -> None:
    signal, y = _problem(2000, seed=16)
    proba = 1 / (1 + np.exp(-(1.5 * signal - 1.0)))  # the true probabilities: calibrated
    good = quality_gates(y, proba, QualityGateConfig(min_roc_auc=0.6, max_brier=0.25), BINARY)
    assert [g.status for g in good] == ["passed", "passed"]
    strict = quality_gates(y, proba, QualityGateConfig(min_roc_auc=0.99, max_brier=0.01), BINARY)
    assert [g.status for g in strict] == ["failed", "failed"]
    assert strict[0].value == pytest.approx(roc_auc_score(y, proba))


def test_one_class_evaluation_data_is_refused() -> None:
    with pytest.raises(BadBatchError, match="one class"):
        BINARY.require_scorable(np.zeros(50), "evaluation month 2013-06")


# -- slices ---------------------------------------------------------------------------------


def _slice_problem() -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """Three airports: the challenger equals the champion at EWR and JFK and is noise at LGA;
    a fourth airport has too few rows, a fifth only one class."""
    signal, y = _problem(3000, seed=17)
    origin = np.array(["EWR"] * 1200 + ["JFK"] * 1100 + ["LGA"] * 500 + ["XYZ"] * 60 + ["ONE"] * 140)
    y[origin == "ONE"] = 0
    champion = _scores(signal, 0.5, seed=18)
    challenger = champion.copy()
    lga = origin == "LGA"
    challenger[lga] = np.random.default_rng(19).normal(size=lga.sum())
    return pd.DataFrame({"origin": origin}), y, challenger, champion


def test_a_slice_much_worse_than_the_champion_fails_and_is_named() -> None:
    slices, y, challenger, champion = _slice_problem()
    settings = SliceGateConfig(columns=["origin"], max_roc_auc_drop=0.03, min_rows=100)
    gates, rows = slice_gates(slices, y, challenger, champion, settings, "2", BINARY)
    (gate,) = gates
    assert gate.name == "slices.origin" and gate.status == "failed"
    assert "LGA" in gate.detail and "EWR" not in gate.detail.split("worse than allowed")[1]
    by_value = {r.value: r for r in rows}
    assert by_value["LGA"].status == "failed"
    assert by_value["EWR"].drop == pytest.approx(0.0) and by_value["EWR"].status == "passed"
    assert gate.value == pytest.approx(by_value["LGA"].drop)


def test_small_and_one_class_slices_are_skipped_and_listed() -> None:
    slices, y, challenger, champion = _slice_problem()
    settings = SliceGateConfig(columns=["origin"], max_roc_auc_drop=0.03, min_rows=100)
    (gate,), rows = slice_gates(slices, y, challenger, champion, settings, "2", BINARY)
    by_value = {r.value: r for r in rows}
    assert by_value["XYZ"].status == "skipped" and by_value["XYZ"].note == "60 < 100 rows"
    assert by_value["ONE"].status == "skipped" and by_value["ONE"].note == "one class only"
    assert "skipped 2 slice(s): ONE (one class only), XYZ (60 < 100 rows)" in gate.detail


def test_slices_without_a_champion_are_skipped() -> None:
    slices, y, challenger, _ = _slice_problem()
    gates, rows = slice_gates(slices, y, challenger, None, SliceGateConfig(columns=["origin"]), None, BINARY)
    assert [g.status for g in gates] == ["skipped"] and rows == []


def test_every_slice_too_small_skips_the_gate() -> None:
    slices, y, challenger, champion = _slice_problem()
    settings = SliceGateConfig(columns=["origin"], min_rows=5000)
    (gate,), _ = slice_gates(slices, y, challenger, champion, settings, "2", BINARY)
    assert gate.skipped and "no origin slice has >= 5000 rows" in gate.detail


def test_an_unknown_slice_column_is_a_config_error() -> None:
    slices, y, challenger, champion = _slice_problem()
    with pytest.raises(PromotionError, match=r"\['airline'\].*origin"):
        slice_gates(slices, y, challenger, champion, SliceGateConfig(columns=["airline"]), "2", BINARY)


# -- operational ----------------------------------------------------------------------------


def test_a_model_that_does_not_load_fails_and_skips_the_measurements() -> None:
    gates = operational_gates(ProbeResult(False, "skops refused type x"), OperationalGateConfig())
    assert [g.status for g in gates] == ["failed", "skipped", "skipped", "skipped"]
    assert gates[0].detail == "skops refused type x"


def test_operational_thresholds() -> None:
    settings = OperationalGateConfig(max_p95_latency_ms=20, min_rows_per_second=50_000, max_artifact_mb=10)
    probe = ProbeResult(True, "", 2.0, 12.5, 3.0, 25.0, 80_000.0, 10_000)
    by_name = {g.name: g for g in operational_gates(probe, settings)}
    assert by_name["operational.loads"].passed
    assert not by_name["operational.p95_latency_ms"].passed
    assert by_name["operational.rows_per_second"].passed
    assert not by_name["operational.artifact_mb"].passed


def test_measure_speed_times_single_rows_and_a_batch() -> None:
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"x": rng.normal(size=200), "c": rng.choice(["a", "b"], 200)})
    y = (X["x"] > 0).astype(int)
    model = Pipeline(
        [
            ("prep", ColumnTransformer([("c", OneHotEncoder(), ["c"])], remainder="passthrough")),
            ("clf", LogisticRegression()),
        ]
    ).fit(X, y)
    speed = measure_speed(model, X.head(50), latency_calls=30, batch_rows=1000)
    assert 0 < speed["p50_latency_ms"] <= speed["p95_latency_ms"]
    assert speed["rows_per_second"] > 0 and speed["batch_rows"] == 1000
    proba = positive_proba(model, X)
    np.testing.assert_allclose(proba, model.predict_proba(X)[:, 1])


# -- approval -------------------------------------------------------------------------------


def test_approval_gate() -> None:
    yes = ApprovalAnswer(True, "alice", "looks good", "2013-07-01T00:00:00+00:00")
    no = ApprovalAnswer(False, "bob", "slices look odd", "2013-07-01T00:00:00+00:00")
    assert approval_gate(False, True, None, 60).skipped
    assert "automated gates failed" in approval_gate(True, False, None, 60).detail
    timed_out = approval_gate(True, True, None, 60)
    assert timed_out.status == "failed" and timed_out.detail == "no answer within 60 s"
    assert approval_gate(True, True, yes, 60).detail == "approved by alice: looks good"
    rejected = approval_gate(True, True, no, 60)
    assert rejected.status == "failed" and rejected.detail == "rejected by bob: slices look odd"


# -- evaluation month -----------------------------------------------------------------------


def test_default_eval_period_is_the_month_after_the_training_data() -> None:
    months = Periods("month")
    assert default_eval_period("4", "2013-01..2013-05", months) == "2013-06"
    assert default_eval_period("4", "2012-07..2012-12", months) == "2013-01"
    assert default_eval_period("4", "2013-07-01..2013-07-31", Periods("day")) == "2013-08-01"
    assert default_eval_period("4", "2015-W50..2015-W53", Periods("week")) == "2016-W01"
    with pytest.raises(PromotionError, match=r"pass eval_period \(YYYY-MM\)"):
        default_eval_period("4", None, months)


def test_an_eval_month_either_model_saw_is_refused() -> None:
    require_unseen("2013-06", {"1": "2013-01..2013-03", "2": "2013-01..2013-05", "3": None})
    with pytest.raises(PromotionError, match="inside the data of version 2"):
        require_unseen("2013-05", {"1": "2013-01..2013-03", "2": "2013-01..2013-05"})


# -- fairness -------------------------------------------------------------------------------


def _groups_problem() -> tuple[pd.Series, np.ndarray, np.ndarray, np.ndarray]:
    """Two carriers with the same outcomes: the champion treats them alike, the challenger
    flags AA far more often (a higher score whatever the outcome); a third carrier is tiny."""
    rng = np.random.default_rng(5)
    carrier = pd.Series(np.array(["AA"] * 1500 + ["UA"] * 1500 + ["ZZ"] * 50), name="carrier")
    y = rng.integers(0, 2, len(carrier))
    champion = np.clip(0.3 + 0.4 * y + rng.normal(0, 0.15, len(y)), 0, 1)
    challenger = np.where(carrier == "AA", np.clip(champion + 0.3, 0, 1), champion)
    return carrier, y, challenger, champion


def test_fairness_figures_are_fairlearns_own_definitions() -> None:
    from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference

    carrier, y, challenger, _ = _groups_problem()
    settings = FairnessGateConfig(groups=["carrier"], min_rows=100)
    figures = fairness_figures("carrier", carrier, y, challenger, settings, BINARY)
    kept = (carrier != "ZZ").to_numpy()
    predicted = (challenger[kept] >= 0.5).astype(int)
    groups = carrier[kept]
    assert figures.figures[DEMOGRAPHIC_PARITY] == pytest.approx(
        demographic_parity_difference(y[kept], predicted, sensitive_features=groups)
    )
    assert figures.figures[EQUALIZED_ODDS] == pytest.approx(
        equalized_odds_difference(y[kept], predicted, sensitive_features=groups)
    )
    aucs = [
        roc_auc_score(y[(carrier == g).to_numpy()], challenger[(carrier == g).to_numpy()])
        for g in ("AA", "UA")
    ]
    assert figures.figures[METRIC_GAP] == pytest.approx(max(aucs) - min(aucs))
    assert [row["group"] for row in figures.by_group] == ["AA", "UA"] and figures.left_out == ["ZZ"]
    assert figures.by_group[0]["rows"] == 1500 and 0 < figures.by_group[1]["selection_rate"] < 1


def test_a_challenger_that_favours_one_group_fails_both_limits() -> None:
    carrier, y, challenger, champion = _groups_problem()
    settings = FairnessGateConfig(
        groups=["carrier"],
        min_rows=100,
        max_demographic_parity_difference=0.1,
        max_increase_over_champion=0.02,
    )
    mine = fairness_figures("carrier", carrier, y, challenger, settings, BINARY)
    theirs = fairness_figures("carrier", carrier, y, champion, settings, BINARY)
    assert theirs.figures[DEMOGRAPHIC_PARITY] < 0.1 < mine.figures[DEMOGRAPHIC_PARITY]
    gates = {g.name: g for g in fairness_gates(mine, theirs, settings, "1", BINARY)}
    absolute = gates["fairness.carrier.demographic_parity_difference"]
    relative = gates["fairness.carrier.demographic_parity_difference.vs_champion"]
    assert absolute.status == relative.status == "failed"
    assert "left out (< 100 rows): ZZ" in absolute.detail
    assert relative.value == pytest.approx(
        mine.figures[DEMOGRAPHIC_PARITY] - theirs.figures[DEMOGRAPHIC_PARITY]
    )
    # The champion against itself passes both.
    same = fairness_gates(theirs, theirs, settings, "1", BINARY)
    assert [g.status for g in same] == ["passed", "passed"]


def test_a_regressor_is_judged_on_its_metric_gap_and_the_classifier_limits_are_skipped() -> None:
    rng = np.random.default_rng(8)
    origin = pd.Series(np.array(["EWR"] * 600 + ["JFK"] * 600), name="origin")
    y = rng.normal(10, 5, 1200)
    answer = y + np.where(origin == "JFK", rng.normal(0, 6, 1200), rng.normal(0, 1, 1200))
    regression = Objective("regression", "rmse")
    settings = FairnessGateConfig(
        groups=["origin"],
        max_metric_gap=1.0,
        max_equalized_odds_difference=0.1,
        max_increase_over_champion=0.1,
    )
    figures = fairness_figures("origin", origin, y, answer, settings, regression)
    assert set(figures.figures) == {METRIC_GAP} and figures.figures[METRIC_GAP] > 3
    gates = {g.name: g for g in fairness_gates(figures, None, settings, None, regression)}
    assert gates["fairness.origin.metric_gap"].status == "failed"
    assert gates["fairness.origin.metric_gap.vs_champion"].status == "skipped"
    eo = gates["fairness.origin.equalized_odds_difference"]
    assert eo.skipped and "binary classifiers, not a regression target" in eo.detail


def test_multiclass_probabilities_are_split_by_group() -> None:
    rng = np.random.default_rng(9)
    origin = pd.Series(np.array(["EWR"] * 400 + ["LGA"] * 400), name="origin")
    classes = ["early", "late", "on_time"]
    y = rng.choice(classes, 800)
    proba = rng.dirichlet(np.ones(3), 800)
    good = origin.to_numpy() == "EWR"
    proba[good] = 0.05
    proba[good, [classes.index(v) for v in y[good]]] = 0.9  # right at EWR, random at LGA
    objective = Objective("multiclass", "accuracy")
    settings = FairnessGateConfig(groups=["origin"], max_metric_gap=0.2)
    figures = fairness_figures("origin", origin, y, proba, settings, objective, classes)
    by_group = {row["group"]: row["accuracy"] for row in figures.by_group}
    assert by_group["EWR"] == 1.0 and 0.2 < by_group["LGA"] < 0.5
    assert figures.figures[METRIC_GAP] == pytest.approx(by_group["EWR"] - by_group["LGA"])


# -- online evidence ------------------------------------------------------------------------


def _live_log(rows: int, mode: str, seed: int = 3) -> pd.DataFrame:
    """A labelled log where the challenger (v2) is informative and the champion (v1) is noise:
    shadow mode scores every request with both; A/B splits the requests between them."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, rows)
    good = np.clip(0.3 + 0.4 * y + rng.normal(0, 0.2, rows), 0, 1)
    noise = rng.uniform(0, 1, rows)
    base = pd.DataFrame(
        {"request_id": [f"r{i}" for i in range(rows)], "key": [f"k{i}" for i in range(rows)], "label": y}
    )
    base["label_status"] = "joined"
    champion = base.assign(arm="champion", model_version="1", served=True, score=noise)
    challenger = base.assign(arm="challenger", model_version="2", served=mode == "ab", score=good)
    if mode == "ab":  # each request went to one arm only
        champion, challenger = champion.iloc[: rows // 2], challenger.iloc[rows // 2 :]
    return pd.concat([champion, challenger], ignore_index=True)


def test_shadow_traffic_is_a_paired_comparison_that_passes_a_better_challenger() -> None:
    settings = OnlineGateConfig(min_rows=300, bootstrap_resamples=200)
    evidence = online_evidence(_live_log(600, "shadow"), "2", "1", settings, BINARY, seed=0)
    assert evidence.design == "paired (shadow)" and evidence.challenger_rows == 600
    assert evidence.comparison.ci_low > 0.2
    gates = {g.name: g for g in online_gates(evidence, settings, "1", "binary")}
    assert gates["online.rows"].passed and gates["online.gain_ci_low"].passed
    assert "paired (shadow) on 600 rows" in gates["online.gain_ci_low"].detail


def test_ab_traffic_is_an_unpaired_comparison_and_a_worse_challenger_fails() -> None:
    settings = OnlineGateConfig(min_rows=300, bootstrap_resamples=200)
    evidence = online_evidence(_live_log(1000, "ab"), "2", "1", settings, BINARY, seed=0)
    assert evidence.design == "unpaired (A/B)" and (evidence.challenger_rows, evidence.champion_rows) == (
        500,
        500,
    )
    assert online_gates(evidence, settings, "1", "binary")[1].passed
    # The other way round, the noise is the challenger: its CI lies below zero.
    swapped = _live_log(1000, "ab").replace({"arm": {"champion": "challenger", "challenger": "champion"}})
    swapped["model_version"] = np.where(swapped["arm"] == "challenger", "2", "1")
    worse = online_evidence(swapped, "2", "1", settings, BINARY, seed=0)
    gate = online_gates(worse, settings, "1", "binary")[1]
    assert gate.status == "failed" and worse.comparison.ci_high < 0


def test_too_few_live_rows_reject_or_skip_as_configured() -> None:
    log = _live_log(100, "shadow")
    required = OnlineGateConfig(min_rows=300)
    evidence = online_evidence(log, "2", "1", required, BINARY, seed=0)
    assert evidence.comparison is None and evidence.challenger_rows == 100
    (gate,) = online_gates(evidence, required, "1", "binary")
    assert gate.status == "failed" and "100 labelled live rows" in gate.detail
    optional = OnlineGateConfig(min_rows=300, required=False)
    (gate,) = online_gates(evidence, optional, "1", "binary")
    assert gate.skipped
    # Rows not yet labelled, or of another version, are not evidence.
    unlabelled = log.assign(label_status="no_label_yet")
    assert online_evidence(unlabelled, "2", "1", required, BINARY, seed=0).challenger_rows == 0
    assert online_evidence(log, "7", "1", required, BINARY, seed=0).challenger_rows == 0


def test_groups_all_under_min_rows_skip_the_fairness_gates_instead_of_failing_the_run() -> None:
    carrier, y, challenger, _champion = _groups_problem()
    settings = FairnessGateConfig(
        groups=["carrier"], min_rows=5000, max_demographic_parity_difference=0.1, max_metric_gap=0.1
    )
    mine = fairness_figures("carrier", carrier, y, challenger, settings, BINARY)
    assert mine.figures == {} and mine.by_group == [] and mine.left_out == ["AA", "UA", "ZZ"]
    gates = fairness_gates(mine, mine, settings, "1", BINARY)
    assert [g.status for g in gates] == ["skipped", "skipped"]
    assert "fewer than two carrier groups of >= 5000 rows" in gates[0].detail
