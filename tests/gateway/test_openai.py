"""The gateway's OpenAI-compatible routes, called with the official `openai` client: models,
embeddings (float and base64), completions and chat completions with and without stream=True,
each equal to what the gateway's gRPC Predict answers for the same params (and the chat to
`transformers.pipeline` on the chat), and errors as the SDK raises them."""

from __future__ import annotations

import re
from typing import Any

import mlflow
import numpy as np
import openai
import pytest
import transformers

from splitserve.client import Client
from splitserve.errors import InvalidInput
from tests.support.stack import Stack

CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)
CHAT = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Where does Angela work?"}]
PROMPT = "Angela Merkel works for"
LIMIT = 24


@pytest.fixture(scope="module")
def chat_lm(mlflow_store, tmp_path_factory) -> Any:
    """A tiny GPT-2 whose tokenizer has a chat template."""
    from splitserve.commands.log import log_pipeline
    from splitserve.export import export_bundle
    from tests.support.zoo.generators import save_tiny_lm

    model_dir = save_tiny_lm("gpt2", tmp_path_factory.mktemp("chat-lm"))
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(model_dir)
    uri = export_bundle(log_pipeline(model_dir, "text-generation", None), name="tiny-chat-lm", show_progress=False)
    return model_dir, mlflow.artifacts.download_artifacts(uri)


def sdk(stack: Stack, **kwargs: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.rest}/v1", api_key="unused", max_retries=0, timeout=60, **kwargs)


def test_embeddings(tiny_bundles) -> None:
    exported = tiny_bundles[("feature-extraction", "bert")]
    texts = ["Florida has nice beaches", "Élodie vit à Zürich 🗼"]
    with Stack(exported.local_dir, gateway={"rest_port": 0}) as stack, Client(stack.gateway) as client:
        model = client.info()["model"]
        api = sdk(stack)
        assert [m.id for m in api.models.list().data] == [model] and api.models.retrieve(model).id == model
        pooled = {"pooling": "mean", "normalize": True}
        expected = [r["embedding"] for r in client.predict(texts, params=pooled)]
        base64 = api.embeddings.create(model=model, input=texts, extra_body={"params": pooled})  # the SDK's default
        floats = api.embeddings.create(model=model, input=texts, encoding_format="float", extra_body={"params": pooled})
        for response in (base64, floats):
            assert [d.index for d in response.data] == [0, 1] and response.model == model
            assert [list(d.embedding) for d in response.data] == expected  # float32 exactly, either encoding
        prompt_tokens = sum(
            len(transformers.AutoTokenizer.from_pretrained(exported.model_dir)(t).input_ids) for t in texts
        )
        assert base64.usage.prompt_tokens == base64.usage.total_tokens == prompt_tokens
        one = api.embeddings.create(model=model, input=texts[0], extra_body={"params": {"pooling": "cls"}})
        assert list(one.data[0].embedding) == client.predict(texts[:1], params={"pooling": "cls"})[0]["embedding"]
        with pytest.raises(openai.BadRequestError, match="one vector per token"):  # this bundle's pooling is none
            api.embeddings.create(model=model, input=texts)
        # Token-id input (OpenAI's, TEI's): the model's own ids, as the tokenizer makes them, answer as
        # the text does; mixed with text in one gRPC request too.
        tokenizer = transformers.AutoTokenizer.from_pretrained(exported.model_dir)
        ids = [tokenizer(t).input_ids for t in texts]
        by_ids = api.embeddings.create(model=model, input=ids, encoding_format="float", extra_body={"params": pooled})
        assert by_ids.usage.prompt_tokens == prompt_tokens
        one_ids = api.embeddings.create(
            model=model, input=ids[1], encoding_format="float", extra_body={"params": pooled}
        )
        mixed = client.predict([texts[0], {"token_ids": ids[1]}], params=pooled)
        for got, want in [*zip([d.embedding for d in by_ids.data], expected), (one_ids.data[0].embedding, expected[1])]:
            np.testing.assert_allclose(got, want, atol=1e-5)
        for got, want in zip([r["embedding"] for r in mixed], expected):
            np.testing.assert_allclose(got, want, atol=1e-5)
        vocab = len(tokenizer)
        with pytest.raises(
            openai.BadRequestError, match=rf"record 1.*id {vocab}, outside the vocabulary \[0, {vocab}\)"
        ):
            api.embeddings.create(model=model, input=[ids[0], [101, vocab]], extra_body={"params": pooled})
        with pytest.raises(openai.BadRequestError, match=r"600 ids; the model takes at most 512 \(token ids are never"):
            api.embeddings.create(model=model, input=[[101] * 600], extra_body={"params": pooled})
        with pytest.raises(openai.BadRequestError, match="must be a non-empty list of integers"):
            api.embeddings.create(model=model, input=[[101, "x"]], extra_body={"params": pooled})
        assert client.info()["model"] == model  # still serving
        with pytest.raises(openai.NotFoundError, match="'other' is not served here"):
            api.embeddings.create(model="other", input=texts)
        with pytest.raises(openai.BadRequestError, match="does not generate text"):
            api.completions.create(model=model, prompt=PROMPT)


def test_embeddings_pooling_from_the_bundle(tiny_bundles) -> None:
    from splitserve.export import export_bundle

    exported = tiny_bundles[("feature-extraction", "bert")]
    uri = export_bundle(exported.source_uri, defaults={"pooling": "mean", "normalize": True}, show_progress=False)
    with Stack(mlflow.artifacts.download_artifacts(uri), gateway={"rest_port": 0}) as stack, Client(stack.gateway) as c:
        response = sdk(stack).embeddings.create(model=c.info()["model"], input=["Florida has nice beaches"])
        vector = np.asarray(response.data[0].embedding)
        assert list(vector) == c.predict(["Florida has nice beaches"])[0]["embedding"]
        assert abs(np.linalg.norm(vector) - 1) < 1e-5

        # `dimensions` (Matryoshka): the first N values, renormalized; the same as the gRPC param.
        cut = sdk(stack).embeddings.create(model=c.info()["model"], input=["Florida has nice beaches"], dimensions=8)
        got = np.asarray(cut.data[0].embedding)
        np.testing.assert_allclose(got, vector[:8] / np.linalg.norm(vector[:8]), atol=1e-6)
        assert list(got) == c.predict(["Florida has nice beaches"], params={"dimensions": 8})[0]["embedding"]
        with pytest.raises(openai.BadRequestError, match=rf"'dimensions' is {len(vector) + 1}; .* have {len(vector)}"):
            sdk(stack).embeddings.create(model=c.info()["model"], input=["x"], dimensions=len(vector) + 1)
        with pytest.raises(InvalidInput, match="'dimensions' needs one vector per text"):
            c.predict(["x"], params={"pooling": "none", "dimensions": 4})


def _grpc_text(client: Client, records: list[Any], params: dict[str, Any]) -> tuple[str, list[int]]:
    """The new text (the deltas of PredictStream) and new token ids, as gRPC answers them."""
    text, final = "", None
    for event in client.stream(records, params=params):
        if "text" in event:
            text += event["text"]
        else:
            final = event["results"][0]["generated"][0]
    assert final is not None
    return text, final["token_ids"]


def test_completions(tiny_bundles) -> None:
    exported = tiny_bundles[("text-generation", "gpt2")]
    with Stack(exported.local_dir, gateway={"rest_port": 0}) as stack, Client(stack.gateway) as client:
        model, api = client.info()["model"], sdk(stack)
        text, ids = _grpc_text(client, [PROMPT], {"do_sample": False, "max_new_tokens": 8})
        completion = api.completions.create(model=model, prompt=PROMPT, max_tokens=8, temperature=0)
        choice = completion.choices[0]
        assert (choice.text, choice.index, completion.object, completion.model) == (text, 0, "text_completion", model)
        assert choice.finish_reason == ("length" if len(ids) == 8 else "stop")
        prompt_tokens = len(transformers.AutoTokenizer.from_pretrained(exported.model_dir)(PROMPT).input_ids)
        assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (prompt_tokens, len(ids))
        chunks = list(
            api.completions.create(
                model=model,
                prompt=PROMPT,
                max_tokens=8,
                temperature=0,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        assert "".join(c.choices[0].text for c in chunks if c.choices) == text
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == choice.finish_reason
        assert chunks[-1].usage.completion_tokens == len(ids) and len({c.id for c in chunks}) == 1

        # Sampling params map onto the bundle's: the same seed gives the same text.
        sampled = {"do_sample": True, "temperature": 0.7, "top_p": 0.9, "seed": 3, "max_new_tokens": 10}
        text, _ = _grpc_text(client, [PROMPT], sampled)
        openai_sampled = dict(model=model, prompt=PROMPT, max_tokens=10, temperature=0.7, top_p=0.9, seed=3)
        assert api.completions.create(**openai_sampled).choices[0].text == text
        stop = text.split()[1] if len(text.split()) > 1 else text[-1]
        stopped, _ = _grpc_text(client, [PROMPT], {**sampled, "stop": [stop]})
        assert api.completions.create(**openai_sampled, stop=stop).choices[0].text == stopped

        prompts = [PROMPT, "东京"]
        many = api.completions.create(model=model, prompt=prompts, max_tokens=4, temperature=0)
        assert [c.text for c in many.choices] == [
            _grpc_text(client, [p], {"do_sample": False, "max_new_tokens": 4})[0] for p in prompts
        ]
        for kwargs, message in (
            ({"n": 2}, "field 'n': only 1 is supported"),
            ({"logprobs": 2}, "field 'logprobs'"),
            ({"max_tokens": 10_000}, "max_new_tokens"),
            ({"extra_body": {"bogus": 1}}, "unknown field(s) ['bogus']"),
        ):
            with pytest.raises(openai.BadRequestError, match=re.escape(message)):
                api.completions.create(model=model, prompt=PROMPT, **kwargs)
        with pytest.raises(openai.BadRequestError, match="no chat template|chat_template"):
            api.chat.completions.create(model=model, messages=CHAT)
        with pytest.raises(openai.BadRequestError, match="does not answer with embeddings"):
            api.embeddings.create(model=model, input="x")


def test_chat_completions(chat_lm) -> None:
    model_dir, bundle = chat_lm
    pipe = transformers.pipeline("text-generation", model=str(model_dir), tokenizer=str(model_dir), device=-1)
    expected = pipe(CHAT, do_sample=False, max_new_tokens=8)[0]["generated_text"][-1]
    assert expected["role"] == "assistant"
    with Stack(bundle, gateway={"rest_port": 0}) as stack, Client(stack.gateway) as client:
        model, api = client.info()["model"], sdk(stack)
        chat = api.chat.completions.create(model=model, messages=CHAT, max_tokens=8, temperature=0)
        message = chat.choices[0].message
        assert (message.role, message.content, chat.object) == ("assistant", expected["content"], "chat.completion")
        rendered = pipe.tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, return_dict=True)["input_ids"]
        assert chat.usage.prompt_tokens == len(rendered)
        chunks = list(api.chat.completions.create(model=model, messages=CHAT, max_tokens=8, temperature=0, stream=True))
        assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].object == "chat.completion.chunk"
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected["content"]
        assert chunks[-1].choices[0].finish_reason == chat.choices[0].finish_reason
        # The same chat through gRPC Predict, as a record with `messages`.
        result = client.predict([{"messages": CHAT}], params={"do_sample": False, "max_new_tokens": 8})
        assert result[0]["generated"][0]["generated_text"] == expected["content"]
        with pytest.raises(openai.BadRequestError, match="field 'messages' item 0"):
            api.chat.completions.create(model=model, messages=[{"role": "user"}])


def test_tokens(tiny_bundles, tmp_path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("s3cret\n")
    exported = tiny_bundles[("text-generation", "gpt2")]
    with Stack(exported.local_dir, gateway={"rest_port": 0, "auth_token_file": str(tokens)}) as stack:
        with pytest.raises(openai.AuthenticationError):
            sdk(stack).models.list()
        with pytest.raises(openai.AuthenticationError):
            list(sdk(stack).completions.create(model="x", prompt=PROMPT, stream=True))
        api = openai.OpenAI(base_url=f"{stack.rest}/v1", api_key="s3cret", max_retries=0)
        model = api.models.list().data[0].id
        assert api.completions.create(model=model, prompt=PROMPT, max_tokens=2).choices[0].text is not None
