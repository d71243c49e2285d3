"""MLflow "models from code" entry: defines the pyfunc that heartflow logs."""

from mlflow.models import set_model

from heartflow.tracking.logged_model import python_model_class

set_model(python_model_class()())
