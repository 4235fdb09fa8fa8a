"""Admission control counted in work (records, tokens), not requests.

A tier admits a request while the work already admitted, plus its own, is under a hard limit and
would finish within the request's deadline at the rate recent requests were served. A request
that cannot make its deadline is refused at once (`Overloaded`, RESOURCE_EXHAUSTED: retry later or
elsewhere) instead of queueing until it times out, so that under overload refusals stay fast and
the requests that are admitted finish in time.

The rate is learnt from completed requests (Little's law, per request: the work that was ahead of
it plus its own, over its latency), smoothed; until a request has completed only the hard limit
applies. Completions alone learn a fall in the rate too late: when the tier slows down (its CPUs
taken by a burst, a neighbour, refusing the overload itself) the requests in flight are the first
to show it. So the oldest request in flight also bounds the rate: the work that was ahead of it
plus its own is not done after the time it has waited, so the rate is at most that work over that
time. That bound may lower the learnt rate by half at most: one request can stay long for reasons
that are not a slowdown (a long generation, a stream read slowly, a small request waiting for
companions in a batch window), and must not make every other request look late.

A tier in front of others (the gateway) also learns from their refusals: a request it admitted
that a tier behind it refused (RESOURCE_EXHAUSTED from a hop, `refused_behind`) waited behind
work there before being refused, where a refusal at the door takes a millisecond. So the work in
progress at that moment, less a share, becomes a ceiling on what is admitted (multiplicative
decrease, once per such moment: refusals of requests admitted before it do not lower it again),
and every request that completes raises it by a request's share (additive increase), as TCP's
congestion window, or Netflix's concurrency-limits AIMD. Under overload the door then refuses
what the tiers behind would have refused after queueing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

from splitserve.core.errors import Overloaded

SMOOTHING = 0.3  # weight of the newest request in the rate estimate
# Admit only if the estimated time is under this share of the time left: the rate is learnt from
# requests that finished, and under overload the rate falls while they are in flight.
HEADROOM = 0.5
IN_FLIGHT_FLOOR = 0.5  # the oldest request in flight lowers the learnt rate to this share of it at most
BACKOFF = 0.75  # a tier behind refused: the ceiling falls to this share of the work then in progress


@dataclass(eq=False)
class Ticket:
    """One admitted request: when it was admitted and its units (compared by identity)."""

    since: float
    units: int


class Admission:
    def __init__(self, limit: int | None, unit: str, where: str, setting: str = ""):
        """`limit`: the most units admitted at once (None: only the deadline limits); `unit`
        ("records", "tokens"), `where` ("gateway") and `setting` (the limit's name) word the refusals."""
        self.limit, self.unit, self.where, self.setting = limit, unit, where, setting
        self.admitted = 0  # units in progress
        self.rate: float | None = None  # units per second, once learnt
        # Requests in flight, oldest first: ticket -> (admitted at, work ahead of it plus its own).
        self.in_flight: dict[Ticket, tuple[float, int]] = {}
        # Units admitted at once, learnt from the refusals of the tiers behind (None: none refused yet).
        self.ceiling: float | None = None
        self.lowered_at = 0.0  # when the ceiling last fell

    def current_rate(self) -> float | None:
        """The learnt rate, lowered to what the oldest request in flight shows (by half at most)."""
        if self.rate is None or not self.in_flight:
            return self.rate
        since, work = next(iter(self.in_flight.values()))
        waited = time.perf_counter() - since
        return max(min(self.rate, work / waited), IN_FLIGHT_FLOOR * self.rate) if waited > 0 else self.rate

    def estimate_s(self, units: int) -> float | None:
        """Seconds the admitted work plus `units` more would take at the current rate."""
        rate = self.current_rate()
        return None if rate is None else (self.admitted + units) / rate

    def check(self, units: int, time_left_s: float | None) -> None:
        """Refuse `units` of work that would go over the limit or past the deadline."""
        if self.limit is not None and self.admitted and self.admitted + units > self.limit:
            raise Overloaded(
                f"{self.where} is full: {self.admitted} {self.unit} in progress, {units} more asked, "
                f"{self.setting} {self.limit}; retry later"
            )
        if self.ceiling is not None and self.admitted and self.admitted + units > self.ceiling:
            raise Overloaded(
                f"{self.where} is full: {self.admitted} {self.unit} in progress, {units} more asked, and the tiers "
                f"behind it refused work at that load: it admits about {self.ceiling:.0f} {self.unit} at once for "
                f"now, more as requests complete; retry later"
            )
        estimate = self.estimate_s(units)
        if self.admitted and time_left_s is not None and estimate is not None and estimate > HEADROOM * time_left_s:
            share = "half" if HEADROOM == 0.5 else f"{HEADROOM:.0%}"
            own_s = estimate * units / (self.admitted + units)  # this request's work alone, nothing ahead
            raise Overloaded(
                f"{self.where} is busy: the {self.admitted} {self.unit} ahead and this request's {units} would take "
                f"about {estimate:.2f}s, and a request is admitted only if that is under {share} of the time left "
                f"to its deadline ({time_left_s:.2f}s); retry later or with a longer deadline",
                load=own_s <= HEADROOM * time_left_s,  # else its deadline is too short for it even alone
            )

    def refused_behind(self, ticket: Ticket) -> None:
        """A tier behind refused `ticket`'s request for its load: lower the ceiling to a share of the
        work in progress now, unless it fell since the request was admitted."""
        if ticket.since < self.lowered_at:
            return  # admitted under the old ceiling: that refusal is already counted
        ceiling = max(float(ticket.units), BACKOFF * self.admitted)
        self.ceiling = ceiling if self.ceiling is None else min(self.ceiling, ceiling)
        self.lowered_at = time.perf_counter()

    def _raise_ceiling(self, units: int) -> None:
        """A request completed: one request's share more (a whole request per ceiling's worth of them)."""
        if self.ceiling is None:
            return
        self.ceiling += units * units / self.ceiling
        if self.limit is not None and self.ceiling >= self.limit:
            self.ceiling = None  # back to the hard limit alone

    @contextlib.contextmanager
    def admit(self, units: int, time_left_s: float | None) -> Iterator[Ticket]:
        """Hold `units` while the block runs; a block that completes teaches the rate (and raises the
        ceiling). The block gets the request's ticket (for `refused_behind`)."""
        self.check(units, time_left_s)
        ahead = self.admitted
        self.admitted += units
        start = time.perf_counter()
        ticket = Ticket(start, units)
        self.in_flight[ticket] = (start, ahead + units)
        completed = False
        try:
            yield ticket
            completed = True
            self._raise_ceiling(units)
        finally:
            self.admitted -= units
            del self.in_flight[ticket]
            elapsed = time.perf_counter() - start
            if elapsed > 0:
                sample = (ahead + units) / elapsed
                # A request that failed (its deadline passed, its caller left) still says something:
                # the work ahead of it was not done in `elapsed`, so the rate is at most `sample`.
                if completed or (self.rate is not None and sample < self.rate):
                    self.rate = sample if self.rate is None else (1 - SMOOTHING) * self.rate + SMOOTHING * sample
