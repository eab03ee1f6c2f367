"""The base of every config model: NNI's key matching, and pydantic errors in tunelab's words.

Decisions:

- Keys are matched ignoring case and underscores before pydantic sees them (a "before" model
  validator), so constructors, :meth:`ExperimentConfig.from_dict` and YAML files all accept
  ``trialConcurrency``, ``trial_concurrency`` or ``TRIALCONCURRENCY``. The contents of
  free-form fields (``classArgs``, ``searchSpace``, ``runtimeEnv``) are user data and are never
  touched: the matching runs on config models only.
- A key that matches no field is left for pydantic to refuse (``extra="forbid"``); the error is
  then reported with the closest valid key. One field written twice under two spellings is an
  error, since nothing says which one was meant.
- Types are checked when a model is built or a field assigned (``validate_assignment``);
  required fields and rules between fields are checked by ``validate()``. So a config can be
  built empty and filled in attribute by attribute, as NNI users do.
- pydantic's errors never reach the user: :func:`issues_from` turns each into an
  :class:`~tunelab.errors.Issue` with a camelCase path, a rule and a fix in plain words. The
  values of secret fields are never shown in an issue.
- Assigning an attribute that is not a field raises :class:`UnknownFieldError`, which is both a
  :class:`~tunelab.errors.ConfigError` and an :class:`AttributeError` (NNI raises the latter).
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic_core import ErrorDetails

from tunelab.config._fields import rule_error
from tunelab.config._keys import camel, join, normalize, suggest
from tunelab.errors import ConfigError, Issue

__all__ = [
    "NNI_ONLY_PLATFORMS",
    "SECRET_FIELDS",
    "SUPPORTED_PLATFORMS",
    "ConfigModel",
    "UnknownFieldError",
    "as_input",
    "issues_from",
    "platform_problem",
    "register_platform",
]

SUPPORTED_PLATFORMS = ("local", "remote", "ray")
"""Training services tunelab runs."""

NNI_ONLY_PLATFORMS = (
    "openpai",
    "pai",
    "paiyarn",
    "aml",
    "dlc",
    "kubeflow",
    "frameworkcontroller",
    "adl",
    "hybrid",
)
"""NNI training services that tunelab does not run (``hybrid`` is written as a list in v2)."""

SECRET_FIELDS = frozenset({"password", "sshPassphrase"})
"""camelCase names of fields whose values are never shown, logged or stored."""

# Tags that the training-service unions put into pydantic's error locations.
_SHAPE_TAGS = frozenset({"<one>", "<list>"})
_PLATFORM_TAGS: dict[str, type[ConfigModel]] = {}


class UnknownFieldError(ConfigError, AttributeError):
    """An attribute assigned on a config model that is not one of its fields."""


class ConfigModel(BaseModel):
    """A config model that matches keys as NNI does and reports errors as tunelab issues."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    _key_index: ClassVar[dict[str, str]] = {}
    _children: ClassVar[dict[str, type[ConfigModel]]] = {}
    _key_hints: ClassVar[dict[str, str]] = {}
    """Fixes for keys that are not fields but that users write (NNI v1 names), by normal form."""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls._key_index = {normalize(name): name for name in cls.model_fields}
        cls._children = {}
        for name, field in cls.model_fields.items():
            models = _models_in(field.annotation)
            if len(models) == 1:
                cls._children[name] = models.pop()

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as error:
            raise ConfigError(issues_from(error, type(self))) from None

    # pydantic calls an overridden __init__ for every nested model it validates, which would
    # turn nested errors into ConfigErrors without their path. This one only translates
    # errors, so pydantic may treat it as its own (the marker it sets on BaseModel.__init__).
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    def __setattr__(self, name: str, value: Any) -> None:
        fields = type(self).model_fields
        if not name.startswith("_") and name not in fields:
            close = suggest(name, fields)
            fix = f"did you mean {close!r}?" if close else "fields are " + ", ".join(fields)
            raise UnknownFieldError(
                Issue(name, f"{type(self).__name__} has no such field", name, fix)
            )
        try:
            super().__setattr__(name, value)
        except ValidationError as error:
            raise ConfigError(issues_from(error, type(self))) from None

    def validate(self) -> None:  # type: ignore[override]
        """Check every field's type again, lists and mappings changed in place included.

        :meth:`ExperimentConfig.validate` also checks required fields and the rules between
        fields; this one is enough for a part of a config on its own.

        Raises:
            ConfigError: one issue per wrong value.
        """
        try:
            type(self).model_validate(as_input(self))
        except ValidationError as error:
            raise ConfigError(issues_from(error, type(self))) from None

    @classmethod
    def field_names(cls) -> list[str]:
        """The camelCase names of this model's fields, in declaration order."""
        return [camel(name) for name in cls.model_fields]

    @model_validator(mode="before")
    @classmethod
    def _match_keys(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        matched: dict[Any, Any] = {}
        spelling: dict[str, str] = {}
        for key, value in data.items():
            name = cls._key_index.get(normalize(key)) if isinstance(key, str) else None
            if name is None:
                matched[key] = value  # refused by pydantic as an unknown field
            elif name in spelling:
                raise rule_error(
                    f"given twice, as {spelling[name]!r} and {key!r}",
                    "keep one of them (case and underscores do not matter in keys)",
                    at=camel(name),
                    value=value,
                )
            else:
                spelling[name] = key
                matched[name] = value
        return matched


def as_input(value: Any) -> Any:
    """A model as the mapping it could be built from again (to validate it afresh)."""
    if isinstance(value, ConfigModel):
        return {name: as_input(getattr(value, name)) for name in type(value).model_fields}
    if isinstance(value, list):
        return [as_input(item) for item in value]
    return value


def register_platform(tag: str, model: type[ConfigModel]) -> None:
    """Tell the error translation which model a training-service union tag stands for."""
    _PLATFORM_TAGS[tag] = model


def _models_in(annotation: Any) -> set[type[ConfigModel]]:
    if isinstance(annotation, type) and issubclass(annotation, ConfigModel):
        return {annotation}
    found: set[type[ConfigModel]] = set()
    for arg in typing.get_args(annotation):
        found |= _models_in(arg)
    return found


def platform_problem(value: object) -> tuple[str, str]:
    """The rule and fix for a training-service platform tunelab cannot use."""
    supported = ", ".join(SUPPORTED_PLATFORMS)
    if not isinstance(value, str):
        return "must be the name of a training service", f"write one of {supported}"
    if value.lower() in NNI_ONLY_PLATFORMS:
        return (
            f"{value!r} is an NNI training service that tunelab does not run",
            f"use one of {supported}",
        )
    close = suggest(value, SUPPORTED_PLATFORMS)
    hint = f"did you mean {close!r}? " if close else ""
    return "unknown training service", f"{hint}tunelab runs {supported}"


def _locate(
    loc: tuple[int | str, ...], root: type[ConfigModel]
) -> tuple[str, type[ConfigModel] | None]:
    """The camelCase path of a pydantic location, and the model found there (or None)."""
    path = ""
    current: type[ConfigModel] | None = root
    for element in loc:
        if element in _SHAPE_TAGS:
            continue
        if isinstance(element, str) and element in _PLATFORM_TAGS:
            current = _PLATFORM_TAGS[element]
            continue
        if current is not None and isinstance(element, str) and element in current.model_fields:
            path = join(path, camel(element))
            current = current._children.get(element)
            continue
        path = join(path, element)
        if not isinstance(element, int):
            current = None
    return path, current


def _unknown_key(parent: type[ConfigModel] | None, key: object) -> str:
    if parent is None:
        return "remove it"
    hint = parent._key_hints.get(normalize(key)) if isinstance(key, str) else None
    if hint:
        return hint
    close = suggest(key, parent.field_names())
    if close:
        return f"did you mean {close!r}?"
    return "remove it; valid fields are " + ", ".join(parent.field_names())


def _platform_of(value: object) -> object:
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str) and normalize(key) == "platform":
                return item
    return None


_TYPE_WORDS = {
    "int_type": ("must be a whole number", None),
    "float_type": ("must be a number", None),
    "bool_type": ("must be true or false", None),
    "string_type": ("must be a string", None),
    "dict_type": ("must be a mapping (key: value pairs)", None),
    "model_type": ("must be a mapping of fields (key: value pairs)", None),
    "model_attributes_type": ("must be a mapping of fields (key: value pairs)", None),
    "list_type": ("must be a list", None),
    "finite_number": ("must be a finite number", None),
    "too_short": ("must not be empty", None),
}


def _words(error: ErrorDetails) -> tuple[str, str | None]:
    kind = error["type"]
    context: dict[str, Any] = dict(error.get("ctx") or {})
    value = error.get("input")
    if kind == "tunelab":
        return str(context["rule"]), context.get("fix")
    if kind == "int_type":
        if isinstance(value, bool):
            return "must be a whole number, not true/false", None
        if isinstance(value, str):
            return "must be a whole number, not a string", "write the number without quotes"
        if isinstance(value, float):
            return "must be a whole number", "write it without a fraction or decimal point"
    if kind == "float_type" and isinstance(value, str):
        return "must be a number, not a string", "write the number without quotes"
    if kind == "bool_type":
        return "must be true or false", "write true or false without quotes"
    if kind in _TYPE_WORDS:
        return _TYPE_WORDS[kind]
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        words = {
            "greater_than": "greater than",
            "greater_than_equal": "at least",
            "less_than": "less than",
            "less_than_equal": "at most",
        }[kind]
        limit = next(iter(context.values()), "?")
        return f"must be {words} {limit}", None
    if kind == "literal_error":
        return f"must be {context.get('expected', 'one of the allowed values')}", None
    return "is not a valid value", None


def issues_from(error: ValidationError, root: type[ConfigModel]) -> list[Issue]:
    """Turn a pydantic ``ValidationError`` raised for ``root`` into tunelab issues."""
    issues = []
    for detail in error.errors(include_url=False):
        loc = tuple(detail["loc"])
        kind = detail["type"]
        value = detail.get("input")
        context = detail.get("ctx") or {}

        if kind in ("extra_forbidden", "invalid_key") and loc:
            parent_path, parent = _locate(loc[:-1], root)
            where = join(parent_path, loc[-1])
            issues.append(Issue(where, "unknown field", loc[-1], _unknown_key(parent, loc[-1])))
            continue
        if len(loc) > 1 and loc[-1] == "[key]":  # a mapping key of the wrong type
            where, _ = _locate(loc[:-1], root)
            issues.append(Issue(where or "config", "keys must be strings", value, "quote the key"))
            continue

        where, _ = _locate(loc, root)
        if kind == "union_tag_not_found":
            where = join(where, "platform")
            rule = "must be given"
            fix: str | None = "write platform: " + ", ".join(SUPPORTED_PLATFORMS)
        elif kind == "union_tag_invalid":
            where, value = join(where, "platform"), _platform_of(value)
            rule, fix = platform_problem(value)
        else:
            rule, fix = _words(detail)
            if "at" in context:
                where = join(where, context["at"])
            if "value" in context:
                value = context["value"]

        # Never show a secret; and a missing platform has no value to show.
        show = where.rsplit(".", 1)[-1] not in SECRET_FIELDS and kind != "union_tag_not_found"
        issues.append(Issue(where or "config", rule, value, fix, show_value=show))
    return issues
