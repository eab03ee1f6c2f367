"""Errors that tunelab raises for bad input.

Every user-facing error carries one or more *issues*. An issue names the place (a config field
path such as ``trainingService.gpuIndices`` or a search-space parameter such as ``lr``), the
rule that was broken, the value received and, where one exists, how to fix it. ``str(error)``
is one line per issue, so the CLI can print it and exit 2 without a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ConfigError",
    "Issue",
    "NoMoreTrials",
    "SearchSpaceError",
    "TunelabError",
    "UsageError",
]


@dataclass(frozen=True)
class Issue:
    """One broken rule: where, what rule, what was received, and how to fix it."""

    where: str
    rule: str
    value: object = None
    fix: str | None = None
    show_value: bool = True

    def __str__(self) -> str:
        text = f"{self.where}: {self.rule}" if self.where else self.rule
        if self.show_value:
            text += f" (got {_short_repr(self.value)})"
        if self.fix:
            text += f"; {self.fix}"
        return text


def _short_repr(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class TunelabError(Exception):
    """Base class of the errors tunelab raises on purpose."""


class UsageError(TunelabError):
    """A request that cannot be carried out as asked (bad argument, wrong state)."""


class _IssuesError(TunelabError):
    kind = "error"

    def __init__(self, issues: list[Issue] | Issue | str) -> None:
        if isinstance(issues, str):
            issues = [Issue("", issues, show_value=False)]
        elif isinstance(issues, Issue):
            issues = [issues]
        self.issues: list[Issue] = list(issues)
        super().__init__(self._message())

    def _message(self) -> str:
        if len(self.issues) == 1:
            return f"{self.kind}: {self.issues[0]}"
        lines = "; ".join(str(issue) for issue in self.issues)
        return f"{self.kind} ({len(self.issues)} problems): {lines}"


class ConfigError(_IssuesError):
    """An experiment config that cannot be used as written."""

    kind = "invalid config"


class SearchSpaceError(_IssuesError):
    """A search space that cannot be sampled; one issue per bad parameter."""

    kind = "invalid search space"


class NoMoreTrials(TunelabError):
    """Raised by a tuner that has nothing left to suggest (a finite space is exhausted)."""
