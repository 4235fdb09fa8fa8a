"""The hand-written pages' references to the code (`file.py:function`, `splitserve.dotted.name`)
and the tasks the tasks guide includes, checked against the code."""

from __future__ import annotations

import importlib
import re

from docsgen import DOCS, REFERENCE, REPO

# `path/to/file.py:name` or `path/to/file.py:Class.method` in a hand-written page, and dotted names
# of the project's own packages (`splitserve.core.settings.ServerSettings`).
FILE_REFERENCE = re.compile(r"`((?:[\w.-]+/)*[\w-]+\.py):([A-Za-z_][\w.]*)`")
DOTTED_REFERENCE = re.compile(r"`((?:splitserve|protos|\w+_svc)(?:\.[A-Za-z_]\w*)+)")


def stale_references() -> list[str]:
    """Each file, function or dotted name of the project that a hand-written page names and the
    code no longer has: the pages that explain the code move with it."""
    problems = []
    for page in sorted(DOCS.rglob("*.md")):
        if REFERENCE in page.parents:
            continue
        text = page.read_text()
        where = page.relative_to(REPO)
        for path, name in FILE_REFERENCE.findall(text):
            source = REPO / path
            if not source.is_file():
                problems.append(f"{where}: names {path}:{name}, but {path} is gone")
            elif not _defines(source.read_text(), name):
                problems.append(f"{where}: names {path}:{name}, which {path} no longer defines")
        for dotted in DOTTED_REFERENCE.findall(text):
            if not _resolves(dotted):
                problems.append(f"{where}: names {dotted}, which the code no longer has")
    return problems


def _resolves(dotted: str) -> bool:
    """Whether `a.b.c.Name` is a module of the repo, or a name a module of the repo defines."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        base = REPO.joinpath(*parts[:cut])
        for source in (base.with_suffix(".py"), base / "__init__.py"):
            if source.is_file():
                return cut == len(parts) or _defines(source.read_text(), ".".join(parts[cut:]))
    return False


def _defines(source: str, dotted: str) -> bool:
    """Whether `source` defines `dotted` (a function, class, method, assigned or imported name)."""
    import ast

    scope: list[ast.stmt] = ast.parse(source).body
    for part in dotted.split("."):
        for node in scope:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == part:
                scope = node.body if isinstance(node, ast.ClassDef) else []
                break
            if isinstance(node, ast.Assign):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names = [node.target.id]
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [(a.asname or a.name).split(".")[0] for a in node.names]
            else:
                names = []
            if part in names:
                scope = []
                break
        else:
            return False
    return True


def untold_tasks() -> list[str]:
    """Each task of the registry whose params table no hand-written page includes (the tasks guide
    includes each with `--8<-- "docs/reference/tasks.md:NAME"`)."""
    pages = " ".join(p.read_text() for p in DOCS.rglob("*.md") if REFERENCE not in p.parents)
    return [
        f"docs/tasks.md: task {task.name} has no section; include its params table with "
        f'--8<-- "docs/reference/tasks.md:{task.name}" and say what its defaults mean'
        for task in importlib.import_module("splitserve.tasks").TASKS
        if f'reference/tasks.md:{task.name}"' not in pages
    ]
