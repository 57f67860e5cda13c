"""The per-process cache of monitoring references (functools.lru_cache over a hashable key)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest

from loopml.config import Settings, load_settings
from loopml.errors import MonitorError
from loopml.monitoring import monitor


class FakeRegistry:
    """Counts model loads; its client is only handed on to ``load_splits``."""

    def __init__(self) -> None:
        self.client = object()
        self.loads: list[str] = []

    def load(self, version: str) -> str:
        self.loads.append(version)
        return f"classifier {version}"


@pytest.fixture
def downloads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str]]]:
    calls: list[tuple[str, str]] = []

    def fake_splits(
        client: Any, run_id: str, names: Any, *, columns: Any = None
    ) -> dict[str, pd.DataFrame]:
        (name,) = names
        calls.append((run_id, name))
        if run_id == "missing":
            raise OSError("no such artifact")
        return {name: pd.DataFrame({"text": [f"{name} text", 3]})}

    def fake_build(
        train: list[str],
        validation: list[str],
        classifier: Any,
        *,
        cap: int,
        seed: int,
        embedding_cap: int,
    ) -> Any:
        return ("reference", tuple(train), tuple(validation), classifier, cap, seed, embedding_cap)

    monkeypatch.setattr(monitor, "load_splits", fake_splits)
    monkeypatch.setattr(monitor, "build_reference", fake_build)
    monitor._cached_reference.cache_clear()
    yield calls
    monitor._cached_reference.cache_clear()


def _load(settings: Settings, registry: FakeRegistry, version: str, run_id: str = "r") -> Any:
    return monitor.load_reference(settings, registry, version, run_id)  # type: ignore[arg-type]


def test_a_reference_is_built_once_per_version_and_settings(
    settings: Settings, downloads: list[tuple[str, str]]
) -> None:
    first, second = FakeRegistry(), FakeRegistry()
    ref = _load(settings, first, "1")
    assert ref == (
        "reference",
        ("train text", "3"),
        ("validation text", "3"),
        "classifier 1",
        settings.monitor_sample_cap,
        settings.seed,
        settings.monitor_embedding_cap,
    )
    # A new registry object (each monitoring run makes one) still hits the cache.
    assert _load(settings, second, "1") is ref
    assert downloads == [("r", "train"), ("r", "validation")]
    assert first.loads == ["1"] and second.loads == []
    _load(settings, second, "2")
    other = load_settings(home=settings.home, monitor_sample_cap=600)
    _load(other, second, "2")
    assert second.loads == ["2", "2"]
    embeddings = load_settings(home=settings.home, monitor_embedding_cap=300)
    assert _load(embeddings, second, "2")[-1] == 300  # the embedding sample is part of the key
    assert second.loads == ["2", "2", "2"]


def test_the_cache_keeps_the_four_most_recently_used(
    settings: Settings, downloads: list[tuple[str, str]]
) -> None:
    registry = FakeRegistry()
    for version in ("1", "2", "3", "4", "1", "5"):  # 1 is used again before 5 arrives
        _load(settings, registry, version)
    assert registry.loads == ["1", "2", "3", "4", "5"]
    _load(settings, registry, "1")  # still cached: 2 was the least recently used
    _load(settings, registry, "2")
    assert registry.loads == ["1", "2", "3", "4", "5", "2"]


def test_a_missing_split_is_a_monitor_error_and_is_not_cached(
    settings: Settings, downloads: list[tuple[str, str]]
) -> None:
    registry = FakeRegistry()
    for _ in range(2):
        with pytest.raises(MonitorError, match=r"run missing has no data/train\.parquet"):
            _load(settings, registry, "1", run_id="missing")
    assert downloads == [("missing", "train"), ("missing", "train")]
