"""How much does a model lose as the world moves away from its training data? (ML Test Score,
Model 4: the impact of model staleness is known.)

The built-in corpus has no timestamps, so "time" is the domain mix, as in the demo's stream:
a model trained on the "old" world (non-airline tweets) is scored on successive "newer" test
sets in which the airline share grows step by step (0%, 10%, ... 100%). Beside each stale score
is a fresh model trained on the same mix (what retraining would give), measured in the same run:
the difference is the cost of not retraining. Both use the default recipe.

Run: .venv/bin/python benchmarks/staleness.py [--steps 11] [--train-rows 12000] [--test-rows 2000]
Writes benchmarks/results/staleness.json and the "staleness" section of benchmarks/README.md,
with the alert threshold derived from the measured decay.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score

sys.path.insert(0, str(Path(__file__).parent))

RESULTS = Path(__file__).parent / "results" / "staleness.json"
NEW_DOMAIN = "airline"


def _mix(old: pd.DataFrame, new: pd.DataFrame, share: float, rows: int, seed: int) -> pd.DataFrame:
    n_new = round(share * rows)
    parts = [
        old.sample(rows - n_new, random_state=seed),
        new.sample(n_new, random_state=seed),
    ]
    return pd.concat(parts).sample(frac=1.0, random_state=seed)


def _fit(train: pd.DataFrame) -> Any:
    from loopml.recipes import get_recipe

    return get_recipe("tfidf-logreg").fit(train["text"].tolist(), train["label"].tolist())


def _macro_f1(model: Any, test: pd.DataFrame) -> float:
    predicted = model.predict(test["text"].tolist())
    return float(f1_score(test["label"], predicted, average="macro", zero_division=0))


def measure(
    frame: pd.DataFrame,
    *,
    shares: list[float],
    train_rows: int,
    test_rows: int,
    seed: int = 0,
    fresh: bool = True,
) -> dict[str, Any]:
    """Macro-F1 of a model trained on the old domains, on test sets with a growing share of the
    new one; with ``fresh``, also of a model trained on each step's own mix (disjoint rows)."""
    rng = np.random.default_rng(seed)
    shuffled = frame.iloc[rng.permutation(len(frame))]
    old = shuffled[shuffled["domain"] != NEW_DOMAIN]
    new = shuffled[shuffled["domain"] == NEW_DOMAIN]
    # Disjoint pools: test rows are never trained on, by the stale or the fresh models.
    old_test, old_train = old.iloc[:test_rows], old.iloc[test_rows:]
    new_test, new_train = new.iloc[:test_rows], new.iloc[test_rows:]
    stale = _fit(old_train.sample(train_rows, random_state=seed))
    steps = []
    for share in shares:
        test = _mix(old_test, new_test, share, test_rows, seed)
        row: dict[str, Any] = {
            "new_share": share,
            "stale_macro_f1": round(_macro_f1(stale, test), 4),
        }
        if fresh:
            model = _fit(_mix(old_train, new_train, share, train_rows, seed))
            row["fresh_macro_f1"] = round(_macro_f1(model, test), 4)
            row["cost_of_staleness"] = round(row["fresh_macro_f1"] - row["stale_macro_f1"], 4)
        steps.append(row)
    base = steps[0]["stale_macro_f1"]
    for prev, row in zip([None, *steps[:-1]], steps, strict=True):
        row["decay_from_start"] = round(base - row["stale_macro_f1"], 4)
        row["decay_this_step"] = (
            0.0 if prev is None else round(prev["stale_macro_f1"] - row["stale_macro_f1"], 4)
        )
    # Least-squares slope of the stale score against the new domain's share.
    slope = float(np.polyfit(shares, [s["stale_macro_f1"] for s in steps], 1)[0])
    return {
        "train_rows": train_rows,
        "test_rows": test_rows,
        "seed": seed,
        "steps": steps,
        "decay_per_10_points": round(-slope / 10, 4),
    }


def tolerated_share(result: dict[str, Any], tolerance: float) -> float:
    """The share of the new domain at which the stale model has lost ``tolerance`` macro-F1, on
    the least-squares line (the share a model absorbs before the gate would refuse it)."""
    per_unit = result["decay_per_10_points"] * 10
    return 1.0 if per_unit <= 0 else round(min(1.0, tolerance / per_unit), 4)


def _section(result: dict[str, Any], args: argparse.Namespace) -> str:
    rows = "\n".join(
        f"| {s['new_share']:.0%} | {s['stale_macro_f1']:.3f} | {s.get('fresh_macro_f1', '-')} "
        f"| {s.get('cost_of_staleness', '-')} | {s['decay_from_start']:.3f} "
        f"| {s['decay_this_step']:.3f} |"
        for s in result["steps"]
    )
    return f"""
## Model staleness

`.venv/bin/python benchmarks/staleness.py --steps {args.steps} --train-rows {args.train_rows} \
--test-rows {args.test_rows}` ({result["machine"]}). A tfidf-logreg model trained on
{args.train_rows:,} non-airline tweets (the "old" world) scored on {args.test_rows:,}-tweet test
sets whose airline share grows step by step (the demo's shift, as a proxy for time: the corpus has
no timestamps); "fresh" is the same recipe trained on each step's own mix (what retraining gives),
measured in the same run on disjoint rows.

| airline share | stale macro-F1 | fresh macro-F1 | cost of staleness | decay from start \
| decay this step |
|---|---|---|---|---|---|
{rows}

Decay: **{result["decay_per_10_points"]:.3f} macro-F1 per 10 points of airline share** (least
squares over the steps). On that line the stale model loses the gate's tolerance
(`LOOPML_GATE_F1_TOLERANCE` = {result["gate_f1_tolerance"]}) at **{result["tolerated_share"]:.1%}**
airline share, and the monitor's live floor (`LOOPML_MONITOR_MIN_MACRO_F1` = 0.6, from a start of
{result["steps"][0]["stale_macro_f1"]:.3f}) at {result["floor_share"]:.0%}.

How the `LoopmlModelStale` alert (deploy/prometheus/rules/alerts.yml: champion older than 30 days)
follows from this: a champion may age until its traffic has moved by the tolerated share above;
with a drift rate `r` (points of domain share per day, read from the monitor's label and text drift
history), the age limit is `{result["tolerated_share"] * 100:.1f} / r` days. 30 days assumes `r` at
most {result["tolerated_share"] * 100 / 30:.2f} points a day (a domain growing by about one point
every week); where traffic moves faster, lower the alert's `30 * 86400` by that ratio. The age
alert is the backstop; the monitor's drift and live-quality alarms react to the shift itself,
whatever its speed.
"""


def main() -> None:
    """Measure, print, and record the figures."""
    from _report import write_section

    from loopml.config import load_settings
    from loopml.data import load_dataset

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=11)
    parser.add_argument("--train-rows", type=int, default=12000)
    parser.add_argument("--test-rows", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--from-results", action="store_true", help="Rewrite the README section from the JSON."
    )
    args = parser.parse_args()
    if args.from_results:
        write_section("staleness", _section(json.loads(RESULTS.read_text()), args))
        return
    shares = [round(i / (args.steps - 1), 4) for i in range(args.steps)]
    frame = load_dataset("builtin:tweets").frame
    result = measure(
        frame, shares=shares, train_rows=args.train_rows, test_rows=args.test_rows, seed=args.seed
    )
    settings = load_settings()
    tolerance = settings.gate_f1_tolerance
    floor_drop = result["steps"][0]["stale_macro_f1"] - settings.monitor_min_macro_f1
    result |= {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "gate_f1_tolerance": tolerance,
        "tolerated_share": tolerated_share(result, tolerance),
        "floor_share": tolerated_share(result, floor_drop),
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    write_section("staleness", _section(result, args))


if __name__ == "__main__":
    main()
