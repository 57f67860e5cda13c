"""Model loading for serving: registry alias -> verified local cache -> authenticated files ->
classifier -> warm-up.

Artifacts are downloaded once into ``settings.cache_dir/<model>/<version>/`` next to a SHA-256
manifest written at download time; every load re-checks the manifest, so a corrupted or half-written
cache is never loaded (it is downloaded again). That manifest only says the copy is whole, not that
it is the model that was registered: before anything is unpickled or imported, every file is checked
against the hashes recorded in the loopml database at registration (``model_artifacts``). A
mismatch refuses the version (the old model keeps serving), writes an audit record
(``model_refused``) and counts ``loopml_model_refused_total``. A version without recorded hashes
(registered before they existed, or by hand) is refused in production and loaded with a warning in
development (``LOOPML_UNVERIFIED_MODELS``). When the database cannot be read, a copy authenticated
earlier by this cache (``authenticated.json``) still loads; anything else waits for the database.

A model that fails to load or to answer a warm-up prediction raises :class:`ServingError` and never
reaches a request.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np

from loopml.config import Settings
from loopml.errors import LoopmlError, ServingError
from loopml.recipes.base import TextClassifier
from loopml.store import (
    FileHashes,
    Store,
    current_actor,
    differences,
    hash_tree,
    open_settings_store,
)

if TYPE_CHECKING:
    from loopml.serving.metrics import Metrics

__all__ = ["LoadedModel", "ModelLoader", "build_manifest", "verify_manifest"]

log = logging.getLogger("loopml.serving")

MANIFEST = "manifest.json"
AUTHENTICATED = "authenticated.json"
_WARMUP = ["loopml warm-up: the flight was great", "terrible service, never again", "ok"]


@dataclass(frozen=True)
class LoadedModel:
    """A classifier ready to serve, with where it came from."""

    name: str
    version: str
    variant: str
    classifier: TextClassifier
    classes: tuple[str, ...]
    loaded_at: float = field(default_factory=time.time)
    #: "verified" (hashes recorded at registration match) or "unverified" (none recorded)
    authenticity: str = "verified"
    #: bytes of its artifact files (what ``LOOPML_MAX_LOADED_MODEL_BYTES`` counts)
    size_bytes: int = 0


class _UnhashableError(ServingError):
    """A downloaded version's files cannot be hashed (a symlink, an unreadable file)."""


def _digests(hashes: FileHashes) -> dict[str, str]:
    return {path: digest for path, (digest, _size) in hashes.items()}


def build_manifest(model_dir: Path) -> dict[str, str]:
    """relative path -> SHA-256 of every file under ``model_dir``."""
    return _digests(hash_tree(model_dir))


def _checked(entry: Path) -> FileHashes:
    """The hashes of a cache entry's model files (hashed once: the caller authenticates with
    them too); ServingError if they differ from the entry's manifest."""
    model_dir = entry / "model"
    try:
        expected = json.loads((entry / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise ServingError(f"cache entry {entry} has no readable manifest") from exc
    try:
        actual = hash_tree(model_dir) if model_dir.is_dir() else {}
    except (OSError, ValueError) as exc:
        raise ServingError(f"cache entry {entry} cannot be hashed: {exc}") from exc
    if _digests(actual) != expected:
        changed = sorted(set(_digests(actual).items()) ^ set(expected.items()))
        names = sorted({name for name, _ in changed})[:5]
        raise ServingError(f"cache entry {entry} does not match its manifest: {names}")
    return actual


def verify_manifest(entry: Path) -> Path:
    """The verified model directory of a cache entry; ServingError if anything differs."""
    _checked(entry)
    return entry / "model"


class ModelLoader:
    """Resolves aliases in the registry and loads versions through the verified cache."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.name = settings.model_name
        self.metrics = metrics
        #: the loopml database holding the recorded hashes (the worker attaches its own)
        self.store: Store | None = None
        self._registry: Any = None
        # (version, reason) already audited by this process: one record, not one per retry.
        self._audited: set[tuple[str, str]] = set()

    @property
    def registry(self) -> Any:
        """The registry, created on first use (it imports and configures MLflow)."""
        if self._registry is None:
            from loopml.registry import Registry

            self._registry = Registry(self.settings)
        return self._registry

    def resolve(self, alias: str) -> str | None:
        """The version holding ``alias`` now, or None when the alias is not set."""
        try:
            mv = self.registry.alias(alias)
        except LoopmlError:
            raise
        except Exception as exc:  # MLflow or its database: translate at the boundary
            raise ServingError(f"cannot read alias {alias!r}: {type(exc).__name__}: {exc}") from exc
        return None if mv is None else str(mv.version)

    def entry(self, version: str) -> Path:
        """Cache folder of one version."""
        return self.settings.cache_dir / self.name / str(version)

    def fetch(self, version: str) -> tuple[Path, FileHashes]:
        """A verified local copy of ``version`` (downloaded again if missing or corrupted) and
        the hashes of its files."""
        entry = self.entry(version)
        if entry.exists():
            try:
                return entry / "model", _checked(entry)
            except ServingError as exc:
                log.warning("re-downloading model version %s: %s", version, exc)
                shutil.rmtree(entry, ignore_errors=True)
        return entry / "model", self._download(version, entry)

    def _download(self, version: str, entry: Path) -> FileHashes:
        # No progress bars in server logs.
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        import mlflow

        entry.parent.mkdir(parents=True, exist_ok=True)
        # Download into a private folder and rename: other workers never see a partial copy.
        tmp = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=entry.parent))
        try:
            self.registry.version(version)  # a clear RegistryError for unknown versions
            uri = f"models:/{self.name}/{version}"
            try:
                mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp / "model"))
            except Exception as exc:
                raise ServingError(f"cannot download {uri}: {type(exc).__name__}: {exc}") from exc
            try:
                hashes = hash_tree(tmp / "model")
            except (OSError, ValueError) as exc:
                raise _UnhashableError(f"its files cannot be hashed: {exc}") from exc
            (tmp / MANIFEST).write_text(json.dumps(_digests(hashes), indent=1))
            try:
                tmp.rename(entry)
            except OSError:
                if not entry.exists():
                    raise
                return _checked(entry)  # another worker won the race: use its copy
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return hashes

    def load(self, version: str, variant: str) -> LoadedModel:
        """Fetch, verify, authenticate, load and warm up ``version``; ServingError if any step
        fails. Nothing of the model is unpickled or imported before it is authenticated."""
        version = str(version)
        try:
            model_dir, hashes = self.fetch(version)
        except _UnhashableError as exc:  # e.g. a symlink planted in the artifact store
            self._refuse(version, variant, "mismatch", str(exc), [])
        authenticity = self.authenticate(version, model_dir, variant, hashes)
        classifier = _load_classifier(model_dir)
        classes = tuple(str(c) for c in classifier.classes)
        warm_up(classifier, classes)
        size = sum(file_size for _digest, file_size in hashes.values())
        return LoadedModel(
            self.name,
            version,
            variant,
            classifier,
            classes,
            authenticity=authenticity,
            size_bytes=size,
        )

    def _recorded(self, version: str) -> FileHashes:
        if self.store is None:  # outside a worker (benchmarks): the settings' database
            self.store = open_settings_store(self.settings)
        return self.store.artifacts(self.name, version)

    def authenticate(self, version: str, model_dir: Path, variant: str, actual: FileHashes) -> str:
        """Check ``model_dir``'s file hashes (``actual``, from :meth:`fetch`) against those
        recorded at registration: "verified", or "unverified" (none recorded, allowed by the
        policy); ServingError otherwise."""
        entry = model_dir.parent
        try:
            recorded = self._recorded(version)
        except LoopmlError as exc:
            if _load_authenticated(entry) == actual:
                log.warning(
                    "cannot read the recorded hashes of version %s (%s): its cached copy was"
                    " authenticated before and has not changed",
                    version,
                    exc,
                )
                return "verified"
            self._count(version, "unavailable")
            raise ServingError(
                f"version {version} cannot be authenticated now (the loopml database is"
                f" unavailable: {exc}); not loading it"
            ) from exc
        if not recorded:
            if self.settings.unverified_model_policy == "refuse":
                self._refuse(
                    version,
                    variant,
                    "unverified",
                    "no artifact hashes were recorded at its registration"
                    " (LOOPML_UNVERIFIED_MODELS=refuse)",
                    [],
                )
            log.warning(
                "version %s has no artifact hashes recorded at registration: loading it"
                " unverified (development; LOOPML_UNVERIFIED_MODELS=refuse forbids this)",
                version,
            )
            return "unverified"
        changed = differences(recorded, actual)
        if changed:
            shutil.rmtree(entry, ignore_errors=True)  # never reuse it; download again next time
            self._refuse(
                version,
                variant,
                "mismatch",
                f"{len(changed)} artifact file(s) differ from the hashes recorded at"
                f" registration: {', '.join(changed[:5])}",
                changed[:20],
            )
        (entry / AUTHENTICATED).write_text(json.dumps(actual, indent=1))
        return "verified"

    def _count(self, version: str, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.model_refused.labels(version, reason, self.settings.model_name).inc()

    def _refuse(
        self, version: str, variant: str, reason: str, text: str, paths: list[str]
    ) -> NoReturn:
        """Count, audit (once per version and reason in this process) and raise."""
        self._count(version, reason)
        log.error("refusing model %s version %s: %s", self.name, version, text)
        if (version, reason) not in self._audited and self.store is not None:
            try:
                self.store.audit(
                    actor=current_actor(),
                    action="model_refused",
                    model_name=self.name,
                    from_version=None,
                    to_version=version,
                    reason=text,
                    details={"reason": reason, "variant": variant, "paths": paths},
                )
                self._audited.add((version, reason))
            except LoopmlError as exc:
                log.error("cannot audit the refusal of version %s: %s", version, exc)
        raise ServingError(f"version {version} refused: {text}")


def _load_authenticated(entry: Path) -> FileHashes | None:
    """The hashes a cache entry was authenticated with, or None."""
    try:
        raw = json.loads((entry / AUTHENTICATED).read_text())
        return {str(path): (str(v[0]), int(v[1])) for path, v in raw.items()}
    except (OSError, ValueError, TypeError, IndexError, AttributeError):
        return None


def _load_classifier(model_dir: Path) -> TextClassifier:
    import mlflow

    try:
        pyfunc = mlflow.pyfunc.load_model(str(model_dir))
        classifier = pyfunc.unwrap_python_model().classifier
    except Exception as exc:
        raise ServingError(
            f"cannot load the model at {model_dir}: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(classifier, TextClassifier):
        raise ServingError(f"{model_dir} does not hold a loopml TextClassifier")
    return classifier


def warm_up(classifier: TextClassifier, classes: tuple[str, ...]) -> None:
    """Answer a few texts and check the shape and values of the probabilities."""
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise ServingError(f"model classes must be at least two distinct names, got {classes}")
    try:
        proba = np.asarray(classifier.predict_proba(_WARMUP), dtype=np.float64)
    except Exception as exc:
        raise ServingError(f"warm-up prediction failed: {type(exc).__name__}: {exc}") from exc
    if proba.shape != (len(_WARMUP), len(classes)):
        raise ServingError(
            f"warm-up answered shape {proba.shape}, expected {(len(_WARMUP), len(classes))}"
        )
    if not np.all(np.isfinite(proba)) or not np.allclose(proba.sum(axis=1), 1.0, atol=1e-3):
        raise ServingError("warm-up probabilities are not finite or do not sum to 1")
