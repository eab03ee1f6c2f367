"""``tunelab config`` (show a stored config, check a file) and ``tunelab platform clean``."""

from __future__ import annotations

import click
import yaml

from tunelab.cli._common import note_v1_conversion, say, target
from tunelab.client import clean_platform, live_experiments, load_config_file, runnable_config
from tunelab.errors import UsageError

__all__ = ["config_group", "platform"]


@click.group("config")
def config_group() -> None:
    """Check config files; show an experiment's config."""


@config_group.command("show")
@click.argument("experiment_id", required=False)
def config_show(experiment_id: str | None) -> None:
    """Print an experiment's stored config as YAML (canonical form, without secrets)."""
    config = target(experiment_id).config()
    click.echo(yaml.safe_dump(config, sort_keys=False, allow_unicode=True, width=99), nl=False)


@config_group.command("check")
@click.argument("config_file", type=click.Path())
def config_check(config_file: str) -> None:
    """Validate a config and its search space; start nothing."""
    config = load_config_file(config_file)
    config_json = runnable_config(config)
    note_v1_conversion(config)
    space = config_json.get("searchSpace") or {}
    say(
        f"{config_file}: valid ({len(space)} parameter{'s' if len(space) != 1 else ''}, "
        f"tuner {config_json.get('tuner', {}).get('name')}, "
        f"{config_json.get('trialConcurrency')} at a time)"
    )


@click.group()
def platform() -> None:
    """Manage what tunelab leaves on training platforms."""


def _platform_names(config: dict[str, object]) -> set[str]:
    sections = config.get("trainingService") or {"platform": "local"}
    listed = sections if isinstance(sections, list) else [sections]
    return {str(s.get("platform", "local")) for s in listed if isinstance(s, dict)}


@platform.command("clean")
@click.option("--config", "-c", "config_file", required=True, help="A config naming the platform.")
def platform_clean(config_file: str) -> None:
    """Remove everything tunelab left on the config's training service (the folders of every
    experiment on its remote machines). Refused while an experiment runs there."""
    config_json = load_config_file(config_file).to_json(include_secrets=True)
    wanted = _platform_names(config_json) - {"local"}
    busy = []
    for client in live_experiments():
        try:
            if _platform_names(client.config()) & wanted:
                busy.append(client.id)
        except Exception:  # an unreadable store: not ours to judge
            continue
    if busy:
        raise UsageError(
            f"experiment {', '.join(busy)} runs on {', '.join(sorted(wanted))}; stop it first "
            f"(tunelab stop {busy[0] if len(busy) == 1 else '--all'})"
        )
    names = clean_platform(config_json)
    say(f"Cleaned what tunelab left on {names}.")
