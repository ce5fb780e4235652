"""Check ``**options`` meant for a constructor or builder against its signature: names, and values
against the parameters' type hints, so that a wrong option is one line naming it (and what is
accepted) when a config is built, not a ``TypeError`` deep inside a run."""

from __future__ import annotations

import collections.abc
import inspect
import numbers
import os
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

_KEYWORD = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def keyword_parameters(fn: Callable, exclude: tuple[str, ...] = ()) -> dict[str, inspect.Parameter]:
    """The parameters of ``fn`` that can be given by keyword, with their resolved type hints.

    Args:
        fn: a function, a class or an ``__init__`` (``self`` is left out).
        exclude: names to leave out (arguments the caller passes itself).

    Returns:
        ``{name: parameter}``, each ``parameter.annotation`` the evaluated hint (``Any`` where
        there is none or it cannot be evaluated).
    """
    try:  # a class's parameters are its __init__'s (its own hints are its attributes')
        hints = typing.get_type_hints(fn.__init__ if isinstance(fn, type) else fn)
    except Exception:  # a hint naming something its module does not define: leave it unchecked
        hints = {}
    return {
        name: p.replace(annotation=hints.get(name, Any))
        for name, p in inspect.signature(fn).parameters.items()
        if p.kind in _KEYWORD and name != "self" and name not in exclude
    }


def takes_any_keyword(fn: Callable) -> bool:
    """True when ``fn`` has a ``**kwargs`` parameter."""
    params = inspect.signature(fn).parameters.values()
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def describe_parameters(params: Mapping[str, inspect.Parameter]) -> str:
    """``"a=1, b='x'"``: the names with their defaults (long defaults left out; ``"none"`` for
    no parameter)."""
    shown = []
    for name, p in params.items():
        default = "" if p.default is inspect.Parameter.empty else repr(p.default)
        shown.append(f"{name}={default}" if 0 < len(default) <= 40 else name)  # a long one: name
    return ", ".join(shown) or "none"


def check_options(
    options: Any,
    params: Mapping[str, inspect.Parameter],
    *,
    where: str,
    owner: str,
    allow_unknown: bool = False,
) -> None:
    """Refuse an option that ``params`` does not have, or a value that does not fit its hint.

    Args:
        options: the options given (a mapping of name to value).
        params: the accepted parameters (:func:`keyword_parameters`).
        where: how to name the options in the message, e.g. ``"data.options"``.
        owner: what the options are for, e.g. ``"dataset 'csv'"``.
        allow_unknown: let names that ``params`` lacks through (a callee taking ``**kwargs``).

    Raises:
        ValueError: one line naming ``where.<name>``, ``owner`` and what is accepted.
    """
    if not isinstance(options, Mapping):
        raise ValueError(f"{where} must be a mapping of option names to values, got {options!r}")
    for name, value in options.items():
        if name not in params:
            if allow_unknown:
                continue
            raise ValueError(
                f"{where}: unknown option {name!r} for {owner}; accepted: "
                f"{describe_parameters(params)}"
            )
        hint = params[name].annotation
        if not fits(value, hint):
            raise ValueError(f"{where}.{name}={value!r}: expected {describe(hint)} (for {owner})")


def fits(value: Any, hint: Any) -> bool:
    """Whether a value read from a config (YAML scalars, lists, mappings) fits type ``hint``.

    Hints this does not know (a protocol, a callable type) accept any value: the callee checks.
    """
    if hint is Any or hint is inspect.Parameter.empty or hint is object:
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(fits(value, arg) for arg in args)
    if origin is typing.Literal:
        return value in args
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint is os.PathLike:
        return isinstance(value, str | os.PathLike)
    if origin in (tuple, list, collections.abc.Sequence):
        if not isinstance(value, list | tuple):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(map(fits, value, args))
        return not args or all(fits(item, args[0]) for item in value)
    if origin in (dict, collections.abc.Mapping):
        return isinstance(value, Mapping)
    if isinstance(hint, type) and origin is None:
        return isinstance(value, hint)
    return True


def describe(hint: Any) -> str:
    """``hint`` in words for a message: ``int``, ``true or false``, ``one of 'a', 'b'``..."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(describe(arg) for arg in args))
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, args))
    if hint is type(None):
        return "null"
    if hint is bool:
        return "true or false"
    if hint is os.PathLike:
        return "a path"
    if origin in (tuple, list, collections.abc.Sequence):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"a list of {len(args)} ({', '.join(describe(a) for a in args)})"
        return f"a list of {describe(args[0])}" if args else "a list"
    if origin in (dict, collections.abc.Mapping):
        return "a mapping"
    return getattr(hint, "__name__", str(hint))
