"""Lazy public names for a package's ``__init__`` (PEP 562), so that importing one module of a
package does not load the others and their heavy dependencies (torch, h5py, the simulator).

    _LAZY = {"EPIETask": ".epie", ...}
    __getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY, __all__)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def lazy_exports(
    package: str, namespace: dict[str, Any], table: Mapping[str, str], public: Iterable[str]
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The package's ``__getattr__`` and ``__dir__``.

    Args:
        package: the package's ``__name__``.
        namespace: its ``globals()``: an imported name is cached there, so the module is
            looked up once.
        table: public name -> the relative module that defines it.
        public: the package's ``__all__``.
    """
    names = sorted(public)

    def __getattr__(name: str) -> object:
        if name not in table:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(table[name], package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return list(names)

    return __getattr__, __dir__
