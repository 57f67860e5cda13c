"""Both models' loops at once, on ONE ``loopml serve`` and ONE ``loopml controller``
(``LOOPML_MODELS=sentiment,topic``): the sentiment model (the demo's story: its stream shifts to
airline tweets) and a topic model trained from a user's CSV through the real CLI (its stream
shifts to airlines its data never names). Each closes its own loop (drift, retrain, gate,
canary, promotion) on its own routes while the other's traffic flows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from topic_world import (
    Routes,
    TopicPlan,
    cli,
    cli_many,
    models_env,
    send_streams,
    sentiment_world,
    serving_loop,
    topic_world,
)

from loopml.data import Dataset

PLAN = TopicPlan()
COLUMNS = {"sentiment": "label", "topic": "topic"}


def _train(home: Path, name: str, csv: Path) -> dict[str, Any]:
    code, out, err = cli(
        home,
        *("--model", name, "train", "--data", str(csv), "--promote", "--json"),
        env={"LOOPML_LABEL_COLUMN": COLUMNS[name]},
    )
    assert code == 0 and out["promoted"], (name, err)
    assert out["version"] == "1" and out["release"]["how"] == "first_champion", out
    return dict(out)


@pytest.mark.slow
def test_one_server_and_one_controller_close_both_models_loops(
    tweets: Dataset, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    worlds = {"sentiment": sentiment_world(tweets, PLAN), "topic": topic_world(tweets, PLAN)}
    firsts = {}
    for name, world in worlds.items():
        csv = world.write_csv(tmp_path / f"{name}.csv", label_column=COLUMNS[name])
        firsts[name] = _train(home, name, csv)
    assert set(firsts["topic"]["metrics"]) >= {f"f1_{t}" for t in ("airline", "apple", "cars")}
    streams = {name: (world, firsts[name]["version"]) for name, world in worlds.items()}

    env = models_env(list(worlds)) | PLAN.loop_env()
    with serving_loop(home, env) as (url, loop):
        results = send_streams(url, streams, PLAN, routes=Routes.of)
        ticks = loop.ticks()

    for name, result in results.items():
        first = firsts[name]["version"]
        assert result.promoted is not None and result.promoted != first, (name, home)
        assert result.failed == 0, name
        shifted = result.accuracy("after shift", version=first)
        recovered = result.accuracy("after promotion", version=result.promoted)
        assert shifted is not None and recovered is not None, name
        assert recovered > shifted + 0.05, (name, shifted, recovered)
    # one controller ticked both models, each tick naming its model; the topic stream's new
    # airlines are text drift to the topic model's monitor
    assert {t.get("model") for t in ticks} >= set(worlds), ticks[-5:]
    topic_ticks = [t for t in ticks if t.get("model") == "topic" and t.get("monitor")]
    topic_reasons = [r for t in topic_ticks for r in t["monitor"]["reasons"]]
    assert any(" drift: " in r for r in topic_reasons), topic_reasons
    answers = cli_many(
        home,
        *(("--model", name, "history", "--limit", "200", "--json") for name in worlds),
        *(("--model", name, "models", "--json") for name in worlds),
    )
    for name, (code, rows, err) in zip(worlds, answers[: len(worlds)], strict=True):
        assert code == 0, err
        history = list(reversed(rows))  # oldest first
        actions = [e["action"] for e in history]
        assert actions[0] == "promote", (name, actions)
        retrain, canary = actions.index("retrain"), actions.index("rollout_start_canary")
        promoted = [i for i, a in enumerate(actions) if a == "rollout_promote"]
        assert promoted and retrain < canary < promoted[-1], (name, actions)
        assert history[promoted[-1]]["to_version"] == results[name].promoted, name
        # what the monitor saw first: the shifted inputs, or the labels' fall in quality
        verdict = history[retrain]["details"]["monitor_verdict"]
        assert verdict in {"drift", "quality_alarm"}, history[retrain]
        assert all(e.get("model_name", name) == name for e in history), name
    for name, (code, rows, err) in zip(worlds, answers[len(worlds) :], strict=True):
        assert code == 0, err
        champion = next(r["version"] for r in rows if "champion" in r["aliases"])
        assert champion == results[name].promoted, name
