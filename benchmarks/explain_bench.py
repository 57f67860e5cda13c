"""What one explanation costs, against one prediction and against scoring variants one by one.

    .venv/bin/python benchmarks/explain_bench.py [--texts 300] [--write]

In process, on the default recipe fitted on the built-in tweets: explains real tweets and times
(a) ``explain`` (the text and its leave-one-token-out variants in ONE ``predict_proba`` call),
(b) one ``predict_proba`` of the text alone (what a prediction costs the model), and
(c) the same variants scored one call each (the naive occlusion loop). Ratios are of the same run.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

from _report import write_section

from loopml.data import load_dataset
from loopml.pipeline.explain import explain
from loopml.recipes import get_recipe


def _per_text_ms(fn, texts: list[str]) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    for text in texts:
        fn(text)
    return (time.perf_counter() - start) / len(texts) * 1000


def main() -> None:
    """Measure and print (and with --write, record in benchmarks/README.md)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=300)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    frame = load_dataset("builtin:tweets").frame
    model = get_recipe("tfidf-logreg").fit(frame["text"].tolist(), frame["label"].tolist())
    texts = frame["text"].sample(args.texts, random_state=0).tolist()
    tokens = statistics.mean(len(t.split()) for t in texts)

    def naive(text: str) -> None:
        words = text.split()
        model.predict_proba([text])
        for i in range(len(words)):
            model.predict_proba([" ".join(words[:i] + words[i + 1 :])])

    explain(model, texts[0])  # warm-up
    explain_ms = _per_text_ms(lambda t: explain(model, t), texts)
    predict_ms = _per_text_ms(lambda t: model.predict_proba([t]), texts)
    naive_ms = _per_text_ms(naive, texts)
    body = f"""## Explain

`.venv/bin/python benchmarks/explain_bench.py --texts {args.texts}` (in process, tfidf-logreg
fitted on the built-in tweets; {args.texts} real tweets, {tokens:.1f} tokens on average;
{platform.machine()}, Python {platform.python_version()}, 2 cores shared with other jobs):

| per text | ms |
|---|---|
| `explain` (text + variants in one `predict_proba` batch) | **{explain_ms:.2f}** |
| one `predict_proba` of the text (a prediction's model call) | {predict_ms:.2f} |
| naive occlusion: one `predict_proba` call per variant | {naive_ms:.2f} |
| ratio explain / prediction | {explain_ms / predict_ms:.1f} |
| ratio naive / explain | {naive_ms / explain_ms:.1f} |
"""
    print(body)
    if args.write:
        write_section("explain", body)


if __name__ == "__main__":
    main()
