"""Frozen dataclasses made cheaply where one is made on every call.

A frozen dataclass's generated `__init__` sets each field through `object.__setattr__` (the class's own
`__setattr__` refuses), about 1.6k instructions a field: 21k for the policy engine's Decision (13 fields), against
3k for the same fields on a class that lets them be set (callgrind, bench/decide_instr.py). `maker(cls)` gives a
function that makes an instance of the frozen slots dataclass `cls` from all its fields, in their order: a twin with
the same slots and a plain `__init__` is filled in, then given `cls` as its class (CPython allows that between
classes of one slot layout). What it returns is an instance of `cls` like any other: frozen, compared, hashed and
printed as `cls` says, and `dataclasses.replace` works on it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TypeVar, cast

T = TypeVar("T")


def maker(cls: type[T]) -> Callable[..., T]:
    """A function of all `cls`'s fields, positionally, that returns the `cls` its own constructor would. Only for
    frozen slots dataclasses whose fields are all set by `__init__` and that run nothing after (no `__post_init__`):
    anything else is refused, since the twin's plain `__init__` would skip it."""
    params = getattr(cls, "__dataclass_params__", None)
    fields = dataclasses.fields(cls) if dataclasses.is_dataclass(cls) else ()
    if (params is None or not params.frozen or not params.init or "__slots__" not in cls.__dict__
            or hasattr(cls, "__post_init__") or not fields or not all(f.init for f in fields)
            or cls.__bases__ != (object,) or cls.__new__ is not object.__new__ or not _generated_init(cls)):
        raise TypeError(f"{cls.__name__} is not a frozen slots dataclass set by its __init__ alone")
    names = [f.name for f in fields]
    twin: type = dataclasses.make_dataclass(f"_{cls.__name__}Fields", names, slots=True, eq=False, repr=False,
                                           match_args=False)
    if twin.__dict__["__slots__"] != cls.__dict__["__slots__"]:
        raise TypeError(f"{cls.__name__}'s slots are not its fields")

    def make(*values: object) -> T:
        made = twin(*values)
        made.__class__ = cls
        return cast(T, made)  # (the twin's instance, now a cls)

    make.__doc__ = f"A {cls.__name__} of all its fields, positionally ({', '.join(names)})."
    return make


def _generated_init(cls: type) -> bool:
    """Whether `cls.__init__` is the one dataclasses wrote (a hand-written one may check what the twin would skip)."""
    init = cls.__dict__.get("__init__")
    code = getattr(init, "__code__", None)
    return (code is not None and code.co_filename == "<string>"
            and getattr(init, "__qualname__", "") == f"{cls.__qualname__}.__init__")
