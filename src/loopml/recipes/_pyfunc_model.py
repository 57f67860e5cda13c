"""Model-from-code entry point that MLflow executes when it loads a loopml model."""

from mlflow.models import set_model

from loopml.recipes.packaging import PyfuncTextModel

set_model(PyfuncTextModel())
