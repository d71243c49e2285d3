"""MLflow "models from code" entry: defines the pyfunc that heartflow logs."""

from mlflow.models import set_model

from heartflow.serving import _python_model_class

set_model(_python_model_class()())
