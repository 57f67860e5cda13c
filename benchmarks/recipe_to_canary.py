"""Data 7 of the ML Test Score: the time from a new feature to a model built on it serving real
requests in a canary, held to a budget.

Run: .venv/bin/python benchmarks/recipe_to_canary.py [--rows 8000] [--budget-s 600] [--json]
     [--recipe NAME] [-p KEY=VALUE ...] [--champion-param KEY=VALUE ...]

In a fresh LOOPML_HOME: a champion is trained and promoted first (not timed: the production that
exists; by default the default recipe). Then, timed, each step
a user takes with the CLI: install a recipe package with pip (the example plug-in,
`examples/recipe-plugin`) and see it in `loopml recipes`; train the new feature on the same data
(by default class weighting, ``-p class_weight=balanced -p C=2``, which helps on these tweets;
``--recipe char-nb`` times the plug-in itself, which this gate refuses on 8,000 tweets),
approve its changed spec (a reviewer's step), `loopml promote` it (a canary starts), and a
running `loopml serve` answering from the challenger. Exits 1 when the gate refuses the new
model or the total passes ``--budget-s``. Writes benchmarks/results/recipe_to_canary.json and the
"recipe-to-canary" README section.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from _report import record

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "recipe_to_canary.json"
PLUGIN = ROOT / "examples" / "recipe-plugin"


class Trial:
    """One fresh home, its environment, and the seconds each timed step took."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.site = home / "site"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPML_")} | {
            "LOOPML_HOME": str(home),
            "LOOPML_CONFIG": str(home / "absent.toml"),
            "PYTHONPATH": os.pathsep.join([str(self.site), str(ROOT / "src")]),
        }
        self.steps: dict[str, float] = {}

    def loopml(self, *args: str) -> Any:
        """``loopml ARGS --json``: its JSON output (exit 0 or 1, 1 being a failed gate)."""
        cmd = [sys.executable, "-m", "loopml", *args, "--json"]
        done = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=900)
        if done.returncode not in (0, 1):
            raise SystemExit(f"loopml {' '.join(args)} failed: {done.stderr.strip()[-400:]}")
        return json.loads(done.stdout)

    def timed(self, step: str, run: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        out = run()
        self.steps[step] = round(time.perf_counter() - started, 2)
        print(f"{step:>10}: {self.steps[step]:7.2f} s", file=sys.stderr)
        return out


def _install(trial: Trial) -> None:
    # pip builds in the source tree: build from a copy into a private target folder.
    source = shutil.copytree(PLUGIN, trial.home / "plugin-src")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--no-index", "--disable-pip-version-check", "--target", str(trial.site), str(source)],
        check=True,
        capture_output=True,
    )  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _first_challenger_answer(url: str, version: str, timeout_s: float = 300) -> int:
    """Requests (each with its own request key) until one is answered by ``version`` as the
    canary's challenger; how many it took."""
    deadline = time.monotonic() + timeout_s
    sent = 0
    with httpx.Client(timeout=10) as client:
        while time.monotonic() < deadline:
            try:
                body = client.post(
                    url + "/v1/predict",
                    json={"text": f"the new feature, request {sent}"},
                    headers={"X-Request-Key": f"user-{sent}"},
                ).json()
            except httpx.TransportError:
                time.sleep(0.2)  # the server is still starting
                continue
            sent += 1
            if body.get("variant") == "challenger" and body.get("model_version") == version:
                return sent
    raise SystemExit(f"no answer from the canary's challenger {version} within {timeout_s:.0f} s")


def _serve_canary(trial: Trial, version: str) -> int:
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "loopml", "serve", "--port", str(port)],
        env=trial.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        return _first_challenger_answer(f"http://127.0.0.1:{port}", version)
    finally:
        server.terminate()
        server.wait(30)


def _params(pairs: list[str]) -> list[str]:
    return [arg for pair in pairs for arg in ("-p", pair)]


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Champion first, then the timed steps from a new recipe to its canary's first answer."""
    from loopml.data import load_dataset

    with tempfile.TemporaryDirectory(prefix="loopml-recipe-to-canary-") as tmp:
        trial = Trial(Path(tmp))
        data = trial.home / "tweets.csv"
        frame = load_dataset("builtin:tweets").frame.sample(args.rows, random_state=7)
        frame[["text", "label"]].to_csv(data, index=False)
        trial.loopml("train", "--data", str(data), "--promote", *_params(args.champion_param))
        trial.timed("install", lambda: _install(trial))
        listed = trial.timed("list", lambda: trial.loopml("recipes"))
        assert "char-nb" in {r["name"] for r in listed}, listed
        new = ("train", "--recipe", args.recipe, "--data", str(data), *_params(args.param))
        trained = trial.timed("train", lambda: trial.loopml(*new))
        version = str(trained["version"])
        report: dict[str, Any] = {
            "rows": args.rows,
            "champion": args.champion_param,
            "new": {"recipe": args.recipe, "params": args.param},
            "version": version,
            "gate": trained["gate"],
        }
        if trained["gate"]["verdict"] != "passed":
            report["steps"] = trial.steps
            return report
        trial.timed("approve", lambda: trial.loopml("approve", version, "--by", "benchmark"))
        trial.timed("promote", lambda: trial.loopml("promote", version))
        report["requests_to_challenger"] = trial.timed(
            "canary", lambda: _serve_canary(trial, version)
        )
        report["steps"] = trial.steps
        return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=8000, help="tweets to train on")
    parser.add_argument("--budget-s", type=float, default=600.0, help="most seconds allowed")
    parser.add_argument("--recipe", default="tfidf-logreg", help="the new model's recipe")
    parser.add_argument("-p", "--param", action="append", default=None, help="its KEY=VALUE")
    parser.add_argument(
        "--champion-param", action="append", default=None, help="the champion's KEY=VALUE"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--no-record", action="store_true", help="do not write the results")
    args = parser.parse_args()
    if args.param is None:
        args.param = ["class_weight=balanced", "C=2"] if args.recipe == "tfidf-logreg" else []
    if args.champion_param is None:
        args.champion_param = []
    report = measure(args)
    total = round(sum(report["steps"].values()), 1)
    passed = report["gate"]["verdict"] == "passed"
    report |= {"total_s": total, "budget_s": args.budget_s, "machine": platform.machine()}
    report["within_budget"] = passed and total <= args.budget_s
    if not args.no_record:
        steps = ", ".join(f"{k} {v:.1f} s" for k, v in report["steps"].items())
        body = (
            f"A new feature ({args.recipe} {' '.join(args.param)} against a champion with "
            f"{' '.join(args.champion_param) or 'the defaults'}; the example plug-in installed "
            "and listed on the "
            f"way) to its canary's first answer, {args.rows} tweets: **{total:.0f} s** "
            f"(budget {args.budget_s:.0f} s; gate {report['gate']['verdict']}): {steps}.\n"
            "Command: `.venv/bin/python benchmarks/recipe_to_canary.py`."
        )
        record(RESULTS, report, "recipe-to-canary", body)
    print(json.dumps(report, indent=2) if args.json else f"total {total:.1f} s")
    return 0 if report["within_budget"] else 1


if __name__ == "__main__":
    sys.exit(main())
