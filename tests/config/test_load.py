"""load_config: files, formats, encodings, and errors that name the file and line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from config_support import SPACE, VALID, Project, valid

from tunelab.config import ExperimentConfig, load_config
from tunelab.errors import ConfigError


def test_yaml_config_loads(project: Project) -> None:
    config = project.load(VALID)

    assert isinstance(config, ExperimentConfig)
    assert config.v1_converted is False
    assert config.to_json()["searchSpace"] == SPACE


def test_json_config_loads(project: Project) -> None:
    config = project.load(VALID, name="config.json")

    assert config.to_json()["trialConcurrency"] == 2


def test_yaml_without_json_suffix_may_hold_json_text(project: Project) -> None:
    path = project.folder / "config.yml"
    path.write_text(json.dumps(VALID), encoding="utf-8")

    assert load_config(path).to_json()["experimentName"] == "demo"


def test_path_may_be_a_string(project: Project) -> None:
    path = project.write(VALID)

    assert load_config(str(path)).trial_concurrency == 2


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yml: file not found"):
        load_config(tmp_path / "nope.yml")


def test_folder_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a folder, not a file"):
        load_config(tmp_path)


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n", "---\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "config.yml"
    path.write_text(text, encoding="utf-8")

    with pytest.raises(ConfigError, match=r"config\.yml: the config file is empty"):
        load_config(path)


@pytest.mark.parametrize(
    ("text", "kind"), [("- a\n- b\n", "list"), ("just text\n", "str"), ("3\n", "int")]
)
def test_file_that_is_not_a_mapping(tmp_path: Path, text: str, kind: str) -> None:
    path = tmp_path / "config.yml"
    path.write_text(text, encoding="utf-8")

    with pytest.raises(ConfigError, match=rf"must hold a mapping of field names.*got '{kind}'"):
        load_config(path)


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text("trialConcurrency: 2\ntuner:\n  name: TPE\n bad: [1,\n", encoding="utf-8")

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    message = str(caught.value)
    assert f"{path}:4" in message
    assert "YAML syntax error" in message
    assert "\n" not in message


def test_json_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{\n  "trialConcurrency": 2,\n  "tuner": }\n', encoding="utf-8")

    with pytest.raises(ConfigError, match=rf"{path}:3: JSON syntax error"):
        load_config(path)


def test_yaml_key_given_twice_in_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text("trialConcurrency: 2\ntrialConcurrency: 3\n", encoding="utf-8")

    with pytest.raises(ConfigError, match=rf"{path}:2: .*'trialConcurrency' is given twice"):
        load_config(path)


def test_json_key_given_twice_in_file(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"trialConcurrency": 2, "trialConcurrency": 3}', encoding="utf-8")

    with pytest.raises(ConfigError, match="'trialConcurrency' is given twice"):
        load_config(path)


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_bytes("experimentName: caf\u00e9\n".encode("latin-1"))

    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_config(path)


def test_byte_order_mark_is_accepted(project: Project) -> None:
    path = project.folder / "config.yml"
    import yaml

    path.write_bytes(b"\xef\xbb\xbf" + yaml.safe_dump(VALID).encode("utf-8"))

    assert load_config(path).experiment_name == "demo"


def test_yaml_dates_and_other_non_json_values_are_refused(project: Project) -> None:
    path = project.folder / "config.yml"
    path.write_text(
        "experimentName: 2024-01-02\n"
        + "\n".join(f"{k}: {json.dumps(v)}" for k, v in valid(experimentName=None).items()),
        encoding="utf-8",
    )

    with pytest.raises(ConfigError, match=r"experimentName: must be a string"):
        load_config(path)


def test_non_ascii_path_and_content(tmp_path: Path) -> None:
    folder = tmp_path / "expérience 実験"
    folder.mkdir()
    (folder / "espace.json").write_text(
        json.dumps({"α": {"_type": "choice", "_value": ["é"]}}), encoding="utf-8"
    )
    (folder / "code ü").mkdir()
    config = valid(
        experimentName="réseau ニューラル",
        searchSpaceFile="espace.json",
        trialCodeDirectory="code ü",
        trialCommand="python3 entraîner.py --nom 'ü'",
    )
    path = Project(folder).write(config)

    canonical = load_config(path).to_json()

    assert canonical["experimentName"] == "réseau ニューラル"
    assert canonical["searchSpace"] == {"α": {"_type": "choice", "_value": ["é"]}}
    assert canonical["trialCodeDirectory"] == str(folder / "code ü")


@pytest.mark.parametrize("utf8_mode", ["0", None], ids=["utf8-mode-off", "default"])
def test_non_ascii_config_under_c_locale(tmp_path: Path, utf8_mode: str | None) -> None:
    """The file is read as UTF-8 even when the locale says ASCII.

    With ``PYTHONUTF8=0`` Python really uses ASCII for text files and file names under
    ``LC_ALL=C``; by default it switches to UTF-8 mode there (PEP 540).
    """
    folder = tmp_path / "données"
    folder.mkdir()
    (folder / "espace.json").write_text(
        json.dumps({"taux": {"_type": "choice", "_value": ["é"]}}), encoding="utf-8"
    )
    (folder / "config.yml").write_text(
        textwrap.dedent(
            """\
            experimentName: réseau ニューラル
            searchSpaceFile: espace.json
            trialCommand: python3 entraîner.py
            trialConcurrency: 1
            tuner:
              name: TPE
            """
        ),
        encoding="utf-8",
    )
    script = textwrap.dedent(
        """\
        import json, sys
        from tunelab.config import load_config
        config = load_config(sys.argv[1])
        sys.stdout.buffer.write(json.dumps(config.to_json(), ensure_ascii=True).encode())
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG"))}
    env.update(LC_ALL="C", LANG="C", PYTHONIOENCODING="ascii")
    if utf8_mode is not None:
        env["PYTHONUTF8"] = utf8_mode

    done = subprocess.run(
        [sys.executable, "-c", script, str(folder / "config.yml")],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr.decode("utf-8", "replace")
    canonical = json.loads(done.stdout)
    assert canonical["experimentName"] == "réseau ニューラル"
    assert canonical["trialCommand"] == "python3 entraîner.py"
    assert canonical["searchSpace"] == {"taux": {"_type": "choice", "_value": ["é"]}}
    # Under an ASCII file-system encoding the path comes back surrogate-escaped: same bytes.
    assert os.fsencode(canonical["trialCodeDirectory"]) == os.fsencode(folder)


def test_relative_paths_are_read_from_the_config_folder(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (project.folder / "code").mkdir()
    path = project.write(valid(trialCodeDirectory="code", experimentWorkingDirectory="runs"))
    monkeypatch.chdir(elsewhere)

    canonical = load_config(path).to_json()

    assert canonical["trialCodeDirectory"] == str(project.folder / "code")
    assert canonical["searchSpaceFile"] == str(project.folder / "search_space.json")
    assert canonical["experimentWorkingDirectory"] == str(project.folder / "runs")


def test_relative_config_path_is_read_from_the_current_folder(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    project.write(VALID)
    monkeypatch.chdir(project.folder.parent)

    config = load_config(Path(project.folder.name) / "config.yml")

    assert config.to_json()["trialCodeDirectory"] == str(project.folder)


def test_from_dict_reads_paths_from_base_dir(project: Project) -> None:
    config = ExperimentConfig.from_dict(VALID, base_dir=project.folder)

    assert config.to_json()["searchSpace"] == SPACE
    assert config.base_dir == project.folder


def test_from_dict_without_base_dir_uses_the_current_folder(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project.folder)

    config = ExperimentConfig.from_dict(VALID)

    assert config.to_json()["trialCodeDirectory"] == str(project.folder)


def test_from_dict_refuses_what_is_not_a_mapping() -> None:
    with pytest.raises(ConfigError, match="config: must be a mapping of field names"):
        ExperimentConfig.from_dict(["trialConcurrency", 2])  # type: ignore[arg-type]


def test_all_problems_are_reported_together(project: Project) -> None:
    data = valid(trialConcurrency=0, maxTrialNumber=-1, logLevel="loud", trialConcurency=3)

    with pytest.raises(ConfigError) as caught:
        project.load(data)

    wheres = {issue.where for issue in caught.value.issues}
    assert wheres == {"trialConcurrency", "maxTrialNumber", "logLevel", "trialConcurency"}
    assert str(caught.value).startswith("invalid config (4 problems): ")


def test_rules_between_fields_are_reported_together(project: Project) -> None:
    data = valid(trialCommand=None, trialConcurrency=None, tuner=None, searchSpaceFile=None)

    with pytest.raises(ConfigError) as caught:
        project.load(data)

    wheres = {issue.where for issue in caught.value.issues}
    assert wheres == {"trialCommand", "trialConcurrency", "tuner", "searchSpace"}


def test_missing_fields_are_reported_with_type_errors(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text("trialConcurency: 2\ntuner: {name: TPE}\n", encoding="utf-8")

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert [issue.where for issue in caught.value.issues] == [
        "trialConcurency",
        "searchSpace",
        "trialCommand",
        "trialConcurrency",
    ]
    assert "did you mean 'trialConcurrency'?" in str(caught.value)


def test_command_inside_the_training_service_counts_as_given(tmp_path: Path) -> None:
    data = {
        "trialConcurrency": "1",
        "searchSpace": {},
        "tuner": {"name": "TPE"},
        "trainingService": {"platform": "local", "trialCommand": "python3 t.py"},
    }

    with pytest.raises(ConfigError) as caught:
        ExperimentConfig.from_dict(data, base_dir=tmp_path)

    assert [issue.where for issue in caught.value.issues] == ["trialConcurrency"]
