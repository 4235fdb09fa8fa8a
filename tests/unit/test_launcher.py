"""`splitserve up`'s supervision: a replica that keeps dying young is restarted after a pause that
doubles (0.5 s up to 30 s), not every 0.5 s; one that ran a while starts again at once. Issue 11, 9."""

from __future__ import annotations

import sys
import time

from splitserve.commands.up import BACKOFF_S, STABLE_S, Replica


def test_restarts_back_off_while_a_replica_dies_young() -> None:
    replica = Replica("model", [sys.executable, "-c", "raise SystemExit(3)"])
    replica.start()
    pauses = []
    for _ in range(8):
        assert replica.proc is not None
        replica.proc.wait(30)
        now = time.monotonic()
        replica.supervise(now)  # notices the death, schedules the restart
        assert replica.restart_at is not None
        pauses.append(replica.backoff)
        replica.supervise(now)  # not yet due: nothing happens
        assert replica.restarts == len(pauses) - 1
        replica.supervise(replica.restart_at)  # due: started again
    assert pauses == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    replica.proc.wait(30)
    replica.started -= STABLE_S + 1  # it had run for a while before dying
    replica.supervise(time.monotonic())
    assert replica.backoff == BACKOFF_S[0]
