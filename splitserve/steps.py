"""How a long command shows what it does (export's steps, bench's points), on stderr: on a terminal,
a live line with a spinner for the step under way and each finished step printed whole above it;
when stderr is a file or a pipe (a CI log, `2> export.log`), plain lines only: one when a step
starts, one when it is done, never cut short, no spinner frames and no control codes. `Progress`
does the same for a count toward a total (`predict --input`'s records): a bar, or a line now and then."""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Any


def plain(text: str) -> str:
    """`text` without rich's markup ("[green]✓[/] done" -> "✓ done")."""
    from rich.text import Text

    return Text.from_markup(text).plain


def escape(text: str) -> str:
    """`text` shown as is, whatever brackets it holds (a URI, a list in a message)."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


class Steps:
    """`with Steps() as steps: t = steps.step("Exporting"); ...; steps.done(t, "Exported")`."""

    def __init__(self, show: bool = True):
        self.show = show
        self.live = show and sys.stderr.isatty()
        self.started: dict[Any, float] = {}
        self.progress: Any = None

    def __enter__(self) -> Steps:
        if self.live:
            from rich.console import Console
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self.progress = Progress(
                SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=Console(stderr=True)
            )
            self.progress.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.progress is not None:
            self.progress.__exit__(kind, exc, tb)

    def step(self, text: str) -> Any:
        """A step under way; returns its handle for `done`."""
        if self.progress is not None:
            handle = self.progress.add_task(escape(text), total=1)
        else:
            handle = object()
            self.say(f"… {escape(text)}")
        self.started[handle] = time.monotonic()
        return handle

    def done(self, handle: Any, text: str) -> None:
        """The step is done: `text` says what it did."""
        seconds = time.monotonic() - self.started.pop(handle, time.monotonic())
        line = f"[green]✓[/] {escape(text)} ({seconds:.1f}s)"
        if self.progress is not None:
            self.progress.remove_task(handle)
            self.progress.console.print(line, soft_wrap=True)
        else:
            self.say(line)

    def drop(self, handle: Any) -> None:
        """A step that will not be done (it was stopped): off the live line."""
        self.started.pop(handle, None)
        if self.progress is not None:
            self.progress.remove_task(handle)

    def say(self, text: str) -> None:
        """A line of its own, in rich markup (`escape` what is not): above the live line, or as is."""
        if not self.show:
            return
        if self.progress is not None:
            self.progress.console.print(text, soft_wrap=True)
        else:
            print(plain(text), file=sys.stderr, flush=True)


PLAIN_EVERY_S = 5.0  # without a terminal: a progress line this often


class Progress:
    """A count of records toward a total, on stderr: on a terminal a live bar with the rate and the
    time left; otherwise a plain line every PLAIN_EVERY_S seconds.
    `with Progress("Scoring", total) as p: p.advance(n, failed=k)`; `p.say(text)` for a line of its own."""

    def __init__(self, what: str, total: int, done: int = 0, failed: int = 0):
        self.what, self.total, self.done, self.failed = what, total, done, failed
        self.first = done  # counted before this run (a resumed one): not in its rate
        self.started = self.shown = time.monotonic()
        self.bar: Any = None
        self.task: Any = None

    def __enter__(self) -> Progress:
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as Bar

            self.bar = Bar(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]} records/s, {task.fields[failed]} failed"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
            )
            self.bar.__enter__()
            self.task = self.bar.add_task(self.what, total=self.total, completed=self.done, rate=0, failed=self.failed)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.bar is not None:
            self.bar.__exit__(kind, exc, tb)
            self.bar = None
        elif kind is None and self.done > self.first:
            self._line()

    def advance(self, n: int, failed: int = 0) -> None:
        self.done += n
        self.failed += failed
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done, rate=f"{self.rate():.0f}", failed=self.failed)
        elif time.monotonic() - self.shown >= PLAIN_EVERY_S:
            self._line()

    def rate(self) -> float:
        return (self.done - self.first) / max(time.monotonic() - self.started, 1e-9)

    def say(self, text: str) -> None:
        """A line of its own (plain text): above the bar, or as is."""
        if self.bar is not None:
            self.bar.console.print(escape(text), soft_wrap=True, highlight=False)
        else:
            print(text, file=sys.stderr, flush=True)

    def _line(self) -> None:
        self.shown = time.monotonic()
        rate = self.rate()
        left = f", about {(self.total - self.done) / rate:.0f}s left" if rate > 0 and self.done < self.total else ""
        share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        self.say(
            f"{self.what}: {self.done}/{self.total} records{share}, {rate:.0f} records/s{left}, {self.failed} failed"
        )
