"""MLflow packaging: a :class:`TextClassifier` as a pyfunc model any MLflow tool can serve.

The model is logged "from code" (MLflow's recommended way): the pyfunc class lives in
``loopml.recipes._pyfunc_model`` and the fitted classifier is a pickled artifact loaded in
``load_context``. Loading therefore needs the ``loopml`` package installed.
"""

from __future__ import annotations

import pickle
import tempfile
import warnings
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.pyfunc.model import PythonModel
from mlflow.types import ColSpec, Schema, TensorSpec

from loopml.recipes.base import TextClassifier

__all__ = ["CLASSIFIER_ARTIFACT", "PyfuncTextModel", "log_classifier", "signature_for"]

CLASSIFIER_ARTIFACT = "classifier"
_MODEL_CODE = Path(__file__).with_name("_pyfunc_model.py")


class PyfuncTextModel(PythonModel):
    """Pyfunc model: a frame with a ``text`` column in; ``label`` and ``p_<class>`` out."""

    classifier: TextClassifier

    def load_context(self, context: Any) -> None:
        """Unpickle the fitted classifier from the model's artifacts."""
        with Path(context.artifacts[CLASSIFIER_ARTIFACT]).open("rb") as fh:
            self.classifier = pickle.load(fh)

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Predict labels and class probabilities for ``model_input['text']``."""
        texts = model_input["text"].astype(str).tolist()
        proba = self.classifier.predict_proba(texts)
        out = pd.DataFrame(proba, columns=[f"p_{c}" for c in self.classifier.classes])
        out.insert(0, "label", [self.classifier.classes[i] for i in proba.argmax(axis=1)])
        return out


def signature_for(classes: list[str]) -> ModelSignature:
    """Signature: one string column ``text`` in; label and one probability per class out."""
    inputs: list[ColSpec | TensorSpec] = [ColSpec("string", "text")]
    outputs: list[ColSpec | TensorSpec] = [ColSpec("string", "label")]
    outputs += [ColSpec("double", f"p_{c}") for c in classes]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs))


def log_classifier(
    classifier: TextClassifier, example_texts: list[str], requirements: list[str]
) -> Any:
    """Log ``classifier`` as the active run's pyfunc model ``model``; returns MLflow's ModelInfo."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "classifier.pkl"
        path.write_bytes(pickle.dumps(classifier, protocol=pickle.HIGHEST_PROTOCOL))
        with warnings.catch_warnings():
            # MLflow nags about type hints; the explicit signature below already validates inputs.
            warnings.simplefilter("ignore", UserWarning)
            return mlflow.pyfunc.log_model(
                name="model",
                python_model=str(_MODEL_CODE),
                artifacts={CLASSIFIER_ARTIFACT: str(path)},
                signature=signature_for(classifier.classes),
                input_example=pd.DataFrame({"text": example_texts}),
                pip_requirements=requirements,
            )
