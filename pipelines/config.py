"""The command line of every script: one reader for ``--key value`` options, typed by the fields of the script's
argument dataclasses, with or without a YAML config file first.

    parse_config((DataArguments, ModelArguments, ...), argv)   # finetune.py, distill.py, lr_find.py: <config.yaml> [--key value ...]
    parse_flags((ReportArguments, DataArguments), argv)        # report.py, shrink.py, app.py, benchmark.py, python -m explain

Keys are the dataclasses' field names, spelt with underscores or dashes (``--batch_size`` or ``--batch-size``), or an
old spelling a field still answers to (its metadata's ``aliases``, as `HfArgumentParser` reads them: ``--out`` for
``--output_dir``; see `old_spellings`); values
are read as the field's type (see `read_value`); an unknown key is named with the closest known one, and any bad
value ends in one sentence (`ConfigError`). ``--help`` lists every key with its help text and default.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser

from pipelines.errors import ConfigError


def parse_config(
    dataclass_types: Sequence[type], argv: Sequence[str] | None = None, prog: str | None = None
) -> tuple[Any, ...]:
    """Parse ``<config.yaml> [--key value ...]`` into instances of `dataclass_types`.

    Command-line values override the file's and are read as their field's type (see `read_value`:
    ``--num_train_epochs 3``, ``--bf16 true``, ``--eval_strategy no``, ``--class_names A B C``). An unknown key is
    named, with the closest known key as a suggestion.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    dataclass_types = tuple(dataclass_types)
    if argv and argv[0] in ("-h", "--help"):
        print_help(dataclass_types, prog)
    if not argv or argv[0].startswith("--"):
        script = prog or (sys.argv[0] if sys.argv[0].endswith(".py") else "script.py")
        raise ConfigError(f"Give a config file first: {script} configs/<name>.yaml [--key value ...] (or --help).")
    path = Path(argv[0])
    hints = field_types(dataclass_types)
    aliases = old_spellings(dataclass_types)
    overrides = read_overrides(argv[1:], hints, aliases)
    from_file = renamed(read_config_file(path), aliases, f"in {path}")
    values = off_spelt_no({**from_file, **overrides}, hints)
    unknown = [key for key in values if key not in hints]
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(hints), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        where = "on the command line" if unknown[0] in overrides else f"in {path}"
        raise ConfigError(f"Unknown config key '{unknown[0]}' {where}{hint}.")
    values = {key: coerce(value, hints[key], key) for key, value in values.items()}
    return tuple(build(dataclass_type, values, str(path)) for dataclass_type in dataclass_types)


def parse_flags(
    dataclass_types: Sequence[type], argv: Sequence[str] | None = None, prog: str | None = None
) -> tuple[Any, ...]:
    """Parse ``[--key value ...]`` into instances of `dataclass_types` (see `read_flags` and `build`)."""
    values = read_flags(dataclass_types, argv, prog)
    return tuple(build(dataclass_type, values) for dataclass_type in dataclass_types)


def read_flags(
    dataclass_types: Sequence[type], argv: Sequence[str] | None = None, prog: str | None = None
) -> dict[str, Any]:
    """The ``--key value`` options of `argv` (default: the command line) as field values, each read and checked as
    its field's type. Scripts that build some dataclasses only when they are needed (the data arguments of
    ``python -m explain --images ...``) read first, then `build` what they need.

    Raises:
        ConfigError: an unknown key (naming the closest known one) or a value of the wrong kind.
        SystemExit: after printing the help, for ``-h`` or ``--help``.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    dataclass_types = tuple(dataclass_types)
    if any(arg in ("-h", "--help") for arg in argv):
        print_help(dataclass_types, prog)
    hints = field_types(dataclass_types)
    values = read_overrides(argv, hints, old_spellings(dataclass_types))
    unknown = [key for key in values if key not in hints]
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(hints), n=1)
        hint = f" (did you mean --{close[0]}?)" if close else ""
        raise ConfigError(f"Unknown option --{unknown[0]}{hint}; --help lists the options.")
    values = {key: coerce(value, hints[key], key) for key, value in values.items()}
    # A float option is a float, as argparse gives it (`coerce` keeps YAML's whole numbers for TrainingArguments,
    # whose float fields read 1 and 1.0 differently, and which no flag script takes).
    return {key: float(value) if _strip_optional(hints[key]) is float else value for key, value in values.items()}


def build(dataclass_type: type, values: dict[str, Any], where: str = "the command line") -> Any:
    """An instance of `dataclass_type` from the values of its own fields (others are ignored); its defaults fill in
    the rest, and its `__post_init__` checks run.

    Raises:
        ConfigError: a required field without a value, or a value the dataclass refuses.
    """
    own = {field.name: field for field in dataclasses.fields(dataclass_type) if field.init}
    missing = [
        name
        for name, field in own.items()
        if name not in values and field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
    ]
    if missing:
        help_text = own[missing[0]].metadata.get("help", "")
        raise ConfigError(f"--{missing[0]} is required{': ' + help_text if help_text else '.'}")
    try:
        (instance,) = HfArgumentParser(dataclass_type).parse_dict(
            {key: value for key, value in values.items() if key in own}
        )
    except ConfigError:
        raise
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{where}: {str(error).splitlines()[0]}") from None
    return instance


def print_help(dataclass_types: tuple[type, ...], prog: str | None) -> typing.NoReturn:
    """Every key, with its help text and default (as `HfArgumentParser` lists them), then exit."""
    HfArgumentParser(dataclass_types, prog=prog).print_help()
    raise SystemExit(0)


def yaml_problem(error: yaml.YAMLError) -> str:
    """What YAML found and where (``found character '\\t' that cannot start any token at line 2, column 1``).

    The message's first line is only the context (``while scanning for the next token``); the problem and its
    place come after it.
    """
    problem = getattr(error, "problem", None)
    mark = getattr(error, "problem_mark", None)
    if not problem:
        return (str(error).splitlines() or [type(error).__name__])[0]
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    hint = " (YAML indents with spaces, not tabs)" if "'\\t'" in problem else ""
    return f"{problem}{where}{hint}"


def read_config_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"Config file {path} does not exist.")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {yaml_problem(error)}.") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path} must hold a mapping of keys to values.")
    return values


def read_overrides(args: list[str], hints: dict[str, Any], aliases: dict[str, str] | None = None) -> dict[str, Any]:
    """``--key value``, ``--key=value`` and ``--key v1 v2 ...`` (list fields, as ``--help`` shows them), each read
    as its field's type in `hints` (see `read_value`); a bare ``--flag`` means true. Dashes in a key mean
    underscores; an old spelling in `aliases` means its field. ``--no_<flag>`` means ``--<flag> false`` for a bool
    field."""
    aliases = aliases or {}
    overrides: dict[str, Any] = {}
    spelt: dict[str, str] = {}
    index = 0
    while index < len(args):
        arg = args[index]
        if not arg.startswith("--"):
            raise ConfigError(f"Unexpected argument '{arg}'; overrides look like --key value.")
        key, equals, value = arg[2:].partition("=")
        key = key.replace("-", "_")  # --help lists each key with dashes too (--num-train-epochs), as argparse does
        if key in aliases:
            check_spelt_once(spelt, aliases[key], key, "on the command line")
            key = aliases[key]
        else:
            check_spelt_once(spelt, key, key, "on the command line")
        tokens = [value] if equals else []
        while not equals and index + 1 < len(args) and not args[index + 1].startswith("--"):
            tokens.append(args[index + 1])
            index += 1
        overrides[key] = read_value(tokens, hints.get(key, Any), key)
        index += 1
    return negated_flags(overrides, hints)


def read_value(tokens: list[str], hint: Any, key: str) -> Any:
    """The command-line text after ``--key`` as the field's type.

    Text fields (str, or a union with str such as eval_strategy's ``IntervalStrategy | str``, report_to, a hub id
    or model path) keep the text as typed, so that ``--eval_strategy no`` stays the word (YAML reads it as false)
    and a hub id such as ``1e5`` stays a name. Number fields read the text as a number (``--seed 010`` is 10). List
    fields take several values (``--class_names A B C``) or one YAML list (``"[A, B, C]"``). A bare ``--flag`` is
    true for a bool field; any other field needs a value. Everything else is read as YAML (bools, mappings).
    """
    base = _strip_optional(hint)
    members = typing.get_args(base) if typing.get_origin(base) in (typing.Union, types.UnionType) else (base,)
    if not tokens:
        if base is Any or bool in members:
            return True
        raise ConfigError(f"--{key} needs a value.")
    list_member = next((member for member in members if typing.get_origin(member) is list), None)
    if len(tokens) > 1 and list_member is None:
        raise ConfigError(
            f"--{key} takes one value, not {len(tokens)} ({' '.join(tokens)}); quote a value with spaces."
        )
    if _takes_text(members):
        return tokens if len(tokens) > 1 else tokens[0]
    if list_member is not None:
        if len(tokens) == 1 and (listed := _yaml_list(tokens[0])) is not None:
            return listed
        text_elements = typing.get_args(list_member) == (str,)
        return [token if text_elements else _yaml_value(token, key) for token in tokens]
    if base in (int, float) and _parse_number(tokens[0]) is not None:
        return _parse_number(tokens[0])
    return _yaml_value(tokens[0], key)


def _takes_text(members: tuple[Any, ...]) -> bool:
    """Whether a field of one of these types takes text as it is: str, or a str-valued enum (IntervalStrategy)."""
    return any(isinstance(member, type) and issubclass(member, str) for member in members)


def _yaml_list(text: str) -> list | None:
    """One value written as a YAML list (``"[A, B, C]"``), or None for anything else (a file named ``[a].png``)."""
    text = text.strip()
    if not (text.startswith("[") and text.endswith("]")):
        return None
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    return parsed if isinstance(parsed, list) else None


def _yaml_value(text: str, key: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"--{key} {text}: not a value YAML can read ({str(error).splitlines()[0]}).") from None


def off_spelt_no(values: dict[str, Any], hints: dict[str, Any]) -> dict[str, Any]:
    """A bare ``no`` in a YAML file, which YAML 1.1 reads as false, as the word the field means.

    Strategy fields (``eval_strategy: no``, ``save_strategy: no``, ``logging_strategy: no``: enums with a 'no' member)
    take 'no': transformers got False and ended in "False is not a valid IntervalStrategy". ``report_to: no`` means
    'none', the only spelling transformers accepts to turn reporting off.
    """
    spelt: dict[str, Any] = {}
    for key, value in values.items():
        if value is False and key == "report_to":
            value = "none"
        elif value is False and _has_no_member(hints.get(key)):
            value = "no"
        elif key == "report_to" and value == "no":
            value = "none"
        spelt[key] = value
    return spelt


def _has_no_member(hint: Any) -> bool:
    """Whether a field's type includes a str-valued enum with a 'no' member (IntervalStrategy, SaveStrategy)."""
    base = _strip_optional(hint)
    members = typing.get_args(base) if typing.get_origin(base) in (typing.Union, types.UnionType) else (base,)
    return any(
        isinstance(member, type) and issubclass(member, enum.Enum) and "no" in {item.value for item in member}
        for member in members
    )


def negated_flags(overrides: dict[str, Any], hints: dict[str, Any]) -> dict[str, Any]:
    """``--no_<flag>`` (as `HfArgumentParser`'s --help lists it) means ``--<flag> false`` for a bool field."""
    translated: dict[str, Any] = {}
    for key, value in overrides.items():
        flag = key.removeprefix("no_")
        if key.startswith("no_") and key not in hints and _strip_optional(hints.get(flag)) is bool:
            translated[flag] = not _as_bool(value, key)
        else:
            translated[key] = value
    return translated


def old_spellings(dataclass_types: tuple[type, ...]) -> dict[str, str]:
    """Each old spelling a field still answers to, mapped to the field's name: ``{"out": "output_dir"}``.

    The commands share one vocabulary (README, "One vocabulary"); a field renamed to it keeps its old name in its
    metadata's ``aliases`` (``["--out"]``, the form `HfArgumentParser` gives argparse, so ``--help`` lists both).
    """
    aliases: dict[str, str] = {}
    for dataclass_type in dataclass_types:
        for dataclass_field in dataclasses.fields(dataclass_type):
            spellings = dataclass_field.metadata.get("aliases", [])
            for alias in [spellings] if isinstance(spellings, str) else spellings:
                aliases[alias.lstrip("-").replace("-", "_")] = dataclass_field.name
    return aliases


def renamed(values: dict[str, Any], aliases: dict[str, str], where: str) -> dict[str, Any]:
    """A config file's keys with each old spelling replaced by its field's name."""
    spelt: dict[str, str] = {}
    result: dict[str, Any] = {}
    for key, value in values.items():
        name = aliases.get(key, key)
        check_spelt_once(spelt, name, key, where)
        result[name] = value
    return result


def check_spelt_once(spelt: dict[str, str], name: str, key: str, where: str) -> None:
    """Refuse one option given twice under two spellings (``--out a --output_dir b``): which one was meant?"""
    earlier = spelt.setdefault(name, key)
    if earlier != key:
        raise ConfigError(f"--{earlier} and --{key} {where} are the same option ({name}); give it once.")


def field_types(dataclass_types: tuple[type, ...]) -> dict[str, Any]:
    """Every init field's resolved type, across the dataclasses (whose names must not collide)."""
    hints: dict[str, Any] = {}
    for dataclass_type in dataclass_types:
        resolved = typing.get_type_hints(dataclass_type)
        for dataclass_field in dataclasses.fields(dataclass_type):
            if dataclass_field.init:
                hints[dataclass_field.name] = resolved.get(dataclass_field.name, Any)
    return hints


def coerce(value: Any, hint: Any, key: str) -> Any:
    """`value` as the field's type, or a `ConfigError` naming `key`.

    YAML 1.1 reads '2e-4' as text, so numbers written as text become numbers. Neither `HfArgumentParser.parse_dict`
    nor the dataclasses check types, so a value of the wrong kind (a word where a list is wanted, 2.5 where an
    integer is) would otherwise be accepted and fail much later, or not at all: a string given as class_names
    silently became one class per letter. Fields of other types (enums, unions of several types) are left to
    `HfArgumentParser` and the dataclasses' own checks.
    """
    base = _strip_optional(hint)
    if value is None or base is Any:
        return value
    if typing.get_origin(base) is list:
        (element_hint,) = typing.get_args(base) or (Any,)
        if not isinstance(value, list):
            raise ConfigError(f"{key} is {value!r}, not a list; write it as [first, second, ...].")
        if element_hint is str and any(isinstance(element, bool) for element in value):
            raise ConfigError(
                f"{key} holds {value}, which YAML read from yes/no/on/off/true/false: put them in quotes."
            )
        return [coerce(element, element_hint, f"{key}[{index}]") for index, element in enumerate(value)]
    if dict in (base, typing.get_origin(base)) and not isinstance(value, dict):
        raise ConfigError(f"{key} is {value!r}, not a mapping; write it as {{key: value, ...}}.")
    if base is bool:
        return _as_bool(value, key)
    if base in (int, float):
        return _as_number(value, base, key)
    if base is str:
        if isinstance(value, (list, dict)):
            raise ConfigError(f"{key} is {value!r}; give a single value.")
        # A bool stays one: Trainer's resume_from_checkpoint, typed str, takes true for "the newest checkpoint".
        return value if isinstance(value, bool) else str(value)
    return value


def _as_bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    lowered = str(value).lower()
    if lowered not in {"true", "false", "yes", "no", "t", "f", "y", "n", "1", "0"}:
        raise ConfigError(f"{key} is {value!r}; use true or false.")
    return lowered in {"true", "yes", "t", "y", "1"}


def _as_number(value: Any, base: type, key: str) -> int | float:
    """`value` as an int (int fields) or a number (float fields). Numbers keep the kind YAML gave them, so whole
    numbers stay int in float fields: Trainer reads warmup_steps/save_steps 1 as one step, 1.0 as the whole run."""
    number = _parse_number(value)
    if number is None or (base is int and isinstance(number, float) and not number.is_integer()):
        raise ConfigError(f"{key} is {value!r}, which is not {'an integer' if base is int else 'a number'}.")
    return int(number) if base is int else number


def _parse_number(value: Any) -> int | float | None:
    """A YAML number as it is; text such as '10' or '2e-4' (YAML 1.1 leaves it a string) parsed; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        for parse in (int, float):
            try:
                return parse(value)
            except ValueError:
                pass
    return None


def _strip_optional(hint: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        members = [member for member in typing.get_args(hint) if member is not type(None)]
        if len(members) == 1:
            return members[0]
    return hint
