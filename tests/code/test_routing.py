from __future__ import annotations

import uuid

import pytest

from loopml.config import Settings
from loopml.routing import Routing, load_routing, save_routing
from loopml.serving.router import choose_variant
from loopml.store import open_store


@pytest.mark.parametrize("weight", [0.1, 0.5])
def test_canary_share_matches_weight_and_is_stable(weight: float) -> None:
    routing = Routing("m", champion="1", challenger="2", mode="canary", weight=weight)
    keys = [uuid.uuid4().hex for _ in range(20_000)]
    picks = [choose_variant(routing, k, secret=b"s") for k in keys]
    share = picks.count("challenger") / len(picks)
    assert abs(share - weight) < 0.015
    assert picks == [choose_variant(routing, k, secret=b"s") for k in keys], (
        "same key, same variant"
    )


def test_no_canary_means_champion() -> None:
    for mode, weight in (("none", 1.0), ("shadow", 1.0), ("canary", 0.0)):
        routing = Routing("m", champion="1", challenger="2", mode=mode, weight=weight)  # type: ignore[arg-type]
        assert choose_variant(routing, "k", secret=b"s") == "champion"


def test_round_trip(backend_settings: Settings) -> None:
    store = open_store(backend_settings.db_url)
    assert load_routing(store, "m") == Routing("m")
    with store.session() as session:
        save_routing(
            session, Routing("m", "3", "4", "canary", 0.1, details={"rollout": {"step": 0}})
        )
    got = load_routing(store, "m")
    assert (got.champion, got.challenger, got.mode, got.weight) == ("3", "4", "canary", 0.1)
    assert got.rollout == {"step": 0} and got.updated_at is not None
    store.dispose()
