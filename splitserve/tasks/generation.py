"""The generation tasks: text-generation (decoder-only LMs) and text2text-generation,
summarization, translation (encoder-decoders). The decoding loop runs in the model tier
(`model_svc.generation`); these tasks turn records into prompts and the generated token ids into
text, as the pipelines do. Their params are the one generation contract
(`splitserve.core.generation`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from protos import splitserve_pb2 as pb
from splitserve.core import generation as G
from splitserve.core import params as P
from splitserve.core.bundle import ServingConfig
from splitserve.core.errors import InvalidInput, record_label
from splitserve.core.records import Record, check_records
from splitserve.tasks.base import Assets, Batch, Encoded, ExportFacts, Task


def prompt_texts(config: ServingConfig, records: list[Record]) -> list[str]:
    """Generation prompts: the records' texts in the source model's MLflow prompt_template, after
    the pipeline's `prefix` (encoder-decoders, e.g. T5's "translate English to German: ")."""
    template = config.prompt_template
    prefix = (config.generation.prefix if config.generation else None) or ""
    return [prefix + (template.format(prompt=r.text) if template else r.text or "") for r in records]


def chat_prompt(assets: Assets, record: Record, index: int) -> str:
    """A chat rendered as the text-generation pipeline renders it: with the tokenizer's chat
    template and a generation prompt, or, when the chat ends with the assistant's message, that
    message continued."""
    from jinja2 import TemplateError

    continues = record.messages[-1]["role"] == "assistant"
    try:
        return str(
            assets.tokenizer.apply_chat_template(
                record.messages,
                tokenize=False,
                add_generation_prompt=not continues,
                continue_final_message=continues,
            )
        )
    except (ValueError, TemplateError) as exc:  # no chat template, or the template refuses the chat
        raise InvalidInput(f"{record_label(index, record.id)}: field 'messages': {exc}") from None


def _info(config: ServingConfig) -> G.GenerationInfo:
    if config.generation is None:
        raise RuntimeError(f"bundle {config.name!r} of task {config.task} has no generation section")
    return config.generation


class Generation(Task):
    """What the four generation tasks share: prompts in, generated text out, streamed."""

    params = G.PARAMS
    result_kind = "generated"
    mlflow_strips = ("generated_text",)
    example = [{"generated_text": "La maison est merveilleuse.", "token_ids": [2317, 4, 9]}]
    streams = True
    decodes_tokens = True

    def resolve(self, config: ServingConfig, params: dict[str, Any] | None) -> dict[str, Any]:
        return G.resolve(_info(config), self.params, params, config.defaults, self.name, config.prompt_template)

    def deterministic(self, p: dict[str, Any]) -> bool:
        """Greedy and beam search are; sampling is not (with or without a seed)."""
        return not p["do_sample"]

    def signature_defaults(self, config: ServingConfig) -> dict[str, Any]:
        """The generation params as a request without any resolves them."""
        resolved = self.resolve(config, {})
        names = [n for n in (*G.MODEL_DEFAULTS, "return_full_text") if n in resolved]
        return {name: resolved[name] for name in names} | config.defaults

    def encode(self, assets: Assets, records: list[Record], p: dict[str, Any]) -> Encoded:
        """Each prompt tokenized as the pipeline does (the tokenizer's own special tokens, no
        truncation), left-padded with 0 into one [rows, tokens] array; the generation params go to
        the model tier, stop strings as their token ids. A decoder-only LM's prompt and new tokens
        must fit in its positions; an encoder-decoder's prompt in its encoder's."""
        config = assets.config
        ids = self.prompt_ids(assets, records)
        for i, row in enumerate(ids):
            where = record_label(i, records[i].id)
            field = "messages" if records[i].messages else "text"
            if not row:
                raise InvalidInput(f"{where}: field {field!r} makes no tokens")
            if config.max_positions is not None and len(row) + p["max_new_tokens"] > config.max_positions:
                raise InvalidInput(
                    f"{where}: field {field!r} is {len(row)} tokens long; with max_new_tokens={p['max_new_tokens']} "
                    f"that exceeds the model's maximum of {config.max_length} tokens"
                )
            if config.max_positions is None and len(row) > config.max_length:
                raise InvalidInput(
                    f"{where}: field {field!r} is {len(row)} tokens long, over the model's maximum of "
                    f"{config.max_length} tokens (the pipeline does not truncate it either)"
                )
        width = max(len(row) for row in ids)
        input_ids = np.zeros((len(ids), width), dtype=np.int64)
        mask = np.zeros((len(ids), width), dtype=np.int64)
        for i, row in enumerate(ids):
            input_ids[i, width - len(row) :] = row
            mask[i, width - len(row) :] = 1
        stops = [assets.tokenizer.encode(s, add_special_tokens=False) for s in p["stop"]]
        decoding = G.GenerationParams.of(p, stops, _info(config))
        inputs = {"input_ids": input_ids, "attention_mask": mask}
        return Encoded(model_inputs=inputs, context=self.context(inputs), model_params=decoding.to_oip())

    def prompt_ids(self, assets: Assets, records: list[Record]) -> list[list[int]]:
        """Each record's prompt, tokenized as the pipeline does (the tokenizer's own special tokens)."""
        return list(assets.tokenizer(prompt_texts(assets.config, records))["input_ids"])

    def context(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """What the postprocess stage needs of the prompts' tokens."""
        return {}

    def to_pb(self, value: Any) -> pb.Generated:
        return pb.Generated(
            texts=[
                pb.GeneratedText(generated_text=g["generated_text"], token_ids=[int(t) for t in g["token_ids"]])
                for g in value
            ]
        )

    def from_pb(self, message: pb.Generated) -> list[dict[str, Any]]:
        return [{"generated_text": g.generated_text, "token_ids": list(g.token_ids)} for g in message.texts]


class TextGeneration(Generation):
    """Decoder-only LMs: one decoder graph with past key values, empty at the first step
    (`splitserve.export.onnx.decoder`)."""

    name = "text-generation"
    # null: true, false with a prompt_template (as MLflow serves such a model)
    params = (*G.PARAMS, P.Param("return_full_text", P.optional_boolean, None, "boolean"))
    required = ()  # `text`, or `messages` (a chat): `check`
    fields = ("text", "messages")
    stream_params = {"return_full_text": False}  # a stream's deltas are the new text only
    export = ExportFacts(("logits",), parity="decoder")

    def check(self, assets: Assets, records: list[Record], p: dict[str, Any]) -> None:
        check_records(records, assets.limits, (), self.fields)
        for i, r in enumerate(records):
            where = record_label(i, r.id)
            if r.text is not None and r.messages:
                raise InvalidInput(f"{where}: give field 'text' or field 'messages' (a chat), not both")
            if r.text is None and not r.messages:
                raise InvalidInput(f"{where}: field 'text' is missing (or give 'messages', a chat)")
            if r.text is not None and not r.text.strip():
                raise InvalidInput(f"{where}: field 'text' is empty")
            chars = sum(len(m["content"]) for m in r.messages)
            if chars > assets.limits.max_text_chars:
                raise InvalidInput(
                    f"{where}: field 'messages' has {chars} characters; the limit is {assets.limits.max_text_chars}"
                )

    def prompt_ids(self, assets: Assets, records: list[Record]) -> list[list[int]]:
        """Texts as the pipeline tokenizes them; chats rendered with the tokenizer's chat template and
        tokenized without adding special tokens (the template has them), as the pipeline does."""
        texts = [i for i, r in enumerate(records) if not r.messages]
        ids: list[list[int]] = [[] for _ in records]
        if texts:
            rows = assets.tokenizer(prompt_texts(assets.config, [records[i] for i in texts]))["input_ids"]
            for i, row in zip(texts, rows, strict=True):
                ids[i] = list(row)
        for i, r in enumerate(records):
            if r.messages:
                ids[i] = list(assets.tokenizer(chat_prompt(assets, r, i), add_special_tokens=False)["input_ids"])
        return ids

    def context(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(inputs)  # to cut the prompt off the decoded text

    def decode(self, assets: Assets, batch: Batch, p: dict[str, Any]) -> list[dict[str, Any]]:
        """The pipeline decodes prompt + new tokens (special tokens skipped, tokenization spaces
        cleaned up), cuts off as many characters as the decoded prompt has, and puts the prompt's
        own text back in front for the full text."""
        generated, ids, mask = batch.output(G.OUTPUT), batch.ctx("input_ids"), batch.ctx("attention_mask")
        info = _info(assets.config)
        kwargs = {"skip_special_tokens": True, "clean_up_tokenization_spaces": True}
        results = []
        for i, prompt in enumerate(prompt_texts(assets.config, batch.records)):
            new = generated[i]
            new_ids = new[new >= 0].tolist()  # -1 pads the rows that stopped early
            prompt_ids = ids[i][mask[i].astype(bool)].tolist()
            text = assets.tokenizer.decode(prompt_ids + new_ids, **kwargs)
            new_text = text[len(assets.tokenizer.decode(prompt_ids, **kwargs)) :]
            # A chat's result is the assistant's new text (the pipeline's last message's content).
            text = prompt + new_text if p["return_full_text"] and not batch.records[i].messages else new_text
            if info.collapse_whitespace:  # MLflow's model_config option
                text = " ".join(text.split())
            results.append({"generated": [{"generated_text": text, "token_ids": new_ids}]})
        return results


class EncoderDecoderGeneration(Generation):
    """Encoder-decoders (T5, BART): the encoder graph (its states and every decoder layer's
    cross-attention keys/values) and one decoder graph for every step
    (`splitserve.export.onnx.seq2seq`)."""

    export = ExportFacts(
        ("logits",),
        parity="seq2seq",
        graphs=("encoder_model.onnx", "decoder_model.onnx"),
    )

    def decode(self, assets: Assets, batch: Batch, p: dict[str, Any]) -> list[dict[str, Any]]:
        """The pipeline decodes the decoder's whole sequence (its start token included), special
        tokens skipped, tokenization spaces kept: its `generated_text` / `summary_text` /
        `translation_text`."""
        start = _info(assets.config).decoder_start_token_id
        results = []
        for row in batch.output(G.OUTPUT):
            new = row[row >= 0].tolist()  # -1 pads the rows that stopped early
            text = assets.tokenizer.decode([start, *new], skip_special_tokens=True, clean_up_tokenization_spaces=False)
            results.append({"generated": [{"generated_text": text, "token_ids": new}]})
        return results


class Text2TextGeneration(EncoderDecoderGeneration):
    name = "text2text-generation"


class Summarization(EncoderDecoderGeneration):
    name = "summarization"


class Translation(EncoderDecoderGeneration):
    name = "translation"

    def accepts(self, name: str) -> bool:
        return name == self.name or name.startswith("translation_")  # MLflow's translation_xx_to_yy


TASKS = (TextGeneration(), Text2TextGeneration(), Summarization(), Translation())
