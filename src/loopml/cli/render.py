"""What the commands print for people (``--json`` output is the results' own ``to_dict``):
Rich tables and lines on stdout, the controller's ticks on stderr."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.table import Table

from loopml.cli.common import console, out

if TYPE_CHECKING:
    from loopml.control import Tick
    from loopml.monitoring import MonitorSummary

# ---------------------------------------------------------------- data


def validated(dataset: Any) -> None:
    """A dataset that passed every rule, with the notes on what loading changed."""
    for note in dataset.notes:
        out.print(f"note: {note}")
    out.print(
        f"[green]valid[/]: {dataset.source}: {len(dataset.frame)} rows, "
        f"{len(dataset.labels)} classes, version {dataset.version}"
    )


def description(dataset: Any, info: dict[str, Any]) -> None:
    """A dataset's class and domain counts and text lengths."""
    table = Table(title=f"{dataset.source} (version {dataset.version}, {info['rows']} rows)")
    table.add_column("kind")
    table.add_column("value")
    table.add_column("rows", justify="right")
    for kind in ("labels", "domains"):
        counts = info[kind]
        assert isinstance(counts, dict)
        for name, count in counts.items():
            table.add_row(kind[:-1], str(name), str(count))
    out.print(table)
    out.print(f"text length: {info['text_length']}")


def purged(counts: dict[str, Any]) -> None:
    """What a purge deleted."""
    out.print(
        f"purged data older than {counts['older_than_days']:g} days: "
        f"{counts['predictions']} predictions, {counts['feedback']} feedback labels, "
        f"{counts['report_files']} report files, "
        f"{counts['split_rows']} feedback rows of {len(counts['split_runs'])} training runs' splits"
    )


def forgotten(counts: dict[str, Any]) -> None:
    """What forgetting a subject deleted, and the request ids it did not find."""
    out.print(
        f"deleted {counts['predictions']} predictions, {counts['feedback']} feedback labels, "
        f"{counts['split_rows']} rows of {len(counts['split_runs'])} training runs' splits"
    )
    missing = counts["request_ids_not_found"]
    if missing:
        out.print(
            f"{len(missing)} request id(s) not in the log (unknown, already deleted, or not "
            f"written yet: run again in a minute): {', '.join(missing[:10])}",
            highlight=False,
        )


# ---------------------------------------------------------------- training


def _gate_table(gate: Any) -> Table:
    title = f"gate: {gate.verdict.upper()} (champion: {gate.champion_version or 'none'}"
    if gate.comparison is not None:
        title += f", compared {gate.comparison.describe()}"
    table = Table(title=title + ")")
    for col in ("check", "value", "threshold", "result", "detail"):
        table.add_column(col)
    for c in gate.checks:
        mark = "[green]pass[/]" if c.passed else "[red]FAIL[/]"
        table.add_row(c.name, f"{c.value:g}", f"{c.threshold:g}", mark, c.detail)
    return table


def trained(model_name: str, result: Any, released: Any) -> None:
    """A training run: the version registered, its scores, the gate and the release, if any."""
    m = result.evaluation.metrics
    for note in result.data_notes:
        out.print(f"note: {note}")
    out.print(
        f"registered [bold]{model_name}[/] version [bold]{result.version}[/] "
        f"(run {result.run_id}, data {result.dataset_version})"
    )
    out.print(
        f"recipe {result.recipe} {result.recipe_params} ({escape(result.recipe_reason)})",
        highlight=False,
    )
    out.print(
        f"test macro-F1 {m['macro_f1']:.4f}, accuracy {m['accuracy']:.4f}; "
        f"fit {result.fit_seconds:.1f}s, total {result.total_seconds:.1f}s"
    )
    out.print(_gate_table(result.gate))
    if released is not None:
        out.print(_release_line(released))


def tuned(result: Any) -> None:
    """A search's best parameters and the command that trains with them."""
    found = result.search
    out.print(
        f"{found.recipe} ({escape(result.reason)}): {found.trials} trials in "
        f"{result.seconds:.0f}s; validation macro-F1 {found.best_macro_f1:.4f} with "
        f"{found.best_params} (start {found.start_macro_f1:.4f})",
        highlight=False,
    )
    flags = " ".join(f"-p {k}={v}" for k, v in found.best_params.items())
    out.print(f"train it: [bold]loopml train --recipe {found.recipe} {flags}[/]", highlight=False)


def recipes(found: list[dict[str, Any]]) -> None:
    """The recipes with their source, extra and default parameters."""
    table = Table("recipe", "source", "extra", "parameters (defaults)")
    for r in found:
        params = r["error"] or ", ".join(f"{k}={v}" for k, v in r["parameters"].items())
        table.add_row(r["name"], r["source"], r["extra"] or "", escape(params))
    out.print(table)


def evaluated(version: str, evaluation: Any, gate: Any) -> None:
    """A version's scores and its gate."""
    out.print(
        f"version {version}: macro-F1 {evaluation.metrics['macro_f1']:.4f}, "
        f"behavioral pass rate {evaluation.behavioral.pass_rate:.3f}"
    )
    out.print(_gate_table(gate))


def explanation(doc: dict[str, Any]) -> None:
    """The text's tokens coloured by their pull, the occlusion table and the linear terms."""
    # Each token coloured by its pull on the predicted label: green towards, red away.
    label = doc["label"]
    line = []
    for token in doc["tokens"]:
        weight = token["attribution"][label]
        style = "green" if weight > 0.005 else "red" if weight < -0.005 else "dim"
        line.append(f"[{style}]{escape(token['token'])}[/]")
    out.print(
        f"version {doc['model_version']} says [bold]{escape(label)}[/] "
        f"({doc['probabilities'][label]:.1%}):  " + " ".join(line)
    )
    table = Table(title="occlusion: probability drop when the token is deleted")
    for col in ("class", "probability", "towards", "away"):
        table.add_column(col)
    for name, info in doc["classes"].items():
        towards = (f"[green]{escape(r['token'])}[/] {r['weight']:+.3f}" for r in info["towards"])
        away = (f"[red]{escape(r['token'])}[/] {r['weight']:+.3f}" for r in info["away"])
        table.add_row(
            escape(name), f"{info['probability']:.3f}", ", ".join(towards), ", ".join(away)
        )
    out.print(table)
    if doc["linear"]:
        linear = Table(title="linear model: tf-idf weight x coefficient per term")
        for col in ("class", "towards", "away"):
            linear.add_column(col)
        for name, info in doc["linear"].items():
            linear.add_row(
                escape(name),
                ", ".join(f"{escape(r['term'])} {r['weight']:+.2f}" for r in info["towards"]),
                ", ".join(f"{escape(r['term'])} {r['weight']:+.2f}" for r in info["away"]),
            )
        out.print(linear)


# ---------------------------------------------------------------- registry


def _release_line(result: Any) -> str:
    if result.how == "canary":
        r = result.routing
        return (
            f"canary started: version {r.challenger} gets {r.weight:.0%} of traffic against "
            f"champion {r.champion}; the controller (`loopml controller`) promotes or rolls it "
            "back by its live analysis (`loopml rollout status` to follow it)"
        )
    change = result.change
    what = "first champion" if result.how == "first_champion" else "direct promotion, audited"
    return f"champion: {change.from_version or 'none'} -> [bold]{change.to_version}[/] ({what})"


def released(result: Any) -> None:
    """A release: the canary started or the champion changed."""
    out.print(_release_line(result))


def approved(record: dict[str, Any]) -> None:
    """An approval and what it approved."""
    change = record["change"]
    what = "the champion's spec, unchanged" if change is None else f"changes {change}"
    out.print(f"version {record['version']} approved by {record['by']} ({what})", highlight=False)


def rolled_back(change: Any) -> None:
    """A rollback's change of champion."""
    out.print(f"rolled back: champion {change.from_version} -> [bold]{change.to_version}[/]")


def versions(model_name: str, rows: list[dict[str, Any]]) -> None:
    """The registered versions of a model."""
    table = Table(title=f"model {model_name}")
    for col in ("version", "aliases", "gate", "macro-F1", "dataset", "recipe", "run"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["version"],
            ", ".join(r["aliases"]),
            r["gate"],
            r["macro_f1"] or "",
            r["dataset_version"] or "",
            r["recipe"] or "",
            (r["run_id"] or "")[:8],
        )
    out.print(table)


def history(model_name: str, rows: list[dict[str, Any]]) -> None:
    """A model's audit log, newest first."""
    table = Table(title=f"audit log of {model_name}")
    for col in ("when", "who", "action", "from", "to", "reason", "numbers"):
        table.add_column(col)
    for r in rows:
        numbers = ", ".join(f"{k}={v}" for k, v in r["details"].items() if v is not None)
        table.add_row(
            r["ts"][:19],
            r["actor"],
            r["action"],
            r["from_version"] or "-",
            r["to_version"] or "-",
            r["reason"],
            numbers,
        )
    out.print(table)


# ---------------------------------------------------------------- control loop


def rollout_started(routing: Any) -> None:
    """The rollout just started."""
    out.print(
        f"rollout started: version {routing.challenger} in {routing.mode} mode"
        + (f" at {routing.weight:.0%}" if routing.mode == "canary" else "")
    )


def rollout_status(info: Any) -> None:
    """The routing state and the analysis of the rollout in progress, if any."""
    r, rollout, analysis = info.routing, info.routing.rollout, info.analysis
    if rollout is None or analysis is None:
        out.print(f"no rollout: champion {r.champion or 'none'} serves all traffic")
        return
    out.print(
        f"champion {r.champion}, challenger {r.challenger}: {r.mode}"
        + (f" at {r.weight:.0%}" if r.mode == "canary" else "")
        + f" (step {rollout['step'] + 1}/{len(rollout['steps'])})"
    )
    table = Table(title=f"analysis: {analysis.status}")
    for col in ("check", "status", "detail"):
        table.add_column(col)
    for c in analysis.checks:
        table.add_row(c.name, c.status, c.detail)
    out.print(table)


def rollout_aborted(routing: Any) -> None:
    """The champion serving all traffic again."""
    out.print(f"rollout aborted: champion {routing.champion} serves all traffic")


def relabelled(request_id: str, label: str, result: dict[str, Any]) -> None:
    """A feedback label's correction."""
    before = result["previous"]
    out.print(f"request {request_id}: label {before['label']} (by {before['key_id']}) -> {label}")


def imported(stored: int, correct: int, key_id: str) -> None:
    """How many imported labels were stored, and how many agree with the prediction."""
    out.print(f"{stored} labels stored as {key_id} ({correct} agree with the prediction)")


def tick(tick: Tick, *, named: bool = False) -> None:
    """One controller tick on stderr (``named``: with its model), with a skew alarm if its
    check found one."""
    who = f"{escape(tick.model or '*')} " if named else ""
    console.print(f"{tick.at:%H:%M:%S} {who}[bold]{tick.action}[/]: {tick.reason}")
    if tick.skew is not None and tick.skew.get("passed") is False:
        console.print(
            f"  [red]SKEW[/] v{tick.skew['model_version']}: max |logged - recomputed| "
            f"{tick.skew['max_abs_diff']:.3g} (see `loopml check skew`)"
        )


# ---------------------------------------------------------------- the database's schema


def upgraded(before: Any, after: Any) -> None:
    """What ``db upgrade`` did."""
    if before.status == "current" or before.status == "ahead":
        out.print(f"nothing to do: {before.describe()}", soft_wrap=True)
    else:
        out.print(f"upgraded {before.revision or 'an empty database'} -> {after.revision}")


def schema(url: str, state: Any) -> None:
    """The database, its revision against this release's head, and what that means."""
    out.print(f"database: {url}", highlight=False, soft_wrap=True)
    out.print(f"revision: {state.revision or '-'} (this release's head: {state.head})")
    out.print(f"{state.status}: {state.describe()}", soft_wrap=True)


def schema_check(state: Any) -> None:
    """Whether this release can use the schema (on stderr when it cannot)."""
    if state.usable:
        out.print(f"ok: {state.describe()}", soft_wrap=True)
    else:
        console.print(f"[bold red]not usable:[/] {escape(state.describe())}", soft_wrap=True)


# ---------------------------------------------------------------- monitoring and checks


def _monitor_table(summary: MonitorSummary) -> Table:
    w, q = summary.window, summary.quality
    table = Table(
        title=f"{summary.model_name} v{summary.model_version}: "
        f"{summary.verdict.upper()} ({w.rows} predictions)"
    )
    for column in ("check", "method", "score", "threshold", "status"):
        table.add_column(column)
    colours = {"drift": "red", "ok": "green", "unavailable": "dim"}
    for c in summary.checks:
        score = "-" if c.score is None else f"{c.score:.3f}"
        table.add_row(
            c.kind, c.method, score, str(c.threshold), f"[{colours[c.status]}]{c.status}[/]"
        )
    if q.macro_f1 is not None and q.accuracy is not None and q.macro_f1_ci is not None:
        low, high = q.macro_f1_ci
        colour = {"alarm": "red", "ok": "green"}.get(q.status, "dim")
        table.add_row(
            "live macro-F1",
            f"{q.labeled} labeled",
            f"{q.macro_f1:.3f}",
            f"floor {q.floor}",
            f"[{colour}]{q.status}[/] [{low:.3f}, {high:.3f}]",
        )
        table.add_row("live accuracy", f"{q.labeled} labeled", f"{q.accuracy:.3f}", "-", "")
    else:
        table.add_row("live quality", "no feedback", "-", f"floor {q.floor}", "[dim]no labels[/]")
    gap = summary.offline_vs_live
    if gap is not None and gap.gap is not None:
        colour = "red" if gap.status == "alarm" else "green"
        offline, live = gap.offline_macro_f1_same_labels, gap.live_macro_f1_same_labels
        table.add_row(
            "offline vs live",
            f"test {offline:.3f}, live {live:.3f}",
            f"gap {gap.gap:.3f}",
            f"max {gap.max_gap}",
            f"[{colour}]{gap.status}[/]",
        )
    return table


def monitor_report(report: Any) -> None:
    """A monitor run: its checks, the reasons for its verdict and where the report is."""
    out.print(_monitor_table(report.summary))
    for reason in report.summary.reasons:
        out.print(f"  - {reason}", highlight=False)
    out.print(f"report: {report.report_path}", highlight=False)


def skew(report: Any) -> None:
    """A skew check: the verdict, the differences and the worst rows."""
    verdict = "[green]no skew[/]" if report.passed else "[red]SKEW[/]"
    out.print(
        f"{report.model_name} v{report.model_version}: {verdict} on {report.rows} logged "
        f"predictions: max |logged - recomputed| {report.max_abs_diff:.3g}, "
        f"{report.share_above:.1%} above {report.tolerance:g}, "
        f"{report.label_mismatches} label mismatches"
    )
    if report.skipped_without_text:
        out.print(f"  {report.skipped_without_text} predictions without text were skipped")
    for row in report.worst:
        out.print(f"  {row['request_id']}: {row['abs_diff']:.3g}", highlight=False)


def feature_evidence(report: Any, *, folds: int, level: float) -> None:
    """Each feature group's gain in macro-F1 and its lower bound."""
    table = Table(
        title=f"macro-F1 with and without each feature ({report.rows} rows, {folds}-fold)"
    )
    for col in ("feature", "default", "with", "without", "gain", f"{level:.0%} lower", "verdict"):
        table.add_column(col)
    for f in report.features:
        verdict = "helps" if f.helps else ("[red]does not help[/]" if f.kept else "off")
        table.add_row(
            f.feature,
            "on" if f.kept else "off",
            f"{f.macro_f1_with:.4f}",
            f"{f.macro_f1_without:.4f}",
            f"{f.delta:+.4f}",
            f"{f.lower:+.4f}",
            verdict,
        )
    out.print(table)
    if not report.passed:
        out.print(f"[red]kept but not shown to help:[/] {', '.join(report.failing)}")


def _delta(value: float | None) -> str:
    return "" if value is None else f"{value:+.4f}"


def offline_online(found: Any, *, min_points: int) -> None:
    """Offline against live deltas per ended rollout, their agreement and correlation."""
    table = Table(title=f"challenger minus champion macro-F1, last {found.last} rollouts")
    for col in ("ended", "outcome", "versions", "offline", "live", "agree", "notes"):
        table.add_column(col, no_wrap=col != "notes")
    for p in found.pairs:
        agrees = {True: "yes", False: "[red]no[/]", None: ""}[p.agrees]
        table.add_row(
            f"{p.ts:%m-%d %H:%M}",
            p.outcome,
            f"{p.challenger} vs {p.champion}",
            _delta(p.offline_delta),
            _delta(p.live_delta),
            agrees,
            escape(p.notes or ""),
        )
    out.print(table)
    share = found.sign_agreement
    r = found.correlation
    out.print(
        f"{found.points} measured rollout(s): sign agreement "
        f"{'n/a' if share is None else f'{share:.0%}'}, correlation "
        f"{'n/a' if r is None else f'{r:+.2f}'}"
        + (f" (needs {min_points})" if found.points < min_points else "")
        + (": [red]offline and live disagree in most rollouts[/]" if found.alarm else "")
    )


# ---------------------------------------------------------------- demo


def demo_view(stats: Any, ticks: list[Tick]) -> Table:
    """The demo's live panel: traffic, macro-F1 per phase, drift, the controller, routing."""
    table = Table(title="loopml demo: the loop closing by itself", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    elapsed = time.monotonic() - stats.started
    table.add_row(
        "traffic",
        f"{stats.sent} requests ({stats.sent / max(elapsed, 1e-9):.0f}/s), {stats.failed} failed, "
        f"{stats.labels_sent} late labels; phase: {stats.phase}",
    )
    for phase in ("before shift", "after shift", "after promotion"):
        score, n = stats.macro_f1(phase)
        if n:
            table.add_row(f"macro-F1 {phase}", f"{score:.3f} on {n} requests")
    monitor = next((t.monitor for t in reversed(ticks) if t.monitor is not None), None)
    if monitor is not None:
        table.add_row("drift", f"{monitor.verdict} {', '.join(monitor.reasons[:2])}")
    if ticks:
        last = ticks[-1]
        table.add_row("controller", f"{last.action}: {last.reason[:90]}")
        routing = last.current_routing
        if routing is not None:
            split = f"{routing.mode} {routing.weight:.0%}" if routing.challenger else "all"
            table.add_row(
                "routing",
                f"champion {routing.champion}, challenger {routing.challenger or '-'} ({split})",
            )
    return table


def _demo_summary(result: Any) -> Table:
    table = Table(title="the loop closed: macro-F1 on the live stream")
    for col in ("traffic", "model", "requests", "macro-F1"):
        table.add_column(col)

    def row(name: str, model: str, value: tuple[float | None, int]) -> None:
        score = "-" if value[0] is None else f"{value[0]:.3f}"
        table.add_row(name, model, str(value[1]), score)

    old = f"v{result.champion_version}"
    row("before the shift (non-airline)", old, result.before_shift)
    row("after the shift (airline), old model", old, result.after_shift_old_model)
    row(
        "after the shift, after promotion",
        f"v{result.promoted_version or '-'}",
        result.after_promotion,
    )
    return table


def demo_result(result: Any, ui: str) -> None:
    """The demo's outcome: macro-F1 before and after, the reports and what to run next."""
    out.print(
        f"champion v{result.champion_version}: test macro-F1 "
        f"{result.champion_test_macro_f1:.3f} on its own (non-airline) test split"
    )
    out.print(_demo_summary(result))
    out.print(f"reports ({len(result.reports)} HTML files):", highlight=False)
    for path in result.reports[-2:]:
        out.print(f"  {path}", highlight=False, soft_wrap=True)
    out.print(
        f"audit trail: LOOPML_HOME={result.home} .venv/bin/loopml history",
        highlight=False,
        soft_wrap=True,
    )
    out.print(
        f"serve its champion: LOOPML_HOME={result.home} .venv/bin/loopml serve",
        highlight=False,
        soft_wrap=True,
    )
    out.print("open the MLflow UI:")
    out.print(f"  {ui}", highlight=False, soft_wrap=True)
