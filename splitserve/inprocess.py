"""The bundle's three stages in one process, no servers: what the pyfunc model runs.

The stage pipeline (`splitserve.stages.pipeline.Pipeline`) with the model tier's computation
(`model_svc.runner.ModelRunner`) on the chosen backend.
"""

from __future__ import annotations

from model_svc.backends import Int8Check, create_backend
from model_svc.runner import ModelRunner
from splitserve.core.bundle import Bundle
from splitserve.core.pooling import read_head
from splitserve.core.tokenizer import load_features, load_tokenizer
from splitserve.stages.pipeline import Pipeline
from splitserve.stages.postprocess import Postprocessor
from splitserve.stages.preprocess import Preprocessor
from splitserve.stages.template import load_template


class InProcessPipeline(Pipeline):
    def __init__(
        self, bundle: Bundle, backend: str = "onnx", intra_op_threads: int = 0, int8_check: Int8Check = "refuse"
    ):
        tokenizer = load_tokenizer(bundle.tokenizer_dir)
        self.bundle = bundle
        model = create_backend(bundle, backend, intra_op_threads=intra_op_threads, int8_check=int8_check)
        onnx_dir = bundle.onnx_path.parent if backend == "onnx" else None
        template = load_template(bundle, tokenizer)
        super().__init__(
            Preprocessor(bundle.config, tokenizer, template=template, features=load_features(bundle.tokenizer_dir)),
            ModelRunner(model, bundle.config, head=read_head(bundle.config.head, onnx_dir)),
            Postprocessor(bundle.config, tokenizer, template),
        )
