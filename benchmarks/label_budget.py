"""Labels where they count: the loop at equal label budgets, each queue strategy against random.

The loop benchmark's split (``loop_bench``/``loopml.demo``): a champion trained on non-airline
tweets, then a stream of airline tweets it never saw. Here the stream comes in segments; after
each segment the label queue (``loopml.labels.queue.take``, on a real loopml database holding the
segment's logged predictions) picks which of the unlabelled airline predictions get a label, up to
the budget's checkpoint (150, 300, 600, 1,200, 2,400 labels after the shift, enforced by
``LOOPML_LABEL_BUDGET_PER_DAY``); the recipe is retrained on the champion's data plus the labels
given so far (as the controller's retrain composes them), and the retrained model answers the next
segment: its *live* macro-F1. Every strategy of one seed sees the same segments in the same order.

The *all-labels oracle* is the recipe trained on the champion's data plus every airline tweet
outside the stream (about 7,400 labels), scored on the same segments; *labels to 95%* is the first
checkpoint whose retrained model reaches 95% of the oracle's macro-F1 on the next segment.

What it leaves out: the server, the canary and the controller's gate (``loop_bench.py`` measures
those); the retrain is the recipe's fit, without the gate's holdout of the feedback.
Writes ``benchmarks/results/label_budget.json`` and the README section ``label-budget``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from _report import write_section
from loop_bench import _fit, _macro_f1

from loopml.config import Settings, load_settings
from loopml.data import load_dataset
from loopml.demo import DemoPlan, _split_corpus
from loopml.labels.queue import STRATEGIES, take
from loopml.recipes.base import TextClassifier
from loopml.store import Feedback, Prediction, Store, open_store

RESULTS = Path(__file__).with_name("results") / "label_budget.json"
CHECKPOINTS = (150, 300, 600, 1200, 2400)
REPORTED = (300, 600, 1200)


def _log(store: Store, model: str, version: str, clf: TextClassifier,
         seg: pd.DataFrame) -> dict[str, tuple[str, str]]:  # fmt: skip
    """Log the model's answers to ``seg`` as serving does; returns request id -> (text, truth)."""
    proba = clf.predict_proba(seg["text"].tolist())
    now = datetime.now(UTC)
    logged: dict[str, tuple[str, str]] = {}
    with store.session() as session:
        for i, (text, truth) in enumerate(zip(seg["text"], seg["label"], strict=True)):
            probs = {c: float(p) for c, p in zip(clf.classes, proba[i], strict=True)}
            label = max(probs, key=probs.__getitem__)
            rid = hashlib.sha256(f"{model}-{seg.index[i]}".encode()).hexdigest()[:32]
            logged[rid] = (text, truth)
            session.add(
                Prediction(
                    request_id=rid, ts=now + timedelta(microseconds=i), model_name=model,
                    model_version=version, variant="champion", text=text,
                    text_hash=hashlib.sha256(text.encode()).hexdigest(), text_length=len(text),
                    label=label, probabilities=probs, latency_ms=1.0,
                )
            )  # fmt: skip
    return logged


def _label(settings: Settings, store: Store, model: str, strategy: str,
           truth: dict[str, tuple[str, str]], seed: int) -> list[tuple[str, str]]:  # fmt: skip
    """Take from the queue until its budget is spent; give each item its true label."""
    given: list[tuple[str, str]] = []
    while True:
        items = take(settings, model_name=model, limit=1000, strategy=strategy,
                     holder="bench", seed=seed, store=store)  # fmt: skip
        if not items:
            return given
        with store.session() as session:
            for item in items:
                text, label = truth[item.request_id]
                session.add(Feedback(request_id=item.request_id, ts=datetime.now(UTC),
                                     label=label, key_id="bench"))  # fmt: skip
                given.append((text, label))


def _run(seed: int, args: argparse.Namespace, say: Any) -> dict[str, Any]:
    plan = DemoPlan(champion_rows=args.champion_rows, before_shift=0,
                    max_after_shift=args.segment * (len(CHECKPOINTS) + 1), after_promotion=0,
                    rate=1.0, feedback_share=0.0, feedback_delay=0, time_budget_s=0.0)  # fmt: skip
    corpus = load_dataset("builtin:tweets")
    champion_data, _, stream = _split_corpus(corpus, plan, seed)
    airline = corpus.frame[corpus.frame["domain"] == "airline"]
    outside = airline[~airline.index.isin(stream.index)]
    size = args.segment
    segments = [stream.iloc[i * size : (i + 1) * size] for i in range(len(CHECKPOINTS) + 1)]
    base = champion_data.frame[["text", "label"]]
    champion = _fit(base)
    oracle = _fit(pd.concat([base, outside[["text", "label"]]]))
    oracle_f1 = [
        _macro_f1(s["label"].tolist(), oracle.predict(s["text"].tolist())) for s in segments[1:]
    ]
    say(f"seed {seed}: oracle macro-F1 per segment {[round(f, 3) for f in oracle_f1]}")
    out: dict[str, Any] = {"seed": seed, "oracle": oracle_f1, "strategies": {}}
    home = Path(tempfile.mkdtemp(prefix="loopml-label-budget-"))
    with open_store(f"sqlite:///{home / 'loopml.db'}") as store:
        for strategy in args.strategies:
            model, clf, version, live, t0 = f"bench-{strategy}", champion, "1", [], time.monotonic()
            truth: dict[str, tuple[str, str]] = {}
            given: list[tuple[str, str]] = []
            for k, checkpoint in enumerate(CHECKPOINTS):
                truth |= _log(store, model, version, clf, segments[k])
                settings = load_settings(home=home, database_url=f"sqlite:///{home / 'loopml.db'}",
                                         label_budget_per_day=checkpoint, seed=seed)  # fmt: skip
                given += _label(settings, store, model, strategy, truth, seed)
                rows = pd.DataFrame(given, columns=["text", "label"])
                clf, version = _fit(pd.concat([base, rows])), str(k + 2)
                seg = segments[k + 1]
                live.append(_macro_f1(seg["label"].tolist(), clf.predict(seg["text"].tolist())))
            needed = next((c for c, f, o in zip(CHECKPOINTS, live, oracle_f1, strict=True)
                           if f >= 0.95 * o), None)  # fmt: skip
            out["strategies"][strategy] = {"live": live, "labels_to_95": needed,
                                           "seconds": round(time.monotonic() - t0, 1)}  # fmt: skip
            say(f"seed {seed} {strategy}: {[round(f, 3) for f in live]}, to 95%: {needed}")
    return out


def _mean(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def _table(runs: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    idx = {c: i for i, c in enumerate(CHECKPOINTS)}
    head = " | ".join(f"{b} labels" for b in REPORTED)
    lines = [
        f"| strategy | {head} | beats random at every budget (mean) | labels to 95% of oracle |",
        "|---|" + "---|" * (len(REPORTED) + 2),
    ]
    summary: dict[str, Any] = {}
    for strategy in [s for s in STRATEGIES if s in runs[0]["strategies"]]:
        cells, wins, means = [], [], {}
        for b in REPORTED:
            mine = [r["strategies"][strategy]["live"][idx[b]] for r in runs]
            rand = [r["strategies"]["random"]["live"][idx[b]] for r in runs]
            means[b] = statistics.mean(mine)
            diff = statistics.mean(mine) - statistics.mean(rand)
            wins.append(diff > 0)
            cells.append(_mean(mine) + ("" if strategy == "random" else f" ({diff:+.3f})"))
        needed = [r["strategies"][strategy]["labels_to_95"] for r in runs]
        shown = ", ".join(str(n) if n is not None else f">{CHECKPOINTS[-1]}" for n in needed)
        verdict = "-" if strategy == "random" else ("yes" if all(wins) else "no")
        lines.append(f"| {strategy} | {' | '.join(cells)} | {verdict} | {shown} |")
        summary[strategy] = {"mean_live": means, "beats_random_everywhere": all(wins),
                             "labels_to_95": needed}  # fmt: skip
    oracle = statistics.mean(f for r in runs for f in r["oracle"])
    lines.append(f"\nAll-labels oracle, mean macro-F1 over the segments: {oracle:.3f}.")
    return "\n".join(lines), summary


def _notes(runs: list[dict[str, Any]]) -> str:
    """Every checkpoint's means (the table shows three) and diverse minus random per seed."""
    means = {
        s: [statistics.mean(r["strategies"][s]["live"][i] for r in runs) for i in range(n)]
        for n in [len(CHECKPOINTS)]
        for s in runs[0]["strategies"]
    }
    lines = [f"Means at {', '.join(str(c) for c in CHECKPOINTS)} labels:"]
    lines += [f"{s} {', '.join(f'{v:.3f}' for v in m)};" for s, m in means.items()]
    if "diverse" in means and "random" in means:
        for i, c in enumerate(CHECKPOINTS):
            if c in REPORTED:
                per = [r["strategies"]["diverse"]["live"][i] - r["strategies"]["random"]["live"][i]
                       for r in runs]  # fmt: skip
                lines.append(f"diverse minus random per seed at {c}: "
                             f"{', '.join(f'{d:+.3f}' for d in per)};")  # fmt: skip
    return " ".join(lines)


def main() -> None:
    """Run every strategy at every budget for each seed; print and record the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--segment", type=int, default=1200, help="airline tweets a segment")
    parser.add_argument("--champion-rows", type=int, default=8000)
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    parser.add_argument("--json", type=Path, default=RESULTS)
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args()

    def say(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    started = time.monotonic()
    runs = [_run(seed, args, say) for seed in args.seeds]
    table, summary = _table(runs)
    seconds = round(time.monotonic() - started, 1)
    result = {"args": {k: str(v) for k, v in vars(args).items()}, "checkpoints": CHECKPOINTS,
              "seconds": seconds, "summary": summary, "runs": runs}  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(table)
    print(f"{seconds} s; JSON in {args.json}")
    if not args.no_readme:
        seeds = " ".join(str(s) for s in args.seeds)
        cmd = (f"OMP_NUM_THREADS=1 .venv/bin/python benchmarks/label_budget.py --seeds {seeds} "
               f"--segment {args.segment} --champion-rows {args.champion_rows}")  # fmt: skip
        write_section(
            "label-budget",
            "## Labels where they count: the loop at equal label budgets\n\n"
            f"`{cmd}` ({seconds:.0f} s, x86_64, 2 cores). Live macro-F1 on the next "
            f"{args.segment} airline tweets after the "
            f"retrain at each budget (mean ± sd over seeds {seeds}; in brackets: minus random's "
            f"mean), and the labels each seed needed to reach 95% of the all-labels oracle:\n\n"
            f"{table}\n\n{_notes(runs)}\n\nHow it is measured: the docstring of "
            "`benchmarks/label_budget.py`.",
        )


if __name__ == "__main__":
    main()
