"""Where the vendored-by-dependency assets live: found in the installed packages, never copied
into this repository (a missing package is a clear start-up error, not a blank page)."""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

__all__ = ["STATIC_DIR", "plotly_js", "swagger_dir", "VENDOR_PATH"]

STATIC_DIR = Path(__file__).parent / "static"
VENDOR_PATH = "/console/vendor"


def _package_dir(name: str) -> Path:
    # find_spec, not import: importing plotly would load its Python side for nothing
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the console needs the {name!r} package installed")
    return Path(next(iter(spec.submodule_search_locations)))


@cache
def plotly_js() -> Path:
    """plotly.js (minified, the whole library) as the ``plotly`` wheel ships it."""
    path = _package_dir("plotly") / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise RuntimeError(f"plotly.min.js not found at {path}")
    return path


@cache
def swagger_dir() -> Path:
    """Swagger UI's dist files as the ``swagger-ui-py`` wheel ships them."""
    path = _package_dir("swagger_ui") / "static"
    if not (path / "swagger-ui-bundle.js").is_file():
        raise RuntimeError(f"Swagger UI's files not found in {path}")
    return path
