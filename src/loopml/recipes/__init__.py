"""Training recipes. Each registers by name in :data:`RECIPES`."""

from __future__ import annotations

from loopml.recipes.base import RECIPES, Recipe, TextClassifier, get_recipe

__all__ = ["RECIPES", "Recipe", "TextClassifier", "get_recipe"]
