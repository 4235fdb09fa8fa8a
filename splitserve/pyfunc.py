"""The serving bundle as an MLflow pyfunc model: `mlflow.pyfunc.load_model(uri).predict(df)`.

Input: a DataFrame (columns `id` and `content`/`text`, optionally `text_pair`; `question` and
`context`; `candidate_labels`; a templated bundle takes any other columns too), a list of strings
or dicts, or one string. Output: a DataFrame with `id` and one result column (`labels`,
`entities`, `embedding`, `filled_masks`, `answers`, `zero_shot`, `generated` or `transcription`), row for row, the
same values the gateway returns; a templated bundle's rows, one DataFrame row per row.
Per-request params go in `params=` as with any MLflow model.
"""

from __future__ import annotations

from mlflow.pyfunc import PythonModel


class SplitServeModel(PythonModel):
    def load_context(self, context):  # type: ignore[no-untyped-def]  # no hints: MLflow infers from them
        from pathlib import Path

        from splitserve.core.bundle import read_local
        from splitserve.inprocess import InProcessPipeline

        root = Path(context.artifacts["serving.json"]).parent.parent
        bundle = read_local(root)
        bundle.verify(("tokenizer", "onnx", "template"))
        self.pipeline = InProcessPipeline(bundle)
        self.defaults = self.pipeline.pre.resolve_params({})

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        import pandas as pd

        # MLflow fills in the signature's default for every param the caller left out; drop those so
        # that the params the caller did set win where two conflict (do_sample vs. num_beams).
        asked = {k: v for k, v in (params or {}).items() if k not in self.defaults or self.defaults[k] != v}
        results = self.pipeline.predict(model_input, asked or None)
        return pd.DataFrame(results)
