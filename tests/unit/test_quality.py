"""The int8 quality gate's arithmetic (`splitserve.core.quality`): the summaries it compares, its
metrics, the reference a bundle carries and the inputs rebuilt from it; no models."""

from __future__ import annotations

import json

import numpy as np

from splitserve.core.quality import Int8Reference, gate_failures, gate_metrics, pack, summarize, top1_agreement, unpack

COSINE_GATE = ("min_cosine", "mean_cosine", "top1_agreement")


def test_top1_agreement_sees_a_broken_ranking() -> None:
    """The ranking metric: 1 when int8 keeps every text's nearest neighbour, low when it does not."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((40, 16))
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    noisy = a + 1e-4 * rng.standard_normal(a.shape)
    assert top1_agreement(a, noisy / np.linalg.norm(noisy, axis=1, keepdims=True)) == 1.0
    shuffled = a[rng.permutation(40)]
    assert top1_agreement(a, shuffled) < 0.2


def test_summaries_pool_real_tokens_or_take_labels() -> None:
    output = np.zeros((2, 3, 2))
    output[0, :2] = [[1, 0], [0, 1]]
    output[0, 2] = [100, 0]  # a padding token: never pooled
    output[1, 0] = [0, 3]
    mask = np.array([[1, 1, 0], [1, 0, 0]])
    vectors = summarize(output, mask, COSINE_GATE)
    assert np.allclose(vectors, [[2**-0.5, 2**-0.5], [0, 1]])
    tokens = summarize(output, mask, ("label_agreement",))  # token-level logits: real tokens only
    assert tokens.tolist() == [0, 1, 1]
    assert summarize(np.array([[0.1, 0.9], [2.0, 1.0]]), mask, ("label_agreement",)).tolist() == [1, 0]


def test_metrics_and_failures_name_the_metric_and_threshold() -> None:
    ref = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    metrics = gate_metrics(ref, ref, COSINE_GATE)
    assert metrics == {"int8_min_cosine": 1.0, "int8_mean_cosine": 1.0, "int8_top1_agreement": 1.0}
    flipped = ref[[1, 0, 2]]
    metrics = gate_metrics(ref, flipped, COSINE_GATE)
    failures = gate_failures(metrics, COSINE_GATE, {"min_cosine": 0.9, "mean_cosine": 0.9, "top1_agreement": 0.7})
    assert failures[0] == "min_cosine = 0.00000 < threshold 0.9 (lowest cosine similarity of mean-pooled embeddings)"
    assert len(failures) == 3 and failures[2].startswith("top1_agreement = 0.66667 < threshold 0.7")
    labels = gate_metrics(np.array([1, 2, 3, 4]), np.array([1, 2, 3, 0]), ("label_agreement",))
    assert labels == {"int8_label_agreement": 0.75, "int8_label_count": 4.0}
    assert gate_failures(labels, ("label_agreement",), {"label_agreement": 0.75}) == []


def test_a_reference_survives_json_and_rebuilds_the_batches_export_ran() -> None:
    vectors = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float64)
    assert np.array_equal(unpack(json.loads(json.dumps(pack(vectors)))), vectors)
    reference = Int8Reference(
        output="last_hidden_state",
        gate=list(COSINE_GATE),
        thresholds={"min_cosine": 0.95, "mean_cosine": 0.98, "top1_agreement": 0.8},
        pad_id=1,
        batches=[[[5, 6], [7, 8, 9]], [[4]]],
        reference=pack(vectors),
    )
    again = Int8Reference.from_dict(json.loads(json.dumps(reference.to_dict())))
    assert again == reference
    (first, mask), (second, _) = again.feeds({"input_ids", "attention_mask"})
    assert set(first) == {"input_ids", "attention_mask"}  # only the inputs the graph takes
    assert first["input_ids"].tolist() == [[5, 6, 1], [7, 8, 9]] and mask.tolist() == [[1, 1, 0], [1, 1, 1]]
    assert second["input_ids"].tolist() == [[4]]
    with_types = again.feeds({"input_ids", "attention_mask", "token_type_ids"})[0][0]
    assert with_types["token_type_ids"].tolist() == [[0, 0, 0], [0, 0, 0]]
