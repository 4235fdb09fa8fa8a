"""text-generation (decoder-only) through every tier: the decoding loop runs in the model tier on
the ONNX decoder with past key values (and on PyTorch), checked against the oracle,
`transformers.pipeline("text-generation")` on PyTorch: greedy token ids and texts exactly equal,
on a tiny GPT-2 and a tiny Llama (grouped-query attention). Plus sampling with a seed, stop
sequences, return_full_text, MLflow's prompt_template and bad params."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import grpc
import mlflow
import pytest
import transformers

from splitserve import tasks
from splitserve.client import Client
from splitserve.core.bundle import load_bundle
from splitserve.core.errors import InvalidInput
from splitserve.inprocess import InProcessPipeline
from tests.support.stack import Stack

ARCHS = ("gpt2", "llama")
PROMPTS = [
    "Angela Merkel works for",
    "Élodie vit à Zürich 🗼",
    "東京タワーに",
    "They cut down a cherry tree near Paris, said",
]
TEMPLATE = "Question: {prompt}\nAnswer:"
LIMIT = 40


@dataclass
class GenBundle:
    model_dir: Path
    local_dir: str


def _export(model_dir: Path, name: str, template: str | None = None) -> GenBundle:
    from splitserve.commands.log import log_pipeline
    from splitserve.export import export_bundle

    source = log_pipeline(model_dir, "text-generation", None, prompt_template=template)
    uri = export_bundle(source, name=name, show_progress=False, max_new_tokens_limit=LIMIT)
    return GenBundle(model_dir, mlflow.artifacts.download_artifacts(uri))


@pytest.fixture(scope="module")
def gen_bundles(mlflow_store, tmp_path_factory) -> dict[str, GenBundle]:
    from tests.support.zoo.generators import save_tiny_lm

    root = tmp_path_factory.mktemp("tiny-lm")
    out = {arch: _export(save_tiny_lm(arch, root / arch), f"tiny-lm-{arch}") for arch in ARCHS}
    out["template"] = _export(out["gpt2"].model_dir, "tiny-lm-template", template=TEMPLATE)
    return out


def _pipeline(bundle: GenBundle) -> transformers.Pipeline:
    return transformers.pipeline(
        "text-generation", model=str(bundle.model_dir), tokenizer=str(bundle.model_dir), device=-1
    )


def _expected(pipe: transformers.Pipeline, prompt: str, **kwargs) -> dict:
    """The pipeline's text and new token ids for one prompt (greedy)."""
    kwargs = {"do_sample": False, **kwargs}
    full = pipe(prompt, return_tensors=True, **{k: v for k, v in kwargs.items() if k != "return_full_text"})
    ids = full[0]["generated_token_ids"]
    n_prompt = len(pipe.tokenizer(prompt)["input_ids"])
    text = pipe(prompt, **kwargs)[0]["generated_text"]
    return {"generated_text": text, "token_ids": list(ids[n_prompt:])}


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_matches_pipeline(gen_bundles, arch: str) -> None:
    bundle = gen_bundles[arch]
    pipe = _pipeline(bundle)
    local = InProcessPipeline(load_bundle(bundle.local_dir, ("tokenizer", "onnx")))
    torch_local = InProcessPipeline(load_bundle(bundle.local_dir, ("tokenizer", "onnx")), backend="torch")
    records = [{"id": f"p{i}", "text": t} for i, t in enumerate(PROMPTS)]
    cases = [
        ({"do_sample": False, "max_new_tokens": 12}, {"max_new_tokens": 12}),
        (
            {"do_sample": False, "max_new_tokens": 9, "repetition_penalty": 1.5, "return_full_text": False},
            {"max_new_tokens": 9, "repetition_penalty": 1.5, "return_full_text": False},
        ),
        # Beam search, with the length controls.
        ({"do_sample": False, "max_new_tokens": 10, "num_beams": 3}, {"max_new_tokens": 10, "num_beams": 3}),
        (
            {
                "do_sample": False,
                **(
                    beams := {
                        "max_new_tokens": 8,
                        "num_beams": 4,
                        "length_penalty": 0.6,
                        "early_stopping": True,
                        "no_repeat_ngram_size": 2,
                        "min_new_tokens": 3,
                    }
                ),
            },
            beams,
        ),
    ]
    with Stack(bundle.local_dir) as stack, Client(stack.gateway) as client:
        for params, pipe_kwargs in cases:
            via_gateway = client.predict(records, params=params)
            in_process = local.predict(records, params=params)
            on_torch = torch_local.predict(records, params=params)
            for prompt, remote, here, torch_here in zip(PROMPTS, via_gateway, in_process, on_torch, strict=True):
                expected = _expected(pipe, prompt, **pipe_kwargs)
                where = f"{arch} {params} {prompt!r}"
                assert remote["generated"] == [expected], where
                assert here["generated"] == [expected], where
                assert torch_here["generated"] == [expected], where
    info = json.loads((Path(bundle.local_dir) / "artifacts" / "serving.json").read_text())
    generation = info["generation"]
    assert generation["num_layers"] == 2 and generation["eos_token_ids"] == [pipe.tokenizer.eos_token_id]
    assert "past_key_values.1.value" in generation["graph_inputs"]
    assert "present.1.value" in generation["graph_outputs"]
    assert generation["num_kv_heads"] == (1 if arch == "llama" else 2)
    assert generation["max_new_tokens_limit"] == LIMIT


def test_sampling_with_a_seed_is_reproducible(gen_bundles) -> None:
    bundle = gen_bundles["gpt2"]
    local = InProcessPipeline(load_bundle(bundle.local_dir, ("tokenizer", "onnx")))
    params = {"do_sample": True, "seed": 7, "temperature": 0.9, "top_k": 20, "top_p": 0.9, "max_new_tokens": 10}
    with Stack(bundle.local_dir) as stack, Client(stack.gateway) as client:
        first = client.predict(PROMPTS, params=params)
        second = client.predict(PROMPTS, params=params)
    assert first == second
    assert local.predict(PROMPTS, params=params) == first
    lengths = {len(r["generated"][0]["token_ids"]) for r in first}
    assert lengths <= set(range(1, 11))
    # Sampling differs from greedy somewhere (the tiny model's distribution is not one-hot).
    greedy = local.predict(PROMPTS, params={"do_sample": False, "max_new_tokens": 10})
    assert greedy != first


def test_stop_sequence(gen_bundles) -> None:
    bundle = gen_bundles["gpt2"]
    local = InProcessPipeline(load_bundle(bundle.local_dir, ("tokenizer", "onnx")))
    tok = local.post.tokenizer
    prompt = PROMPTS[0]
    ids = local.predict([prompt], params={"do_sample": False, "max_new_tokens": 12})[0]["generated"][0]["token_ids"]
    # A stop string of one token that the greedy output makes, past its first token.
    k = next(
        i
        for i in range(1, len(ids))
        if ids[i] not in ids[:i] and tok.encode(tok.decode([ids[i]]), add_special_tokens=False) == [ids[i]]
    )
    stop = tok.decode([ids[k]])
    got = local.predict([prompt], params={"do_sample": False, "max_new_tokens": 12, "stop": [stop, "never-made"]})
    assert got[0]["generated"][0]["token_ids"] == ids[: k + 1]
    pipe = _pipeline(bundle)
    expected = pipe(prompt, do_sample=False, max_new_tokens=12, stop_sequence=stop)[0]["generated_text"]
    assert got[0]["generated"][0]["generated_text"] == expected


def test_prompt_template(gen_bundles) -> None:
    """MLflow's prompt_template is applied to every prompt; return_full_text defaults to false."""
    bundle = gen_bundles["template"]
    info = json.loads((Path(bundle.local_dir) / "artifacts" / "serving.json").read_text())
    assert info["prompt_template"] == TEMPLATE
    pipe = _pipeline(bundle)
    with Stack(bundle.local_dir) as stack, Client(stack.gateway) as client:
        default = client.predict(PROMPTS[:2], params={"do_sample": False, "max_new_tokens": 6})
        full = client.predict(PROMPTS[:2], params={"do_sample": False, "max_new_tokens": 6, "return_full_text": True})
    for prompt, new, whole in zip(PROMPTS, default, full, strict=False):
        formatted = TEMPLATE.format(prompt=prompt)
        assert new["generated"] == [_expected(pipe, formatted, max_new_tokens=6, return_full_text=False)]
        assert whole["generated"] == [_expected(pipe, formatted, max_new_tokens=6, return_full_text=True)]
        assert whole["generated"][0]["generated_text"].startswith(formatted)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"max_new_tokens": LIMIT + 1}, "max_new_tokens"),
        ({"num_beams": 2, "do_sample": True}, "beam sampling is not supported"),
        ({"num_beams": 17}, "at most 16"),
        ({"early_stopping": "sometimes"}, "early_stopping"),
        ({"temperature": 0}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"stop": [""]}, "stop"),
        ({"max_length": 10}, "unknown param"),
    ],
)
def test_bad_params(gen_bundles, params, message: str) -> None:
    bundle = gen_bundles["gpt2"]
    local = InProcessPipeline(load_bundle(bundle.local_dir, ("tokenizer", "onnx")))
    with pytest.raises(InvalidInput, match=message):
        local.predict(PROMPTS[:1], params=params)


def test_bad_params_through_the_gateway(gen_bundles) -> None:
    bundle = gen_bundles["gpt2"]
    with Stack(bundle.local_dir) as stack, Client(stack.gateway) as client:
        with pytest.raises(grpc.RpcError) as err:
            client.predict(PROMPTS[:1], params={"max_new_tokens": LIMIT + 1})
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "max_new_tokens" in err.value.details()
        with pytest.raises(grpc.RpcError) as err:
            client.predict(PROMPTS[:1], params={"num_beams": 3, "do_sample": True})
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # Too long a prompt for the model with the new tokens: refused, naming the record.
        with pytest.raises(grpc.RpcError) as err:
            client.predict([{"id": "long", "text": "Paris " * 120}], params={"max_new_tokens": 8})
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "id='long'" in err.value.details()


def test_logits_processing_matches_transformers() -> None:
    """Repetition penalty, no-repeat n-grams, min new tokens, forced eos, temperature, top-k and
    top-p give the scores transformers' processors do."""
    import numpy as np
    import torch
    from transformers.generation.logits_process import (
        ForcedEOSTokenLogitsProcessor,
        MinNewTokensLengthLogitsProcessor,
        NoRepeatNGramLogitsProcessor,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    from model_svc.generation import process
    from splitserve.core.generation import GenerationParams

    rng = np.random.default_rng(0)
    for _ in range(20):
        logits = rng.normal(0, 3, size=97).astype(np.float32)
        seen = rng.integers(0, 12, size=int(rng.integers(8, 14))).tolist()  # repeats: n-grams to ban
        p = GenerationParams(
            do_sample=True,
            temperature=float(rng.uniform(0.3, 2)),
            top_k=int(rng.integers(0, 40)),
            top_p=float(rng.uniform(0.2, 1)),
            repetition_penalty=float(rng.uniform(0.8, 2)),
            no_repeat_ngram_size=int(rng.integers(0, 4)),
            min_new_tokens=int(rng.integers(0, 8)),
            max_new_tokens=int(rng.integers(4, 12)),
            eos_ids=(3,),
            forced_eos_token_id=(3,),
        )
        prompt_len = 5
        ids, scores = torch.tensor([seen]), torch.from_numpy(logits.copy())[None]
        scores = RepetitionPenaltyLogitsProcessor(p.repetition_penalty)(ids, scores)
        if p.no_repeat_ngram_size:
            scores = NoRepeatNGramLogitsProcessor(p.no_repeat_ngram_size)(ids, scores)
        if p.min_new_tokens:
            scores = MinNewTokensLengthLogitsProcessor(prompt_len, p.min_new_tokens, 3)(ids, scores)
        scores = ForcedEOSTokenLogitsProcessor(prompt_len + p.max_new_tokens, 3)(ids, scores)
        scores = TemperatureLogitsWarper(p.temperature)(ids, scores)
        if p.top_k:
            scores = TopKLogitsWarper(p.top_k)(ids, scores)
        scores = TopPLogitsWarper(p.top_p)(ids, scores)
        expected, got = scores[0].numpy(), process(logits, seen, prompt_len, p)
        assert np.array_equal(np.isinf(expected), np.isinf(got)), p
        finite = ~np.isinf(expected)
        assert np.allclose(expected[finite], got[finite], rtol=1e-5, atol=1e-5), p


def test_pyfunc_and_torch_tier_match_the_gateway(gen_bundles) -> None:
    """The bundle as an MLflow pyfunc (its signature's defaults included), and the model tier on
    PyTorch behind the gateway, give the ONNX tier's tokens: greedy, and sampled with a seed."""
    import mlflow.pyfunc

    bundle = gen_bundles["llama"]
    greedy = {"do_sample": False, "max_new_tokens": 7}
    sampled = {"do_sample": True, "seed": 11, "max_new_tokens": 7}
    with Stack(bundle.local_dir) as stack, Client(stack.gateway) as client:
        onnx = [client.predict(PROMPTS, params=p) for p in (greedy, sampled)]
    with Stack(bundle.local_dir, model={"backend": "torch"}) as stack, Client(stack.gateway) as client:
        assert client.predict(PROMPTS, params=greedy) == onnx[0]
        assert client.predict(PROMPTS, params=sampled) == onnx[1]
    model = mlflow.pyfunc.load_model(bundle.local_dir)
    frame = model.predict(PROMPTS, params=greedy)
    strip = tasks.get("text-generation").as_mlflow_serves  # the pyfunc strips text as MLflow's does
    assert frame["generated"].tolist() == [strip(r["generated"]) for r in onnx[0]]
    # No params: the pipeline's defaults (sampling), the bundle's max_new_tokens default.
    assert all(1 <= len(g[0]["token_ids"]) <= 32 for g in model.predict(PROMPTS[:2])["generated"])


def test_export_refuses_generation_settings_it_does_not_implement(mlflow_store, tmp_path) -> None:
    from splitserve.commands.log import log_pipeline
    from splitserve.core.errors import ExportError
    from splitserve.export import export_bundle
    from tests.support.zoo.generators import save_tiny_lm

    model_dir = save_tiny_lm("gpt2", tmp_path)
    config = transformers.GenerationConfig.from_pretrained(str(model_dir))
    config.suppress_tokens = [5]
    config.save_pretrained(str(model_dir))
    source = log_pipeline(model_dir, "text-generation", None)
    with pytest.raises(ExportError, match="suppress_tokens"):
        export_bundle(source, show_progress=False)


def _collect(events: list[dict], rows: int) -> tuple[list[str], list[list[int]], list[int], list[dict]]:
    """Per record: the deltas' texts and tokens concatenated, and the number of deltas; and the
    final results (the last event)."""
    texts, tokens, counts = [""] * rows, [[] for _ in range(rows)], [0] * rows
    assert "results" in events[-1] and all("results" not in e for e in events[:-1])
    for event in events[:-1]:
        texts[event["record"]] += event["text"]
        tokens[event["record"]] += event["token_ids"]
        counts[event["record"]] += 1
    return texts, tokens, counts, events[-1]["results"]


def test_streaming(gen_bundles) -> None:
    """PredictStream sends each record's new text as it is generated: the deltas of a record add up
    to the final text (no delta is ever revised, also mid-character in CJK and emoji, and with
    return_full_text the deltas are the new text only), their tokens to the final tokens, and the
    final event equals what Predict returns. Beam search sends its best sequence at the end. Bad
    params end the stream with INVALID_ARGUMENT; a client that stops reading cancels the call
    and the gateway keeps serving."""
    bundle = gen_bundles["gpt2"]
    records = [{"id": f"p{i}", "text": t} for i, t in enumerate(PROMPTS)]
    with Stack(bundle.local_dir) as stack, Client(stack.gateway) as client:
        for params in (
            {"do_sample": False, "max_new_tokens": 30, "return_full_text": False},
            {"do_sample": True, "seed": 3, "max_new_tokens": 30},  # return_full_text: true
            {"do_sample": False, "max_new_tokens": 12, "num_beams": 3},
        ):
            expected = client.predict(records, params=params)
            texts, tokens, counts, results = _collect(list(client.stream(records, params=params)), len(records))
            assert results == expected, params
            for prompt, text, toks, count, result in zip(PROMPTS, texts, tokens, counts, results, strict=True):
                final = result["generated"][0]
                full = params.get("return_full_text", True)
                new_text = final["generated_text"].removeprefix(prompt) if full else final["generated_text"]
                assert text == new_text, (params, prompt)
                assert toks == final["token_ids"], (params, prompt)
                if "num_beams" in params:  # known only at the end: one chunk (two deltas at most,
                    assert count <= 2, (params, prompt, count)  # the text after the last space waits)
            if "num_beams" not in params:  # the text came in pieces (how many depends on timing)
                assert sum(counts) > len(records), (params, counts)
            assert client.last_timings_us["model"] > 0 and client.last_timings_us["postprocess"] > 0

        with pytest.raises(grpc.RpcError) as err:
            list(client.stream(records, params={"max_new_tokens": LIMIT + 1}))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "max_new_tokens" in err.value.details()

        for event in client.stream(records, params={"do_sample": False, "max_new_tokens": LIMIT}):
            assert "text" in event
            break  # the client goes away mid-generation
        assert client.predict(records[:1], params={"do_sample": False, "max_new_tokens": 3})


def test_generation_stops_when_abandoned(gen_bundles) -> None:
    """A generation whose caller went away stops at its next token (the model tier's callback
    raises `Abandoned`) instead of running on to max_new_tokens."""
    import numpy as np

    from model_svc.backends.onnx import OnnxBackend
    from model_svc.generation import Abandoned, generate
    from splitserve.core.generation import GenerationParams

    loaded = load_bundle(gen_bundles["gpt2"].local_dir, ("onnx",))
    backend = OnnxBackend(loaded.onnx_path, loaded.config)
    seen: list[int] = []

    def on_tokens(row: int, tokens: list[int]) -> None:
        seen.extend(tokens)
        if len(seen) >= 3:
            raise Abandoned("gone")

    params = GenerationParams.from_oip({"max_new_tokens": 30}, loaded.config.generation)
    ids = np.asarray([[5, 6, 7]], dtype=np.int64)
    with pytest.raises(Abandoned):
        generate(backend.stepper, ids, np.ones_like(ids), params, loaded.config.max_positions, on_tokens)
    assert len(seen) == 3


def test_streaming_other_tasks_send_the_final_response_only(tiny_bundles) -> None:
    bundle = tiny_bundles[("text-classification", "bert")]
    with Stack(bundle.local_dir) as stack, Client(stack.gateway) as client:
        events = list(client.stream(PROMPTS))
        assert events == [{"results": client.predict(PROMPTS)}]


def test_mlflow_model_config_sets_defaults(mlflow_store, gen_bundles) -> None:
    """The source model's MLflow model_config gives the bundle its defaults (a request's params
    still win), and MLflow's collapse_whitespace option applies: the bundle answers what MLflow's
    own pyfunc of the source model answers."""
    import mlflow.pyfunc

    from splitserve.commands.log import log_pipeline
    from splitserve.export import export_bundle

    model_config = {"max_new_tokens": 6, "do_sample": False, "collapse_whitespace": True}
    source = log_pipeline(gen_bundles["gpt2"].model_dir, "text-generation", None, model_config=model_config)
    local = mlflow.artifacts.download_artifacts(export_bundle(source, show_progress=False))
    expected = mlflow.pyfunc.load_model(source).predict(PROMPTS)
    here = InProcessPipeline(load_bundle(local, ("tokenizer", "onnx")))
    got = here.predict(PROMPTS)
    assert [r["generated"][0]["generated_text"] for r in got] == list(expected)
    assert all(len(r["generated"][0]["token_ids"]) <= 6 for r in got)
    assert len(here.predict(PROMPTS[:1], params={"max_new_tokens": 9})[0]["generated"][0]["token_ids"]) > 6


def test_gateway_with_inline_stages(gen_bundles, tiny_bundles) -> None:
    """`inline_stages`: the gateway runs the preprocess and postprocess stages itself and calls
    only the model tier; answers, streams and refusals are those of the three-tier path."""
    for local_dir, params in (
        (gen_bundles["llama"].local_dir, {"do_sample": False, "max_new_tokens": 9}),
        (tiny_bundles[("token-classification", "roberta")].local_dir, {"aggregation_strategy": "simple"}),
    ):
        with Stack(local_dir) as stack, Client(stack.gateway) as client:
            expected = client.predict(PROMPTS, params=params)
            streamed = _collect(list(client.stream(PROMPTS, params=params)), len(PROMPTS))
        inline = {"inline_stages": local_dir, "preprocess": [], "postprocess": []}
        with Stack(local_dir, gateway=inline) as stack, Client(stack.gateway) as client:
            assert client.predict(PROMPTS, params=params) == expected
            texts, tokens, _, results = _collect(list(client.stream(PROMPTS, params=params)), len(PROMPTS))
            assert (texts, tokens, results) == (streamed[0], streamed[1], streamed[3])  # chunking may differ
            assert set(client.last_timings_us) >= {"preprocess", "model", "postprocess", "gateway"}
            with pytest.raises(grpc.RpcError) as err:
                client.predict([{"id": "x", "text": " "}], params=params)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "id='x'" in err.value.details()
            assert client.predict(PROMPTS[:1], params=params) == expected[:1]


def test_concurrent_requests_generate_together(gen_bundles) -> None:
    """Generation requests that wait while a batch runs are generated together in the next one,
    each row with its own request's params: the answers are those of the same requests sent one
    at a time, and some batch did combine several requests."""
    from concurrent.futures import ThreadPoolExecutor

    from prometheus_client import REGISTRY

    def batched_batches() -> float:  # batches that combined more than one request
        count = REGISTRY.get_sample_value("splitserve_model_batch_requests_count") or 0.0
        return count - (REGISTRY.get_sample_value("splitserve_model_batch_requests_bucket", {"le": "1.0"}) or 0.0)

    requests = [
        (PROMPTS[i % len(PROMPTS) :], params)
        for i, params in enumerate(
            [
                {"do_sample": False, "max_new_tokens": 20},
                {"do_sample": True, "seed": 4, "max_new_tokens": 12, "top_k": 20},
                {"do_sample": False, "max_new_tokens": 7, "repetition_penalty": 1.4},
                {"do_sample": False, "max_new_tokens": 9, "num_beams": 2},
                {"do_sample": True, "seed": 9, "temperature": 0.7, "max_new_tokens": 16},
                {"do_sample": False, "max_new_tokens": 30, "stop": ["e"]},
            ]
            * 2
        )
    ]
    with Stack(gen_bundles["gpt2"].local_dir) as stack, Client(stack.gateway) as client:
        alone = [client.predict(texts, params=params) for texts, params in requests]
        before = batched_batches()
        with ThreadPoolExecutor(len(requests)) as pool:
            together = list(pool.map(lambda r: client.predict(r[0], params=r[1]), requests))
        assert together == alone
        assert batched_batches() > before
