"""The one-command scenario on the built-in corpus: validate > train > evaluate > gate > promote."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loopml.config import Settings
from loopml.data import load_dataset
from loopml.pipeline.train import TrainResult, train
from loopml.registry import CHAMPION, Registry
from loopml.store import open_store

__all__ = ["DemoResult", "run_demo"]


@dataclass
class DemoResult:
    """What the demo produced."""

    train: TrainResult
    champion_version: str | None
    promoted: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "train": self.train.to_dict(),
            "champion_version": self.champion_version,
            "promoted": self.promoted,
        }


def run_demo(settings: Settings, *, progress: Callable[[str], None] | None = None) -> DemoResult:
    """Train a model on the built-in tweets and promote it if the gate passes."""
    say = progress or (lambda _step: None)
    say("validate builtin:tweets")
    dataset = load_dataset("builtin:tweets")
    result = train(settings, dataset=dataset, progress=say, run_name="demo-train")
    registry = Registry(settings)
    promoted = False
    if result.gate.passed:
        say("promote")
        store = open_store(settings.db_url)
        try:
            registry.promote(store, result.version, reason="demo: gate passed")
        finally:
            store.dispose()
        promoted = True
    champion = registry.alias(CHAMPION)
    return DemoResult(result, str(champion.version) if champion else None, promoted)
