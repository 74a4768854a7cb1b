"""MLflow models-from-code entry point for the ``netdiffusion`` pyfunc (no pickled objects).

MLflow copies this file into the logged model and executes it at load time; it only names the
class, so the loading side runs the installed ``netdiffusion`` code, never unpickled bytes.
"""

from mlflow.models import set_model

from netdiffusion.tracking.model import NetDiffusionModel

set_model(NetDiffusionModel())
