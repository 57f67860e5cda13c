"""The promotion gate: a candidate must not be worse than the champion on the same test split.

When the test split holds feedback rows (domain ``feedback``, added by retraining), the gate
also compares both models on the rest, the **trusted holdout**: the original test split, which
no feedback label can touch. A candidate trained on poisoned labels may win on the poisoned
feedback slice; it fails here when its macro-F1 or any class's F1 drops beyond
``LOOPML_GATE_TRUSTED_TOLERANCE``, whatever the feedback slice says.

Champion and candidate are compared only on test rows that neither trained on
(:class:`Comparison`): rows of the candidate's test split that the champion's own train or
validation split held are left out, and the gate says how many.

The absolute floors (a first model) and the baselines fail a model only when it is below them
with ``LOOPML_GATE_CONFIDENCE`` (:mod:`loopml.pipeline.confidence`): a point estimate on a few
hundred test rows is too noisy to refuse a model on.

A challenger is also scored on the champion's own test split with the champion's labels, less
the rows it trained on: its own test split carries its own data's labels, so a challenger
trained on wrong labels (shuffled, poisoned) would otherwise be judged by them.

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
from loopml.pipeline.confidence import macro_f1_delta_upper, macro_f1_upper
from loopml.pipeline.evaluate import Evaluation

__all__ = [
    "FEEDBACK_DOMAIN",
    "Comparison",
    "GateCheck",
    "GateResult",
    "identity_flip_check",
    "run_gate",
    "too_few_compared",
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


@dataclass(frozen=True)
class Comparison:
    """Which test rows the champion was compared on: ``rows`` that neither model trained on,
    after leaving out ``excluded`` rows the champion trained on (``known``: False when the
    champion's training rows could not be read, so nothing was left out)."""

    rows: int
    excluded: int
    known: bool = True

    def describe(self) -> str:
        """One phrase for a check's detail."""
        if not self.known:
            return f"on {self.rows} rows (the champion's training rows are unknown)"
        left_out = f"; {self.excluded} the champion trained on left out" if self.excluded else ""
        return f"on {self.rows} rows neither trained on{left_out}"


@dataclass
class GateResult:
    """Verdict of the gate, with every check and the champion it was compared with."""

    passed: bool
    checks: list[GateCheck]
    champion_version: str | None
    comparison: Comparison | None = None

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
            "comparison": asdict(self.comparison) if self.comparison else None,
        }


def _at_least(
    name: str, value: float, threshold: float, detail: str, upper: float | None = None
) -> GateCheck:
    # ``upper``: the confidence bound of ``value``; a value below the bar passes when the bound
    # is not, since the test rows cannot tell it from one above.
    passed = value >= threshold
    if not passed and upper is not None and upper >= threshold:
        passed = True
        detail += f"; not clearly below: upper bound {upper:.4f}"
    return GateCheck(name, round(value, 4), round(threshold, 4), passed, detail)


def _upper(candidate: Evaluation, settings: Settings, domain: str | None = None) -> float | None:
    rows = candidate.rows
    if rows is None or not len(rows):
        return None
    labels = candidate.labels
    if domain is not None:
        rows = rows[rows["domain"] == domain]
        labels = sorted(rows["label"].unique())  # as evaluate's slice scores
    return macro_f1_upper(
        rows["label"].tolist(), rows["predicted"].tolist(), labels, level=settings.gate_confidence
    )


def _baseline_upper(candidate: Evaluation, name: str, settings: Settings) -> float | None:
    rows, base = candidate.rows, candidate.baseline_predicted.get(name)
    if rows is None or base is None or len(base) != len(rows):
        return None
    delta = macro_f1_delta_upper(
        rows["label"].tolist(),
        rows["predicted"].tolist(),
        base,
        candidate.labels,
        level=settings.gate_confidence,
    )
    return candidate.baselines[name] + delta


def run_gate(
    candidate: Evaluation,
    champion: Evaluation | None,
    settings: Settings,
    *,
    champion_version: str | None = None,
    trusted: tuple[Scores, Scores] | None = None,
    compared: Evaluation | None = None,
    comparison: Comparison | None = None,
    holdout: tuple[Scores, Scores, int] | None = None,
) -> GateResult:
    """Judge ``candidate``: relative to ``champion`` when there is one, else to the baselines.

    ``compared`` is the candidate evaluated on the rows ``champion`` was (``comparison`` says
    which); without it both were evaluated on the same rows already. ``trusted`` holds the
    candidate's and the champion's scores (:func:`~loopml.pipeline.evaluate.score`) on the
    trusted holdout, when the test split also holds feedback rows. ``holdout`` holds both
    models' scores on the champion's own test split, with the champion's labels, less the rows
    the candidate trained on (and how many rows that is).
    """
    checks: list[GateCheck] = []
    if champion is None:
        checks.extend(_first_model_checks(candidate, settings))
    else:
        checks.extend(_relative_checks(compared or candidate, champion, settings, comparison))
    if champion is not None and trusted is not None:
        checks.extend(_trusted_checks(*trusted, settings.gate_trusted_tolerance))
    if champion is not None and holdout is not None:
        mine, theirs, rows = holdout
        where = f"champion's own test split, its labels, {rows} rows"
        checks.extend(_trusted_checks(mine, theirs, settings.gate_f1_tolerance, "holdout", where))
    f1 = candidate.metrics["macro_f1"]
    margin = settings.gate_baseline_margin
    for name, value in sorted(candidate.baselines.items()):
        detail = f"{name} baseline {value:.4f} + margin {margin}"
        upper = _baseline_upper(candidate, name, settings)
        checks.append(_at_least(f"baseline_{name}", f1, value + margin, detail, upper))
    checks.append(_behavioral_check(candidate, champion, settings))
    checks.append(identity_flip_check(candidate.behavioral, settings.gate_max_identity_flips))
    p99 = candidate.latency_p99_ms
    budget = settings.gate_max_p99_latency_ms
    checks.append(
        GateCheck("latency_p99_ms", round(p99, 3), budget, p99 <= budget, "in-process, one text")
    )
    return GateResult(all(c.passed for c in checks), checks, champion_version, comparison)


def _first_model_checks(candidate: Evaluation, settings: Settings) -> list[GateCheck]:
    # No champion: each slice must reach what the unigram baseline reaches there (what the data
    # allows); the absolute floors only where the user set them.
    checks = []
    floor = settings.gate_min_macro_f1
    if floor is not None:
        f1 = candidate.metrics["macro_f1"]
        upper = _upper(candidate, settings)
        checks.append(_at_least("macro_f1", f1, floor, "absolute floor", upper))
    for domain, value in sorted(candidate.domain_f1.items()):
        bars = []
        ref = candidate.baseline_domain_f1.get(domain)
        if ref is not None:
            tolerance = settings.gate_slice_tolerance
            bars.append((ref - tolerance, f"unigram baseline {ref:.4f} - tolerance {tolerance}"))
        if settings.gate_min_slice_f1 is not None:
            bars.append((settings.gate_min_slice_f1, "absolute floor"))
        if bars:
            bar, detail = max(bars)
            upper = _upper(candidate, settings, domain)
            checks.append(_at_least(f"f1_domain_{domain}", value, bar, detail, upper))
    return checks


def _behavioral_check(
    candidate: Evaluation, champion: Evaluation | None, settings: Settings
) -> GateCheck:
    # Below the fixed floor only by what a reference reached on the same tests: a negation test
    # that no bag-of-words model of this data passes says more about the data than the model.
    # A first model's reference is the unigram baseline; a challenger's is the champion, since
    # its own baseline learns from the same labels (a challenger trained on shuffled labels
    # sinks its baseline with it).
    rates = candidate.behavioral.kind_pass_rates()
    detail = "mean over kinds: " + ", ".join(f"{k} {v:.2f}" for k, v in rates.items())
    bar = settings.gate_min_behavioral_pass_rate
    if champion is None:
        reached, whose = candidate.baseline_behavioral, "the unigram baseline"
    else:
        reached, whose = champion.behavioral.balanced_pass_rate(), "the champion"
        reached -= settings.gate_f1_tolerance
    if reached is not None and reached < bar:
        bar = reached
        detail += f"; floor: what {whose} passes ({reached:.2f})"
    return _at_least("behavioral_pass_rate", candidate.behavioral.balanced_pass_rate(), bar, detail)


def _relative_checks(
    candidate: Evaluation, champion: Evaluation, settings: Settings, comparison: Comparison | None
) -> list[GateCheck]:
    where = f" {comparison.describe()}" if comparison else ""
    ref = champion.metrics["macro_f1"]
    tolerance = settings.gate_f1_tolerance
    detail = f"champion {ref:.4f} - tolerance {tolerance}{where}"
    checks = [_at_least("macro_f1", candidate.metrics["macro_f1"], ref - tolerance, detail)]
    for domain, value in sorted(candidate.domain_f1.items()):
        ref = champion.domain_f1.get(domain, -1.0)
        if ref < 0:
            continue
        tolerance = settings.gate_slice_tolerance
        detail = f"champion {ref:.4f} - tolerance {tolerance}{where}"
        checks.append(_at_least(f"f1_domain_{domain}", value, ref - tolerance, detail))
    return checks


def too_few_compared(
    candidate: Evaluation, settings: Settings, champion_version: str, comparison: Comparison
) -> GateResult:
    """The verdict when too few test rows are new to the champion to compare the two models."""
    result = run_gate(candidate, None, settings, champion_version=champion_version)
    needed = settings.gate_min_compared_rows
    detail = (
        f"only {comparison.rows} test rows the champion never trained on "
        f"({comparison.excluded} it trained on left out): too few to compare; add new rows "
        "or lower LOOPML_GATE_MIN_COMPARED_ROWS"
    )
    result.checks.append(GateCheck("compared_rows", comparison.rows, needed, False, detail))
    result.passed = False
    result.comparison = comparison
    return result


def _trusted_checks(
    candidate: Scores,
    champion: Scores,
    tolerance: float,
    prefix: str = "trusted",
    where: str = "trusted holdout",
) -> list[GateCheck]:
    # Per class too: poisoned labels that flip one class cost that class's F1 about three times
    # what they cost the macro average.
    checks = []
    for name in sorted(champion, key=lambda n: (n != "macro_f1", n)):
        ref = champion[name]
        detail = f"{where}: champion {ref:.4f} - tolerance {tolerance}"
        checks.append(
            _at_least(f"{prefix}_{name}", candidate.get(name, 0.0), ref - tolerance, detail)
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
