"""Which recipe and parameters a training or a search uses: the caller's, else the champion's.

Retraining and tuning must not forget what the champion is: a champion trained with a plug-in
recipe, or with tuned parameters, is retrained with that recipe and those parameters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from loopml.recipes import Recipe, get_recipe
from loopml.registry import Registry
from loopml.routing import CHAMPION

__all__ = ["DEFAULT_RECIPE", "RecipeChoice", "choose_recipe"]

DEFAULT_RECIPE = "tfidf-logreg"


@dataclass(frozen=True)
class RecipeChoice:
    """A recipe instance (validated parameters) and why it was chosen."""

    recipe: Recipe
    reason: str

    @property
    def name(self) -> str:
        """The recipe's registered name."""
        return self.recipe.name


def choose_recipe(
    registry: Registry, recipe: str | None = None, params: Mapping[str, Any] | None = None
) -> RecipeChoice:
    """``recipe`` with ``params`` when given; otherwise the champion's recipe and parameters,
    with ``params`` overriding some of them; without a champion, the default recipe."""
    params = dict(params or {})
    if recipe is not None:
        return RecipeChoice(get_recipe(recipe, params), f"recipe {recipe} chosen by the caller")
    champion = registry.alias(CHAMPION)
    used = registry.recipe_of(champion) if champion is not None else None
    if champion is None or used is None:
        why = "no champion" if champion is None else f"champion {champion.version} names none"
        return RecipeChoice(get_recipe(DEFAULT_RECIPE, params), f"default recipe ({why})")
    name, recorded = used
    reason = f"reused from champion version {champion.version}"
    if params:
        reason += f", overriding {', '.join(sorted(params))}"
    return RecipeChoice(get_recipe(name, recorded | params), reason)
