"""`splitserve new-template NAME`: a commented template skeleton to fill in (see
splitserve.stages.template for the contract)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SKELETON = '''"""{name}: a splitserve template (your own logic around the bundle's task).

Export with it:   splitserve export SOURCE_URI --template {name}.py
It runs in the preprocess and postprocess tiers, the gateway with --inline-stages and the bundle's
pyfunc (mlflow.pyfunc.load_model / mlflow models serve). Every name below is optional: delete what
you do not need. Plain Python and plain dicts: no protobuf, no numpy needed.
"""

# Your own request params and their defaults (the type is the default's: bool, int, float, str,
# list of str, or None for any JSON value). Callers pass them with the task's params.
PARAMS = {{
    # "threshold": 0.5,
}}

# Defaults for the task's own params (e.g. {{"aggregation_strategy": "simple"}} for NER, or
# {{"pooling": "mean", "normalize": True}} for embeddings); `export --set` still wins.
DEFAULTS = {{}}

# Records export runs the template on before it logs the bundle (default: the task's samples).
# EXAMPLES = [{{"id": "1", "content": "Abraham Lincoln cut down a cherry tree"}}]


def load(context):
    """Once, when a tier (or the pyfunc) loads the bundle. context.directory holds the files you
    shipped beside this module (a template can be a package directory); context.task, .model,
    .max_length and .tokenizer describe the bundle."""


def preprocess(records, params):
    """The caller's records (dicts with every field it sent, its own names and ids) -> the records
    the task encodes (its fields: text, text_pair, question, context, candidate_labels; `content`
    works for `text`). Return more records than you got (e.g. one per chunk) as long as each keeps
    the `id` of the record it came from. Raise ValueError for bad input: the caller gets
    INVALID_ARGUMENT with your message."""
    return records


def postprocess(records, results, params):
    """The caller's records and the task's results (one per record the task encoded, each with its
    `id`) -> rows: any number, each a dict of JSON values (str, number, bool, None, lists, dicts)."""
    return [dict(result) for result in results]
'''


def write(name: str, directory: Path = Path(".")) -> Path:
    if not name.isidentifier():
        raise ValueError(f"{name!r} is not a Python module name (letters, digits, underscores)")
    path = directory / f"{name}.py"
    if path.exists():
        raise FileExistsError(f"{path} exists; not overwriting it")
    path.write_text(SKELETON.format(name=name))
    return path


def add_parser(sub: Any) -> None:
    p = sub.add_parser("new-template", help="Write a commented template skeleton NAME.py to fill in.")
    p.add_argument("name", help="Module name (the file is NAME.py).")
    p.add_argument("--dir", default=".", help="Folder to write it in (default: here).")
    p.set_defaults(func=run)


def run(args: Any) -> int:
    try:
        path = write(args.name, Path(args.dir))
    except (ValueError, FileExistsError) as exc:
        raise SystemExit(f"error: {exc}") from None
    print(path)
    return 0
