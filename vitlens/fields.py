"""Values read from YAML, JSON or the command line, checked against the type annotations of the code that takes them
(training configs, the model section of a config, the constructor fields saved in a checkpoint's metadata): one
checker and one wording for every message, so a width saved as text or a learning rate typed as ``abc`` is named
with its key before it fails deep inside a model."""
from __future__ import annotations

import collections.abc
import math
import reprlib
import types
from typing import Any, Literal, Union, get_args, get_origin

_SHORT = reprlib.Repr()  # keyword arguments to Repr() need Python 3.12
_SHORT.maxstring = _SHORT.maxother = 60
_SEQUENCES = (list, tuple, collections.abc.Sequence)
_NAMES = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string", type(None): "null"}
_PLURALS = {float: "numbers", int: "integers", str: "strings"}


def short(value: Any) -> str:
    """``repr(value)`` cut to one short line: a value pasted by mistake may be a whole file."""
    return _SHORT.repr(value)


def accept(value: Any, hint: Any, *, numbers_from_text: bool = False) -> tuple[bool, Any]:
    """Whether ``value`` fits ``hint`` (a type, a union, a Literal, a list or sequence of one type, or Any), and the
    value converted to it.

    Args:
        value: what YAML, JSON or the command line gave.
        hint: the annotation of the field that takes it.
        numbers_from_text: read a string as a float where a float is wanted (YAML 1.1 reads ``3e-3``, a number
            without a dot, as a string); JSON metadata is strict.
    """
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        for option in get_args(hint):
            ok, converted = accept(value, option, numbers_from_text=numbers_from_text)
            if ok:
                return True, converted
        return False, value
    if origin is Literal:
        return value in get_args(hint), value
    if origin in _SEQUENCES:
        if not isinstance(value, (list, tuple)):
            return False, value
        items = [accept(v, get_args(hint)[0], numbers_from_text=numbers_from_text) for v in value]
        return all(ok for ok, _ in items), [v for _, v in items]
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str) if numbers_from_text else (int, float)):
            return False, value
        try:
            number = float(value)
        except ValueError:
            return False, value
        return math.isfinite(number), number
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is Any:
        return True, value
    return (value is None, value) if hint is type(None) else (isinstance(value, hint), value)


def describe(hint: Any) -> str:
    """An annotation in words: ``int | Sequence[int]`` is "an integer or a list of integers"."""
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(describe(option) for option in get_args(hint))
    if origin is Literal:
        values = get_args(hint)
        return repr(values[0]) if len(values) == 1 else f"one of {values}"
    if origin in _SEQUENCES:
        item = get_args(hint)[0]
        return f"a list of {_PLURALS.get(item, describe(item))}"
    return _NAMES.get(hint, getattr(hint, "__name__", str(hint)))


def check_value(key: str, value: Any, hint: Any, *, numbers_from_text: bool = False) -> Any:
    """``value`` converted to ``hint``; a ValueError naming ``key`` and what it must be when it does not fit."""
    ok, converted = accept(value, hint, numbers_from_text=numbers_from_text)
    if not ok:
        raise ValueError(f"{key} must be {describe(hint)}, got {short(value)}")
    return converted
