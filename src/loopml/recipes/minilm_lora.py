"""MiniLM fine-tuned with LoRA and a linear head on CPU, served through ONNX Runtime.

Training is bounded by ``max_steps`` and ``max_seconds``, stops early when the validation
macro-F1 stops improving (``patience`` evaluations) and keeps the best state; the loss of every
step and each validation macro-F1 go to the active MLflow run. The LoRA weights are then merged
into the encoder (peft ``merge_and_unload``), which is exported to ONNX exactly as
``minilm-logreg`` exports the pre-trained one; the head runs in numpy.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field
from sklearn.metrics import f1_score
from sklearn.model_selection import train_test_split

from loopml.errors import TrainingError
from loopml.recipes.base import Recipe
from loopml.recipes.minilm import REQUIRES, log_metric
from loopml.recipes.onnx_encoder import (
    SERVES_WITH,
    LinearHead,
    OnnxEncoder,
    OnnxTextClassifier,
    export_encoder,
    load_base_model,
    pooled_embeddings,
    quantize_int8,
    tokenizer_json,
)

__all__ = ["LoRAParams", "MiniLMLoRA"]

# The head sees unit-length embeddings: a fixed temperature lets its logits grow large enough
# in a few hundred steps (folded into the exported weights).
_SCALE = 10.0


class LoRAParams(BaseModel):
    """Hyper-parameters of ``minilm-lora``."""

    model_config = ConfigDict(extra="forbid")

    rank: int = Field(8, ge=1, le=256)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.1, ge=0, lt=1)
    learning_rate: float = Field(5e-4, gt=0, le=1)
    head_learning_rate: float = Field(5e-3, gt=0, le=1)
    batch_size: int = Field(16, ge=1, le=512)
    max_steps: int = Field(400, ge=1)
    max_seconds: float = Field(900.0, gt=0)
    eval_every: int = Field(50, ge=1)
    patience: int = Field(3, ge=1)
    validation_share: float = Field(0.1, gt=0, lt=0.5)
    max_length: int = Field(128, ge=8, le=512)
    seed: int = 42
    quantize: bool = False


class _Batches:
    """Token batches padded to their longest text (training needs shuffled, not sorted, rows)."""

    def __init__(self, max_length: int) -> None:
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_str(tokenizer_json())
        self.tok.no_padding()
        self.tok.enable_truncation(max_length=max_length)

    def __call__(self, texts: Sequence[str]) -> tuple[Any, Any]:
        import torch

        ids = [e.ids for e in self.tok.encode_batch(list(texts))]
        width = max(len(i) for i in ids)
        input_ids = torch.zeros((len(ids), width), dtype=torch.int64)
        mask = torch.zeros((len(ids), width), dtype=torch.int64)
        for row, seq in enumerate(ids):
            input_ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
        return input_ids, mask


class MiniLMLoRA(Recipe):
    """LoRA fine-tune of all-MiniLM-L6-v2 with a linear head; ONNX Runtime at serving time."""

    name: ClassVar[str] = "minilm-lora"
    Params: ClassVar[type[BaseModel]] = LoRAParams
    params: LoRAParams
    extra: ClassVar[str] = "transformers"
    requires: ClassVar[tuple[str, ...]] = REQUIRES
    serves_with: ClassVar[tuple[str, ...]] = SERVES_WITH  # the head runs in numpy

    #: per evaluation: step, mean training loss since the last one, validation macro-F1
    history: list[dict[str, float]]

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        """Optuna search space."""
        return {
            "rank": trial.suggest_categorical("rank", [4, 8, 16]),
            "learning_rate": trial.suggest_float("learning_rate", 1e-4, 2e-3, log=True),
            "head_learning_rate": trial.suggest_float("head_learning_rate", 1e-3, 2e-2, log=True),
        }

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> OnnxTextClassifier:
        """Fine-tune, merge, export; returns the ONNX-served classifier."""
        p = self.params
        classes = sorted({str(label) for label in labels})
        if len(classes) < 2:
            raise TrainingError(f"recipe {self.name}: needs at least two classes, got {classes}")
        import torch

        torch.manual_seed(p.seed)
        train_x, val_x, train_y, val_y = self._split(texts, labels, classes, p)
        model, head = self._train(train_x, train_y, val_x, val_y, classes, p)
        merged = model.merge_and_unload().eval()
        self.torch_model = (merged, head, _Batches(p.max_length))
        onnx_model = export_encoder(merged)
        if p.quantize:
            onnx_model = quantize_int8(onnx_model)
        weight = head.weight.detach().numpy() * _SCALE
        encoder = OnnxEncoder(onnx_model, tokenizer_json(), max_length=p.max_length)
        return OnnxTextClassifier(encoder, LinearHead(weight, head.bias.detach().numpy(), classes))

    def _split(
        self, texts: Sequence[str], labels: Sequence[str], classes: list[str], p: LoRAParams
    ) -> tuple[list[str], list[str], list[int], list[int]]:
        y = [classes.index(str(label)) for label in labels]
        try:
            tx, vx, ty, vy = train_test_split(
                [str(t) for t in texts],
                y,
                test_size=p.validation_share,
                random_state=p.seed,
                stratify=y,
            )
        except ValueError as exc:
            raise TrainingError(f"recipe {self.name}: cannot hold out validation: {exc}") from exc
        return list(tx), list(vx), list(ty), list(vy)

    def _train(
        self,
        train_x: list[str],
        train_y: list[int],
        val_x: list[str],
        val_y: list[int],
        classes: list[str],
        p: LoRAParams,
    ) -> tuple[Any, Any]:
        import torch
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=p.rank,
            lora_alpha=p.alpha,
            lora_dropout=p.dropout,
            target_modules=["query", "value"],
        )
        model = get_peft_model(load_base_model(), config)
        head = torch.nn.Linear(model.config.hidden_size, len(classes))
        optimizer = torch.optim.AdamW(
            [
                {"params": [w for w in model.parameters() if w.requires_grad]},
                {"params": head.parameters(), "lr": p.head_learning_rate},
            ],
            lr=p.learning_rate,
        )
        batches = _Batches(p.max_length)
        targets = torch.tensor(train_y)
        rng = np.random.default_rng(p.seed)
        order: list[int] = []
        best: tuple[float, Any] | None = None
        stale, losses, self.history = 0, [], []
        deadline = time.monotonic() + p.max_seconds
        for step in range(1, p.max_steps + 1):
            if len(order) < p.batch_size:
                order += rng.permutation(len(train_x)).tolist()
            rows, order = order[: p.batch_size], order[p.batch_size :]
            model.train()
            logits = head(pooled_embeddings(model, *batches([train_x[r] for r in rows])) * _SCALE)
            loss = torch.nn.functional.cross_entropy(logits, targets[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            log_metric("train_loss", losses[-1], step=step)
            last = step == p.max_steps or time.monotonic() >= deadline
            if step % p.eval_every == 0 or last:
                f1 = self._validate(model, head, batches, val_x, val_y, p.batch_size)
                log_metric("val_macro_f1", f1, step=step)
                self.history.append(
                    {"step": step, "loss": float(np.mean(losses[-p.eval_every :])), "f1": f1}
                )
                if best is None or f1 > best[0]:
                    best, stale = (f1, _trainable_state(model, head)), 0
                else:
                    stale += 1
                if stale >= p.patience or last:
                    break
        assert best is not None  # the last step always evaluates
        _load_trainable_state(model, head, best[1])
        log_metric("best_val_macro_f1", best[0])
        return model, head

    def _validate(
        self, model: Any, head: Any, batches: _Batches, texts: list[str], y: list[int], size: int
    ) -> float:
        import torch

        model.eval()
        predicted: list[int] = []
        with torch.no_grad():
            for start in range(0, len(texts), size):
                emb = pooled_embeddings(model, *batches(texts[start : start + size]))
                predicted += head(emb * _SCALE).argmax(dim=1).tolist()
        return float(f1_score(y, predicted, average="macro"))

    def torch_proba(self, texts: Sequence[str]) -> npt.NDArray[np.float64]:
        """Class probabilities of the merged torch model of the last fit (for parity checks)."""
        import torch

        merged, head, batches = self.torch_model
        with torch.no_grad():
            logits = head(pooled_embeddings(merged, *batches(texts)) * _SCALE)
            return np.asarray(torch.softmax(logits.double(), dim=1).numpy(), dtype=np.float64)


def _trainable_state(model: Any, head: Any) -> dict[str, Any]:
    lora = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}
    return {"lora": lora, "head": copy.deepcopy(head.state_dict())}


def _load_trainable_state(model: Any, head: Any, state: dict[str, Any]) -> None:
    import torch

    with torch.no_grad():
        for name, value in model.named_parameters():
            if name in state["lora"]:
                value.copy_(state["lora"][name])
    head.load_state_dict(state["head"])
