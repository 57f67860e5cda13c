"""The controller under its lease, in process on SQLite and PostgreSQL: a controller that finds
the lease held does nothing; one that takes it over from a dead holder closes that holder's
RUNNING MLflow runs, marks the version it registered without a gate verdict, and counts the
interrupted retrain for the cooldown. (tests/e2e/test_two_controllers.py does it with real
processes and SIGKILL.)"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from mlflow.tracking import MlflowClient
from sqlalchemy import update

from loopml.config import Settings
from loopml.control import rollout
from loopml.control.controller import Controller, Tick
from loopml.control.lease import Lease
from loopml.control.promotion import promote
from loopml.data import Dataset
from loopml.errors import ControllerBusyError, RolloutError
from loopml.pipeline.train import train
from loopml.registry import GATE_TAG, Registry
from loopml.routing import load_routing
from loopml.store import ControllerLease, MonitorResult, Store, open_store
from loopml.tracking import CONTROLLER_TAG, experiment_id

DEAD = "pod-dead:4242:deadbeef"


@pytest.fixture
def store(backend_settings: Settings) -> Iterator[Store]:
    with open_store(backend_settings.db_url) as opened:
        yield opened


def expire(store: Store) -> None:
    with store.session() as session:
        session.execute(
            update(ControllerLease).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )


def test_a_controller_that_finds_the_lease_held_does_nothing(
    backend_settings: Settings, store: Store
) -> None:
    Lease(store, backend_settings.model_name, duration_s=600, holder=DEAD).acquire()
    controller = Controller(backend_settings, store)
    with pytest.raises(ControllerBusyError, match=DEAD):
        controller.tick()
    assert store.history(backend_settings.model_name) == []
    with store.session() as session:
        assert session.query(MonitorResult).count() == 0
    controller.release()  # not the holder: the row stays the dead one's
    row = Lease(store, backend_settings.model_name, duration_s=1).read()
    assert row is not None and row.holder == DEAD


@pytest.mark.slow
def test_taking_over_from_a_controller_killed_mid_retrain_recovers_what_it_left(
    backend_settings: Settings, store: Store, small_tweets: Dataset
) -> None:
    settings = backend_settings.model_copy(update={"gate_min_slice_f1": 0.2})
    registry = Registry(settings)
    champion = train(settings, dataset=small_tweets)
    promote(store, registry, champion.version, force=True, reason="test champion")
    client: MlflowClient = registry.client

    # What a controller killed between registering a version and its gate leaves: its lease row
    # naming the retrain, its run RUNNING, a version without a gate verdict.
    dead = Lease(store, settings.model_name, duration_s=600, holder=DEAD)
    dead.acquire()
    dead.renew(step="retrain")
    exp = experiment_id(settings, client)
    run = client.create_run(exp, tags={CONTROLLER_TAG: DEAD, "loopml.kind": "retrain"})
    monitor = client.create_run(exp, tags={CONTROLLER_TAG: DEAD, "loopml.kind": "monitor"})
    somebody = client.create_run(exp, tags={"loopml.kind": "train"})  # `loopml train` by hand
    source = registry.version(champion.version).source
    version = str(
        client.create_model_version(settings.model_name, source, run_id=run.info.run_id).version
    )

    controller = Controller(settings, store)
    with pytest.raises(ControllerBusyError):
        controller.tick()  # not expired yet
    expire(store)
    controller.tick()

    def status(run_id: str) -> str:
        return str(client.get_run(run_id).info.status)

    assert status(run.info.run_id) == status(monitor.info.run_id) == "FAILED"
    assert status(somebody.info.run_id) == "RUNNING"  # not a controller's run
    assert DEAD in client.get_run(run.info.run_id).data.tags["loopml.interrupted"]
    tags = registry.version(version).tags
    assert tags[GATE_TAG] == "interrupted" and DEAD in tags["loopml.interrupted"]
    assert registry.gate_verdict(registry.version(version)) == "interrupted"

    (record,) = [e for e in store.history(settings.model_name) if e.action.endswith("interrupted")]
    assert (record.action, record.to_version) == ("retrain_interrupted", version)
    assert record.details["previous_holder"] == DEAD and record.details["step"] == "retrain"
    assert set(record.details["mlflow_runs"]) == {run.info.run_id, monitor.info.run_id}
    # The attempt counts for the cooldown, and the version is never rolled out.
    assert controller._last_retrain() == record.ts
    with pytest.raises(RolloutError, match="interrupted"):
        rollout.start(settings, store, registry, version, reason="test")
    # Recovery is done once: the next tick finds nothing left to recover.
    controller.tick()
    assert [e.action for e in store.history(settings.model_name)].count("retrain_interrupted") == 1


def test_the_loop_stands_by_while_another_holds_the_lease_then_takes_over(
    backend_settings: Settings, store: Store
) -> None:
    settings = backend_settings.model_copy(
        update={"controller_interval_s": 0.5, "controller_lease_s": 2}
    )
    Lease(store, settings.model_name, duration_s=600, holder=DEAD).acquire()
    seen: list[Tick] = []
    controller = Controller(settings, store, on_tick=seen.append)
    loop = threading.Thread(target=controller.run, kwargs={"max_ticks": 1}, daemon=True)
    loop.start()
    deadline = time.monotonic() + 120
    while not seen and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [t.action for t in seen] == ["standby"] and DEAD in seen[0].reason
    assert store.history(settings.model_name) == []  # nothing done while standing by
    expire(store)  # the holder died: its lease runs out
    loop.join(timeout=120)
    assert not loop.is_alive()
    assert [t.action for t in seen][-1] == "idle"  # it took over and ticked (no champion yet)
    assert [t.action for t in seen].count("standby") == 1  # once per holder, not every poll
    row = controller.lease.read()
    assert row is not None and row.holder == controller.lease.holder
    assert row.expires_at <= datetime.now(UTC)  # released at the end of run()


@pytest.mark.slow
def test_a_retrain_recorded_before_its_rollout_started_is_rolled_out_by_the_next_holder(
    backend_settings: Settings, store: Store, small_tweets: Dataset
) -> None:
    """Killed between the ``retrain`` record and the rollout's start (its MLflow run created,
    the routing not yet written): the next holder starts that rollout, once."""
    settings = backend_settings.model_copy(update={"gate_min_slice_f1": 0.2})
    registry = Registry(settings)
    train(settings, dataset=small_tweets)
    promote(store, registry, "1", force=True, reason="test champion")
    assert train(settings, dataset=small_tweets).gate.passed
    dead = Lease(store, settings.model_name, duration_s=600, holder=DEAD)
    dead.acquire()
    store.audit(
        actor="controller",
        action="retrain",
        model_name=settings.model_name,
        from_version="1",
        to_version="2",
        reason="drift detected",
        details={"monitor_verdict": "drift"},
    )
    dead.renew(step="rollout_start")
    exp = experiment_id(settings, registry.client)
    left = registry.client.create_run(exp, tags={CONTROLLER_TAG: DEAD, "loopml.kind": "rollout"})
    expire(store)

    Controller(settings, store).tick()
    routing = load_routing(store, settings.model_name)
    assert routing.challenger == "2" and routing.rollout is not None
    assert registry.client.get_run(left.info.run_id).info.status == "FAILED"
    actions = [e.action for e in reversed(store.history(settings.model_name))]
    assert actions.count("rollout_start_canary") == 1
    assert actions.index("controller_recovered") < actions.index("rollout_start_canary")
    started = next(e for e in store.history(settings.model_name) if e.action.startswith("rollout_"))
    assert DEAD in started.reason


def test_a_tracking_outage_is_reported_by_the_loop_as_one_line(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An MLflow server that does not answer: the loop goes on and its tick says so in one line
    # (was "MlflowException"), without the URL's password.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    down = settings.model_copy(update={"tracking_uri": "http://loopml:s3cret@127.0.0.1:9/"})
    ticks: list[Tick] = []
    with open_store(down.db_url) as opened:
        Controller(down, opened, on_tick=ticks.append).run(max_ticks=1)
    errors = [t for t in ticks if t.action == "error"]
    assert errors, ticks
    assert "is unavailable" in errors[0].reason and "s3cret" not in errors[0].reason
