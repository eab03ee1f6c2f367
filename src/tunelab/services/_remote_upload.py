"""What the remote training service uploads: the trial code directory and the trial side.

The code directory is scanned on this machine first, honouring the ignore files at its top
(``.nniignore``, NNI's name, and ``.tunelabignore``; both in .gitignore syntax, read with
pathspec). More than :data:`MAX_FILES` files or :data:`MAX_BYTES` bytes after ignores is
refused before anything is sent, with a message that names the count or the size, the limit,
the biggest offenders and the line to add to the ignore file (field case B29). Symbolic links
are sent as links, as NNI does.

Everything goes over the SSH connection as one tar stream unpacked by the host's ``tar``: the
code under ``code/``, the trial side (``tunelab/__init__.py``, ``tunelab/trial``,
``tunelab/compat`` with the ``nni`` shim) under ``lib/``, and the trial keeper under ``tools/``.
The stream is not compressed: trial code is small, and the hosts are usually near.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import stat
import tarfile
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pathspec

from tunelab.errors import ConfigError, Issue

__all__ = [
    "IGNORE_FILES",
    "MAX_BYTES",
    "MAX_FILES",
    "CodeManifest",
    "Entry",
    "scan_code_dir",
    "support_files",
    "write_tar",
]

logger = logging.getLogger("tunelab.services.remote")

MAX_FILES = 2000
MAX_BYTES = 300 * 1024 * 1024
IGNORE_FILES = (".nniignore", ".tunelabignore")
# A walk stops counting here: the message then says "more than".
_SCAN_CAP = 200_000


@dataclass(frozen=True)
class Entry:
    """One file, symbolic link or folder of the code directory, by its path relative to it."""

    path: str
    size: int
    mtime_ns: int
    mode: int
    link: str | None = None
    folder: bool = False


@dataclass
class CodeManifest:
    """The files of a code directory that are uploaded, after ignores."""

    root: Path
    entries: dict[str, Entry]

    @property
    def total_bytes(self) -> int:
        return sum(entry.size for entry in self.entries.values())

    @property
    def file_count(self) -> int:
        """Files and links: folders are sent too (a trial may write into an empty one), but
        do not count towards the limit."""
        return sum(not entry.folder for entry in self.entries.values())

    def digest(self, extra: bytes = b"") -> str:
        """A fingerprint of the listing (paths, sizes, times, modes) and of ``extra``."""
        listing = sorted(
            (e.path, e.size, e.mtime_ns, e.mode, e.link, e.folder) for e in self.entries.values()
        )
        data = json.dumps(listing).encode() + extra
        return hashlib.sha256(data).hexdigest()[:32]

    def changed_since(self, before: dict[str, Entry] | None) -> list[Entry]:
        """The entries that are new or differ from ``before`` (all of them when None)."""
        if before is None:
            return list(self.entries.values())
        return [entry for path, entry in self.entries.items() if before.get(path) != entry]


def _ignore_spec(code_dir: Path) -> pathspec.GitIgnoreSpec | None:
    lines: list[str] = []
    for name in IGNORE_FILES:
        path = code_dir / name
        if path.is_file():
            lines.extend(path.read_text(encoding="utf-8", errors="replace").splitlines())
    return pathspec.GitIgnoreSpec.from_lines(lines) if lines else None


def scan_code_dir(code_dir: Path) -> CodeManifest:
    """List what would be uploaded from ``code_dir``, refusing what is over the limits.

    Raises:
        ConfigError: the folder is missing, or holds more than :data:`MAX_FILES` files or
            :data:`MAX_BYTES` bytes after the ignore files are applied.
    """
    if not code_dir.is_dir():
        raise ConfigError(
            Issue(
                "trialCodeDirectory",
                "must be an existing folder",
                str(code_dir),
                "point trialCodeDirectory at the folder that holds the trial code",
            )
        )
    spec = _ignore_spec(code_dir)
    entries: dict[str, Entry] = {}
    capped = False
    for top, dirs, files in os.walk(code_dir):
        rel_top = os.path.relpath(top, code_dir).replace(os.sep, "/")
        prefix = "" if rel_top == "." else rel_top + "/"
        kept_dirs = []
        for name in sorted(dirs):
            rel = prefix + name
            full = os.path.join(top, name)
            if spec is not None and spec.match_file(rel + "/"):
                continue
            if os.path.islink(full):
                files.append(name)  # a link to a folder is sent as the link itself
            else:
                kept_dirs.append(name)
                with contextlib.suppress(FileNotFoundError):
                    mode = stat.S_IMODE(os.lstat(full).st_mode)
                    entries[rel] = Entry(rel, 0, 0, mode, folder=True)
        dirs[:] = kept_dirs
        for name in sorted(files):
            rel = prefix + name
            if spec is not None and spec.match_file(rel):
                continue
            entry = _entry(os.path.join(top, name), rel)
            if entry is not None:
                entries[rel] = entry
        if len(entries) > _SCAN_CAP:  # folders included: a cap, not the limit
            capped = True
            break
    manifest = CodeManifest(code_dir, entries)
    _check_limits(manifest, capped)
    links = [entry.path for entry in entries.values() if entry.link is not None]
    if links:
        logger.warning(
            "Code directory %s: %d symbolic link(s) are uploaded as links (%s)",
            code_dir,
            len(links),
            ", ".join(links[:3]) + (", ..." if len(links) > 3 else ""),
        )
    return manifest


def _entry(full: str, rel: str) -> Entry | None:
    try:
        info = os.lstat(full)
    except FileNotFoundError:
        return None  # removed while we walked
    if stat.S_ISLNK(info.st_mode):
        return Entry(rel, 0, info.st_mtime_ns, stat.S_IMODE(info.st_mode), os.readlink(full))
    if not stat.S_ISREG(info.st_mode):
        return None  # sockets, fifos, devices: nothing a trial could use from a copy
    return Entry(rel, info.st_size, info.st_mtime_ns, stat.S_IMODE(info.st_mode))


def _size(count: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            return f"{count:,.0f} {unit}" if unit == "bytes" else f"{count:,.1f} {unit}"
        count /= 1024
    return f"{count:,.1f} TB"  # pragma: no cover - the loop returns at GB


def _check_limits(manifest: CodeManifest, capped: bool) -> None:
    count, total = manifest.file_count, manifest.total_bytes
    too_many, too_big = count > MAX_FILES, total > MAX_BYTES
    if not too_many and not too_big:
        return

    problems, examples = [], []
    if too_many:
        shown = f"more than {_SCAN_CAP:,}" if capped else f"{count:,}"
        problems.append(f"{shown} files (limit {MAX_FILES:,})")
        folders = Counter(
            path.split("/", 1)[0] + "/"
            for path, entry in manifest.entries.items()
            if "/" in path and not entry.folder
        )
        top = folders.most_common(3)
        if top:
            problems[-1] += ", most in " + ", ".join(f"{name} ({n:,})" for name, n in top)
            examples.append(top[0][0])
    if too_big:
        problems.append(f"{_size(total)} (limit {_size(MAX_BYTES)})")
        ranked = sorted(manifest.entries.values(), key=lambda e: e.size, reverse=True)
        # The files that matter: a twentieth of the total or more (always the biggest one).
        largest = [e for e in ranked[:3] if e.size * 20 >= total] or ranked[:1]
        problems[-1] += ", largest " + ", ".join(f"{e.path} ({_size(e.size)})" for e in largest)
        examples.append(largest[0].path)
    ignore = manifest.root / IGNORE_FILES[0]
    raise ConfigError(
        Issue(
            "trialCodeDirectory",
            "too much to upload to remote hosts after ignore rules: " + "; ".join(problems),
            str(manifest.root),
            f"list what trials do not need in {ignore} (.gitignore syntax), for example "
            + " and ".join(repr(example) for example in examples),
        )
    )


def support_files() -> dict[str, bytes]:
    """The trial side and the trial keeper by their path in the upload (``lib/``, ``tools/``).

    Standard-library modules only: what ``import tunelab`` and ``import nni`` need in a trial.
    """
    package = Path(__file__).resolve().parent.parent  # src/tunelab
    found: dict[str, bytes] = {"lib/tunelab/__init__.py": (package / "__init__.py").read_bytes()}
    for sub in ("trial", "compat"):
        for path in sorted((package / sub).rglob("*.py")):
            rel = path.relative_to(package).as_posix()
            found[f"lib/tunelab/{rel}"] = path.read_bytes()
    found["tools/tunelab_keeper.py"] = (Path(__file__).parent / "_remote_keeper.py").read_bytes()
    return found


def write_tar(
    out: IO[bytes],
    manifest: CodeManifest,
    entries: Iterable[Entry],
    extra: dict[str, bytes] | None = None,
) -> int:
    """Write ``entries`` (under ``code/``) and ``extra`` files as an uncompressed tar stream.

    Returns:
        The number of code entries written (a file removed since the scan is left out).
    """
    written = 0
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            full = manifest.root / entry.path
            try:
                info = tar.gettarinfo(str(full), arcname="code/" + entry.path)
            except FileNotFoundError:
                logger.warning("Code file %s vanished before upload", full)
                continue
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if entry.folder:
                info.mtime = time.time()
            if info.isreg():
                with open(full, "rb") as file:
                    tar.addfile(info, file)
            else:
                tar.addfile(info)
            written += 1
        for name, data in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return written
