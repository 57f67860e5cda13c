"""Both models' loops at once: the sentiment model (the demo's story: its stream shifts to airline
tweets) and a topic model from a user's CSV (its stream shifts to airlines its data never names),
each closing its own loop while the other's traffic flows.

Today one server and one controller run per model. Once one ``loopml serve`` serves many models
and one ``loopml controller`` runs them all, the block under ``# processes`` becomes:

    env = models_env(list(worlds)) | PLAN.loop_env()
    with serving_loop(home, env) as (url, _loop):
        results = send_streams(url, streams, PLAN, routes=Routes.of)
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from topic_world import (
    TopicPlan,
    cli,
    cli_many,
    model_env,
    send_streams,
    sentiment_world,
    serving_loop,
    topic_world,
)

from loopml.data import Dataset

PLAN = TopicPlan()


@pytest.mark.slow
def test_two_models_close_their_loops_side_by_side(tweets: Dataset, tmp_path: Path) -> None:
    home = tmp_path / "home"
    worlds = {"sentiment": sentiment_world(tweets, PLAN), "topic": topic_world(tweets, PLAN)}
    columns = {"sentiment": "label", "topic": "topic"}
    firsts = {}
    for name, world in worlds.items():
        csv = world.write_csv(tmp_path / f"{name}.csv", label_column=columns[name])
        code, out, err = cli(
            home,
            *("--model", name, "train", "--data", str(csv), "--promote", "--json"),
            env={"LOOPML_LABEL_COLUMN": columns[name]},
        )
        assert code == 0 and out["promoted"], (name, err)
        firsts[name] = out["version"]
    streams = {name: (world, firsts[name]) for name, world in worlds.items()}

    # processes
    with contextlib.ExitStack() as stack:
        urls = {}
        for name in worlds:
            env = model_env(name) | PLAN.loop_env()
            urls[name], _loop = stack.enter_context(serving_loop(home, env, tag=name))
        results = send_streams(urls, streams, PLAN)

    for name, result in results.items():
        assert result.promoted is not None and result.promoted != firsts[name], name
        assert result.failed == 0, name
        shifted = result.accuracy("after shift", version=firsts[name])
        recovered = result.accuracy("after promotion", version=result.promoted)
        assert shifted is not None and recovered is not None, name
        assert recovered > shifted + 0.1, (name, shifted, recovered)
    answers = cli_many(
        home, *(("--model", name, "history", "--limit", "200", "--json") for name in worlds)
    )
    for name, (code, rows, err) in zip(worlds, answers, strict=True):
        assert code == 0, err
        actions = [e["action"] for e in reversed(rows)]
        promoted = [e for e in rows if e["action"] == "rollout_promote"]
        assert "retrain" in actions and "rollout_start_canary" in actions, (name, actions)
        assert promoted and promoted[-1]["to_version"] == results[name].promoted, name
