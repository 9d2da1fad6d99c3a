"""The one validation idiom of every typed config in the project.

No torch, DALI or Ray; imports nothing of ours, which is why it lives in the package at the root
of the import graph: every package may import it. A config is a frozen dataclass whose
`__post_init__` first calls `check_field_types(self)` (each value against its type hint), then
states its rules with `require(condition, message)`. So a bad value fails on construction with
a message naming the field, before any work starts, whoever built the config (a TOML file, an
override, the command line or code).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal


def check_field_types(config: Any) -> None:
    """Raise TypeError naming the field when a dataclass field's value does not match its hint
    (a misspelt Literal choice included).

    Supports the hints configs use: bool, int, float (an int is accepted), str, Literal[...],
    tuples of those and `X | None`. A bool is never accepted where an int or float is expected.
    """
    hints = typing.get_type_hints(type(config))
    for field in dataclasses.fields(config):
        value, hint = getattr(config, field.name), hints[field.name]
        if _matches(value, hint):
            continue
        raise TypeError(f"{type(config).__name__}.{field.name} must be {describe_type(hint)}, got "
                        f"{value!r} ({type(value).__name__})")


def _matches(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return any(value == option and type(value) is type(option) for option in hint.__args__)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, option) for option in typing.get_args(hint))
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(item, args[0]) for item in value)
        return len(value) == len(args) and all(map(_matches, value, args))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def describe_type(hint: Any) -> str:
    """A type hint in words: "int", "one of 'a', 'b'", "tuple[float, float]", "int | None"."""
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(option) for option in hint.__args__)
    if isinstance(hint, type) and not typing.get_args(hint):
        return hint.__name__
    return str(hint).replace("typing.", "").replace("NoneType", "None")


def require(condition: bool, message: str) -> None:
    """The one way a config states a rule: ValueError(message) unless the condition holds."""
    if not condition:
        raise ValueError(message)
