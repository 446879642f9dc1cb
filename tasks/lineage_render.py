"""The lineage chain rendered: Markdown for a Prefect artifact (`lineage_markdown`) and a
rich tree for the terminal (`lineage_tree`, `mlops lineage`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tasks.lineage import Lineage
from tasks.lineage_records import KEY_PACKAGES, NOT_RECORDED

if TYPE_CHECKING:
    from rich.tree import Tree


def _short(sha: str) -> str:
    return sha[:16] if len(sha) == 64 else sha


def _holdout(metrics: dict[str, float]) -> str:
    """The run's holdout metrics, e.g. `roc_auc 0.7312, f1 0.4410`; empty if none."""
    return ", ".join(
        f"{k.removeprefix('holdout_')} {v:.4f}" for k, v in metrics.items() if k.startswith("holdout_")
    )


def _key_package_versions(packages: dict[str, str]) -> str:
    """The versions of the packages that change what a fit computes; empty if none recorded."""
    return ", ".join(f"{p} {packages[p]}" for p in KEY_PACKAGES if p in packages)


def lineage_markdown(lineage: Lineage) -> str:
    """The chain as Markdown, for a Prefect artifact."""
    t, r = lineage.training, lineage.registered
    lines = [f"## Lineage of {lineage.model_name} v{lineage.version}", ""]
    lines += ["### 1. Landing files → 2. snapshots", ""]
    if lineage.inputs:
        lines += [
            "| input | role | landing file | bytes | sha256 | rows | snapshot | status |",
            "|---|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {i.name} | {i.context} | `{i.source_uri}` | {i.size} | `{i.sha256}` | {i.rows} "
            f"| `{i.snapshot_uri}` | {i.snapshot_status} |"
            for i in lineage.inputs
        ]
    else:
        lines.append(NOT_RECORDED)
    lines += ["", "### 3. Validation", ""]
    if lineage.validation:
        lines += [
            "| batch | suite | suite sha256 | result | expectations | failed |",
            "|---|---|---|---|---|---|",
        ]
        for v in lineage.validation:
            result = NOT_RECORDED if v.passed is None else ("passed" if v.passed else "**FAILED**")
            link = f"[{result}]({v.result_url})" if v.result_url else result
            lines.append(
                f"| {v.batch} | {v.suite} | `{_short(v.suite_sha256)}` | {link} | {v.expectations} | {v.failed} |"
            )
    else:
        lines.append(NOT_RECORDED)
    packages = t.packages or {}
    key_packages = _key_package_versions(packages) or NOT_RECORDED
    holdout = _holdout(t.metrics)
    lines += [
        "",
        "### 4. Training run",
        "",
        f"- MLflow run [{t.run_name}]({t.run_url}), started {t.started_at}; Prefect run {t.prefect_run_url}",
        f"- code commit `{t.git_commit}`, config hash `{t.config_hash}`"
        f" ({'resolved config recorded' if t.config_recorded else 'resolved config ' + NOT_RECORDED}),"
        f" training fingerprint `{t.training_fingerprint}`, seed {t.seed}",
        f"- periods: train {t.params.get('train_periods', NOT_RECORDED)},"
        f" holdout {t.params.get('holdout_periods', NOT_RECORDED)};"
        f" {t.params.get('train_rows', '?')} train / {t.params.get('holdout_rows', '?')} holdout rows",
        f"- selected candidate **{t.selected_candidate}**; holdout {holdout or NOT_RECORDED}",
        f"- Python {t.python} on {t.platform}; {key_packages}"
        + (f" ({len(packages)} packages recorded)" if packages else ""),
        "",
        "### 5. Registered version",
        "",
        f"- [{r.model_name} v{r.version}]({r.url}), registered {r.created_at};"
        f" aliases now: {', '.join(r.aliases) or 'none'}; validation tag: {r.validation}",
        "",
        "### 6. Gate decisions",
        "",
    ]
    if lineage.decisions:
        for d in lineage.decisions:
            lines.append(
                f"- **{d.verdict}** at {d.recorded_at}, against champion {d.compared_with} on {d.eval_period}"
                f" ({d.eval_rows} rows): {'; '.join(d.reasons) or '-'} · [decision run]({d.run_url})"
            )
    else:
        lines.append("- none recorded")
    lines += ["", "### 7. Periods as champion", ""]
    lines += [
        f"- {p.start} → {p.end} (began by {p.began_by}{', ended by ' + p.ended_by if p.ended_by else ''})"
        for p in lineage.champion_periods
    ] or ["- never champion"]
    lines += ["", "### 8. Prediction-log partitions", ""]
    lines += [
        f"- `{s.partition}`: {s.rows} rows ({s.served_rows} returned; "
        + ", ".join(f"{arm} {n}" for arm, n in sorted(s.arms.items()))
        + ")"
        for s in lineage.served
    ] or ["- none"]
    lines += ["", "### Checks", ""]
    lines += [f"- {'✅' if c.ok else '❌'} {c.what}: {c.detail}" for c in lineage.checks] or [
        "- none possible"
    ]
    if lineage.gaps:
        lines += ["", "### Not recorded", ""] + [f"- {g}" for g in lineage.gaps]
    return "\n".join(lines)


def lineage_tree(lineage: Lineage) -> Tree:
    """The chain as a rich tree for the terminal."""
    from rich.markup import escape
    from rich.tree import Tree

    t, r = lineage.training, lineage.registered
    root = Tree(
        f"[bold]{escape(lineage.model_name)} v{lineage.version}[/bold]  ({escape(lineage.requested)})"
    )
    inputs = root.add("[bold]landing files → snapshots[/bold]")
    for i in lineage.inputs:
        colour = "green" if i.snapshot_status.startswith("present") else "red"
        node = inputs.add(f"{escape(i.name)} [dim]({i.context})[/dim]")
        node.add(f"landing   {escape(i.source_uri)}  {i.size} bytes  {i.rows} rows")
        node.add(f"sha256    {i.sha256}")
        node.add(f"snapshot  {escape(i.snapshot_uri)}  [{colour}]{escape(i.snapshot_status)}[/{colour}]")
    if not lineage.inputs:
        inputs.add(f"[yellow]{NOT_RECORDED}[/yellow]")
    checks = root.add("[bold]validation[/bold]")
    for v in lineage.validation:
        result = (
            NOT_RECORDED
            if v.passed is None
            else ("[green]passed[/green]" if v.passed else "[red]FAILED[/red]")
        )
        checks.add(
            f"{escape(v.batch)}: suite {escape(v.suite)} (sha256 {_short(v.suite_sha256)}) {result},"
            f" {v.expectations} expectations  {escape(v.result_url)}"
        )
    training = root.add(f"[bold]training run[/bold] {escape(t.run_name)}  {escape(t.run_url)}")
    training.add(f"started {t.started_at}; Prefect run {escape(t.prefect_run_url)}")
    training.add(f"code commit {escape(t.git_commit)}")
    training.add(
        f"config hash {t.config_hash} (resolved config {'recorded' if t.config_recorded else NOT_RECORDED});"
        f" fingerprint {t.training_fingerprint}; seed {t.seed}"
    )
    training.add(
        f"train {escape(t.params.get('train_periods', NOT_RECORDED))} ({t.params.get('train_rows', '?')} rows),"
        f" holdout {escape(t.params.get('holdout_periods', NOT_RECORDED))} ({t.params.get('holdout_rows', '?')} rows)"
    )
    metrics = _holdout(t.metrics)
    training.add(f"selected {escape(t.selected_candidate)}; holdout {metrics or NOT_RECORDED}")
    packages = t.packages or {}
    shown = _key_package_versions(packages)
    training.add(
        f"Python {t.python}; {shown} ({len(packages)} packages recorded)"
        if packages
        else f"[yellow]package versions {NOT_RECORDED}[/yellow]"
    )
    root.add(
        f"[bold]registered version[/bold] v{r.version}, {r.created_at}; aliases: {', '.join(r.aliases) or 'none'}"
        f"  {escape(r.url)}"
    )
    _branch(
        root,
        "[bold]gate decisions[/bold]",
        [
            f"{_verdict(d.verdict)} {d.recorded_at} vs champion {escape(d.compared_with)} on"
            f" {escape(d.eval_period)}: {escape('; '.join(d.reasons) or '-')}  {escape(d.run_url)}"
            for d in lineage.decisions
        ],
        "[yellow]none recorded[/yellow]",
    )
    _branch(
        root,
        "[bold]champion[/bold]",
        [
            f"{p.start} → {p.end}  [dim]{escape(p.began_by)}{' / ' + escape(p.ended_by) if p.ended_by else ''}[/dim]"
            for p in lineage.champion_periods
        ],
        "never champion",
    )
    _branch(
        root,
        "[bold]prediction-log partitions[/bold]",
        [
            f"{s.partition}: {s.rows} rows, {s.served_rows} returned ("
            + ", ".join(f"{arm} {n}" for arm, n in sorted(s.arms.items()))
            + ")"
            for s in lineage.served
        ],
        "none",
    )
    _branch(
        root,
        "[bold]checks[/bold]",
        [
            f"{'[green]ok[/green]' if c.ok else '[red]FAILED[/red]'} {escape(c.what)}: {escape(c.detail)}"
            for c in lineage.checks
        ],
    )
    if lineage.gaps:
        _branch(root, "[bold yellow]not recorded[/bold yellow]", [escape(g) for g in lineage.gaps])
    return root


def _verdict(verdict: str) -> str:
    colour = "green" if verdict == "promoted" else "red"
    return f"[{colour}]{verdict}[/{colour}]"


def _branch(root: Tree, title: str, lines: list[str], empty: str | None = None) -> Tree:
    """A node of `root` with one child a line, or the `empty` child when there are none."""
    node = root.add(title)
    for line in lines:
        node.add(line)
    if not lines and empty is not None:
        node.add(empty)
    return node
