"""Command-line flags declared once, on the config dataclasses' own fields.

A field declared with ``flag(default, help=...)`` carries its flag in its metadata (name, aliases,
help, metavar, choices); the flag's type and default are the field's. ``add_flags(parser, Config)``
puts a config's flags on a parser or an argument group, ``from_flags(Config, args)`` builds the
config from the parsed Namespace, so a flag has one name, one type and one default in every
command. ``flag_error`` and the ``require_*`` checks word a config's ``__post_init__`` checks as
the one line a command prints, naming the flag.

Types: ``str``, ``int`` and ``float``, optional or not (an optional flag's default may be None);
``bool`` (``--name`` turns a False default on, ``--no-name`` a True one off); ``tuple[X, ...]``
(repeatable, each value split at the flag's ``sep`` when it has one; what is given replaces the
default).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import types
import typing
from collections.abc import Callable, Collection
from typing import Any

FLAG = "flag"  # the metadata key of a field's Flag


@dataclasses.dataclass(frozen=True)
class Flag:
    """A field's command-line declaration, as given to ``flag``."""

    help: str
    name: str | None = None  # None: --field-name (--no-field-name for a bool that defaults to True)
    aliases: tuple[str, ...] = ()
    metavar: str | None = None
    choices: tuple | None = None
    type: Callable[[str], Any] | None = None  # None: the field's annotation (a tuple's: its items')
    sep: str | None = None  # a tuple's values are split here (None: one item per use)
    required: bool = True  # for a field without a default: the flag must be given


def flag(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    name: str | None = None,
    aliases: tuple[str, ...] = (),
    metavar: str | None = None,
    choices: Collection | None = None,
    type: Callable[[str], Any] | None = None,
    sep: str | None = None,
    required: bool = True,
) -> Any:
    """A dataclass field with its flag; no ``default``: a required field."""
    choices = None if choices is None else tuple(choices)
    spec = Flag(help, name, tuple(aliases), metavar, choices, type, sep, required)
    return dataclasses.field(default=default, metadata={FLAG: spec})


@dataclasses.dataclass(frozen=True)
class Declared:
    """One field's flag as it goes on a parser."""

    field: str
    options: tuple[str, ...]  # the flag, then its aliases
    dest: str  # its Namespace attribute
    spec: Flag
    kind: type  # str, int, float, bool or tuple
    convert: Callable[[str], Any]  # one value (a tuple's: one item)
    default: Any  # the field's (dataclasses.MISSING: none)


@functools.cache
def declared(cls: type) -> tuple[Declared, ...]:
    """The declared flags of the dataclass ``cls``, in field order."""
    hints = typing.get_type_hints(cls)
    return tuple(
        _declared(f, f.metadata[FLAG], hints[f.name]) for f in dataclasses.fields(cls) if FLAG in f.metadata
    )


def _declared(field: dataclasses.Field, spec: Flag, hint) -> Declared:
    kind, item = _kinds(hint)
    negated = kind is bool and field.default is True
    name = spec.name or "--" + ("no-" if negated else "") + field.name.replace("_", "-")
    dest = name.removeprefix("--").removeprefix("no-" if negated else "").replace("-", "_")
    return Declared(field.name, (name, *spec.aliases), dest, spec, kind, spec.type or item, field.default)


def _kinds(hint) -> tuple[type, type]:
    """(kind, item type): ``float | None`` -> (float, float), ``tuple[str, ...]`` -> (tuple, str)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        [hint] = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    if typing.get_origin(hint) is tuple:
        return tuple, typing.get_args(hint)[0]
    return hint, hint


def add_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    skip: Collection[str] = (),
    only: Collection[str] | None = None,
) -> None:
    """Declare the flags of ``cls``'s fields (not those in ``skip``; only those in ``only`` if given)."""
    for d in declared(cls):
        if d.field not in skip and (only is None or d.field in only):
            parser.add_argument(*d.options, **_argument(d))


def _argument(d: Declared) -> dict:
    """``add_argument``'s keywords for one declared flag."""
    default = None if d.default is dataclasses.MISSING else d.default
    common = {"dest": d.dest, "default": default, "help": _help(d)}
    if d.kind is bool:
        return {**common, "action": "store_false" if default else "store_true"}
    common |= {"metavar": d.spec.metavar, "choices": d.spec.choices}
    if d.default is dataclasses.MISSING and d.spec.required:
        common["required"] = True
    if d.kind is tuple:
        return {**common, "action": _Items, "item": d.convert, "sep": d.spec.sep}
    return {**common, "type": d.convert}


def _help(d: Declared) -> str:
    """The flag's help, its default added unless it says it (argparse's % escaped)."""
    text = d.spec.help
    shown = ",".join(map(str, d.default)) if isinstance(d.default, tuple) else d.default
    if d.kind is not bool and shown not in (None, "", dataclasses.MISSING) and "default" not in text:
        text += f" (default {shown})"
    return text.replace("%", "%%")


class _Items(argparse.Action):
    """A tuple field's flag: repeatable, each value split at ``sep`` when set; replaces the default."""

    def __init__(self, *args, item: Callable[[str], Any] = str, sep: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.item, self.sep = item, sep

    def __call__(self, parser, namespace, values, option_string=None):
        parts = [p.strip() for p in values.split(self.sep)] if self.sep else [values]
        try:
            new = tuple(self.item(p) for p in parts if p)
        except ValueError as err:
            raise argparse.ArgumentError(self, f"invalid {self.item.__name__} value in {values!r}") from err
        given = getattr(namespace, self.dest, None)
        setattr(namespace, self.dest, (*(() if given is self.default or given is None else given), *new))


def flag_values(cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """The values of ``cls``'s flags that are on ``args``, by field name."""
    return {d.field: getattr(args, d.dest) for d in declared(cls) if hasattr(args, d.dest)}


def from_flags(cls: type, args: argparse.Namespace, **values: Any):
    """``cls`` built from its flags on ``args``, ``values`` taking the place of theirs.

    Raises the config's own ValueError (one line naming the flag) on a bad value.
    """
    return cls(**{**flag_values(cls, args), **values})


def flag_name(cls: type, field: str) -> str:
    """The flag of ``cls``'s field (``--box-threshold``), or the field's name when it has none."""
    return next((d.options[0] for d in declared(cls) if d.field == field), field)


def flag_error(config, field: str, problem: str, error: type[Exception] = ValueError) -> Exception:
    """``error`` naming the flag and the value: ``--box-threshold must be in [0, 1], got 2.0``."""
    return error(f"{flag_name(type(config), field)} {problem}, got {getattr(config, field)!r}")


def require_min(config, error: type[Exception] = ValueError, **lows: float) -> None:
    """Raise ``flag_error`` for the first field named in ``lows`` below its bound (None passes)."""
    for field, low in lows.items():
        value = getattr(config, field)
        if value is not None and value < low:
            raise flag_error(config, field, f"must be >= {low}", error)


def require_positive(config, *fields: str) -> None:
    """Raise ``flag_error`` for the first of ``fields`` that is not > 0 (None passes)."""
    for field in fields:
        value = getattr(config, field)
        if value is not None and not value > 0:
            raise flag_error(config, field, "must be > 0")


def require_choice(config, error: type[Exception] = ValueError, **choices: Collection) -> None:
    """Raise ``flag_error`` for the first field named in ``choices`` whose value is not one of them."""
    for field, allowed in choices.items():
        if getattr(config, field) not in allowed:
            raise flag_error(config, field, f"must be one of {', '.join(map(str, allowed))}", error)
