"""Settings as command-line options: one dataclass field, one flag, one environment variable.

A field is an option when its metadata holds a help text (`option`). Its flag is ``--``
and the field's name with dashes, less a trailing ``_s`` (seconds), unless the metadata
names another; its environment variable is ``HA_INGESTOR_`` and the name in capitals.
The field's type says how a value is read: a Literal gives the choices, bool
true/false, int and float their own, a tuple of str a comma-separated list.
``{default}`` in a help text is the field's default, so defaults live in one place.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

ENV_PREFIX = "HA_INGESTOR_"

_HELP, _FLAG, _METAVAR, _PARSE = "help", "flag", "metavar", "parse"


def option(
    help: str,
    *,
    flag: str | None = None,
    metavar: str | None = None,
    parse: Callable[[str], Any] | None = None,
) -> dict[str, Any]:
    """A settings field's metadata: its ``--help`` text; a flag, metavar or reader
    only where the derived one will not do."""
    given: dict[str, Any] = {_FLAG: flag, _METAVAR: metavar, _PARSE: parse}
    return {_HELP: help} | {key: value for key, value in given.items() if value is not None}


@dataclass(frozen=True, slots=True)
class Option:
    """One setting on the command line: its flag, the field it fills, how to read it."""

    flag: str
    dest: str
    help: str
    parse: Callable[[str], Any] = str
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    default: Any = None  # shown in the help; the settings class applies its own

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.dest.upper()


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{text!r} is not true or false")


def comma_list(text: str) -> tuple[str, ...]:
    """``"http://a:8004, http://b:8004"`` as ``("http://a:8004", "http://b:8004")``."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def options_of(settings: type) -> tuple[Option, ...]:
    """The options of a settings dataclass's fields that have a help text, in order."""
    hints = typing.get_type_hints(settings)
    found: list[Option] = []
    for field in dataclasses.fields(settings):
        metadata = field.metadata
        if _HELP not in metadata:
            continue
        parse, choices, metavar = _reader(hints[field.name])
        default = None if field.default is dataclasses.MISSING else field.default
        found.append(
            Option(
                flag=metadata.get(_FLAG, "--" + field.name.removesuffix("_s").replace("_", "-")),
                dest=field.name,
                help=metadata[_HELP].format(default=_shown(default)),
                parse=metadata.get(_PARSE, parse),
                choices=choices,
                metavar=metadata.get(_METAVAR, metavar),
                default=default,
            )
        )
    return tuple(found)


def _reader(hint: Any) -> tuple[Callable[[str], Any], tuple[str, ...] | None, str | None]:
    """How to read a value of this type from text: parser, choices, metavar."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        (hint,) = (arg for arg in args if arg is not type(None))  # X | None reads as X
        args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin is Literal:
        return str, tuple(str(arg) for arg in args), None
    if hint is bool:
        return parse_bool, None, "true|false"
    if hint in (str, int, float):
        return hint, None, None
    if origin is tuple and args == (str, Ellipsis):
        return comma_list, None, None
    raise TypeError(f"no command-line reader for {hint!r}")


def _shown(default: Any) -> str:
    if isinstance(default, tuple):
        return ",".join(str(item) for item in default)
    if isinstance(default, float):
        return f"{default:g}"
    return str(default)
