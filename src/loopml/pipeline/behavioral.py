"""CheckList-style behavioral tests run on every candidate model.

- invariance: adding a URL, an @mention or extra whitespace must not change the predicted label;
  nor may swapping a person's name, a place, or an identity term (religion, nationality, gender)
  in a template: the label stays and no class probability moves more than ``SWAP_TOLERANCE``
  (identity swaps that change the label are also listed apart: the gate counts them on their own);
- directional: negating a positive statement must lower the probability of ``positive``;
- minimum functionality: plain, unambiguous sentences must get their obvious label.

The directional and minimum-functionality tests apply to sentiment labels (negative/neutral/
positive); for other label sets only the invariance tests run.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from loopml.recipes.base import TextClassifier
from loopml.recipes.identity import IDENTITY_TERMS

__all__ = [
    "IDENTITY_SWAP",
    "SWAP_TOLERANCE",
    "BehavioralReport",
    "TestResult",
    "run_behavioral_tests",
]

#: The name of the identity-term swap test, whose label flips the gate counts on their own.
IDENTITY_SWAP = "swap identity term"

#: Largest change of any class probability that swapping a name, place or identity term may cause.
SWAP_TOLERANCE = 0.2

_POSITIVE = ["great", "good", "amazing", "excellent", "wonderful", "fantastic", "helpful", "nice"]
_SUBJECTS = ["the flight", "the service", "this phone", "the game", "the staff", "the update"]
_MFT: list[tuple[str, str]] = [
    ("I love this, best day ever!", "positive"),
    ("Thank you so much, you are awesome", "positive"),
    ("What a great experience, thanks!", "positive"),
    ("This is amazing, I am so happy", "positive"),
    ("Absolutely love it, great job", "positive"),
    ("Worst service ever, I am so angry", "negative"),
    ("This is terrible, I hate it", "negative"),
    ("My flight was delayed again and nobody helped, awful", "negative"),
    ("Really disappointed, complete waste of money", "negative"),
    ("Rude staff and lost my bag, horrible", "negative"),
]

# Templates of each sentiment (neutral among them) with a slot that a swap fills: a fair model
# answers the same whoever, wherever. Names and places are common in the corpus's tweets.
_SWAP_TEMPLATES = [
    "{} is on the flight to the conference tomorrow",
    "{} said the service was great today",
    "{} said the staff were rude and the wait was awful",
    "just talked to {} about the new phone",
    "{} thinks the new update is really good",
    "{} had a terrible experience with the delayed flight",
]
_PLACE_TEMPLATES = [
    "flying to {} tomorrow morning",
    "the hotel in {} was great, loved it",
    "stuck in {} after the flight was cancelled, terrible",
    "the new store in {} opens next week",
]
_SWAPS: dict[str, tuple[list[str], list[str]]] = {
    "swap person name": (
        _SWAP_TEMPLATES,
        ["John", "Maria", "Ahmed", "Mei", "Dmitri", "Aisha", "Carlos", "Priya", "Kwame", "Emily"],
    ),
    "swap place": (
        _PLACE_TEMPLATES,
        ["Chicago", "Boston", "London", "Paris", "Lagos", "Mumbai", "Mexico", "Tokyo", "Denver"],
    ),
    IDENTITY_SWAP: (_SWAP_TEMPLATES, [f"my {term} friend" for term in IDENTITY_TERMS]),
}


@dataclass
class TestResult:
    """Outcome of one behavioral test: how many cases passed, with a few failures to look at."""

    name: str
    kind: str
    passed: int
    total: int
    failures: list[str] = field(default_factory=list)
    #: swap tests: the filling of each case whose label differs from the reference filling's
    flips: list[str] = field(default_factory=list)

    @property
    def pass_rate(self) -> float:
        """Share of cases that passed."""
        return self.passed / self.total if self.total else 1.0


@dataclass
class BehavioralReport:
    """All behavioral tests of one model."""

    tests: list[TestResult]

    @property
    def pass_rate(self) -> float:
        """Mean pass rate over tests (each test counts the same, whatever its size)."""
        return sum(t.pass_rate for t in self.tests) / len(self.tests) if self.tests else 1.0

    def kind_pass_rates(self) -> dict[str, float]:
        """Mean pass rate per kind of test (invariance, directional, minimum functionality)."""
        kinds: dict[str, list[float]] = {}
        for t in self.tests:
            kinds.setdefault(t.kind, []).append(t.pass_rate)
        return {kind: sum(rates) / len(rates) for kind, rates in kinds.items()}

    def identity_flips(self) -> tuple[list[str], int]:
        """The identity swaps that changed the label (one entry per case), and how many cases
        ran. Counted apart from the pass rate: averaged with the other tests, 24 flips of 60
        still left a mean over kinds of 0.94."""
        for t in self.tests:
            if t.name == IDENTITY_SWAP:
                return list(t.flips), t.total
        return [], 0

    def balanced_pass_rate(self) -> float:
        """Mean over kinds of their mean pass rate: what the gate uses. Pooled over tests, the
        many invariance tests (which a model predicting at random passes: nothing changes) would
        outweigh the few capability tests it fails."""
        rates = self.kind_pass_rates()
        return sum(rates.values()) / len(rates) if rates else 1.0

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "pass_rate": self.pass_rate,
            "kind_pass_rates": self.kind_pass_rates(),
            "balanced_pass_rate": self.balanced_pass_rate(),
            "tests": [asdict(t) | {"pass_rate": t.pass_rate} for t in self.tests],
        }


def _invariance(
    model: TextClassifier, name: str, texts: Sequence[str], perturb: Callable[[str], str]
) -> TestResult:
    perturbed = [perturb(t) for t in texts]
    before = model.predict(texts)
    after = model.predict(perturbed)
    fails = [
        f"{p!r}: {a} != {b}" for p, a, b in zip(perturbed, after, before, strict=True) if a != b
    ]
    return TestResult(name, "invariance", len(texts) - len(fails), len(texts), fails[:5])


def _swap(model: TextClassifier, name: str, templates: list[str], terms: list[str]) -> TestResult:
    # Each template filled with the first term is the reference; every other filling is a case.
    fails = []
    flips = []
    total = 0
    for template in templates:
        texts = [template.format(term) for term in terms]
        proba = model.predict_proba(texts)
        labels = proba.argmax(axis=1)
        for i in range(1, len(texts)):
            total += 1
            shift = float(abs(proba[i] - proba[0]).max())
            if labels[i] != labels[0]:
                flips.append(terms[i])
            if labels[i] != labels[0] or shift > SWAP_TOLERANCE:
                fails.append(
                    f"{texts[i]!r}: {model.classes[labels[i]]} (shift {shift:.2f}) vs "
                    f"{texts[0]!r}: {model.classes[labels[0]]}"
                )
    return TestResult(name, "invariance", total - len(fails), total, fails[:5], flips)


def _negation(model: TextClassifier) -> TestResult:
    pos = model.classes.index("positive")
    pairs = [(f"{s} was {a}", f"{s} was not {a}") for s in _SUBJECTS for a in _POSITIVE]
    before = model.predict_proba([p[0] for p in pairs])[:, pos]
    after = model.predict_proba([p[1] for p in pairs])[:, pos]
    fails = [
        f"{n!r}: P(positive) {a:.2f} >= {b:.2f}"
        for (_, n), b, a in zip(pairs, before, after, strict=True)
        if a >= b
    ]
    return TestResult(
        "negation lowers positive", "directional", len(pairs) - len(fails), len(pairs), fails[:5]
    )


def _minimum_functionality(model: TextClassifier) -> TestResult:
    predicted = model.predict([t for t, _ in _MFT])
    fails = [
        f"{t!r}: got {p}, want {want}"
        for (t, want), p in zip(_MFT, predicted, strict=True)
        if p != want
    ]
    return TestResult(
        "obvious sentiment", "minimum functionality", len(_MFT) - len(fails), len(_MFT), fails
    )


def run_behavioral_tests(
    model: TextClassifier, sample_texts: Sequence[str], *, seed: int = 0, size: int = 300
) -> BehavioralReport:
    """Run every applicable test on ``model``, using up to ``size`` texts from ``sample_texts``."""
    rng = random.Random(seed)
    texts = list(sample_texts)
    texts = rng.sample(texts, min(size, len(texts)))
    tests = [
        _invariance(model, "add URL", texts, lambda t: f"{t} https://t.co/x7Yq2bPz"),
        _invariance(model, "add @mention", texts, lambda t: f"@jordan_k {t}"),
        _invariance(
            model, "extra whitespace", texts, lambda t: "  " + t.replace(" ", "   ") + " \n"
        ),
    ]
    tests += [_swap(model, name, *cases) for name, cases in _SWAPS.items()]
    if {"negative", "positive"} <= set(model.classes):
        tests += [_negation(model), _minimum_functionality(model)]
    return BehavioralReport(tests)
