"""How a human ships a version: a canary by default, a reasoned direct promotion on request."""

from __future__ import annotations

from typing import Any

import pytest

from loopml import control
from loopml.config import Settings
from loopml.control.promotion import promote
from loopml.data import Dataset
from loopml.errors import GateFailedError, RequestError, RolloutError
from loopml.pipeline.train import train
from loopml.registry import Registry
from loopml.routing import CHALLENGER, CHAMPION, load_routing
from loopml.store import Store, acting_as, open_store

pytestmark = pytest.mark.slow


@pytest.fixture
def one(settings: Settings, small_tweets: Dataset) -> tuple[Settings, Store, Registry]:
    """Version 1 registered (gate passed), no champion yet."""
    s = settings.model_copy(update={"gate_min_slice_f1": 0.2, "rollout_steps": [0.1, 0.5, 1.0]})
    train(s, dataset=small_tweets)
    return s, open_store(s.db_url), Registry(s)


@pytest.fixture
def two(
    one: tuple[Settings, Store, Registry], small_tweets: Dataset
) -> tuple[Settings, Store, Registry]:
    """Version 1 the champion, version 2 gated against it (passed)."""
    settings, store, registry = one
    promote(store, registry, "1")
    train(settings, dataset=small_tweets)
    return one


def last_audit(store: Store) -> Any:
    return store.history("sentiment")[0]


def test_a_first_version_becomes_champion_directly(one: tuple[Settings, Store, Registry]) -> None:
    settings, store, registry = one
    result = control.release(settings, store, registry, "1")
    assert result.how == "first_champion" and result.routing is None
    assert registry.aliases() == {CHAMPION: "1"}
    entry = last_audit(store)
    assert (entry.action, entry.from_version, entry.to_version) == ("promote", None, "1")
    assert entry.details["first_champion"] is True and entry.details["direct"] is False
    assert entry.reason.startswith("first champion")


def test_promote_starts_a_canary(two: tuple[Settings, Store, Registry]) -> None:
    settings, store, registry = two
    result = control.release(settings, store, registry, "2")
    assert result.how == "canary" and result.change is None
    status = control.rollout_status(settings, store, registry).routing
    assert (status.champion, status.challenger, status.mode) == ("1", "2", "canary")
    assert status.weight == pytest.approx(0.1)
    assert status.rollout is not None and status.rollout["source"] == "promote"
    assert registry.aliases() == {CHAMPION: "1", CHALLENGER: "2"}, "no traffic moved yet"
    entry = last_audit(store)
    assert (entry.action, entry.to_version) == ("rollout_start_canary", "2")
    assert result.to_dict()["routing"]["weight"] == pytest.approx(0.1)


def test_direct_needs_a_reason_and_is_audited_as_forced(
    two: tuple[Settings, Store, Registry],
) -> None:
    settings, store, registry = two
    with pytest.raises(RequestError, match="--direct needs --reason"):
        control.release(settings, store, registry, "2", direct=True, reason="  ")
    assert registry.aliases() == {CHAMPION: "1"} and len(store.history("sentiment")) == 1
    with acting_as("alice"):
        result = control.release(settings, store, registry, "2", direct=True, reason="hotfix 7")
    assert result.how == "direct" and result.change is not None and result.change.forced
    assert registry.aliases()[CHAMPION] == "2"
    assert load_routing(store, "sentiment").mode == "none", "no canary in between"
    entry = last_audit(store)
    assert (entry.actor, entry.action, entry.reason) == ("alice", "force_promote", "hotfix 7")
    assert (entry.from_version, entry.to_version) == ("1", "2")
    assert entry.details["direct"] is True and entry.details["gate"] == "passed"


def test_a_failed_gate_needs_the_direct_override(one: tuple[Settings, Store, Registry]) -> None:
    settings, store, registry = one
    registry.set_tags("1", {"loopml.gate": "failed"})
    with pytest.raises(GateFailedError, match="gate verdict is 'failed'"):
        control.release(settings, store, registry, "1")  # no champion yet: a first promotion
    result = control.release(settings, store, registry, "1", direct=True, reason="bootstrap")
    assert result.how == "first_champion" and registry.aliases() == {CHAMPION: "1"}
    entry = last_audit(store)
    assert (entry.action, entry.reason) == ("force_promote", "bootstrap")
    assert entry.details["direct"] is True and entry.details["gate"] == "failed"


def test_a_canary_of_a_failed_version_is_refused(two: tuple[Settings, Store, Registry]) -> None:
    settings, store, registry = two
    registry.set_tags("2", {"loopml.gate": "failed"})
    with pytest.raises(RolloutError, match="failed its gate"):
        control.release(settings, store, registry, "2")
    assert load_routing(store, "sentiment").challenger is None


def test_the_python_api_still_promotes_at_once(two: tuple[Settings, Store, Registry]) -> None:
    # the rollout's final step and scripts call control.promote: no canary there
    _settings, store, registry = two
    control.promote(store, registry, "2")
    assert registry.aliases()[CHAMPION] == "2"
    assert [e.action for e in store.history("sentiment")] == ["promote", "promote"]
