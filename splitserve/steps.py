"""How a long command shows what it does (export's steps, bench's points), on stderr: on a terminal,
a live line with a spinner for the step under way and each finished step printed whole above it;
when stderr is a file or a pipe (a CI log, `2> export.log`), plain lines only: one when a step
starts, one when it is done, never cut short, no spinner frames and no control codes."""

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
