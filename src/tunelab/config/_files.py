"""Reading YAML and JSON files (configs, search spaces) as UTF-8, with errors that name a line.

Decisions:

- Files are read as bytes and decoded as UTF-8 (a byte-order mark is allowed), whatever the
  locale, so a config with non-ASCII text loads the same under ``LC_ALL=C``.
- YAML is read with ``safe_load`` semantics; a key written twice in one mapping is an error
  (PyYAML would silently keep the last one), in YAML and in JSON alike.
- A problem is reported as an :class:`~tunelab.errors.Issue` whose place is ``file:line`` when
  the parser says where it is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tunelab.errors import ConfigError, Issue

__all__ = ["FileProblem", "parse_json", "parse_yaml", "read_structured", "read_text"]


class FileProblem(Exception):
    """A file that cannot be read or parsed; ``where`` is ``file`` or ``file:line``."""

    def __init__(self, where: str, rule: str, fix: str | None = None) -> None:
        super().__init__(f"{where}: {rule}")
        self.where = where
        self.rule = rule
        self.fix = fix

    def issue(self) -> Issue:
        return Issue(self.where, self.rule, fix=self.fix, show_value=False)

    def error(self) -> ConfigError:
        return ConfigError(self.issue())


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in mapping
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a plain value", key_node.start_mark
            ) from None
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"the key {key!r} is given twice", key_node.start_mark
            )
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def read_text(path: Path) -> str:
    """The text of a UTF-8 file.

    Raises:
        FileProblem: the file is missing, unreadable, or not UTF-8.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileProblem(str(path), "file not found", "check the path") from None
    except IsADirectoryError:
        raise FileProblem(str(path), "is a folder, not a file", "name a file") from None
    except OSError as error:
        raise FileProblem(str(path), f"cannot be read: {error.strerror or error}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise FileProblem(
            str(path),
            f"is not UTF-8 text (byte {data[error.start]:#04x} at offset {error.start})",
            "save the file as UTF-8",
        ) from None


def parse_yaml(text: str, name: str) -> Any:
    """Parse YAML text; ``name`` is the file name used in errors."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: plain data only
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{name}:{mark.line + 1}" if mark is not None else name
        column = f" (column {mark.column + 1})" if mark is not None else ""
        problem = _one_line(" ".join(filter(None, [error.context, error.problem])))
        raise FileProblem(where, f"YAML syntax error{column}: {problem}") from None
    except yaml.YAMLError as error:
        raise FileProblem(name, f"YAML error: {_one_line(str(error))}") from None
    except RecursionError:
        raise FileProblem(name, "YAML error: nested too deeply") from None


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    mapping: dict[str, Any] = {}
    for key, value in pairs:
        if key in mapping:
            raise ValueError(f"the key {key!r} is given twice")
        mapping[key] = value
    return mapping


def parse_json(text: str, name: str) -> Any:
    """Parse JSON text; ``name`` is the file name used in errors."""
    try:
        return json.loads(text, object_pairs_hook=_unique_pairs)
    except json.JSONDecodeError as error:
        raise FileProblem(
            f"{name}:{error.lineno}", f"JSON syntax error (column {error.colno}): {error.msg}"
        ) from None
    except (ValueError, RecursionError) as error:
        raise FileProblem(name, f"JSON error: {_one_line(str(error))}") from None


def read_structured(path: Path, *, json_first: bool) -> Any:
    """Read a YAML or JSON file.

    Args:
        path: The file.
        json_first: Try JSON, then YAML (NNI's rule for search-space files); otherwise the
            file is JSON if its name ends in ``.json`` and YAML if not.

    Raises:
        FileProblem: the file cannot be read or parsed.
    """
    text = read_text(path)
    name = str(path)
    is_json = path.suffix.lower() == ".json"
    if not json_first:
        return parse_json(text, name) if is_json else parse_yaml(text, name)
    try:
        return parse_json(text, name)
    except FileProblem as json_problem:
        try:
            return parse_yaml(text, name)
        except FileProblem as yaml_problem:
            raise (json_problem if is_json else yaml_problem) from None
