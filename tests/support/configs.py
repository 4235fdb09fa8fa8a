"""Serving configs without a bundle, for the unit tests."""

from __future__ import annotations

from splitserve.core import generation as G
from splitserve.core.bundle import ServingConfig


def config(task: str, **kwargs) -> ServingConfig:
    return ServingConfig(
        name="m", task=task, source_model_uri="models:/m/1", model_inputs=["input_ids"], model_outputs=["logits"],
        max_length=512, **kwargs,
    )  # fmt: skip


def generation_info(**kwargs) -> G.GenerationInfo:
    values = dict(
        architecture="decoder", pipeline_task="text-generation", graph_inputs=[], graph_outputs=[], num_layers=2,
        num_attention_heads=2, num_kv_heads=2, head_dim=16, eos_token_ids=[2], pad_token_id=1,
        model_settings=G.ModelDecoding(), defaults={}, max_new_tokens_limit=40,
    )  # fmt: skip
    return G.GenerationInfo(**(values | kwargs))
