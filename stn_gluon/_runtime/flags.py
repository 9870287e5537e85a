"""Command-line flags generated from configuration dataclasses.

A configuration (:class:`~stn_gluon.train.recipes.TrainConfig`,
:class:`~stn_gluon.serve.app.ServeConfig`, the distortion benchmark's settings)
declares each of its fields once with :func:`option`: default, help text,
choices, bounds. :func:`add_flags` turns those fields into ``argparse`` flags
(``batch_size`` -> ``--batch-size``, help showing the default), and
:func:`check_value` validates a value against the same declaration, so the CLI
and the library accept and refuse exactly the same values.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Sequence

from .errors import ConfigError

__all__ = ["option", "add_flags", "check_value", "flag_name", "values_from_args", "positive_int", "finite_float",
           "validate_fields", "epoch_count"]


def option(default: Any, help: str, *, choices: Optional[Sequence[Any]] = None, minimum: Optional[float] = None,
           maximum: Optional[float] = None, exclusive_minimum: bool = False, flag: Optional[str] = None,
           negative_flag: Optional[str] = None, cli: bool = True, type: Optional[Callable] = None,
           metavar: Optional[str] = None, nargs: Optional[str] = None, const: Any = None) -> Any:
    """A dataclass field that also describes its command-line flag.

    choices / minimum / maximum: what :func:`check_value` accepts (``None``
    always passes: "not set"); flag: the flag's name (default ``--field-name``);
    negative_flag: for a boolean that defaults to True, the flag that turns it
    off (``--no-augment``); cli=False: no flag. type: how the CLI parses the
    text (default: from the default's type).
    """
    meta = dict(help=help, choices=tuple(choices) if choices is not None else None, minimum=minimum,
                maximum=maximum, exclusive_minimum=exclusive_minimum, flag=flag, negative_flag=negative_flag,
                cli=cli, type=type, metavar=metavar, nargs=nargs, const=const)
    return dataclasses.field(default=default, metadata=meta)


def flag_name(name: str) -> str:
    """``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def finite_float(text: str) -> float:
    """argparse type: a finite number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def epoch_count(text: str) -> float:
    """argparse type: a number of epochs > 0, an int when whole (20) and a float otherwise (1.25)."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return int(value) if value.is_integer() else value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def check_value(name: str, value: Any, meta: Mapping[str, Any]) -> None:
    """Raise :class:`~stn_gluon._runtime.errors.ConfigError` naming ``name`` if ``value`` breaks ``meta``'s rules."""
    if value is None:
        return
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(name, f"{value!r}: choose {', '.join(map(str, choices))}")
    lo, hi = meta.get("minimum"), meta.get("maximum")
    if lo is None and hi is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(name, f"must be a finite number, got {value!r}")
    if lo is not None and (value < lo or (meta.get("exclusive_minimum") and value == lo)):
        raise ConfigError(name, f"must be {'>' if meta.get('exclusive_minimum') else '>='} {lo:g}, got {value!r}")
    if hi is not None and value > hi:
        raise ConfigError(name, f"must be <= {hi:g}, got {value!r}")


def _cli_type(f: dataclasses.Field, meta: Dict[str, Any]) -> Callable:
    if meta.get("type") is not None:
        return meta["type"]
    kind = f.type if isinstance(f.type, str) else f.type.__name__ if isinstance(f.type, type) else str(f.type)
    if "int" in kind:
        return positive_int if (meta.get("minimum") or 0) >= 1 else _int
    if "float" in kind:
        return finite_float
    return str


def add_flags(parser: argparse.ArgumentParser, cls: type, defaults: Any = None,
              only: Optional[Iterable[str]] = None, skip: Iterable[str] = (),
              default_notes: Optional[Callable[[str], str]] = None) -> None:
    """Add a flag for each field of dataclass ``cls`` declared with :func:`option`.

    defaults: an instance whose values are shown as the defaults (default: ``cls()``'s
    field defaults). The parsed value of a flag the user did not give is ``None``
    (booleans: ``None`` too), so :func:`values_from_args` passes on only what the
    user set and the dataclass (or a named recipe) supplies the rest.
    default_notes(name): extra text after the default in the help (e.g. other recipes' values).
    """
    wanted = set(only) if only is not None else None
    for f in dataclasses.fields(cls):
        meta = dict(f.metadata)
        if not meta or not meta.get("cli", True) or f.name in skip or (wanted is not None and f.name not in wanted):
            continue
        default = getattr(defaults, f.name) if defaults is not None else f.default
        note = default_notes(f.name) if default_notes else ""
        shown = f"default: {default}{note}" if default is not None else ""
        if isinstance(f.default, bool):
            state = f"default: {'on' if default else 'off'}{note}"
            if meta.get("negative_flag"):  # the flag turns the field off
                parser.add_argument(meta["negative_flag"], dest=f.name, action="store_const", const=False,
                                    default=None, help=f"{meta['help']}; this flag turns it off ({state})")
            else:
                parser.add_argument(meta.get("flag") or flag_name(f.name), dest=f.name, action="store_const",
                                    const=True, default=None, help=f"{meta['help']} ({state})")
            continue
        kwargs: Dict[str, Any] = dict(dest=f.name, default=None,
                                      help=f"{meta['help']} ({shown})" if shown else meta["help"])
        if meta.get("nargs"):
            kwargs.update(nargs=meta["nargs"], const=meta.get("const"))
        if meta.get("metavar"):
            kwargs["metavar"] = meta["metavar"]
        if meta.get("choices") is not None and meta.get("type") is None:
            kwargs["choices"] = list(meta["choices"])
            kwargs["metavar"] = kwargs.get("metavar") or "{" + ",".join(map(str, meta["choices"])) + "}"
        kwargs["type"] = _cli_type(f, meta)
        parser.add_argument(meta.get("flag") or flag_name(f.name), **kwargs)


def values_from_args(cls: type, args: argparse.Namespace) -> Dict[str, Any]:
    """The fields of ``cls`` the user set on the command line (``None`` values dropped)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


def validate_fields(obj: Any) -> None:
    """Check every field of dataclass instance ``obj`` declared with :func:`option`."""
    for f in dataclasses.fields(obj):
        if f.metadata:
            check_value(f.name, getattr(obj, f.name), f.metadata)
