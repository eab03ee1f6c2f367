"""``tunelab algo``: register custom tuners and assessors by name, as ``nnictl algo`` does.

The tuners (numpy, scipy) are imported inside the commands, so that ``tunelab`` starts fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import yaml
from rich.console import Console

from tunelab.cli._common import table
from tunelab.errors import UsageError

__all__ = ["algo"]

out = Console(highlight=False, soft_wrap=True)


def _builtin() -> set[str]:
    from tunelab.assessors import available_assessors
    from tunelab.tuners import builtin_names

    return builtin_names() | set(available_assessors()) | {"Curvefitting"}


@click.group()
def algo() -> None:
    """Register custom tuners and assessors, usable by name in any config."""


@algo.command("register")
@click.option(
    "--meta_path",
    "--meta-path",
    "-m",
    "meta_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="YAML with algoType (tuner|assessor), builtinName, className[, classArgsValidator, "
    "codeDirectory].",
)
def register(meta_path: str) -> None:
    """Register an algorithm from a meta file (NNI's format)."""
    path = Path(meta_path)
    try:
        meta = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise UsageError(f"{meta_path}: cannot be read ({error.strerror})") from None
    except yaml.YAMLError as error:
        raise UsageError(f"{meta_path}: not valid YAML ({error})") from None
    if not isinstance(meta, dict):
        raise UsageError(f"{meta_path}: must be a mapping of algoType, builtinName, className")
    code_directory = meta.get("codeDirectory")
    if code_directory and not Path(code_directory).is_absolute():
        meta["codeDirectory"] = str((path.parent / code_directory).resolve())
    from tunelab.tuners import register_algorithm

    kind, name = register_algorithm(meta, _builtin())
    out.print(f"Registered {kind} {name}: use '{kind}: {{name: {name}}}' in a config.")


@algo.command("unregister")
@click.argument("name")
def unregister(name: str) -> None:
    """Remove a registered algorithm."""
    from tunelab.tuners import unregister_algorithm

    kind = unregister_algorithm(name, _builtin())
    out.print(f"Unregistered {kind} {name}.")


@algo.command("show")
@click.argument("name")
def show(name: str) -> None:
    """Show one algorithm (built-in or registered)."""
    from tunelab.assessors import available_assessors
    from tunelab.tuners import available_tuners, registered_algorithms

    for kind, entries in registered_algorithms().items():
        for registered, entry in entries.items():
            if registered.lower() == name.lower():
                out.print_json(json.dumps({"name": registered, "algoType": kind, **entry}))
                return
    builtin = {n.lower(): ("tuner", n) for n in available_tuners()}
    builtin.update({n.lower(): ("assessor", n) for n in available_assessors()})
    if name.lower() in builtin:
        kind, proper = builtin[name.lower()]
        out.print_json(json.dumps({"name": proper, "algoType": kind, "builtin": True}))
        return
    raise UsageError(f"no algorithm named {name!r}; see 'tunelab algo list'")


@algo.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_algorithms(as_json: bool) -> None:
    """List built-in and registered algorithms."""
    from tunelab.assessors import available_assessors
    from tunelab.tuners import available_tuners, registered_algorithms

    rows = [(n, "tuner", "built-in", "") for n in available_tuners()]
    rows += [(n, "assessor", "built-in", "") for n in available_assessors()]
    for kind, entries in registered_algorithms().items():
        rows += [(n, kind, "registered", e["className"]) for n, e in sorted(entries.items())]
    if as_json:
        keys = ("name", "algoType", "source", "className")
        out.print_json(json.dumps([dict(zip(keys, row, strict=True)) for row in rows]))
        return
    grid = table("name", "type", "source", "class")
    for row in rows:
        grid.add_row(*row)
    out.print(grid)
