"""One controller for two models (issue 20): the built-in sentiment model in a canary rollout and
a topic model (real tweets labelled by their domain) whose retrain fails for real. The topic
model's failures are audited and retried with backoff; the sentiment rollout goes on and
promotes; each model runs on its own ``[models.<name>]`` section of loopml.toml."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from logged_predictions import insert_predictions
from loopml_test_recipes import register_plugins

from loopml.config import Settings, load_settings
from loopml.control import rollout
from loopml.control.controller import Tick
from loopml.control.fleet import Fleet
from loopml.control.promotion import promote
from loopml.data import Dataset, content_version
from loopml.pipeline.train import train
from loopml.recipes.base import TextClassifier
from loopml.registry import Registry
from loopml.routing import load_routing
from loopml.store import Feedback, Prediction, Store, open_store

pytestmark = pytest.mark.slow

# The topic model's retrain validates its data with an impossible row minimum: a real
# ValidationError inside the retrain, as a broken data source would raise. Its feedback
# disagrees with it (a quality alarm on every monitoring run), so it retrains each time its
# cooldown allows. The sentiment model rolls out in one step of 25% before promotion.
TOML = """
rollout_steps = [0.1, 0.5, 1.0]

[models]
names = "topic,sentiment"

[models.topic]
data_min_rows = 10000000
retrain_cooldown_s = 60

[models.sentiment]
rollout_steps = [0.25, 1.0]
"""

ENV = {
    "LOOPML_MONITOR_INTERVAL_S": "0",
    "LOOPML_MONITOR_MIN_SAMPLES": "100",
    "LOOPML_MONITOR_MIN_LABELED": "100",
    "LOOPML_RETRAIN_MIN_LABELED": "50",
    "LOOPML_RETRAIN_TUNE_TRIALS": "0",
    "LOOPML_NOISE_CHECK": "false",
    "LOOPML_GATE_MIN_SLICE_F1": "0.2",
    "LOOPML_ROLLOUT_STEP_MIN_S": "0",
    "LOOPML_ROLLOUT_MIN_REQUESTS": "50",
    "LOOPML_ROLLOUT_MIN_LABELED": "50",
}


def _topics(tweets: Dataset, rows: int, *, seed: int) -> Dataset:
    frame = tweets.frame.groupby("domain").sample(rows, random_state=seed)
    frame = frame.assign(label=frame["domain"]).sort_index()
    return Dataset(f"topics[{rows}/domain]", frame, content_version(frame))


def _log_rollout_traffic(store: Store, version: str, variant: str, n: int) -> None:
    """``n`` answered sentiment predictions of ``version`` with feedback, 80% of them right."""
    now = datetime.now(UTC)
    with store.session() as session:
        for i in range(n):
            rid = uuid.uuid4().hex
            right = i < 0.8 * n
            session.add(
                Prediction(
                    request_id=rid,
                    ts=now,
                    model_name="sentiment",
                    model_version=version,
                    variant=variant,
                    text=None,
                    text_hash="h",
                    text_length=5,
                    label="positive" if right else "negative",
                    probabilities={},
                    latency_ms=3.0,
                )
            )
            session.add(Feedback(request_id=rid, ts=now, label="positive"))


def _log_topic_traffic(
    settings: Settings, version: str, model: TextClassifier, frame: pd.DataFrame
) -> None:
    """Predictions of ``frame``'s texts with feedback in shuffled labels: live quality alarms."""
    shuffled = frame["label"].sample(frac=1.0, random_state=0).tolist()
    insert_predictions(settings, version, model, list(frame["text"]), shuffled)


def _setup(
    tmp_path: Path, tweets: Dataset, small_tweets: Dataset, toml: str, topic_recipe: str | None
) -> tuple[Settings, Store]:
    """Sentiment: champion 1 and challenger 2 (not rolled out yet). Topic: a champion of
    ``topic_recipe`` and 300 predictions on tweets it never saw, labelled at random by its users
    (a quality alarm)."""
    (tmp_path / "loopml.toml").write_text(toml)
    settings = load_settings().prepare()
    sentiment, topic = settings.for_model("sentiment"), settings.for_model("topic")
    store = open_store(settings.db_url)
    train(sentiment, dataset=small_tweets)
    promote(store, Registry(sentiment), "1")
    train(sentiment, dataset=small_tweets)
    # the first model of a new dataset: whether it passes a sentiment-tuned gate is not the point
    first = train(
        topic.model_copy(update={"data_min_rows": 100}),
        dataset=_topics(tweets, 300, seed=0),
        recipe=topic_recipe,
    )
    promote(store, Registry(topic), first.version, force=True, reason="topic champion")
    unseen = _topics(tweets, 75, seed=1).frame
    _log_topic_traffic(topic, first.version, Registry(topic).load(first.version), unseen)
    return settings, store


@pytest.fixture
def two_models(
    tmp_path: Path,
    home: Path,
    tweets: Dataset,
    small_tweets: Dataset,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[Settings, Store]]:
    """Both models; the topic model's retrain fails (its data rules refuse any data)."""
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    settings, store = _setup(tmp_path, tweets, small_tweets, TOML, None)
    try:
        yield settings, store
    finally:
        store.dispose()


def _by_model(ticks: list[Tick]) -> dict[str, Tick]:
    return {str(t.model): t for t in ticks}


def test_a_failing_retrain_of_one_model_never_stalls_the_other_models_rollout(
    two_models: tuple[Settings, Store],
) -> None:
    settings, store = two_models
    fleet = Fleet(settings, store)
    assert fleet.models() == ["topic", "sentiment"]
    sentiment = fleet.settings.for_model("sentiment")
    # its own section: a first step of 25%, where the global steps start at 10%
    started = rollout.start(sentiment, store, Registry(sentiment), "2", mode="canary")
    assert (started.weight, settings.rollout_steps) == (0.25, [0.1, 0.5, 1.0])

    t0 = datetime.now(UTC)
    first = _by_model(fleet.tick(now=t0))  # topic ticks first and fails
    assert first["topic"].action == "error"
    assert "too few rows" in first["topic"].reason, first["topic"].reason
    assert "is 10000000)" in first["topic"].reason
    assert first["sentiment"].action == "rollout_wait"  # no traffic yet: it waits, untouched

    # times from the failed attempt's record (its cooldown counts from there)
    failed_at = store.history("topic", limit=1)[0].ts
    second = _by_model(fleet.tick(now=failed_at + timedelta(seconds=30)))
    assert second["topic"].action == "wait", second["topic"]
    assert "(cooldown 60s)" in second["topic"].reason

    third = _by_model(fleet.tick(now=failed_at + timedelta(seconds=61)))  # retried: fails again
    assert third["topic"].action == "error", third["topic"]
    assert third["sentiment"].action == "rollout_wait"

    _log_rollout_traffic(store, "1", "champion", 120)
    _log_rollout_traffic(store, "2", "challenger", 120)
    failed_at = store.history("topic", limit=1)[0].ts
    fourth = _by_model(fleet.tick(now=failed_at + timedelta(seconds=61)))
    # two failures in a row: the cooldown doubled (backoff), while the rollout completed
    assert fourth["topic"].action == "wait"
    assert "(cooldown 120s)" in fourth["topic"].reason, fourth["topic"].reason
    assert fourth["sentiment"].action == "rollout_promote", fourth["sentiment"]

    assert load_routing(store, "sentiment").champion == "2"
    assert load_routing(store, "topic").champion == "1"
    topic_log = [e.action for e in reversed(store.history("topic"))]
    # (its first version is promoted by force when it fails the gate's floors)
    assert topic_log[0] in ("promote", "force_promote"), topic_log
    assert topic_log[1:] == ["retrain_failed", "retrain_failed"], topic_log
    failed = store.history("topic")[0]
    assert "too few rows" in failed.reason and "is 10000000)" in failed.reason
    sentiment_log = [e.action for e in reversed(store.history("sentiment"))]
    assert sentiment_log == ["promote", "rollout_start_canary", "rollout_promote"], sentiment_log


# A plug-in recipe whose fit waits while HOLD_FIT names a file that exists (writing FITTING
# first): a retrain that takes as long as the test wants, for real.
HELD_RECIPE = """
import os, time
from pathlib import Path
from typing import ClassVar
from loopml_test_recipes import BagOfWordsNB

class HeldFit(BagOfWordsNB):
    name: ClassVar[str] = "test-held-fit"

    def fit(self, texts, labels):
        hold = os.environ.get("HOLD_FIT")
        if hold:
            Path(os.environ["FITTING"]).write_text("fitting")
            while Path(hold).exists():
                time.sleep(0.05)
        return super().fit(texts, labels)
"""


def _wait_for(what: str, done: object, deadline_s: float = 240) -> None:
    deadline = time.monotonic() + deadline_s
    while not done():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.1)


def test_a_long_retrain_of_one_model_does_not_hold_the_other_models_canary(
    tmp_path: Path,
    home: Path,
    tweets: Dataset,
    small_tweets: Dataset,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("LOOPML_CONTROLLER_INTERVAL_S", "0.2")
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "held_fit_recipe.py").write_text(HELD_RECIPE)
    register_plugins(monkeypatch, plugins, {"test-held-fit": "held_fit_recipe:HeldFit"})
    # a topic champion of the held recipe (no hold yet) whose retrain passes validation
    toml = TOML.replace("data_min_rows = 10000000\n", "")
    settings, store = _setup(tmp_path, tweets, small_tweets, toml, "test-held-fit")
    hold, fitting = tmp_path / "hold", tmp_path / "fitting"
    hold.write_text("hold")
    monkeypatch.setenv("HOLD_FIT", str(hold))
    monkeypatch.setenv("FITTING", str(fitting))

    sentiment = settings.for_model("sentiment")
    rollout.start(sentiment, store, Registry(sentiment), "2", mode="canary")
    ticks: list[Tick] = []
    fleet = Fleet(settings, store, on_tick=ticks.append)
    stop = threading.Event()
    runner = threading.Thread(target=fleet.run, kwargs={"stop": stop})
    runner.start()
    try:
        _wait_for("the topic retrain's fit started", fitting.exists)
        # the topic model's tick is inside its fit from here on; the sentiment canary moves
        _log_rollout_traffic(store, "1", "champion", 120)
        _log_rollout_traffic(store, "2", "challenger", 120)
        _wait_for(
            "the sentiment promotion", lambda: load_routing(store, "sentiment").champion == "2"
        )
        assert fitting.exists() and hold.exists()  # the fit is still held: it did not wait for it
        assert not [t for t in ticks if t.model == "topic"], "topic has not finished a tick yet"
        hold.unlink()
        _wait_for("the topic retrain's end", lambda: any(t.model == "topic" for t in ticks))
    finally:
        hold.unlink(missing_ok=True)
        stop.set()
        runner.join()
        store.dispose()
    assert fleet.running() == []
    topic_ticks = [t for t in ticks if t.model == "topic"]
    assert topic_ticks[0].action in ("rollout_started", "retrain_rejected"), topic_ticks[0]
    promoted = [
        i for i, t in enumerate(ticks) if (t.model, t.action) == ("sentiment", "rollout_promote")
    ]
    assert promoted and promoted[0] < ticks.index(topic_ticks[0]), ticks
