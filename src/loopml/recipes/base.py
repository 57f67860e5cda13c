"""The recipe interface: turn training texts into a :class:`TextClassifier`.

Recipes register by name; heavy optional ones are imported only when selected.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from loopml.errors import TrainingError

__all__ = ["RECIPES", "Recipe", "TextClassifier", "get_recipe"]

# name -> "module:Class"; imported lazily so optional dependencies load only when used.
RECIPES: dict[str, str] = {
    "tfidf-logreg": "loopml.recipes.tfidf_logreg:TfidfLogReg",
    # need the "transformers" extra (torch, transformers, onnxruntime, peft)
    "minilm-logreg": "loopml.recipes.minilm:MiniLMLogReg",
    "minilm-lora": "loopml.recipes.minilm_lora:MiniLMLoRA",
}


class TextClassifier(ABC):
    """A fitted model: texts in, class probabilities out (columns in the order of ``classes``)."""

    classes: list[str]

    @abstractmethod
    def predict_proba(self, texts: Sequence[str]) -> npt.NDArray[np.float64]:
        """Class probabilities, shape (len(texts), len(classes))."""

    def predict(self, texts: Sequence[str]) -> list[str]:
        """The most probable class of each text."""
        proba = self.predict_proba(texts)
        return [self.classes[i] for i in proba.argmax(axis=1)]


class Recipe(ABC):
    """A way to train a text classifier, with typed hyper-parameters and defaults."""

    name: ClassVar[str]
    defaults: ClassVar[dict[str, Any]]

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        self.params = self.parse_params(params or {})

    @classmethod
    def parse_params(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults overridden by ``params``; strings are cast to the default's type."""
        unknown = sorted(set(params) - set(cls.defaults))
        if unknown:
            allowed = ", ".join(sorted(cls.defaults))
            raise TrainingError(
                f"recipe {cls.name}: unknown parameter(s) {unknown}; allowed: {allowed}"
            )
        merged = dict(cls.defaults)
        for key, value in params.items():
            merged[key] = _cast(cls.name, key, value, cls.defaults[key])
        return merged

    @abstractmethod
    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> TextClassifier:
        """Train on ``texts`` and ``labels`` and return the fitted classifier."""


def _cast(recipe: str, key: str, value: Any, default: Any) -> Any:
    if not isinstance(value, str) or isinstance(default, str):
        return value
    try:
        if isinstance(default, bool):
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError(value)
            return value.lower() in ("true", "1")
        if isinstance(default, tuple):
            return tuple(int(v) for v in value.strip("()").split(","))
        return type(default)(value)
    except ValueError as exc:
        kind = type(default).__name__
        raise TrainingError(
            f"recipe {recipe}: parameter {key}={value!r} is not a valid {kind}"
        ) from exc


def get_recipe(name: str, params: Mapping[str, Any] | None = None) -> Recipe:
    """Instantiate the recipe registered as ``name``."""
    if name not in RECIPES:
        raise TrainingError(f"unknown recipe {name!r}; available: {', '.join(sorted(RECIPES))}")
    module_name, class_name = RECIPES[name].split(":")
    cls: type[Recipe] = getattr(importlib.import_module(module_name), class_name)
    return cls(params)
