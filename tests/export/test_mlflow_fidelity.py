"""The second oracle: for the same logged source model and input, splitserve answers what MLflow
itself serves (`mlflow.pyfunc.load_model(source).predict`, i.e. `mlflow models serve`), with
every inference setting MLflow applies (model_config, signature params, prompt templates), or
export refuses the model naming what it cannot honour. Plus what users log beyond a plain
pipeline: PEFT adapters, half-precision weights, reference-only weights, long texts, models
without a declared maximum length."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import grpc
import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
import transformers

from splitserve.client import Client
from splitserve.commands.log import source_requirements
from splitserve.core.bundle import load_bundle
from splitserve.core.errors import ExportError
from splitserve.export import export_bundle
from splitserve.inprocess import InProcessPipeline
from tests.support.oracle import TEXTS, close
from tests.support.stack import Stack

PROMPTS = ["Angela Merkel works for", "They cut down a cherry tree near Paris, said"]


def log(pipe, **kwargs) -> str:
    with mlflow.start_run():
        info = mlflow.transformers.log_model(pipe, name="model", pip_requirements=source_requirements(), **kwargs)
    return info.model_uri


def pipeline(model_dir: Path, task: str, **kwargs) -> transformers.Pipeline:
    return transformers.pipeline(task, model=str(model_dir), tokenizer=str(model_dir), device=-1, **kwargs)


def answers(bundle_uri: str, records, params=None) -> dict[str, list[dict]]:
    """splitserve's answers through the gateway (every tier) and the bundle's pyfunc."""
    local = mlflow.artifacts.download_artifacts(bundle_uri)
    with Stack(local) as stack, Client(stack.gateway) as client:
        gateway = client.predict(records, params=params)
    frame = mlflow.pyfunc.load_model(local).predict(records, params=params)
    return {"gateway": gateway, "pyfunc": frame.to_dict(orient="records")}


def test_model_config_for_token_classification(tiny_bundles) -> None:
    """model_config={"aggregation_strategy": "simple"}: grouped entities, as MLflow serves them
    (MLflow's pyfunc answers the entity groups of a text joined by commas)."""
    model_dir = tiny_bundles[("token-classification", "bert")].model_dir
    source = log(pipeline(model_dir, "token-classification"), model_config={"aggregation_strategy": "simple"})
    expected = mlflow.pyfunc.load_model(source).predict(TEXTS[:4])
    bundle = export_bundle(source, name="ner-model-config", show_progress=False)
    assert load_bundle(bundle).config.defaults_from == {"aggregation_strategy": "model_config"}
    for path, results in answers(bundle, TEXTS[:4]).items():
        got = [",".join(e["entity_group"] for e in r["entities"]) for r in results]
        assert got == list(expected), path


def test_signature_params_for_text_generation(mlflow_store, tmp_path) -> None:
    """Signature params (`infer_signature(..., params={...})`) are the bundle's defaults: 4 greedy
    tokens, as MLflow serves the model (a request's params still win)."""
    from tests.support.zoo.generators import save_tiny_lm

    model_dir = save_tiny_lm("gpt2", tmp_path)
    signature = mlflow.models.infer_signature(
        PROMPTS, ["x"] * len(PROMPTS), params={"max_new_tokens": 4, "do_sample": False}
    )
    source = log(pipeline(model_dir, "text-generation"), signature=signature)
    expected = list(mlflow.pyfunc.load_model(source).predict(PROMPTS))
    bundle = export_bundle(source, name="lm-signature", show_progress=False, max_new_tokens_limit=16)
    config = load_bundle(bundle).config
    assert config.defaults_from == {"max_new_tokens": "signature", "do_sample": "signature"}
    for path, results in answers(bundle, PROMPTS).items():
        texts = [r["generated"][0]["generated_text"] for r in results]
        assert texts == expected, path
        assert all(len(r["generated"][0]["token_ids"]) <= 4 for r in results), path
    local = InProcessPipeline(load_bundle(bundle, ("tokenizer", "onnx")))
    assert len(local.predict(PROMPTS[:1], params={"max_new_tokens": 9})[0]["generated"][0]["token_ids"]) > 4


def test_model_config_for_text_classification_and_prompt_template_for_embeddings(tiny_bundles) -> None:
    classifier = tiny_bundles[("text-classification", "roberta")].model_dir
    source = log(pipeline(classifier, "text-classification"), model_config={"function_to_apply": "sigmoid"})
    expected = mlflow.pyfunc.load_model(source).predict(TEXTS[:4])
    bundle = export_bundle(source, name="tc-model-config", show_progress=False)
    for path, results in answers(bundle, TEXTS[:4]).items():
        for (_, row), result in zip(expected.iterrows(), results, strict=True):
            top = result["labels"][0]
            assert top["label"] == row["label"] and close(top["score"], row["score"]), path

    # MLflow's pyfunc answers feature-extraction with the token vectors of its first text only
    # (np.array(output[0][0])): compared text by text.
    embedder = tiny_bundles[("feature-extraction", "bert")].model_dir
    source = log(pipeline(embedder, "feature-extraction"), prompt_template="passage: {prompt}")
    mlflow_model = mlflow.pyfunc.load_model(source)
    bundle = export_bundle(source, name="fe-prompt", show_progress=False)
    for path, results in answers(bundle, TEXTS[:3]).items():
        for text, result in zip(TEXTS[:3], results, strict=True):
            want = np.asarray(mlflow_model.predict(text))
            np.testing.assert_allclose(np.asarray(result["embedding"]), want, atol=1e-4, err_msg=path)


def test_settings_splitserve_cannot_honour_are_refused(tiny_bundles, mlflow_store, tmp_path) -> None:
    from tests.support.zoo.generators import save_tiny_lm

    model_dir = tiny_bundles[("token-classification", "bert")].model_dir
    source = log(
        pipeline(model_dir, "token-classification"),
        model_config={"aggregation_strategy": "simple", "is_split_into_words": True},
    )
    with pytest.raises(
        ExportError, match=r"model_config sets \['is_split_into_words'\], which splitserve cannot honour"
    ):
        export_bundle(source, show_progress=False)
    # llm/v1/completions and llm/v1/chat sources export (tests/test_llm_v1.py), but not with a template
    # (their pyfunc answers MLflow's fixed schema); llm/v1/embeddings is refused naming what to log.
    lm = log(pipeline(save_tiny_lm("gpt2", tmp_path), "text-generation"), task="llm/v1/completions")
    with pytest.raises(ExportError, match=r"a template cannot be given for a source logged with MLflow's task="):
        export_bundle(lm, show_progress=False, template=tmp_path / "rows.py")
    embedder = log(pipeline(tiny_bundles[("feature-extraction", "bert")].model_dir, "feature-extraction"),
                   task="llm/v1/embeddings")  # fmt: skip
    with pytest.raises(ExportError, match=r"task='llm/v1/embeddings'.*which splitserve does not take"):
        export_bundle(embedder, show_progress=False)


def test_token_classification_stride_tags_the_whole_document(tiny_bundles) -> None:
    """A text of 5,000+ tokens in windows overlapping by `stride`, the windows' entities merged as
    the pipeline merges them; without stride it is cut at max_length, as the pipeline cuts it."""
    exported = tiny_bundles[("token-classification", "bert")]
    pipe = pipeline(exported.model_dir, "token-classification")
    long = " ".join(f"Angela Merkel met Emmanuel Macron in Berlin on day {i} of the visit." for i in range(420))
    assert len(pipe.tokenizer(long)["input_ids"]) > 5000
    records = [{"id": "long", "text": long}, {"id": "short", "text": TEXTS[0]}]
    params = {"aggregation_strategy": "simple", "stride": 32}
    expected = [pipe(r["text"], aggregation_strategy="simple", stride=32) for r in records]
    local = InProcessPipeline(load_bundle(exported.local_dir, ("tokenizer", "onnx")))
    with Stack(exported.local_dir) as stack, Client(stack.gateway) as client:
        for results in (client.predict(records, params=params), local.predict(records, params=params)):
            for want, got in zip(expected, results, strict=True):
                assert [(e["entity_group"], e["word"], e["start"], e["end"]) for e in got["entities"]] == [
                    (e["entity_group"], e["word"], e["start"], e["end"]) for e in want
                ]
                assert all(close(a["score"], b["score"]) for a, b in zip(want, got["entities"], strict=True))
        assert max(e["end"] for e in results[0]["entities"]) > len(long) - 200  # the end of the document too
        # Without stride the long text is cut at max_length, and the answer says which records were cut.
        client.predict(records, params={"aggregation_strategy": "simple"})
        assert client.last_truncated == ["long"]
        local.predict(records, params={"aggregation_strategy": "simple"})
        assert local.last_truncated == ["long"]
        client.predict(records[1:])
        assert client.last_truncated == []
        for bad, message in (
            ({"stride": 32}, "needs an aggregation_strategy other than 'none'"),
            (
                {"stride": 600, "aggregation_strategy": "first"},
                "param 'stride': 600 must be less than max_length (512)",
            ),
        ):
            with pytest.raises(grpc.RpcError) as err:
                client.predict(records, params=bad)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in err.value.details()


def test_a_model_without_a_declared_maximum_length(mlflow_store, tmp_path) -> None:
    """T5 has relative positions; with a tokenizer that declares no maximum either, export uses
    --max-length (default 512) instead of refusing a model the pipeline runs. (A T5 logged under
    transformers 4.57 as text2text-generation: transformers 5 removed that pipeline.)"""
    import shutil

    from tests.support.bundles import LOGGED_UNDER_4
    from tests.support.oracle import Generator

    logged = tmp_path / "t5-text2text"
    shutil.copytree(LOGGED_UNDER_4 / "t5-text2text", logged)
    config_path = logged / "components" / "tokenizer" / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["model_max_length"] = int(1e30)
    config_path.write_text(json.dumps(config))
    pipe = Generator(logged, "text2text-generation")
    for max_length, expected in ((None, 512), (1000, 1000)):
        bundle = export_bundle(str(logged), show_progress=False, max_new_tokens_limit=16, max_length=max_length)
        assert load_bundle(bundle).config.max_length == expected
    got = InProcessPipeline(load_bundle(bundle, ("tokenizer", "onnx"))).predict(
        PROMPTS, params={"do_sample": False, "max_new_tokens": 8}
    )
    for prompt, result in zip(PROMPTS, got, strict=True):
        assert result["generated"][0]["generated_text"] == pipe(prompt, max_new_tokens=8)["generated_text"]


def test_mlflow_input_shapes_in_the_pyfunc(tiny_bundles) -> None:
    """What MLflow's transformers pyfunc takes: a string, a list, a dict of lists, a Series, a
    numpy array, a DataFrame; the same answers."""
    model = mlflow.pyfunc.load_model(tiny_bundles[("text-classification", "bert")].local_dir)
    want = model.predict(TEXTS[:2])["labels"].tolist()
    for shape in (
        TEXTS[:2],
        {"text": TEXTS[:2]},
        pd.Series(TEXTS[:2]),
        np.asarray(TEXTS[:2]),
        pd.DataFrame({"text": TEXTS[:2]}),
    ):
        assert model.predict(shape)["labels"].tolist() == want, type(shape)
    assert model.predict(TEXTS[0])["labels"].tolist() == want[:1]


def test_peft_lora_models_export_merged(tiny_bundles, mlflow_store, tmp_path) -> None:
    """A LoRA adapter (peft) over a tiny GPT-2 and over a tiny BERT token classifier, logged with
    MLflow: merged into its base for the ONNX export, checked against the PEFT model as MLflow
    loads it, and serving what MLflow's pyfunc answers."""
    import peft
    import torch

    from tests.support.zoo.generators import save_tiny_lm

    lm_dir = save_tiny_lm("gpt2", tmp_path / "lm")
    ner_dir = tiny_bundles[("token-classification", "bert")].model_dir
    for model_dir, task, head, targets, kind in (
        (lm_dir, "text-generation", transformers.AutoModelForCausalLM, ["c_attn"], "CAUSAL_LM"),
        (
            ner_dir,
            "token-classification",
            transformers.AutoModelForTokenClassification,
            ["query", "value"],
            "TOKEN_CLS",
        ),
    ):
        base = head.from_pretrained(str(model_dir))
        config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False, task_type=kind)
        torch.manual_seed(0)
        model = peft.get_peft_model(base, config)
        tok = transformers.AutoTokenizer.from_pretrained(str(model_dir))
        # The settings go in model_config: MLflow drops predict params its auto-inferred signature lacks.
        config = (
            {"do_sample": False, "max_new_tokens": 6}
            if task == "text-generation"
            else {"aggregation_strategy": "simple"}
        )
        # A base on local disk is named with base_model_path (else MLflow saves the adapter-wrapped base).
        pipe = transformers.pipeline(task, model=model, tokenizer=tok, device=-1)
        source = log(pipe, model_config=config, base_model_path=str(model_dir))
        records = PROMPTS if task == "text-generation" else TEXTS[:3]
        expected = mlflow.pyfunc.load_model(source).predict(records)
        bundle = export_bundle(source, name=f"lora-{task}", show_progress=False, max_new_tokens_limit=16)
        assert load_bundle(bundle).config.adapter["peft_type"] == "LORA"
        for path, results in answers(bundle, records).items():
            if task == "text-generation":
                assert [r["generated"][0]["generated_text"] for r in results] == list(expected), path
            else:
                assert [",".join(e["entity_group"] for e in r["entities"]) for r in results] == list(expected), path


def test_half_precision_sources(tiny_bundles, mlflow_store) -> None:
    """A source logged in bfloat16: the ONNX graph is float32 (the right choice on CPU, said at
    export) and agrees with MLflow's bfloat16 answers within bfloat16's precision; the PyTorch
    backend runs the logged dtype."""
    import torch

    model_dir = tiny_bundles[("text-classification", "bert")].model_dir
    pipe = transformers.pipeline("text-classification", model=str(model_dir), device=-1, torch_dtype=torch.bfloat16)
    source = log(pipe, torch_dtype=torch.bfloat16)
    expected = mlflow.pyfunc.load_model(source).predict(TEXTS[:4])
    bundle = export_bundle(source, name="tc-bf16", show_progress=False)
    config = load_bundle(bundle).config
    assert config.source_dtype == "bfloat16"
    local = mlflow.artifacts.download_artifacts(bundle)
    for backend in ("onnx", "torch"):
        with Stack(local, model={"backend": backend}) as stack, Client(stack.gateway) as client:
            for (_, row), result in zip(expected.iterrows(), client.predict(TEXTS[:4]), strict=True):
                assert (
                    result["labels"][0]["label"] == row["label"]
                    or abs(result["labels"][0]["score"] - row["score"]) < 0.02
                )
                assert abs(result["labels"][0]["score"] - row["score"]) < 0.05, (
                    backend
                )  # bfloat16: ~3 significant digits


REFERENCE_ONLY = r"""
import json, sys
from splitserve.core.bundle import load_bundle
from splitserve.export import export_bundle
from splitserve.inprocess import InProcessPipeline

source, texts = sys.argv[1], json.loads(sys.argv[2])
bundle = export_bundle(source, name="reference-only", show_progress=False)
got = InProcessPipeline(load_bundle(bundle, ("tokenizer", "onnx"))).predict(texts, params={"top_k": None})
print(json.dumps([[d["label"] for d in r["labels"]] for r in got]))
"""


def reference_only(model_uri: str, repo: str, revision: str, dest: Path) -> Path:
    """A logged model turned into what `log_model(..., save_pretrained=False)` writes where the hub
    is reachable (here it is not): the weights a reference to `repo`@`revision`, not a copy."""
    import shutil

    import yaml

    local = Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=str(dest)))
    mlmodel = yaml.safe_load((local / "MLmodel").read_text())
    flavor = mlmodel["flavors"]["transformers"]
    shutil.rmtree(local / flavor.pop("model_binary"))
    shutil.rmtree(local / "components", ignore_errors=True)
    flavor.update(
        source_model_name=repo, source_model_revision=revision, tokenizer_name=repo, tokenizer_revision=revision
    )
    (local / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    return local


def test_reference_only_weights_from_the_local_cache(tiny_bundles, mlflow_store, tmp_path) -> None:
    """A reference-only model (save_pretrained=False): export finds the weights in the local
    Hugging Face cache when they are there (a cache this test fills, HF_HOME), and says what to do
    in one line when they are not."""
    import json

    exported = tiny_bundles[("text-classification", "bert")]
    repo, revision = "splitserve-tests/tiny-classifier", "0123456789abcdef" * 2 + "01234567"
    cache = tmp_path / "hf"
    snapshot = cache / "hub" / f"models--{repo.replace('/', '--')}" / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for f in Path(exported.model_dir).iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text(revision)
    source = str(reference_only(exported.source_uri, repo, revision, tmp_path / "logged"))
    env = {**os.environ, "HF_HOME": str(cache), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", REFERENCE_ONLY, source, json.dumps(TEXTS[:2])], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    want = pipeline(exported.model_dir, "text-classification")
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [
        [d["label"] for d in want(t, top_k=None)] for t in TEXTS[:2]
    ]

    env["HF_HOME"] = str(tmp_path / "empty-hf")
    proc = subprocess.run(
        [sys.executable, "-m", "splitserve", "export", source, "--no-progress"], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "save_pretrained=False" in proc.stderr and "mlflow.transformers.persist_pretrained_model" in proc.stderr
    assert repo in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-3000:]


def test_everyday_export_mistakes_get_one_line(tiny_bundles, mlflow_store) -> None:
    """A wrong URI, a serving bundle where the source goes, a model that is not a transformers
    model: one clear line from the CLI, no traceback."""

    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):  # noqa: ANN001
            return model_input

    with mlflow.start_run():
        other = mlflow.pyfunc.log_model(name="echo", python_model=Echo(), pip_requirements=[]).model_uri
    for uri, message in (
        ("models:/no-such-model/1", "cannot find the source model 'models:/no-such-model/1'"),
        (tiny_bundles[("text-classification", "bert")].bundle_uri, "is a splitserve serving bundle already"),
        (other, "is not a transformers model"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "splitserve", "export", uri, "--no-progress"],
            capture_output=True,
            text=True,
            env=os.environ.copy(),
        )
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]


def test_text_is_stripped_as_mlflow_strips(tiny_bundles, mlflow_store, tmp_path) -> None:
    """MLflow's pyfunc strips the text it answers (`_sanitize_output`); the bundle's pyfunc (so
    `mlflow models serve` of the bundle) answers the same, while the gateway's typed API keeps the
    pipeline's exact text (what its token ids and streamed deltas add up to). Settings and
    inputs are picked where the strip changes an answer, so the test fails without it."""
    from tests.support.zoo.generators import save_tiny_lm

    # text-generation: greedy lengths whose texts end in whitespace.
    model_dir = save_tiny_lm("gpt2", tmp_path)
    pipe = pipeline(model_dir, "text-generation")
    prompts = PROMPTS + [text for text in TEXTS if len(text) < 60]  # within the tiny model's positions
    raw: list[str] = []
    for n in range(1, 13):
        raw = [out[0]["generated_text"] for out in pipe(prompts, max_new_tokens=n, do_sample=False)]
        if any(text != text.strip() for text in raw):
            break
    assert any(text != text.strip() for text in raw), "no greedy text ends in whitespace: pick other prompts"
    params = {"max_new_tokens": n, "do_sample": False}
    source = log(pipe, signature=mlflow.models.infer_signature(prompts, ["x"] * len(prompts), params=params))
    expected = list(mlflow.pyfunc.load_model(source).predict(prompts))
    assert expected == [text.strip() for text in raw]
    bundle = export_bundle(source, name="lm-stripped", show_progress=False, max_new_tokens_limit=16)
    got = answers(bundle, prompts)
    assert [r["generated"][0]["generated_text"] for r in got["pyfunc"]] == expected
    assert [r["generated"][0]["generated_text"] for r in got["gateway"]] == raw

    # fill-mask (RoBERTa: a decoded token keeps its leading space): MLflow answers the best token.
    exported = tiny_bundles[("fill-mask", "roberta")]
    mask = transformers.AutoTokenizer.from_pretrained(str(exported.model_dir)).mask_token
    texts = [f"{text.rsplit(' ', 1)[0]} {mask}." for text in TEXTS[:6]]
    expected = list(mlflow.pyfunc.load_model(exported.source_uri).predict(texts))
    got = answers(exported.bundle_uri, texts)
    gateway_best = [r["filled_masks"][0]["token_str"] for r in got["gateway"]]
    assert any(token != token.strip() for token in gateway_best), "no best token with a space: other texts"
    assert [r["filled_masks"][0]["token_str"] for r in got["pyfunc"]] == expected
    assert [token.strip() for token in gateway_best] == expected


def test_conversational_is_refused_naming_what_to_log(tmp_path) -> None:
    """A model logged with task 'conversational' (a pipeline transformers no longer has) is refused
    at export before anything loads, naming the task to log instead; so is `splitserve log`."""
    from splitserve import tasks
    from splitserve.core.errors import InvalidInput
    from tests.support.zoo.generators import save_tiny_lm

    saved = tmp_path / "conversational"
    mlflow.transformers.save_model(
        pipeline(save_tiny_lm("gpt2", tmp_path), "text-generation"), str(saved), pip_requirements=source_requirements()
    )
    mlmodel = saved / "MLmodel"
    assert "task: text-generation" in mlmodel.read_text()
    mlmodel.write_text(mlmodel.read_text().replace("task: text-generation", "task: conversational"))
    with pytest.raises(ExportError, match=r"'conversational' no longer exists in transformers.*'text-generation'"):
        export_bundle(str(saved), show_progress=False)
    with pytest.raises(InvalidInput, match=r"'conversational' no longer exists.*/v1/chat/completions"):
        tasks.get("conversational")
