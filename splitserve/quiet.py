"""What the CLI lets third-party libraries print: only what a user must act on, as plain text.

Dropped: MLflow's INFO lines (store migrations, "'models:/x/1' resolved as ..."; set
MLFLOW_LOGGING_LEVEL=INFO to see them), its model-card and licence warnings for a model logged
from a local folder (there is no hub card to fetch; the licence is the user's to check, which the
README says), its advice to add type hints to the bundle's own `predict` (splitserve's code, not
the user's), and transformers' "Device set to use cpu". Kept: every other warning, without the
ANSI colour codes MLflow wraps some in when stderr is not a terminal.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings
from typing import Any

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

# (logger, the start of a message it logs that is dropped)
DROPPED_LOGS = (
    ("mlflow.transformers", "The model card could not be retrieved"),
    ("mlflow.transformers", "Unable to find license information"),
    ("transformers.pipelines.base", "Device set to use"),
)
# Warnings (regex on the message, which MLflow may start with a colour code) that are dropped.
DROPPED_WARNINGS = (r"(\x1b\[\d+m)?Add type hints to the `predict` method",)
# Loggers whose records may carry MLflow's `color` (ANSI codes around the whole line).
COLOURED_LOGGERS = ("mlflow", "mlflow.pyfunc", "mlflow.models", "mlflow.transformers", "mlflow.tracking")


class _Drop(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


class _Uncoloured(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "color", None):
            record.color = None
        if isinstance(record.msg, str):
            record.msg = ANSI.sub("", record.msg)
        return True


def plain(text: str) -> str:
    """`text` without ANSI control codes."""
    return ANSI.sub("", text)


def quiet() -> None:
    """Install the filters (once per process; the CLI calls it before anything imports MLflow)."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    dropped: dict[str, tuple[str, ...]] = {}
    for name, prefix in DROPPED_LOGS:
        dropped[name] = (*dropped.get(name, ()), prefix)
    for name, prefixes in dropped.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _Drop) for f in logger.filters):
            logger.addFilter(_Drop(prefixes))
    tty = sys.stderr.isatty()
    if not tty:
        for name in COLOURED_LOGGERS:
            logger = logging.getLogger(name)
            if not any(isinstance(f, _Uncoloured) for f in logger.filters):
                logger.addFilter(_Uncoloured())
    for pattern in DROPPED_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    # Filters alone are not enough: MLflow turns UserWarnings on ("once") around its own calls, ahead
    # of these. What is shown is decided here, too.
    show = warnings.showwarning
    if getattr(show, "quiet", False):
        return
    hidden = re.compile("|".join(DROPPED_WARNINGS))

    def showwarning(
        message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None
    ) -> None:
        if hidden.match(str(message)):
            return
        show(str(message) if tty else plain(str(message)), category, filename, lineno, file, line)

    showwarning.quiet = True  # type: ignore[attr-defined]
    warnings.showwarning = showwarning
