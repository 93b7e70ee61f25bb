"""Names of a package imported on first use (PEP 562), so that importing it stays cheap."""

from __future__ import annotations

import importlib
from typing import Any, Callable, Dict, List, MutableMapping, Tuple


def lazy_exports(package: str, exports: Dict[str, str],
                 namespace: MutableMapping[str, Any]) -> Tuple[Callable[[str], Any], Callable[[], List[str]]]:
    """`(__getattr__, __dir__)` for `package` (its `__name__`) whose public names live in its
    submodules: `exports` maps each name to the submodule (relative, without the dot) that
    defines it, or to `"submodule:attribute.path"` when the name is an attribute of an object
    there (e.g. `"predictor:Predictor.from_pretrained"`). A name is imported on first access and then kept in `namespace` (the package's
    `globals()`), so later accesses are plain look-ups; `dir(package)` is its `__all__`.

        __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
    """
    names = sorted(exports)

    def __getattr__(name: str) -> Any:
        where = exports.get(name)
        if where is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attribute = where.partition(":")
        value = importlib.import_module(f".{module}", package)
        for part in (attribute or name).split("."):
            value = getattr(value, part)
        namespace[name] = value
        return value

    def __dir__() -> List[str]:  # the public names, as `from package import *` gives them
        return list(namespace.get("__all__", names))

    return __getattr__, __dir__


__all__ = ["lazy_exports"]
