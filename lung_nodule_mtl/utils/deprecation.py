"""Former names of renamed public names, kept working with a ``FutureWarning``, as MONAI's ``deprecated`` does.

Public code names are spelled ``center`` (as MONAI's ``CenterSpatialCrop`` and the on-disk keys
``center_world_mm``); the earlier ``centre`` forms still work and warn:

* classes (transforms): a thin subclass under the old name, decorated with ``monai.utils.deprecated(since=
  RENAMED_IN, version_val=lung_nodule_mtl.__version__)``, so the versions are this package's, not MONAI's;
* keyword arguments: :func:`renamed_keyword`;
* attributes, properties and methods: :class:`RenamedAttribute`;
* constants: a plain alias ``OLD = NEW`` (a module attribute cannot warn when read).

The two helpers here need neither torch nor MONAI: the converters under :mod:`lung_nodule_mtl.data` import without
them (MONAI's ``deprecated_arg`` would import torch).
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable
from typing import Any, TypeVar, cast

__all__ = ["RENAMED_IN", "RenamedAttribute", "renamed_keyword"]

_F = TypeVar("_F", bound=Callable[..., Any])

RENAMED_IN = "0.1.0"
"""The version in which the ``centre`` spellings of public names were deprecated for ``center``."""


def _message(old: str, new: str) -> str:
    return f"{old} has been deprecated since version {RENAMED_IN}: use {new}."


def renamed_keyword(old: str, new: str) -> Callable[[_F], _F]:
    """Decorator: the function's argument ``new`` is still accepted as the keyword ``old``, with a ``FutureWarning``.

    Only ``old`` given: its value is passed as ``new``. Both given (``new`` by keyword or position): ``TypeError``,
    as for any argument given twice.
    """

    def decorate(func: _F) -> _F:
        signature = inspect.signature(func)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if old in kwargs:
                if new in kwargs or new in signature.bind_partial(*args).arguments:
                    raise TypeError(f"{func.__qualname__}() got {new!r} and its deprecated spelling {old!r}.")
                warnings.warn(
                    _message(f"Argument `{old}` of `{func.__qualname__}`", f"`{new}`"), FutureWarning, stacklevel=2
                )
                kwargs[new] = kwargs.pop(old)
            return func(*args, **kwargs)

        return cast(_F, wrapper)

    return decorate


class RenamedAttribute:
    """An attribute under its former name: reading or setting it warns (``FutureWarning``) and uses ``new_name``.

    Put it in the class body under the old name, e.g. ``baseline_centre = RenamedAttribute("baseline_center")``;
    a renamed method or property works the same way (reading the old name gives the new one). In a dataclass it
    is not a field (no annotation), so ``asdict``, ``replace`` and the constructor only know the new name.
    """

    def __init__(self, new_name: str) -> None:
        self.new_name = new_name
        self.old_name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.old_name = f"{owner.__qualname__}.{name}"

    def _warn(self) -> None:
        warnings.warn(_message(f"`{self.old_name}`", f"`{self.new_name}`"), FutureWarning, stacklevel=3)

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        self._warn()
        return getattr(obj, self.new_name)

    def __set__(self, obj: Any, value: Any) -> None:
        self._warn()
        setattr(obj, self.new_name, value)
