"""Which model answers a request: one slot per variant, each following a registry alias.

Today only the ``champion`` slot exists. A ``challenger`` slot (shadow or canary, driven by the
``routing_state`` table) adds a second :class:`Slot` and a choice in :meth:`Router.pick`; the
batcher, metrics and prediction log already carry the variant name.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from loopml.serving.batcher import Batcher
from loopml.serving.loader import LoadedModel

__all__ = ["CHAMPION", "Router", "Slot"]

CHAMPION = "champion"


@dataclass
class Slot:
    """A variant: the registry alias it follows, its current model and its batcher."""

    variant: str
    alias: str
    batcher: Batcher
    model: LoadedModel | None = None
    history: list[str] = field(default_factory=list)

    def swap(self, model: LoadedModel) -> LoadedModel | None:
        """Serve ``model`` from now on (one reference assignment: atomic for every request)."""
        old, self.model = self.model, model
        self.history.append(model.version)
        return old


class Router:
    """Maps a request to a slot."""

    def __init__(self, slots: list[Slot]) -> None:
        self.slots = {s.variant: s for s in slots}
        self.champion = self.slots[CHAMPION]

    def pick(self) -> Slot:
        """The slot that answers the next request."""
        return self.champion

    @property
    def ready(self) -> bool:
        """Whether the champion has a model loaded."""
        return self.champion.model is not None
