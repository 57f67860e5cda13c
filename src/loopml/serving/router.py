"""Which model answers a request: a champion slot, a challenger slot, and the routing plan.

Each slot has its own model and batcher (so a slow or failing challenger never holds the champion's
model thread). The :class:`Plan` is the routing state this worker obeys now: the runtime's poller
rebuilds it from the ``routing_state`` row (see :mod:`loopml.control.routing`) and swaps it with one
reference assignment, so the per-request lookup is an in-memory read.

- ``none``: the champion answers everything.
- ``canary``: :func:`loopml.control.routing.choose_variant` sends the ``weight`` share of request
  keys to the challenger (variant ``challenger``); a challenger failure is answered by the champion.
- ``shadow``: the champion answers; the challenger scores the same texts off the request path
  (variant ``shadow``, request id = the champion's + ``:shadow``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from loopml.control.routing import Mode, Routing, choose_variant
from loopml.serving.batcher import Batcher
from loopml.serving.loader import LoadedModel

__all__ = ["CHALLENGER", "CHAMPION", "SHADOW", "Plan", "Router", "Slot"]

CHAMPION = "champion"
CHALLENGER = "challenger"
SHADOW = "shadow"


@dataclass
class Slot:
    """A variant: the registry alias it falls back to, its current model and its batcher."""

    variant: str
    alias: str
    batcher: Batcher
    model: LoadedModel | None = None
    history: list[str] = field(default_factory=list)

    def swap(self, model: LoadedModel | None) -> LoadedModel | None:
        """Serve ``model`` from now on (one reference assignment: atomic for every request)."""
        old, self.model = self.model, model
        if model is not None and (old is None or old.version != model.version):
            self.history.append(model.version)
        return old


@dataclass(frozen=True)
class Plan:
    """What this worker obeys now: the effective mode and the challenger model that serves it
    (labelled ``challenger`` or ``shadow``); ``mode`` is ``none`` whenever it cannot be obeyed."""

    mode: Mode = "none"
    routing: Routing | None = None
    challenger: LoadedModel | None = None


_IDLE = Plan()


class Router:
    """Maps a request to a slot."""

    def __init__(self, champion: Slot, challenger: Slot) -> None:
        self.champion = champion
        self.challenger = challenger
        self.slots = {champion.variant: champion, challenger.variant: challenger}
        self.plan = _IDLE

    def pick(self) -> Slot:
        """The slot that answers requests pinned to no routing (the champion)."""
        return self.champion

    def canary_model(self, plan: Plan, key: str) -> LoadedModel | None:
        """The challenger's model when ``plan`` is a canary that sends ``key`` to it, else None."""
        if plan.mode != "canary" or plan.challenger is None or plan.routing is None:
            return None
        if choose_variant(plan.routing, key) != CHALLENGER:
            return None
        return plan.challenger

    @property
    def ready(self) -> bool:
        """Whether the champion has a model loaded."""
        return self.champion.model is not None
