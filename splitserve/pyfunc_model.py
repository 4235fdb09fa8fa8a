"""MLflow "models from code" entry point for the serving bundle (no pickled objects)."""

import mlflow

from splitserve.pyfunc import SplitServeModel

mlflow.models.set_model(SplitServeModel())
