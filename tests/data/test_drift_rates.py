"""False-alarm and detection rates of the monitor's decision code on the real built-in corpus.

The champion is trained on the non-airline domains (as in the demo). Windows of 500 predictions
drawn from held-out non-airline tweets must not alarm (<= 5%); windows of airline tweets must
(>= 95%). Both go through :func:`loopml.monitoring.assess`, the code ``run_monitor`` uses.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd
import pytest

from loopml.config import load_settings
from loopml.data import Dataset, content_version, split_dataset
from loopml.monitoring import Reference, assess, build_reference
from loopml.monitoring.drift import observe
from loopml.recipes import get_recipe

WINDOWS = 40
WINDOW_SIZE = 500

pytestmark = pytest.mark.slow


def _rate(reference: Reference, pool: pd.DataFrame, *, drop_text: bool, seed: int) -> float:
    settings = load_settings()
    rng = np.random.default_rng(seed)
    alarms = 0
    for _ in range(WINDOWS):
        window = pool.sample(WINDOW_SIZE, random_state=int(rng.integers(2**31)))
        if drop_text:
            window = window.assign(text=None)
        verdict = assess(reference, window, settings).verdict
        assert verdict != "insufficient_data"
        alarms += verdict != "ok"
    return alarms / WINDOWS


class Scenario(NamedTuple):
    reference: Reference
    held_out: pd.DataFrame
    airline: pd.DataFrame


@pytest.fixture(scope="module")
def scenario(tweets: Dataset) -> Scenario:
    """A champion trained on non-airline tweets, its reference, and observed held-out windows."""
    frame = tweets.frame
    home = frame[frame["domain"] != "airline"]
    # A larger test split leaves ~4,700 held-out rows, so random windows overlap little.
    splits = split_dataset(
        Dataset("builtin:tweets[non-airline]", home, content_version(home)),
        seed=42,
        test_size=0.2,
        validation_size=0.1,
    )
    classifier = get_recipe("tfidf-logreg").fit(
        splits.train["text"].tolist(), splits.train["label"].tolist()
    )
    reference = build_reference(
        splits.train["text"].tolist(),
        splits.validation["text"].tolist(),
        classifier,
        cap=load_settings().monitor_sample_cap,
        seed=42,
    )
    airline = frame[frame["domain"] == "airline"]
    return Scenario(
        reference,
        observe(classifier, splits.test["text"].tolist()),
        observe(classifier, airline["text"].tolist()),
    )


def test_training_domains_rarely_alarm(scenario: Scenario) -> None:
    rate = _rate(scenario.reference, scenario.held_out, drop_text=False, seed=1)
    print(f"false-alarm rate: {rate:.3f} over {WINDOWS} windows of {WINDOW_SIZE}")
    assert rate <= 0.05


def test_airline_windows_alarm(scenario: Scenario) -> None:
    rate = _rate(scenario.reference, scenario.airline, drop_text=False, seed=2)
    print(f"detection rate: {rate:.3f} over {WINDOWS} windows of {WINDOW_SIZE}")
    assert rate >= 0.95


def test_without_logged_text_prediction_drift_still_detects(scenario: Scenario) -> None:
    null = _rate(scenario.reference, scenario.held_out, drop_text=True, seed=3)
    hit = _rate(scenario.reference, scenario.airline, drop_text=True, seed=4)
    print(f"text not logged: false-alarm {null:.3f}, detection {hit:.3f}")
    assert null <= 0.05
    assert hit >= 0.95
