"""Lazy package names, the one style of every package ``__init__``: a name is imported from its
module on first use, so importing a pure module of a package (a kernel, a measurement's maths)
never runs the package's routes and the web stack they import."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__all__ = ["lazy_names"]


def lazy_names(package: str, where: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` answering each name of ``where`` (name -> submodule) from its
    submodule. Submodules themselves are not listed: on the AttributeError the import system
    loads them itself."""

    def __getattr__(name: str) -> Any:
        if name in where:
            return getattr(importlib.import_module(f"{package}.{where[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
