"""The suite's Hypothesis profiles: derandomized in CI, random locally, no shared database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROBE = "from hypothesis import settings; s = settings.default; print(s.derandomize, s.database)"


def _profile_of(env: dict[str, str]) -> str:
    code = "import tests.conftest; " + PROBE
    clean = {k: v for k, v in os.environ.items() if k not in ("CI", "HYPOTHESIS_PROFILE")}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**clean, **env},
                          capture_output=True, text=True, check=True).stdout.strip()


def test_ci_runs_derandomized_without_an_example_database():
    assert _profile_of({"CI": "true"}) == "True None"


def test_local_runs_draw_new_examples_and_keep_no_database():
    assert _profile_of({}) == "False None"


def test_no_example_database_is_committed():
    ignored = (ROOT / ".gitignore").read_text().split()
    assert ".hypothesis/" in ignored
