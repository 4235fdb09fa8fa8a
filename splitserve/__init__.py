"""splitserve: serve MLflow-logged Transformers pipelines as split gRPC tiers.

The package is light at import; heavy dependencies (torch, onnxscript, mlflow) are imported only
inside the commands that need them.
"""

from splitserve.core import VERSION as __version__

__all__ = ["__version__"]
