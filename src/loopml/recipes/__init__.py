"""Training recipes: built-ins in :data:`RECIPES`, plug-ins as ``loopml.recipes`` entry points."""

from __future__ import annotations

from loopml.recipes.base import (
    ENTRY_POINT_GROUP,
    RECIPES,
    Recipe,
    RecipeEntry,
    TextClassifier,
    available_recipes,
    describe_recipes,
    get_recipe,
    recipe_class,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "RECIPES",
    "Recipe",
    "RecipeEntry",
    "TextClassifier",
    "available_recipes",
    "describe_recipes",
    "get_recipe",
    "recipe_class",
]
