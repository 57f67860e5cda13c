from __future__ import annotations

from pathlib import Path

import pytest

from loopml.config import Settings
from loopml.control.promotion import promote, rollback
from loopml.data import Dataset
from loopml.errors import GateFailedError, RegistryError, StoreError
from loopml.pipeline.train import train
from loopml.registry import Registry
from loopml.routing import CHAMPION, PREVIOUS
from loopml.store import open_store


@pytest.fixture
def two_versions(
    settings: Settings, small_tweets: Dataset, monkeypatch: pytest.MonkeyPatch
) -> Registry:
    monkeypatch.setattr(settings, "gate_min_slice_f1", 0.2)
    train(settings, dataset=small_tweets)
    train(settings, dataset=small_tweets)
    return Registry(settings)


@pytest.mark.slow
def test_failed_audit_write_leaves_aliases_untouched(
    two_versions: Registry, settings: Settings, tmp_path: Path
) -> None:
    store = open_store(settings.db_url)
    promote(store, two_versions, "1")
    broken = open_store(f"sqlite:///{tmp_path / 'audit.db'}")
    (tmp_path / "audit.db").unlink()
    (tmp_path / "audit.db").mkdir()  # the database file is now a directory: writes fail
    broken.dispose()
    with pytest.raises(StoreError):
        promote(broken, two_versions, "2", force=True, reason="audit store is broken")
    assert two_versions.aliases() == {CHAMPION: "1"}
    assert [e.to_version for e in store.history(settings.model_name)] == ["1"]


@pytest.mark.slow
def test_promote_checks(two_versions: Registry, settings: Settings) -> None:
    store = open_store(settings.db_url)
    two_versions.set_tags("2", {"loopml.gate": "failed"})
    with pytest.raises(GateFailedError, match="gate verdict is 'failed'"):
        promote(store, two_versions, "2")
    with pytest.raises(RegistryError, match="has no version 9"):
        promote(store, two_versions, "9")
    promote(store, two_versions, "1")
    with pytest.raises(GateFailedError, match="stale: judged against champion none"):
        two_versions.set_tags("2", {"loopml.gate": "passed"})
        promote(store, two_versions, "2")
    with pytest.raises(RegistryError, match="already the champion"):
        promote(store, two_versions, "1")
    promote(store, two_versions, "2", force=True, reason="hotfix")
    assert two_versions.aliases() == {CHAMPION: "2", PREVIOUS: "1"}
    rollback(store, two_versions)
    assert two_versions.aliases() == {CHAMPION: "1", PREVIOUS: "2"}
    assert [e.action for e in store.history(settings.model_name)] == [
        "rollback",
        "force_promote",
        "promote",
    ]
