"""The demo's closed loop once per recipe: the three-phase macro-F1 table of each.

    .venv/bin/python benchmarks/demo_recipes.py
    .venv/bin/python benchmarks/demo_recipes.py --recipes tfidf-logreg,minilm-logreg

Each candidate runs ``loopml demo --json --recipe NAME`` (the command a user types, in its own
process and fresh LOOPML_HOME): the first champion trained on every non-airline tweet, the
stream shifting to airline tweets, the controller retraining with the champion's recipe, the
gate, the canary and the promotion. Writes benchmarks/results/demo_recipes.json and the
"demo-recipes" section of benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _report import record

RESULTS = Path(__file__).parent / "results" / "demo_recipes.json"
LOOPML = Path(sys.executable).with_name("loopml")
# name in the table -> `loopml demo` options
# (an encoder serves the demo's sequential stream at ~40 req/s and retrains for minutes: the
# MiniLM rows get a longer stream budget than the default 420 s)
CANDIDATES: dict[str, list[str]] = {
    "tfidf-logreg": ["--recipe", "tfidf-logreg"],
    "minilm-logreg": ["--recipe", "minilm-logreg", "--budget", "1500"],
    "minilm-logreg-int8": ["--recipe", "minilm-logreg", "-p", "quantize=true", "--budget", "1500"],
    "minilm-lora": ["--recipe", "minilm-lora", "-p", "max_seconds=300", "--budget", "1800"],
}


def run_one(name: str, home: Path) -> dict[str, Any]:
    """``loopml demo --json`` for one candidate; its summary plus the wall time."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPML_")}
    env["LOOPML_HOME"] = str(home)
    t0 = time.perf_counter()
    done = subprocess.run(
        [str(LOOPML), "demo", "--json", *CANDIDATES[name]],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    try:  # exit code 1 (the loop did not close) still prints the summary
        summary = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise SystemExit(f"{name}: loopml demo failed:\n{done.stderr[-3000:]}") from None
    summary["wall_s"] = round(time.perf_counter() - t0, 1)
    summary["recipe"] = name
    # the controller's decisions and rollout waits, without its idle ticks (the temporary home
    # goes with the run)
    summary["decisions"] = decisions(summary.pop("controller", []))
    summary["reports"] = len(summary.get("reports", []))
    print(f"{name}: {json.dumps(summary)}", flush=True)
    return summary


def decisions(ticks: list[dict[str, Any]]) -> list[str]:
    """The controller's decisions without idle ticks; of a run of rollout waits, the first and
    last (they say what the step waited for)."""
    kept = [t for t in ticks if t["action"] not in ("idle", "none", "wait")]
    lines = []
    for i, t in enumerate(kept):
        around = {kept[i - 1]["action"], kept[i + 1]["action"]} if 0 < i < len(kept) - 1 else set()
        if not (t["action"] == "rollout_wait" and around == {"rollout_wait"}):
            lines.append(f"{t['at'][11:19]} {t['action']}: {t['reason'][:300]}")
    return lines


def _f1(phase: dict[str, Any]) -> str:
    value = phase["macro_f1"]
    return "-" if value is None else f"{value:.3f} ({phase['requests']})"


def table(report: dict[str, Any]) -> str:
    """The Markdown section."""
    lines = [
        "## The demo's loop, per recipe",
        "",
        f"Command: `{report['command']}` ({report['machine']}), rows of other recipes from "
        "earlier runs of it kept. Each row is one `loopml demo --json` (options in the script) in "
        "a fresh home; live macro-F1 (requests) by phase.",
        "",
        "| recipe | first champion, test macro-F1 | before shift | after shift, old model "
        "| after promotion | promoted | recovered | wall time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['recipe']} | {r['champion_test_macro_f1']:.3f} | {_f1(r['before_shift'])} | "
            f"{_f1(r['after_shift_old_model'])} | {_f1(r['after_promotion'])} | "
            f"{r['promoted_version'] or 'no'} | {'yes' if r['recovered'] else 'no'} | "
            f"{r['wall_s'] / 60:.1f} min |"
        )
    return "\n".join(lines)


def main() -> None:
    """Run the demo per candidate, print and record the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", default=",".join(CANDIDATES), help="comma list")
    args = parser.parse_args()
    names = args.recipes.split(",")
    unknown = sorted(set(names) - set(CANDIDATES))
    if unknown:
        raise SystemExit(f"unknown candidates {unknown}; known: {', '.join(CANDIDATES)}")
    report: dict[str, Any] = {
        "command": "python benchmarks/demo_recipes.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "rows": [],
    }
    # rows of other recipes from an earlier run are kept: one recipe can be measured again
    earlier = json.loads(RESULTS.read_text())["rows"] if RESULTS.exists() else []
    kept = {r["recipe"]: r for r in earlier if r["recipe"] not in names}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            rows = {r["recipe"]: r for r in report["rows"]} | kept
            rows[name] = run_one(name, Path(tmp) / name)
            report["rows"] = [rows[n] for n in CANDIDATES if n in rows]
            record(RESULTS, report, "demo-recipes", table(report))
    print(table(report))


if __name__ == "__main__":
    main()
