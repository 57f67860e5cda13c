"""The promotion gate: a candidate must not be worse than the champion on the same test split.

When the test split holds feedback rows (domain ``feedback``, added by retraining), the gate
also compares both models on the rest, the **trusted holdout**: the original test split, which
no feedback label can touch. A candidate trained on poisoned labels may win on the poisoned
feedback slice; it fails here when its macro-F1 or any class's F1 drops beyond
``LOOPML_GATE_TRUSTED_TOLERANCE``, whatever the feedback slice says.

Every candidate must also beat simple baselines fitted on its own training split and scored on
the same test split (:mod:`loopml.pipeline.baselines`): a majority-class guess and a unigram
TF-IDF logistic regression, by ``LOOPML_GATE_BASELINE_MARGIN``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

from loopml.config import Settings
from loopml.pipeline.behavioral import BehavioralReport
from loopml.pipeline.evaluate import Evaluation

__all__ = [
    "FEEDBACK_DOMAIN",
    "GateCheck",
    "GateResult",
    "identity_flip_check",
    "run_gate",
    "trusted_rows",
]

#: The domain of test rows that came from feedback labels (see ``loopml.control.retrain``).
FEEDBACK_DOMAIN = "feedback"

Scores = dict[str, float]


def trusted_rows(test: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``test`` that no feedback label wrote (all of them without a domain column)."""
    if "domain" not in test.columns:
        return test
    return test[test["domain"] != FEEDBACK_DOMAIN]


@dataclass
class GateCheck:
    """One rule of the gate with the numbers it compared."""

    name: str
    value: float
    threshold: float
    passed: bool
    detail: str


@dataclass
class GateResult:
    """Verdict of the gate, with every check and the champion it was compared with."""

    passed: bool
    checks: list[GateCheck]
    champion_version: str | None

    @property
    def verdict(self) -> str:
        """``passed`` or ``failed``."""
        return "passed" if self.passed else "failed"

    def failures(self) -> list[GateCheck]:
        """The checks that failed."""
        return [c for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "verdict": self.verdict,
            "champion_version": self.champion_version,
            "checks": [asdict(c) for c in self.checks],
        }


def _at_least(name: str, value: float, threshold: float, detail: str) -> GateCheck:
    return GateCheck(name, round(value, 4), round(threshold, 4), value >= threshold, detail)


def run_gate(
    candidate: Evaluation,
    champion: Evaluation | None,
    settings: Settings,
    *,
    champion_version: str | None = None,
    trusted: tuple[Scores, Scores] | None = None,
) -> GateResult:
    """Judge ``candidate``: relative to ``champion`` when there is one, else on absolute floors.

    ``trusted`` holds the candidate's and the champion's scores (:func:`~loopml.pipeline.evaluate.
    score`) on the trusted holdout, when the test split also holds feedback rows.
    """
    checks: list[GateCheck] = []
    f1 = candidate.metrics["macro_f1"]
    if champion is None:
        checks.append(_at_least("macro_f1", f1, settings.gate_min_macro_f1, "absolute floor"))
        for domain, value in sorted(candidate.domain_f1.items()):
            checks.append(
                _at_least(
                    f"f1_domain_{domain}", value, settings.gate_min_slice_f1, "absolute floor"
                )
            )
    else:
        floor = champion.metrics["macro_f1"] - settings.gate_f1_tolerance
        detail = (
            f"champion {champion.metrics['macro_f1']:.4f} - tolerance {settings.gate_f1_tolerance}"
        )
        checks.append(_at_least("macro_f1", f1, floor, detail))
        for domain, value in sorted(candidate.domain_f1.items()):
            ref = champion.domain_f1.get(domain)
            if ref is None:
                continue
            detail = f"champion {ref:.4f} - tolerance {settings.gate_slice_tolerance}"
            checks.append(
                _at_least(f"f1_domain_{domain}", value, ref - settings.gate_slice_tolerance, detail)
            )
    if champion is not None and trusted is not None:
        checks.extend(_trusted_checks(*trusted, settings.gate_trusted_tolerance))
    margin = settings.gate_baseline_margin
    for name, value in sorted(candidate.baselines.items()):
        detail = f"{name} baseline {value:.4f} + margin {margin}"
        checks.append(_at_least(f"baseline_{name}", f1, value + margin, detail))
    rates = candidate.behavioral.kind_pass_rates()
    checks.append(
        _at_least(
            "behavioral_pass_rate",
            candidate.behavioral.balanced_pass_rate(),
            settings.gate_min_behavioral_pass_rate,
            "mean over kinds: " + ", ".join(f"{k} {v:.2f}" for k, v in rates.items()),
        )
    )
    checks.append(identity_flip_check(candidate.behavioral, settings.gate_max_identity_flips))
    p99 = candidate.latency_p99_ms
    budget = settings.gate_max_p99_latency_ms
    checks.append(
        GateCheck("latency_p99_ms", round(p99, 3), budget, p99 <= budget, "in-process, one text")
    )
    return GateResult(all(c.passed for c in checks), checks, champion_version)


def _trusted_checks(candidate: Scores, champion: Scores, tolerance: float) -> list[GateCheck]:
    # Per class too: poisoned labels that flip one class cost that class's F1 about three times
    # what they cost the macro average.
    checks = []
    for name in sorted(champion, key=lambda n: (n != "macro_f1", n)):
        ref = champion[name]
        detail = f"trusted holdout: champion {ref:.4f} - tolerance {tolerance}"
        checks.append(
            _at_least(f"trusted_{name}", candidate.get(name, 0.0), ref - tolerance, detail)
        )
    return checks


def identity_flip_check(behavioral: BehavioralReport, max_flips: int) -> GateCheck:
    """``identity_flips``: how many identity-term swaps changed the predicted label, at most
    ``max_flips`` (``LOOPML_GATE_MAX_IDENTITY_FLIPS``); the detail names the terms."""
    flips, total = behavioral.identity_flips()
    counts = Counter(flips)
    named = ", ".join(f"{term} ({n})" for term, n in counts.most_common())
    detail = f"{len(flips)} of {total} identity swaps changed the label" + (
        f": {named}" if named else ""
    )
    n = len(flips)
    return GateCheck("identity_flips", float(n), float(max_flips), n <= max_flips, detail)
