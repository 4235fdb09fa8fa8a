"""`splitserve.steps.Progress` when stderr is no terminal (a CI log, `2> scoring.log`): plain lines
with the count, the share, the rate and the time left; no control codes. Issue 21, item 5."""

from __future__ import annotations

import pytest

from splitserve import steps


def test_plain_lines_without_a_terminal(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(steps, "PLAIN_EVERY_S", 0.0)
    with steps.Progress("Scoring", 100, done=20, failed=1) as progress:  # a resumed run: 20 were done
        progress.advance(30, failed=2)
        progress.say("a [line] of its own")
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("Scoring: 50/100 records (50%), ") and lines[0].endswith("s left, 3 failed")
    assert lines[1] == "a [line] of its own"
    assert lines[2].startswith("Scoring: 50/100 records (50%)")  # the last count, when it ends
    assert "\x1b" not in "".join(lines)
