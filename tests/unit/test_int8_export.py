"""int8 export without models: its two corpora (`splitserve.export.corpus`), calibration and gate
texts held apart, and which passing candidate it keeps."""

from __future__ import annotations

from splitserve.export.corpus import CALIBRATION_TEXTS, GATE_TEXTS
from splitserve.export.samples import QUALITY_TEXTS, SAMPLE_TEXTS


def test_calibration_and_gate_texts_are_held_apart() -> None:
    gate = SAMPLE_TEXTS + QUALITY_TEXTS + GATE_TEXTS
    assert not set(CALIBRATION_TEXTS) & set(gate)
    assert len(set(gate)) == len(gate) and len(set(CALIBRATION_TEXTS)) == len(CALIBRATION_TEXTS)
    assert len(gate) >= 150 and len(CALIBRATION_TEXTS) >= 60
    # no near-copies either: no calibration text shares its first five words with a gate text
    opening = {" ".join(t.split()[:5]).lower() for t in gate if len(t.split()) >= 5}
    assert not [t for t in CALIBRATION_TEXTS if " ".join(t.split()[:5]).lower() in opening]


def test_the_fastest_passing_candidate_is_kept_unless_one_as_fast_agrees_more() -> None:
    from splitserve.export.quantize import kept

    assert kept([(100.0, 2.5)]) == 0
    assert kept([(100.0, 2.9), (150.0, 2.5)]) == 1  # 1.5x faster: kept though it agrees less
    assert kept([(100.0, 2.5), (95.0, 2.9)]) == 1  # within 10%: the one that agrees more
    assert kept([(100.0, 2.5), (89.0, 2.9)]) == 0
