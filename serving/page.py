"""The prediction web page at `/`: one record in a form, the answer, and where it falls.

Server-rendered HTML with an inline SVG plot: no script, no front-end build. The form's
fields are the model's inputs (numbers, and a choice list for each categorical, from the
categories the served model's encoder learnt); a submitted form goes through the same
schema and scorer as `POST /predict`, so the page and the API cannot disagree. The plot is
the histogram of the scores the champion gave its holdout rows at training
(`evaluation/holdout_scores.json` on its run), with this record's score marked.
"""

from __future__ import annotations

import html
import json
from typing import Any
from urllib.parse import parse_qs

import numpy as np

from serving.models import LoadedModel

PLOT_WIDTH, PLOT_HEIGHT = 480, 160


def known_categories(pipeline: Any) -> dict[str, list[str]]:
    """Column -> the categories the pipeline's encoder learnt (OrdinalEncoder, OneHotEncoder),
    found in its ColumnTransformer; empty when there is none (the field is then free text)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    steps = pipeline.steps if isinstance(pipeline, Pipeline) else []
    found: dict[str, list[str]] = {}
    for _, step in steps:
        if not isinstance(step, ColumnTransformer):
            continue
        for _, transformer, columns in step.transformers_:
            inner = transformer.steps[-1][1] if isinstance(transformer, Pipeline) else transformer
            categories = getattr(inner, "categories_", None)
            if categories is None or isinstance(columns, str):
                continue
            for column, values in zip(columns, categories, strict=False):
                found[str(column)] = sorted({str(v) for v in values if isinstance(v, str)})
    return found


def form_record(body: bytes, numeric: list[str], categorical: list[str]) -> dict[str, Any]:
    """A submitted form as one JSON record: numbers as numbers (a field left empty is
    missing, as null is in the API), text as given; the schema then checks it like any request."""
    fields = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}
    record: dict[str, Any] = {}
    for column in numeric:
        text = fields.get(column, "").strip()
        try:
            record[column] = float(text) if text else None
        except ValueError:
            record[column] = text  # the schema refuses it, naming the field
    for column in categorical:
        text = fields.get(column, "")
        record[column] = text if text else None
    if fields.get("key"):
        record["key"] = fields["key"]
    return record


def histogram_svg(distribution: dict[str, Any] | None, score: float | None) -> str:
    """Bars of the holdout scores' histogram, and a line where `score` falls."""
    if not distribution or not distribution.get("counts"):
        return '<p class="note">No holdout score distribution was recorded for this model version.</p>'
    edges = np.asarray(distribution["edges"], dtype=float)
    counts = np.asarray(distribution["counts"], dtype=float)
    low, high = float(edges[0]), float(edges[-1])
    span = high - low or 1.0
    tallest = counts.max() or 1.0
    x = lambda v: (v - low) / span * PLOT_WIDTH  # noqa: E731
    bars = "".join(
        f'<rect class="bar" x="{x(a):.1f}" y="{PLOT_HEIGHT - c / tallest * PLOT_HEIGHT:.1f}"'
        f' width="{max(x(b) - x(a) - 1, 1):.1f}" height="{c / tallest * PLOT_HEIGHT:.1f}"/>'
        for a, b, c in zip(edges[:-1], edges[1:], counts, strict=True)
    )
    marker, where = "", ""
    if score is not None:
        at = x(min(max(score, low), high))
        share = float(counts[edges[1:] <= score].sum() / counts.sum())
        where = f"this record: {score:.4g}, above {share:.0%} of the holdout rows"
        marker = (
            f'<line id="score-marker" x1="{at:.1f}" x2="{at:.1f}" y1="0" y2="{PLOT_HEIGHT}"/>'
            f"<title>{where}</title>"
        )
    return (
        f'<svg id="score-plot" viewBox="0 -4 {PLOT_WIDTH} {PLOT_HEIGHT + 24}" width="{PLOT_WIDTH}"'
        f' role="img" aria-label="holdout score distribution">{bars}{marker}'
        f'<text x="0" y="{PLOT_HEIGHT + 16}">{low:.3g}</text>'
        f'<text x="{PLOT_WIDTH}" y="{PLOT_HEIGHT + 16}" text-anchor="end">{high:.3g}</text></svg>'
        f'<p class="note">Scores the model gave its {int(counts.sum()):,} holdout rows at training'
        f"{'; the red line is ' + where if score is not None else ''}.</p>"
    )


def _field(column: str, value: Any, choices: list[str] | None) -> str:
    shown = "" if value is None else html.escape(str(value))
    if choices:
        options = "".join(
            f'<option value="{html.escape(c)}"{" selected" if c == value else ""}>{html.escape(c)}</option>'
            for c in choices
        )
        control = (
            f'<select name="{column}" id="{column}"><option value="">(missing)</option>{options}</select>'
        )
    elif choices is None:
        control = f'<input name="{column}" id="{column}" type="text" inputmode="decimal" value="{shown}">'
    else:
        control = f'<input name="{column}" id="{column}" type="text" value="{shown}">'
    return f'<label for="{column}">{html.escape(column)}</label>{control}'


STYLE = """
body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
form{display:grid;grid-template-columns:max-content 14rem;gap:.35rem 1rem;align-items:center}
button{grid-column:2;margin-top:.6rem;padding:.4rem}
.answer{font-size:1.4rem;margin:1rem 0}.error{color:#a00;white-space:pre-wrap}
.note{color:#666;font-size:.9rem}.bar{fill:#7a9cc6}#score-marker{stroke:#c33;stroke-width:3}
svg text{font-size:11px;fill:#666}.cols{display:flex;gap:3rem;flex-wrap:wrap}
"""


def render_page(
    *,
    title: str,
    model: LoadedModel | None,
    alias: str,
    numeric: list[str],
    categorical: list[str],
    values: dict[str, Any],
    answer: dict[str, Any] | None,
    error: str | None,
    links: dict[str, str],
) -> str:
    """The whole page: the form (refilled with `values`), the answer or the error, the plot."""
    choices = known_categories(model.pipeline) if model is not None else {}
    fields = [_field(c, values.get(c), None) for c in numeric]
    fields += [_field(c, values.get(c), choices.get(c, [])) for c in categorical]
    score = None
    result = ""
    if error:
        result = f'<p class="error" id="error">{html.escape(error)}</p>'
    elif answer is not None:
        score = answer.get("probability", answer.get("value"))
        shown = {k: v for k, v in answer.items() if k not in ("arm", "model_version")}
        readable = ", ".join(
            f"{html.escape(k)} <b>{v:.4g}</b>"
            if isinstance(v, float)
            else f"{html.escape(k)} <b>{html.escape(str(v))}</b>"
            for k, v in shown.items()
            if not isinstance(v, dict)
        )
        result = (
            f'<p class="answer" id="answer" data-answer="{html.escape(json.dumps(shown))}">{readable}</p>'
            f'<p class="note">answered by the {html.escape(answer["arm"])},'
            f" v{html.escape(str(answer['model_version']))}</p>"
        )
    if model is None:
        about = '<p class="error">No model is loaded yet.</p>'
    else:
        scorer = "compiled fast path" if model.fast is not None else "pipeline"
        link_items = "".join(
            f'<li><a href="{html.escape(u)}">{html.escape(t)}</a></li>' for t, u in links.items()
        )
        about = (
            f'<p id="model">{html.escape(model.name)} v{html.escape(model.version)} ({alias});'
            f' scored through the <span id="scorer">{scorer}</span></p><ul>{link_items}</ul>'
        )
    plot = histogram_svg(model.holdout_scores if model is not None else None, score)
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{about}"
        f'<div class=cols><form method="post" action="/">{"".join(fields)}'
        f'<button type="submit" id="predict">Predict</button></form>'
        f"<div>{result}{plot}</div></div></body></html>"
    )
