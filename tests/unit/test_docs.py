"""The README stays short and self-contained, and CI runs exactly its test command."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
# pages written alongside by the pixel, privacy, hardening and console work
PENDING = {"docs/pixels.md", "docs/privacy.md", "docs/hardening.md", "docs/console.md"}


def _code_blocks(text: str) -> list[str]:
    return re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)


def test_readme_is_short():
    assert len(README.read_text().splitlines()) <= 200


def test_links_stay_inside_the_repository():
    for page in PAGES:
        text = page.read_text()
        assert "../" not in text and "BRIEF" not in text, page
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if re.match(r"https?://", target):
                continue
            path = (page.parent / target).resolve()
            relative = path.relative_to(ROOT).as_posix()
            assert path.exists() or relative in PENDING, f"{page.name}: {target}"


def test_ci_runs_the_readmes_test_command_verbatim():
    commands = [b.strip() for b in _code_blocks(README.read_text())]
    test_command = next(c for c in commands if c.endswith(" run pytest"))
    install = next(c for c in commands if "pip install" in c)
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert install in ci and test_command in ci
    assert ci.index(install) < ci.index(test_command)
