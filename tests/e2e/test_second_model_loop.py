"""A second model of a user's own, through the real CLI in child processes as a new user runs it:
train the default sentiment model, then a topic model from a CSV of one's own; serve the topic
model and run its controller; its live stream shifts and the topic model's loop closes on its
own (drift, retrain, gate, canary, promotion) while the sentiment model is left as it was."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from topic_world import (
    TopicPlan,
    cli,
    cli_many,
    model_env,
    send_stream,
    serving_loop,
    topic_world,
)

from loopml.data import Dataset

PLAN = TopicPlan()


def _champion(models: tuple[int, Any, str]) -> str | None:
    code, rows, err = models
    assert code == 0, err
    return next((r["version"] for r in rows if "champion" in r["aliases"]), None)


def _actions(history: tuple[int, Any, str]) -> list[dict[str, Any]]:
    code, rows, err = history
    assert code == 0, err
    return list(reversed(rows))  # oldest first


@pytest.mark.slow
def test_a_topic_model_from_a_users_csv_closes_its_loop_beside_the_sentiment_model(
    tweets: Dataset, small_tweets: Dataset, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    # The default model, trained first: 4,000 real tweets (sentiment_world gives the demo's
    # story for it, once one controller runs both models' loops).
    sentiment_csv = tmp_path / "tweets.csv"
    small_tweets.frame[["text", "label"]].to_csv(sentiment_csv, index=False)
    code, first, err = cli(home, "train", "--data", str(sentiment_csv), "--promote", "--json")
    assert code == 0 and first["promoted"], err

    world = topic_world(tweets, PLAN)
    topics_csv = world.write_csv(tmp_path / "topics.csv", label_column="topic")
    code, topic, err = cli(
        home,
        *("--model", "topic", "train", "--data", str(topics_csv), "--promote", "--json"),
        env={"LOOPML_LABEL_COLUMN": "topic"},
    )
    assert code == 0 and topic["promoted"], err
    assert topic["version"] == "1" and topic["release"]["how"] == "first_champion"
    assert set(topic["metrics"]) >= {f"f1_{t}" for t in ("airline", "apple", "cars", "other")}

    env = model_env("topic") | PLAN.loop_env()
    with serving_loop(home, env) as (url, loop):
        stream = send_stream(url, world, PLAN, champion=topic["version"])
        monitored = [t["monitor"] for t in loop.ticks() if t.get("monitor")]

    # The topic model's loop closed on its own: a retrained version is its champion now.
    assert stream.promoted is not None, f"no promotion; see {home}/controller.log"
    assert stream.failed == 0
    before = stream.accuracy("before shift", version=topic["version"])
    shifted = stream.accuracy("after shift", version=topic["version"])
    recovered = stream.accuracy("after promotion", version=stream.promoted)
    assert before is not None and shifted is not None and recovered is not None
    assert shifted < before - 0.05, "the new airlines hurt the first model"
    assert recovered > shifted + 0.05, "the promoted model learned them from the feedback"
    assert any(" drift: " in r for m in monitored for r in m["reasons"]), monitored

    topic_models, topic_history, sentiment_models, sentiment_history = cli_many(
        home,
        ("--model", "topic", "models", "--json"),
        ("--model", "topic", "history", "--limit", "200", "--json"),
        ("models", "--json"),
        ("history", "--json"),
    )
    assert _champion(topic_models) == stream.promoted != topic["version"]
    history = _actions(topic_history)
    actions = [e["action"] for e in history]
    assert actions[0] == "promote" and "retrain" in actions, actions
    retrained = history[actions.index("retrain")]
    assert retrained["to_version"] == stream.promoted
    assert retrained["details"]["monitor_verdict"] == "drift"
    # the monitor's first three reasons; the text shift is among them (after a length drift)
    assert retrained["reason"].startswith("drift detected: "), retrained["reason"]
    assert "text drift: abs_text_content_drift" in retrained["reason"], retrained["reason"]
    canary = actions.index("rollout_start_canary")
    promoted = actions.index("rollout_promote")
    assert actions.index("retrain") < canary < promoted
    assert history[promoted]["to_version"] == stream.promoted

    # The sentiment model, trained first in the same home, is untouched.
    assert _champion(sentiment_models) == first["version"]
    assert [e["action"] for e in _actions(sentiment_history)] == ["promote"]
