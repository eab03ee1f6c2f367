"""Config keys as NNI matches them, and field paths as users read them.

NNI matches a key to a field ignoring case and underscores, so ``trialConcurrency``,
``trial_concurrency`` and ``TRIALCONCURRENCY`` name one field; tunelab does the same at every
level of a config. Error messages always name a field by its camelCase spelling, the one NNI's
documentation and YAML examples use, whatever spelling the user wrote.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["camel", "join", "normalize", "render_key", "suggest"]


def normalize(key: str) -> str:
    """The form two spellings of one key share: no underscores, lower case."""
    return key.replace("_", "").lower()


def camel(name: str) -> str:
    """``trial_gpu_number`` → ``trialGpuNumber`` (NNI's spelling of its Python field names)."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def suggest(key: object, candidates: Iterable[str]) -> str | None:
    """The candidate closest to ``key`` (compared in normalized form), or None if none is close."""
    if not isinstance(key, str):
        return None
    by_form = {normalize(candidate): candidate for candidate in candidates}
    close = difflib.get_close_matches(normalize(key), list(by_form), n=1, cutoff=0.6)
    return by_form[close[0]] if close else None


def render_key(key: object) -> str:
    """A key as it appears in a field path: as written if plain, quoted otherwise."""
    if isinstance(key, str) and key and key.isprintable() and not any(c in key for c in ".[]"):
        return key
    return f"[{key!r}]"


def join(path: str, key: object) -> str:
    """``join("trainingService", "gpuIndices")`` → ``trainingService.gpuIndices``; ints index."""
    if isinstance(key, int) and not isinstance(key, bool):
        return f"{path}[{key}]"
    text = render_key(key)
    if not path or text.startswith("["):
        return path + text
    return f"{path}.{text}"
