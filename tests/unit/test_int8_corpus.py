"""int8's two corpora (`splitserve.export.corpus`): calibration and gate texts held apart."""

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
