"""The postprocess stage's cheaper arithmetic gives the very numbers of what it replaced: NER's group
score (`np.nanmean` as the pipeline takes it), text-classification's scores computed for every record
at once and ranked (stable, as `sorted` over the label dicts). No models."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from splitserve.tasks.base import softmax
from splitserve.tasks.entities import _nanmean
from splitserve.tasks.text_classification import label_scores, ranked, sigmoid

FLOATS = st.sampled_from([np.float32, np.float64])


@given(data=st.data(), dtype=FLOATS)
def test_group_score_is_the_pipelines_nanmean(data: st.DataObject, dtype: Any) -> None:
    elements = st.floats(0, 1, width=32) | st.just(float("nan"))
    values = data.draw(hnp.arrays(dtype, st.integers(1, 40), elements=elements))
    scores = list(values)  # the entities' numpy scalars
    with warnings.catch_warnings():  # every score NaN: numpy warns ("Mean of empty slice") both ways
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = np.mean(np.nanmean(scores))
        got = _nanmean(scores)
    assert type(got) is type(expected)
    assert (np.isnan(got) and np.isnan(expected)) or got == expected


def old_ranked(logits: np.ndarray, id2label: dict[int, str], function: str, top_k: int | None) -> list[dict]:
    """text-classification's ranking before: one record at a time, sorted label dicts."""
    logits = logits.astype(np.float32)
    scores = sigmoid(logits) if function == "sigmoid" else softmax(logits) if function == "softmax" else logits
    out = sorted(
        ({"label": id2label[i], "score": float(s)} for i, s in enumerate(scores)),
        key=lambda d: float(d["score"]),
        reverse=True,
    )
    return out if top_k is None else out[:top_k]


@given(
    logits=hnp.arrays(
        np.float32,
        hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=40),
        elements=st.floats(-30, 30, width=32) | st.sampled_from([0.0, 1.0]),  # ties too
    ),
    function=st.sampled_from(["softmax", "sigmoid", "none"]),
    top_k=st.none() | st.integers(1, 5),
)
def test_scores_of_every_record_at_once_rank_as_one_at_a_time(
    logits: np.ndarray, function: str, top_k: int | None
) -> None:
    id2label = {i: f"L{i}" for i in range(logits.shape[1])}
    scores = label_scores(logits, function)
    for row in range(logits.shape[0]):
        assert ranked(scores[row], id2label, top_k) == old_ranked(logits[row], id2label, function, top_k)
