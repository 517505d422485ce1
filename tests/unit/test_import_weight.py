"""Importing a pure module (a kernel, the segment builder, a measurement's maths) never imports
the web stack: each runs in a fresh interpreter, so nothing imported by other tests hides a
package ``__init__`` that loads routes eagerly."""

from __future__ import annotations

import subprocess
import sys

import pytest

# modules used by the CLI, the simulator and batch jobs without a server
PURE = ["adtier.segments.kernels", "adtier.segments.build", "adtier.segments.rules",
        "adtier.measure.reach", "adtier.measure.cells", "adtier.measure.forecast",
        "adtier.measure.noisy", "adtier.privacy.noise", "adtier.privacy.release",
        "adtier.catalog.holdouts", "adtier.audit", "adtier.features.batch",
        "adtier.store.client"]

WEB = ("litestar",)


@pytest.mark.parametrize("module", PURE)
def test_pure_module_does_not_import_the_web_stack(module: str) -> None:
    code = (f"import {module}, sys; "
            f"loaded = [m for m in {WEB!r} if m in sys.modules]; "
            "print(','.join(loaded))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "", f"{module} imports {out.stdout.strip()}"


def test_the_check_sees_the_web_stack() -> None:
    # the probe itself works: the app module does load litestar
    code = "import adtier.app, sys; print('litestar' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "True"
