"""Frozen dataclasses made cheaply where one is made on every call.

A frozen dataclass's generated `__init__` sets each field through `object.__setattr__` (the class's own
`__setattr__` refuses), about 1.6k instructions a field: 21k for the policy engine's Decision (13 fields), against
3k for the same fields on a class that lets them be set (callgrind, bench/decide_instr.py). `maker(cls)` gives a
function that makes an instance of the frozen slots dataclass `cls` from its constructor's arguments: a twin with
the same slots, defaults and a plain `__init__` is filled in, then given `cls` as its class (CPython allows that between
classes of one slot layout). What it returns is an instance of `cls` like any other: frozen, compared, hashed and
printed as `cls` says, and `dataclasses.replace` works on it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import ParamSpec, TypeVar, cast

P = ParamSpec("P")
T = TypeVar("T")


def maker(cls: Callable[P, T]) -> Callable[P, T]:
    """A function that returns what `cls(...)` would, given the same arguments, for a frozen slots dataclass whose
    fields are all set by its generated `__init__` and that runs nothing after (no `__post_init__`, no own
    `__new__`, no base class). For any other class, or where this Python lays out slots otherwise, `cls` itself:
    the twin's plain `__init__` would skip what such a class checks, and a slower start is better than none."""
    if not _twin_can_make(cls):
        return cls
    frozen = cast(type, cls)
    fields = [_twin_field(f) for f in dataclasses.fields(frozen)]
    twin: type = dataclasses.make_dataclass(f"_{frozen.__name__}Fields", fields, slots=True, eq=False, repr=False,
                                           match_args=False)
    if twin.__dict__.get("__slots__") != frozen.__dict__.get("__slots__"):
        return cls

    def make(*args: P.args, **kwargs: P.kwargs) -> T:
        made = twin(*args, **kwargs)
        made.__class__ = frozen
        return cast(T, made)  # (the twin's instance, now a cls)

    make.__doc__ = f"A {frozen.__name__}, made as its constructor would (see gateway.frozen)."
    return make


def _twin_field(field: dataclasses.Field[object]) -> tuple[str, type, object]:
    """`field` for the twin: the same name and default, so the twin takes what the constructor takes."""
    if field.default is not dataclasses.MISSING:
        return field.name, object, dataclasses.field(default=field.default)
    if field.default_factory is not dataclasses.MISSING:
        factory: Callable[[], object] = field.default_factory
        return field.name, object, dataclasses.field(default_factory=factory)
    return field.name, object, dataclasses.field()


def _twin_can_make(cls: object) -> bool:
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not isinstance(cls, type) or not dataclasses.is_dataclass(cls):
        return False
    fields = dataclasses.fields(cls)
    return bool(params.frozen and params.init and "__slots__" in cls.__dict__ and not hasattr(cls, "__post_init__")
                and fields and all(f.init and not f.kw_only for f in fields) and cls.__bases__ == (object,)
                and cls.__new__ is object.__new__ and _generated_init(cls))


def _generated_init(cls: type) -> bool:
    """Whether `cls.__init__` is the one dataclasses wrote (a hand-written one may check what the twin would skip)."""
    init = cls.__dict__.get("__init__")
    code = getattr(init, "__code__", None)
    return (code is not None and code.co_filename == "<string>"
            and getattr(init, "__qualname__", "") == f"{cls.__qualname__}.__init__")
