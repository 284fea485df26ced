"""Boolean knobs as they arrive from ``python -m monai.bundle run ... --knob VALUE``.

That command parses its arguments with Python Fire, which reads Python literals only: ``--resume False``
is the bool ``False``, but ``--resume false`` is the *string* ``"false"``, which is truthy. Every boolean
knob of the bundle goes through :func:`as_bool`, so both spellings mean what they say and anything else
is an error that names the knob.
"""

from __future__ import annotations

from typing import Any, Literal, overload

__all__ = ["as_bool"]

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_NONE = {"none", "null", ""}


@overload
def as_bool(value: Any, name: str = ..., allow_none: Literal[False] = ...) -> bool: ...
@overload
def as_bool(value: Any, name: str = ..., allow_none: bool = ...) -> bool | None: ...
def as_bool(value: Any, name: str = "value", allow_none: bool = False) -> bool | None:
    """``value`` as a bool: a bool, 0/1, or the strings true/false, yes/no, on/off, 1/0 (any case).

    Args:
        value: what the config or the command line gave.
        name: the knob's name, for the error message.
        allow_none: accept ``None`` (and the strings none/null) as "automatic" and return ``None``.

    Raises:
        ValueError: for anything else (e.g. ``"ture"``, ``2``).
    """
    if isinstance(value, bool):
        return value
    if value is None and allow_none:
        return None
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        if allow_none and text in _NONE:
            return None
    expected = "true or false" + (" or null" if allow_none else "")
    raise ValueError(f"{name} must be {expected}, got {value!r}.")
