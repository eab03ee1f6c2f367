"""Saving an experiment to one zip file, and loading it on this or another machine.

The zip holds ``tunelab-save.json`` (what was saved), ``experiment/`` (the experiment's folder:
logs, trial folders and a consistent copy of its SQLite file, made with SQLite's backup API so
that saving a running experiment is safe) and, when asked, ``code/`` (the trial code folder).
``manager.json`` is left out: it holds the token of a manager that is gone.

Loading restores the experiment into ``$TUNELAB_HOME/<id>``, stopped; ``tunelab resume`` then
runs it on. An id that already exists here is refused. The trial code goes to the folder given
with ``codeDir`` (it must be empty or absent), or to ``<experiment>/code`` when the zip holds it
and no folder is given; the stored config is pointed at it. A loaded experiment lives in
``$TUNELAB_HOME`` whatever ``experimentWorkingDirectory`` said, and that field is dropped.
Trials that were running when it was saved run again when the copy is resumed: where they ran
is the original's business, and a copy never takes up or ends the original's processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sqlite3
import tempfile
import time
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from tunelab.client._client import ExperimentClient
from tunelab.errors import UsageError
from tunelab.store import DB_FILE, MANAGER_FILE, ExperimentStore, experiment_dirs, tunelab_home

__all__ = ["load_experiment", "save_experiment"]

MANIFEST = "tunelab-save.json"
FORMAT = "tunelab-experiment"
# What a loaded experiment's id may be: it names a folder in $TUNELAB_HOME, so nothing that
# could lead out of it (an id of tunelab's own is 8 lowercase letters and digits).
_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_SKIPPED = {DB_FILE, f"{DB_FILE}-wal", f"{DB_FILE}-shm", MANAGER_FILE, "manager.tmp"}


def save_experiment(
    client: ExperimentClient, directory: Path | None = None, *, include_code: bool = False
) -> Path:
    """Write ``tunelab_experiment_<id>.zip`` into ``directory`` (the current folder if None;
    made if it does not exist, as nnictl makes it) and return its path."""
    target_dir = Path(directory) if directory is not None else Path.cwd()
    if target_dir.exists() and not target_dir.is_dir():
        raise UsageError(f"--path {target_dir}: not a folder; name a folder for the zip")
    target = target_dir / f"tunelab_experiment_{client.id}.zip"
    if target.exists():
        raise UsageError(f"{target} already exists; remove it or choose another --path")
    config = client.config()
    code_dir = config.get("trialCodeDirectory")
    if include_code and (not code_dir or not Path(code_dir).is_dir()):
        raise UsageError(
            f"experiment {client.id}: its trial code folder {code_dir} does not exist any "
            "more; save without --saveCodeDir"
        )
    manifest = {
        "format": FORMAT,
        "version": 1,
        "id": client.id,
        "savedAt": time.time(),
        "trialCodeDirectory": code_dir,
        "hasCode": include_code,
    }
    made = [d for d in (target_dir, *target_dir.parents) if not d.exists()]
    target_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    saved = False
    try:
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(MANIFEST, json.dumps(manifest, indent=2))
            _add_folder(archive, client.dir, "experiment", skip=_SKIPPED)
            with tempfile.TemporaryDirectory() as scratch:
                copy = Path(scratch) / DB_FILE
                _backup(client.dir / DB_FILE, copy)
                archive.write(copy, f"experiment/{DB_FILE}")
            if include_code:
                assert code_dir is not None
                # The zip being written and the experiment may lie inside the code folder.
                away = {partial.resolve(), client.dir.resolve()}
                _add_folder(archive, Path(code_dir), "code", skip=set(), away=away)
        partial.replace(target)
        saved = True
    finally:
        partial.unlink(missing_ok=True)
        if not saved:
            for folder in made:  # deepest first: what this save made, and only that
                with contextlib.suppress(OSError):
                    folder.rmdir()
    return target


def _backup(source: Path, destination: Path) -> None:
    """A consistent copy of a live SQLite file (the manager may be writing it)."""
    reader = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    writer = sqlite3.connect(destination)
    try:
        reader.backup(writer)
    finally:
        writer.close()
        reader.close()


def _add_folder(
    archive: zipfile.ZipFile,
    folder: Path,
    prefix: str,
    skip: set[str],
    away: set[Path] | None = None,
) -> None:
    """Add a folder's files; ``skip``: names left out at its top, ``away``: paths left out."""
    away = away or set()
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        dirs[:] = sorted(d for d in dirs if (here / d).resolve() not in away)
        for name in sorted(files):
            path = here / name
            if (here == folder and name in skip) or path.resolve() in away:
                continue
            if path.is_symlink() or not path.is_file():
                continue
            archive.write(path, f"{prefix}/{path.relative_to(folder).as_posix()}")


def load_experiment(archive_path: Path, code_dir: Path | None = None) -> ExperimentClient:
    """Restore a saved experiment into ``$TUNELAB_HOME`` (stopped); see the module docstring."""
    if not archive_path.is_file():
        what = "is a folder" if archive_path.is_dir() else "no such file"
        raise UsageError(f"--path {archive_path}: {what}; give the zip that experiment save made")
    try:
        archive = zipfile.ZipFile(archive_path)
    except (OSError, zipfile.BadZipFile) as error:
        raise UsageError(
            f"--path {archive_path}: not a zip file tunelab can read ({error})"
        ) from None
    with archive:
        manifest = _manifest(archive, archive_path)
        experiment_id = manifest.get("id")
        if not isinstance(experiment_id, str) or not _ID_PATTERN.fullmatch(experiment_id):
            raise UsageError(
                f"--path {archive_path}: {MANIFEST} names no valid experiment id (got "
                f"{experiment_id!r}); an id is letters, digits, '_' and '-', up to 64"
            )
        existing = experiment_dirs()
        if experiment_id in existing:
            raise UsageError(
                f"experiment {experiment_id} already exists here ({existing[experiment_id]}); "
                f"delete it first (tunelab experiment delete {experiment_id}) to load this copy"
            )
        exp_dir = tunelab_home() / experiment_id
        has_code = any(name.startswith("code/") for name in archive.namelist())
        new_code = _code_target(code_dir, exp_dir, has_code)
        made_code = new_code is not None and has_code and not new_code.exists()
        exp_dir.mkdir(parents=True)  # fails on a folder left there: never removed below
        try:
            _extract(archive, "experiment/", exp_dir)
            if has_code and new_code is not None:
                new_code.mkdir(parents=True, exist_ok=True)
                _extract(archive, "code/", new_code)
            if not (exp_dir / DB_FILE).is_file():
                raise UsageError(f"--path {archive_path}: the save holds no experiment store")
            try:
                stored_id = _rewrite_config(exp_dir, manifest.get("trialCodeDirectory"), new_code)
            except sqlite3.Error as error:
                raise UsageError(
                    f"--path {archive_path}: the saved experiment store cannot be read ({error})"
                ) from None
            if stored_id != experiment_id:
                raise UsageError(
                    f"--path {archive_path}: {MANIFEST} names experiment {experiment_id} but "
                    f"its store holds experiment {stored_id}"
                )
        except BaseException:
            shutil.rmtree(exp_dir, ignore_errors=True)
            if made_code and new_code is not None:
                shutil.rmtree(new_code, ignore_errors=True)
            raise
    return ExperimentClient(experiment_id, exp_dir)


def _manifest(archive: zipfile.ZipFile, path: Path) -> dict[str, Any]:
    try:
        text = archive.read(MANIFEST)
    except KeyError:
        raise UsageError(
            f"--path {path}: not an experiment saved by tunelab experiment save "
            f"(no {MANIFEST} in it)"
        ) from None
    try:
        manifest = json.loads(text)
    except ValueError:
        manifest = None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise UsageError(
            f"--path {path}: its {MANIFEST} is not one that tunelab experiment save writes "
            f"(expected a JSON object with format {FORMAT!r})"
        )
    return manifest


def _code_target(code_dir: Path | None, exp_dir: Path, has_code: bool) -> Path | None:
    if code_dir is None:
        return exp_dir / "code" if has_code else None
    code_dir = Path(code_dir).expanduser().absolute()
    if has_code and code_dir.exists() and (not code_dir.is_dir() or any(code_dir.iterdir())):
        raise UsageError(
            f"--codeDir {code_dir}: the saved trial code goes into a new or empty folder; "
            "this one is not empty"
        )
    if not has_code and not code_dir.is_dir():
        raise UsageError(
            f"--codeDir {code_dir}: no such folder (this save holds no trial code, so the "
            "folder must already hold it)"
        )
    return code_dir


def _extract(archive: zipfile.ZipFile, prefix: str, folder: Path) -> None:
    base = folder.resolve()
    for member in archive.infolist():
        if not member.filename.startswith(prefix) or member.is_dir():
            continue
        relative = PurePosixPath(member.filename[len(prefix) :])
        target = (base / relative).resolve()
        if relative.is_absolute() or ".." in relative.parts or base not in target.parents:
            raise UsageError(f"the save holds a file outside its folder: {member.filename!r}")
        target.parent.mkdir(parents=True, exist_ok=True)
        with archive.open(member) as source, open(target, "wb") as out:
            shutil.copyfileobj(source, out)


def _rewrite_config(exp_dir: Path, old_code: str | None, new_code: Path | None) -> str:
    """Point the stored config at the new code folder; drop experimentWorkingDirectory.
    Returns the id the store holds.

    No manager runs this experiment yet, so this is its only writer (DESIGN.md rule 2)."""
    store = ExperimentStore(exp_dir / DB_FILE)
    try:
        profile = store.experiment()
        config = profile["config"]
        config.pop("experimentWorkingDirectory", None)
        if new_code is not None:
            _replace_code_dir(config, old_code, str(new_code))
        with store.transaction():
            store.update_experiment(config=config)
            # Where the saved experiment's trials ran (process ids, remote folders, Ray
            # tasks) is the original's, not this copy's: a resume of the copy must not take
            # up, or end, the original's trials. Those that ran run again in the copy.
            for trial in store.trials():
                if trial.handle is not None:
                    store.update_trial(trial.sequence, handle=None)
        return str(profile["id"])
    finally:
        store.close()


def _replace_code_dir(config: dict[str, Any], old: str | None, new: str) -> None:
    config["trialCodeDirectory"] = new
    sections = config.get("trainingService")
    for section in sections if isinstance(sections, list) else [sections]:
        if isinstance(section, dict) and section.get("trialCodeDirectory") in (old, None):
            section["trialCodeDirectory"] = new
