"""Label Studio for real: the queue's items pushed as tasks with the model's answer pre-annotated,
two annotators labelling through Label Studio's API, their annotations back by webhook (to a
real loopml server on loopback) and by pull; agreement, disagreement and decision; a bad webhook
token refused, repeated deliveries idempotent, Label Studio down a clear error with nothing lost."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import uvicorn
from label_studio_server import LabelStudio
from sqlalchemy import func, select
from typer.testing import CliRunner

from loopml.config import Settings, load_settings
from loopml.labels.cli import label_app
from loopml.labels.queue import leases
from loopml.serving.app import create_app
from loopml.store import Feedback, LabelAnnotation, Prediction, Store, open_store

WEBHOOK_SECRET = "loopml-webhook-secret-0123456789"
AUTH = {"Authorization": f"Bearer {WEBHOOK_SECRET}"}
LOOPML_PORT, DEAD_PORT = 18410, 18499
CLASSES = ("negative", "neutral", "positive")
TEXTS = (
    "@united my bag is lost again and nobody answers the phone",
    "just landed in denver, smooth flight and friendly crew",
    "is the new iphone worth the upgrade from last year's model?",
    "self-driving cars will change how cities plan their streets",
    "@jetblue delayed three hours with no update at the gate",
    "great game last night, what a comeback in the fourth quarter",
)


def insert_predictions(settings: Settings, n: int) -> list[str]:
    """``n`` logged, unlabelled predictions of the champion; their request ids (most uncertain
    first: the queue's order does not matter here)."""
    ids = []
    with open_store(settings.db_url) as store, store.session() as session:
        for i in range(n):
            rid = f"ls-{i:02d}"
            top = 0.4 + i * 0.01
            probs = {"negative": top, "neutral": (1 - top) / 2, "positive": (1 - top) / 2}
            session.add(
                Prediction(
                    request_id=rid,
                    ts=datetime.now(UTC) - timedelta(minutes=n - i),
                    model_name=settings.model_name,
                    model_version="1",
                    variant="champion",
                    text=TEXTS[i],
                    text_hash=f"{i:064d}",
                    text_length=40,
                    label="negative",
                    probabilities=probs,
                    latency_ms=1.0,
                )
            )
            ids.append(rid)
    return ids


def run(*args: str) -> Any:
    """``loopml label ARGS --json``: exit code and parsed stdout (or the error text)."""
    result = CliRunner().invoke(label_app, [*args, "--json"])
    if result.exit_code == 0:
        return 0, json.loads(result.stdout)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    return result.exit_code, result.stderr + result.stdout


@contextlib.contextmanager
def serving(settings: Settings) -> Iterator[str]:
    """loopml serving on loopback (the webhook's receiver), sharing the test's database."""
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=LOOPML_PORT, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.started, "loopml did not start"
    try:
        yield f"http://127.0.0.1:{LOOPML_PORT}"
    finally:
        server.should_exit = True
        thread.join(30)


def counts(store: Store) -> tuple[int, int]:
    with store.session() as session:
        return (
            session.scalar(select(func.count()).select_from(Feedback)) or 0,
            session.scalar(select(func.count()).select_from(LabelAnnotation)) or 0,
        )


def feedback_of(store: Store) -> dict[str, tuple[str, str | None]]:
    with store.session() as session:
        return {f.request_id: (f.label, f.key_id) for f in session.scalars(select(Feedback))}


@pytest.mark.slow
def test_push_annotate_webhook_pull_decide_with_a_real_label_studio(
    label_studio: LabelStudio,
    home: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {
        "LOOPML_LABEL_STUDIO_URL": label_studio.url,
        "LOOPML_LABEL_STUDIO_TOKEN": label_studio.token,
        "LOOPML_LABEL_STUDIO_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "LOOPML_LABEL_STUDIO_MIN_ANNOTATIONS": "2",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings().prepare()
    ids = insert_predictions(settings, 6)
    store = open_store(settings.db_url)
    first, second = label_studio.signup("ann"), label_studio.signup("ann")

    # push: no project yet, so one is created; 4 queue items become 4 tasks
    code, pushed = run("push", "--limit", "4")
    assert code == 0, pushed
    project = pushed["project"]
    assert pushed["created"] == 4 and pushed["skipped"] == 0
    monkeypatch.setenv("LOOPML_LABEL_STUDIO_PROJECT", str(project))
    config = label_studio.admin.get(f"/api/projects/{project}").json()
    assert all(f'<Choice value="{c}"/>' in config["label_config"] for c in CLASSES)
    assert config["maximum_annotations"] == 2
    tasks = label_studio.admin.get("/api/tasks/", params={"project": project, "fields": "all"})
    by_rid = {t["data"]["request_id"]: t for t in tasks.json()["tasks"]}
    assert set(by_rid) == {t["request_id"] for t in pushed["tasks"]} <= set(ids)
    for rid, task in by_rid.items():
        (pre,) = task["predictions"]
        with store.session() as session:
            probs = session.get(Prediction, rid).probabilities  # type: ignore[union-attr]
        assert pre["model_version"] == "sentiment:1"
        assert pre["result"][0]["value"]["choices"] == ["negative"]
        assert pre["score"] == pytest.approx(probs["negative"], abs=1e-6)
    held = leases(settings, model_name="sentiment")
    assert len(held) == 4 and all(h.holder.startswith(f"labelstudio:{project}:") for h in held)
    # a second push sends only what was not sent: the other 2 predictions
    code, again = run("push", "--limit", "10")
    assert code == 0 and again["created"] == 2, again

    # the webhook: Label Studio sends each annotation to loopml as it is made
    rids = sorted(by_rid)
    agree, disagree, update, by_pull = rids[0], rids[1], rids[2], rids[3]
    with serving(settings) as url:
        hook = f"{url}/v1/label-studio/webhook"
        code, made = run("webhook", hook)
        assert code == 0, made
        assert "headers" not in made
        first.annotate(by_rid[agree]["id"], "neutral")
        second.annotate(by_rid[agree]["id"], "neutral")
        first.annotate(by_rid[disagree]["id"], "negative")
        second.annotate(by_rid[disagree]["id"], "positive")
        first.annotate(by_rid[update]["id"], "positive")
        changed = second.annotate(by_rid[update]["id"], "neutral")
        stored = _wait(lambda: feedback_of(store).get(agree))
        assert stored == (
            "neutral",
            f"labelstudio:{','.join(sorted([str(first.id), str(second.id)]))}",
        )
        assert disagree not in feedback_of(store) and update not in feedback_of(store)
        # ANNOTATION_UPDATED: the second annotator changes their mind; now both agree
        second.relabel(int(changed["id"]), "positive")  # type: ignore[arg-type]
        assert _wait(lambda: feedback_of(store).get(update)) == (
            "positive",
            f"labelstudio:{','.join(sorted([str(first.id), str(second.id)]))}",
        )

        # a bad token is refused, a missing one too; nothing is stored
        before = counts(store)
        annotation = label_studio.admin.get(f"/api/annotations/{changed['id']}/").json()
        payload = {
            "action": "ANNOTATION_CREATED",
            "annotation": annotation,
            "task": by_rid[update],
            "project": {"id": project},
        }
        bad = httpx.post(hook, json=payload, headers={"Authorization": "Bearer wrong-secret"})
        assert bad.status_code == 403 and "not valid" in bad.json()["error"]
        assert httpx.post(hook, json=payload).status_code == 401
        # a repeated delivery (Label Studio retried, or a proxy did) changes nothing
        for _ in range(2):
            ok = httpx.post(
                hook, json=payload, headers={"Authorization": f"Bearer {WEBHOOK_SECRET}"}
            )
            assert ok.status_code == 200 and ok.json()["items"][0]["status"] == "agreed"
        assert counts(store) == before

    # pull: annotations made while loopml was away arrive with the next pull, once
    first.annotate(by_rid[by_pull]["id"], "positive")
    second.annotate(by_rid[by_pull]["id"], "positive")
    assert by_pull not in feedback_of(store)
    code, pulled = run("pull")
    assert code == 0, pulled
    assert feedback_of(store)[by_pull][0] == "positive"
    before = counts(store)
    code, pulled = run("pull")
    assert code == 0 and counts(store) == before  # the same annotations again: nothing new

    # the disagreement waits for a decision, then becomes feedback (audited)
    code, pending = run("disagreements")
    assert code == 0 and [p["request_id"] for p in pending] == [disagree]
    assert sorted(pending[0]["annotations"].values()) == ["negative", "positive"]
    code, decided = run("decide", disagree, "negative", "--by", "lead")
    assert code == 0 and decided["annotations"][f"labelstudio:{second.id}"] == "positive"
    assert feedback_of(store)[disagree] == ("negative", "decided:lead")
    assert run("disagreements") == (0, [])
    store.dispose()


def _wait(predicate: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_label_studio_down_is_a_clear_error_and_nothing_is_lost(
    home: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOOPML_LABEL_STUDIO_URL", f"http://127.0.0.1:{DEAD_PORT}")
    monkeypatch.setenv("LOOPML_LABEL_STUDIO_TOKEN", "0123456789abcdef0123456789abcdef01234567")
    monkeypatch.setenv("LOOPML_LABEL_STUDIO_PROJECT", "3")
    monkeypatch.setenv("LOOPML_LABEL_STUDIO_WEBHOOK_SECRET", WEBHOOK_SECRET)
    settings = load_settings().prepare()
    insert_predictions(settings, 3)
    for args in (["push", "--limit", "3"], ["pull"], ["webhook", "http://127.0.0.1:1/hook"]):
        result = CliRunner().invoke(label_app, args)
        assert result.exit_code == 1, (args, result.output)
        assert f"Label Studio at http://127.0.0.1:{DEAD_PORT} is unreachable" in result.stderr
        assert "retry" in result.stderr and "Traceback" not in result.output
        assert "0123456789abcdef" not in result.output + result.stderr  # never the token
    # nothing was leased (the queue still offers all three) and nothing stored
    assert leases(settings, model_name="sentiment") == []
    with open_store(settings.db_url) as store:
        assert counts(store) == (0, 0)
    # bad usage: exit 2 with what is wrong
    monkeypatch.delenv("LOOPML_LABEL_STUDIO_TOKEN")
    result = CliRunner().invoke(label_app, ["pull"])
    assert result.exit_code == 2 and "LOOPML_LABEL_STUDIO_TOKEN" in result.stderr
    result = CliRunner().invoke(label_app, ["decide", "ls-00", "negative", "--by", "lead"])
    assert result.exit_code == 2 and "never sent to Label Studio" in result.stderr
