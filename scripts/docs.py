"""The generated pages (one module each in scripts/docsgen/) of the docs site (docs/reference/): the CLI reference from the argparse parser,
the settings reference from the pydantic settings classes, the tasks' params from the task registry.

    python scripts/docs.py           # write docs/reference/*.md
    python scripts/docs.py --check   # write nothing; exit 1 naming each stale generated page, each
                                     # file:function or splitserve.dotted.name a hand-written page
                                     # names that the code no longer has, and each task the tasks
                                     # guide (docs/tasks.md) does not include

It finds what it documents by walking, not by naming modules: the parser is what a function of
`splitserve.cli` builds (else the one `splitserve.cli.main` parses with), the settings classes are the subclasses of `ServerSettings` (the tiers'
`*_svc/settings.py` modules are imported first), the tasks are the registry's `TASKS`; so moving a
command or a settings module changes the pages, not this script.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from collections.abc import Callable
from pathlib import Path

from docsgen import REFERENCE, REGENERATE, REPO
from docsgen.cli_page import cli_page
from docsgen.references import stale_references, untold_tasks
from docsgen.settings_page import settings_page
from docsgen.tasks_page import tasks_page

PAGES: dict[str, Callable[[], str]] = {"cli.md": cli_page, "settings.md": settings_page, "tasks.md": tasks_page}


def render() -> dict[Path, str]:
    # What the pages show must not depend on who runs this: defaults read from the environment
    # (`predict --token`'s $SPLITSERVE_TOKEN, settings' env vars) are read without it.
    for key in [k for k in os.environ if k.startswith("SPLITSERVE_")]:
        del os.environ[key]
    sys.path.insert(0, str(REPO))
    return {REFERENCE / name: page() for name, page in PAGES.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="Write nothing; exit 1 naming each stale page.")
    args = parser.parse_args(argv)
    pages = render()
    if not args.check:
        REFERENCE.mkdir(parents=True, exist_ok=True)
        for path, text in pages.items():
            if not path.is_file() or path.read_text() != text:
                path.write_text(text)
                print(f"wrote {path.relative_to(REPO)}")
        return 0
    problems = []
    for path, text in pages.items():
        old = path.read_text() if path.is_file() else ""
        if old != text:
            diff = difflib.unified_diff(old.splitlines(), text.splitlines(), "committed", "generated", n=0, lineterm="")
            shown = "\n".join(list(diff)[2:12])
            problems.append(f"{path.relative_to(REPO)} is stale: run `{REGENERATE}`; it changes\n{shown}")
    problems += stale_references()
    problems += untold_tasks()
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
