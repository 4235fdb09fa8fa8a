"""The serving bundle as an MLflow pyfunc model: `mlflow.pyfunc.load_model(uri).predict(df)`.

Input: a DataFrame (columns `id` and `content`/`text`, optionally `text_pair`; `question` and
`context`; `candidate_labels`; `query` and `table`; a templated bundle takes any other columns too), a list of strings
or dicts, or one string. Output: a DataFrame with `id` and one result column (`labels`,
`entities`, `embedding`, `filled_masks`, `answers`, `zero_shot`, `generated`, `transcription`
or `table_answer`: MLflow's answer string), row for row, the
same values the gateway returns, except that text is stripped of surrounding whitespace where
MLflow's transformers pyfunc strips it (generated text, transcriptions, answers, filled tokens;
`Task.mlflow_strips`); a templated bundle's rows, one DataFrame row per row.
Per-request params go in `params=` as with any MLflow model.

A bundle of a source logged with MLflow's task="llm/v1/completions" or "llm/v1/chat" takes and
answers MLflow's OpenAI-style schemas instead (`splitserve.llm_schema`).
"""

from __future__ import annotations

from mlflow.pyfunc import PythonModel


def _packages_beside_splitserve() -> None:
    """Import `model_svc` and `protos` from where `splitserve` came from. MLflow puts the bundle's
    copy of the three first on sys.path, but a process that imported splitserve before loading the
    bundle (a notebook, `splitserve bench`) keeps its own splitserve: the bundle's model_svc beside
    it would be another version's (a bundle exported by an older splitserve failed with a
    TypeError inside the model tier's code)."""
    import sys
    from pathlib import Path

    import splitserve

    home = str(Path(splitserve.__file__).parent.parent)  # not resolved: a linked package's siblings
    sys.path.insert(0, home)
    try:
        import model_svc
        import protos
    finally:
        sys.path.remove(home)  # the first occurrence: the one just inserted
    for module in (model_svc, protos):
        if Path(str(module.__file__)).parent.parent.resolve() != Path(home).resolve():
            raise ImportError(
                f"{module.__name__} was imported from {module.__file__}, splitserve from {home}: "
                "load this bundle in a fresh process"
            )


class SplitServeModel(PythonModel):
    def load_context(self, context):  # type: ignore[no-untyped-def]  # no hints: MLflow infers from them
        from pathlib import Path

        _packages_beside_splitserve()
        from splitserve.core.bundle import read_local
        from splitserve.inprocess import InProcessPipeline

        root = Path(context.artifacts["serving.json"]).parent.parent
        bundle = read_local(root)
        bundle.verify(("tokenizer", "onnx", "template"))
        self.pipeline = InProcessPipeline(bundle)
        self.defaults = self.pipeline.pre.resolve_params({})

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        import pandas as pd

        if self.pipeline.pre.assets.config.llm_task:  # MLflow's llm/v1 request and response schemas
            return self._llm_predict(model_input, params)
        # MLflow fills in the signature's default for every param the caller left out; drop those so
        # that the params the caller did set win where two conflict (do_sample vs. num_beams).
        asked = {k: v for k, v in (params or {}).items() if k not in self.defaults or self.defaults[k] != v}
        results = self.pipeline.predict(model_input, asked or None)
        if self.pipeline.post.template is None:  # text stripped as MLflow's own pyfunc answers it
            task, config = self.pipeline.post.task, self.pipeline.post.assets.config
            results = [{**r, task.result_kind: task.as_mlflow_serves(r[task.result_kind], config)} for r in results]
        return pd.DataFrame(results)

    def _llm_predict(self, model_input, params):  # type: ignore[no-untyped-def]
        from mlflow.exceptions import MlflowException

        from splitserve import llm_schema
        from splitserve.core.errors import InvalidInput

        try:
            return llm_schema.predict(self.pipeline, model_input, params)
        except InvalidInput as exc:  # a 400 from `mlflow models serve`, as MLflow's own refusals are
            raise MlflowException.invalid_parameter_value(str(exc)) from None
