"""The recipe interface: turn training texts into a :class:`TextClassifier`.

A recipe is a :class:`Recipe` subclass with a name, typed parameters (a pydantic model whose
defaults are the recipe's defaults), its own Optuna search space and the pip extra it needs.
Built-in recipes are listed in :data:`RECIPES`; third-party ones register through the
``loopml.recipes`` entry-point group. Both are imported only when chosen, so a recipe module must
import without its optional dependencies (import them inside ``fit``).
"""

from __future__ import annotations

import importlib
import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points, version
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ValidationError

from loopml.codeversion import loopml_version
from loopml.errors import TrainingError

if TYPE_CHECKING:
    import optuna

__all__ = [
    "ENTRY_POINT_GROUP",
    "RECIPES",
    "Recipe",
    "RecipeEntry",
    "TextClassifier",
    "available_recipes",
    "check_requirements",
    "describe_recipes",
    "get_recipe",
    "recipe_class",
]

# name -> "module:Class"; imported lazily so optional dependencies load only when used.
RECIPES: dict[str, str] = {
    "tfidf-logreg": "loopml.recipes.tfidf_logreg:TfidfLogReg",
    # need the "transformers" extra (torch, transformers, onnxruntime, peft)
    "minilm-logreg": "loopml.recipes.minilm:MiniLMLogReg",
    "minilm-lora": "loopml.recipes.minilm_lora:MiniLMLoRA",
}
ENTRY_POINT_GROUP = "loopml.recipes"


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
    #: the parameters: a pydantic model with ``extra="forbid"``; its defaults are the recipe's
    Params: ClassVar[type[BaseModel]]
    #: the pip extra of loopml this recipe needs (``pip install 'loopml[<extra>]'``), if any
    extra: ClassVar[str | None] = None
    #: import names that must be installed before the recipe can run
    requires: ClassVar[tuple[str, ...]] = ()
    #: distributions a fitted model needs to predict, pinned as trained in its requirements; when
    #: set, they replace the whole extra there (a model need not bring its training stack)
    serves_with: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        self.params: BaseModel = self.parse_params(params or {})

    @classmethod
    def parse_params(cls, params: Mapping[str, Any]) -> BaseModel:
        """Validated parameters: defaults overridden by ``params`` (strings are coerced)."""
        try:
            return cls.Params.model_validate(dict(params))
        except ValidationError as exc:
            raise TrainingError(f"recipe {cls.name}: {_explain(cls, exc)}") from exc

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """The default parameters, JSON-ready."""
        return cls.Params().model_dump(mode="json")

    @classmethod
    def search_space(cls, trial: optuna.Trial) -> dict[str, Any]:
        """Parameters for one Optuna trial; recipes without a space cannot be tuned."""
        raise TrainingError(f"recipe {cls.name} defines no search space: it cannot be tuned")

    def params_dict(self) -> dict[str, Any]:
        """The full parameters, JSON-ready (what the registry records on a version)."""
        return self.params.model_dump(mode="json")

    def pip_requirements(self) -> list[str]:
        """What the packaged MLflow model needs installed to load: loopml at the version that
        trained it (it holds the pickled classes), numpy, pandas and ``serves_with`` at the
        installed versions."""
        extra = f"[{self.extra}]" if self.extra and not self.serves_with else ""
        pins = [f"{name}=={version(name)}" for name in self.serves_with]
        return [f"loopml{extra}=={loopml_version()}", "numpy", "pandas", *pins]

    @abstractmethod
    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> TextClassifier:
        """Train on ``texts`` and ``labels`` and return the fitted classifier."""


def _explain(cls: type[Recipe], exc: ValidationError) -> str:
    """One clause per problem, naming the parameter and what is wrong with it."""
    problems = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "?"
        if err["type"] == "extra_forbidden":
            allowed = ", ".join(cls.Params.model_fields)
            problems.append(f"unknown parameter {key!r} (allowed: {allowed})")
        else:
            problems.append(f"parameter {key}={err['input']!r}: {err['msg']}")
    return "; ".join(problems)


@dataclass(frozen=True)
class RecipeEntry:
    """Where a recipe comes from: ``builtin`` or ``plug-in`` (with its distribution)."""

    name: str
    source: str
    target: str
    distribution: str | None = None


def _plugins() -> dict[str, EntryPoint]:
    # Read on every call (a few ms): a package installed while a process runs is seen.
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _dist_name(ep: EntryPoint) -> str | None:
    return ep.dist.name if ep.dist is not None else None


def available_recipes() -> list[RecipeEntry]:
    """Every recipe: the built-ins, then the plug-ins (by name)."""
    found = [RecipeEntry(name, "builtin", target) for name, target in RECIPES.items()]
    plugins = sorted(_plugins().items())
    found += [RecipeEntry(n, "plug-in", ep.value, _dist_name(ep)) for n, ep in plugins]
    return found


def recipe_class(name: str) -> type[Recipe]:
    """The class of recipe ``name`` (imported now); ``TrainingError`` names what is wrong."""
    plugins = _plugins()
    if name in RECIPES:
        if name in plugins:
            ep = plugins[name]
            raise TrainingError(
                f"plug-in {ep.value!r} (package {_dist_name(ep)}) registers recipe {name!r}, "
                "the name of a built-in recipe: built-ins cannot be shadowed; rename its "
                f"{ENTRY_POINT_GROUP!r} entry point or uninstall it"
            )
        module_name, class_name = RECIPES[name].split(":")
        cls: type[Recipe] = getattr(importlib.import_module(module_name), class_name)
        return cls
    if name not in plugins:
        known = ", ".join(e.name for e in available_recipes())
        raise TrainingError(f"unknown recipe {name!r}; available: {known}")
    return _load_plugin(name, plugins[name])


def _load_plugin(name: str, ep: EntryPoint) -> type[Recipe]:
    where = f"plug-in recipe {name!r} ({ep.value}, package {_dist_name(ep)})"
    try:
        loaded = ep.load()
    except Exception as exc:  # whatever a third-party import raises, say which plug-in broke
        raise TrainingError(f"{where} failed to load: {type(exc).__name__}: {exc}") from exc
    if not (isinstance(loaded, type) and issubclass(loaded, Recipe)):
        raise TrainingError(f"{where} is not a loopml.recipes.Recipe subclass")
    if getattr(loaded, "name", None) != name:
        raise TrainingError(
            f"{where}: its class is named {getattr(loaded, 'name', None)!r}, not {name!r}"
        )
    return loaded


def describe_recipes() -> list[dict[str, Any]]:
    """Every recipe with its source, extra and default parameters; one that cannot load carries
    its ``error`` instead of failing the listing."""
    described = []
    for entry in available_recipes():
        row: dict[str, Any] = {
            "name": entry.name,
            "source": entry.source,
            "target": entry.target,
            "distribution": entry.distribution,
            "extra": None,
            "installed": False,
            "parameters": {},
            "error": None,
        }
        try:
            cls = recipe_class(entry.name)
            row |= {"extra": cls.extra, "parameters": cls.defaults()}
            check_requirements(cls)
            row["installed"] = True
        except TrainingError as exc:
            row["error"] = str(exc)
        described.append(row)
    return described


def check_requirements(cls: type[Recipe]) -> None:
    """``TrainingError`` with the pip command when a module the recipe needs is missing."""
    missing = [m for m in cls.requires if not _installed(m)]
    if not missing:
        return
    if cls.extra:
        raise TrainingError(f"recipe {cls.name} needs: pip install 'loopml[{cls.extra}]'")
    raise TrainingError(f"recipe {cls.name} needs the Python module(s): {', '.join(missing)}")


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a dotted name whose parent is missing
        return False


def get_recipe(name: str, params: Mapping[str, Any] | None = None) -> Recipe:
    """Instantiate the recipe registered as ``name`` (built-in or plug-in) with ``params``."""
    cls = recipe_class(name)
    check_requirements(cls)
    return cls(params)
