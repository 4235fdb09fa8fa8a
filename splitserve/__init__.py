"""splitserve: serve MLflow-logged Transformers pipelines as split gRPC tiers.

The package is light at import; heavy dependencies (torch, optimum, mlflow) are imported only
inside the commands that need them.
"""

__version__ = "0.1.0"
