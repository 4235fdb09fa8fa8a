"""The docs: the generated reference pages (CLI, settings, tasks' params) match the code, the
hand-written pages name only files and functions that exist, and the README stays a first page
whose links lead somewhere. (`mkdocs build --strict` in scripts/test.sh checks the site itself.)"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_generated_reference_pages_are_fresh() -> None:
    check = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "docs.py"), "--check"], capture_output=True, text=True, timeout=300
    )
    assert check.returncode == 0, check.stderr[-5000:]


def test_readme_is_a_first_page_whose_links_resolve() -> None:
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if "://" not in link]
    assert local and not [link for link in local if not (REPO / link).is_file()]
