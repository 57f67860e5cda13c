"""Feature ablation of tfidf-logreg on the full built-in corpus: what each feature adds to
validation macro-F1 and what it costs in vocabulary and model bytes.

Run: .venv/bin/python benchmarks/ablation.py
Trains on the training split and scores on the validation split that `loopml train` cuts
(seed LOOPML_SEED); writes benchmarks/results/ablation.json and the "ablation" section of
benchmarks/README.md. The baseline is the full recipe, fitted in the same run.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _report import write_section

RESULTS = Path(__file__).parent / "results" / "ablation.json"


def main() -> None:
    """Measure, print, and record the figures."""
    from loopml.config import load_settings
    from loopml.data import load_dataset, split_dataset
    from loopml.pipeline.ablation import ablate

    splits = split_dataset(load_dataset("builtin:tweets"), seed=load_settings().seed)
    rows = ablate(
        splits.train["text"].tolist(),
        splits.train["label"].tolist(),
        validation=(splits.validation["text"].tolist(), splits.validation["label"].tolist()),
    )
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    result = {"machine": machine, "split": splits.sizes(), "rows": [r.to_dict() for r in rows]}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"| {r.feature} | {r.macro_f1:.4f} | {r.delta:+.4f} | {r.vocabulary:,} "
        f"| {r.model_bytes / 1e6:.1f} | {r.fit_seconds:.1f} |"
        for r in rows
    ]
    table = "\n".join(lines)
    print(table)
    write_section(
        "ablation",
        f"""
## Feature ablation (tfidf-logreg)

`.venv/bin/python benchmarks/ablation.py` ({machine}): trained on the {splits.sizes()["train"]:,}
training tweets, scored on the {splits.sizes()["validation"]:,} validation tweets of
`loopml train`'s split. "delta" is the full recipe's macro-F1 minus the variant's: positive
means the feature helps.
The test `tests/model/test_feature_ablation.py` asserts on a 6,000-tweet sample (3-fold) that
bigrams and min_df cost what the table shows (min_df is kept for its size: it quarters the
vocabulary and the model). Whether each kept feature helps, with a confidence bound, is
`loopml check features` (docs/ml-test-score.md, Data 2). Fit seconds
are noisy on a shared machine; compare them within one run only.

| variant | validation macro-F1 | delta | vocabulary | model MB | fit s |
|---|---|---|---|---|---|
{table}
""",
    )


if __name__ == "__main__":
    main()
