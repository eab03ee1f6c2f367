"""A config fuzzer: malformed configs and search spaces get exit code 2 and one line, nothing else.

Every example is a config file (and its search-space file) broken in one way that makes it
wrong by construction: a wrong type, an unknown key, a missing field, a bad duration, a bad
search-space type or value, a nested-choice error, bytes that are not UTF-8, a YAML or JSON
syntax error, a number too big for what it sizes, NaN. Where "broken" cannot be built
directly (a duration, YAML syntax), a candidate is kept only if an independent judge refuses it:
PyYAML for syntax, the duration parser for durations (the parser's own exceptions other than
ValueError still fail the test).

Most examples run in-process through the CLI's entry point (``tunelab.cli.main``, the function
the ``tunelab`` script calls), as ``tunelab create`` or ``tunelab config check``; the test then
asserts exit code 2, exactly one line on stderr and nothing on stdout, no traceback, no Python
warning or logged warning (each would be more lines on a real terminal), nothing created in
``TUNELAB_HOME`` and no child process. A few dozen go through the real ``tunelab create`` in a
subprocess. ``TUNELAB_FUZZ_EXAMPLES`` multiplies the number of examples;
``TUNELAB_FUZZ_REPORT`` names a file that gets one JSON line per example (used by
``benchmarks/faults/run.py --fuzz``).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.faults.harness import lab_processes
from tunelab.config import parse_duration

SCALE = float(os.environ.get("TUNELAB_FUZZ_EXAMPLES", "1"))
REPORT = os.environ.get("TUNELAB_FUZZ_REPORT")

SPACE: dict[str, Any] = {
    "lr": {"_type": "loguniform", "_value": [0.0001, 0.1]},
    "act": {"_type": "choice", "_value": ["relu", "tanh"]},
    "units": {"_type": "randint", "_value": [8, 64]},
    "opt": {
        "_type": "choice",
        "_value": [
            {"_name": "sgd", "momentum": {"_type": "uniform", "_value": [0.5, 0.99]}},
            {"_name": "adam"},
        ],
    },
}

BASE: dict[str, Any] = {
    "experimentName": "fuzz",
    "searchSpaceFile": "search_space.json",
    "trialCommand": "python3 trial.py",
    "trialCodeDirectory": ".",
    "trialConcurrency": 2,
    "maxTrialNumber": 5,
    "maxExperimentDuration": "1h",
    "maxTrialDuration": "10m",
    "tuner": {"name": "TPE", "classArgs": {"optimize_mode": "maximize"}},
    "trainingService": {"platform": "local"},
}

SPACE_TYPES = (
    "choice",
    "randint",
    "uniform",
    "quniform",
    "loguniform",
    "qloguniform",
    "normal",
    "qnormal",
    "lognormal",
    "qlognormal",
)


def _examples(count: int) -> int:
    return max(1, round(count * SCALE))


@dataclass
class Case:
    """One malformed input: the config file's bytes and the files beside it."""

    kind: str
    config: bytes
    config_name: str = "config.yml"
    files: dict[str, bytes] = field(default_factory=dict)

    def write(self, folder: Path) -> Path:
        for name, data in self.files.items():
            (folder / name).write_bytes(data)
        (folder / "trial.py").write_text("print('never runs')\n", encoding="utf-8")
        path = folder / self.config_name
        path.write_bytes(self.config)
        return path


def _yaml(data: Any) -> bytes:
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False).encode("utf-8")


def _space_file(space: Any) -> bytes:
    return json.dumps(space).encode("utf-8")


def case_of(
    kind: str, config: Any, space: Any = SPACE, *, space_bytes: bytes | None = None
) -> Case:
    """A YAML config with its search-space file (written from ``space`` or as given)."""
    files = {"search_space.json": space_bytes if space_bytes is not None else _space_file(space)}
    return Case(kind, _yaml(config), files=files)


def base(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data.update(changes)
    return data


def with_space(space: Any, inline: bool, kind: str = "search space") -> Case:
    """The base config with a (bad) search space, inline (``searchSpace``) or in its file."""
    if inline:
        config = base()
        del config["searchSpaceFile"]
        config["searchSpace"] = space
        return Case(kind, _yaml(config))
    return case_of(kind, base(), space)


# -- values that are wrong for a kind of field ------------------------------------------------

texts = st.text(max_size=12)
not_ints = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),  # 2.0 too: types are strict
    texts,
    st.booleans(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
not_strings = st.one_of(
    st.integers(),
    st.floats(allow_nan=True),
    st.booleans(),
    st.lists(texts, max_size=2),
    st.dictionaries(st.text(max_size=3), texts, max_size=2),
)
not_bools = st.one_of(st.integers(), texts, st.floats(allow_nan=True), st.lists(st.booleans()))
not_mappings = st.one_of(st.integers(), texts, st.booleans(), st.lists(st.integers(), max_size=3))

# Each top-level field with values that break it whatever else the config says.
FIELD_BREAKERS: dict[str, st.SearchStrategy[Any]] = {
    "trialConcurrency": st.one_of(not_ints, st.integers(max_value=0), st.none()),
    "maxTrialNumber": st.one_of(not_ints, st.integers(max_value=0)),
    "trialGpuNumber": st.one_of(not_ints, st.integers(max_value=-1)),
    "experimentName": not_strings,
    "trialCommand": st.one_of(not_strings, st.just(""), st.just("   "), st.none()),
    "trialCodeDirectory": st.one_of(
        not_strings, st.just(""), texts.map(lambda t: "missing dir " + t)
    ),
    "searchSpaceFile": st.one_of(
        not_strings, st.just(""), texts.map(lambda t: "missing " + t + ".json")
    ),
    "logLevel": st.one_of(
        not_strings,
        texts.filter(
            lambda t: (
                t.strip().lower() not in ("fatal", "error", "warning", "info", "debug")
                and t.strip().lower() != "trace"
            )
        ),
    ),
    "debug": not_bools,
    "useAnnotation": not_bools,
    "experimentType": st.one_of(not_strings, texts.map(lambda t: "kind-" + t)),
    "tuner": st.one_of(not_mappings, st.none()),
    "trainingService": st.one_of(
        st.integers(), texts, st.booleans(), st.just({}), st.lists(st.integers(), max_size=2)
    ),
}


@st.composite
def wrong_types(draw: st.DrawFn) -> Case:
    name = draw(st.sampled_from(sorted(FIELD_BREAKERS)))
    config = base(**{name: draw(FIELD_BREAKERS[name])})
    if config[name] is None:
        del config[name]  # a required field left out
    return case_of("wrong type", config)


@st.composite
def nested_wrong_types(draw: st.DrawFn) -> Case:
    """Fields inside the tuner, assessor and training-service sections."""
    config = base()
    where = draw(
        st.sampled_from(
            ["tuner.name", "tuner.classArgs", "optimize", "platform", "assessor", "gpuIndices"]
        )
    )
    if where == "tuner.name":
        config["tuner"]["name"] = draw(
            st.one_of(not_strings, st.just(""), texts.map(lambda t: "NoSuchTuner" + t))
        )
    elif where == "tuner.classArgs":
        config["tuner"]["classArgs"] = draw(
            st.one_of(st.integers(), texts, st.lists(st.integers(), min_size=1, max_size=2))
        )
    elif where == "optimize":
        config["tuner"]["classArgs"]["optimize_mode"] = draw(
            st.one_of(not_strings, texts.filter(lambda t: t not in ("maximize", "minimize")))
        )
    elif where == "platform":
        config["trainingService"]["platform"] = draw(
            st.one_of(not_strings, st.just(""), texts.map(lambda t: "cloud-" + t))
        )
    elif where == "assessor":
        config["assessor"] = {
            "name": draw(st.one_of(not_strings, texts.map(lambda t: "NoSuchAssessor" + t)))
        }
    else:
        config["trainingService"]["gpuIndices"] = draw(
            st.one_of(
                st.lists(st.integers(max_value=-1), min_size=1, max_size=3),
                st.integers(0, 3).map(lambda i: [i, i]),  # the same GPU twice
                st.booleans(),
                st.floats(allow_nan=True).filter(lambda f: not float(f).is_integer()),
            )
        )
    return case_of("wrong nested type", config)


keys = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,10}", fullmatch=True)


@st.composite
def unknown_keys(draw: st.DrawFn) -> Case:
    """A key that names no field (at the top, in the tuner or the training service)."""
    key = "fuzz" + draw(keys)
    value = draw(st.one_of(st.integers(), texts, st.booleans(), st.none()))
    config = base()
    target = draw(st.sampled_from([config, config["tuner"], config["trainingService"]]))
    target[key] = value
    return case_of("unknown key", config)


@st.composite
def missing_required(draw: st.DrawFn) -> Case:
    config = base()
    name = draw(st.sampled_from(["trialCommand", "trialConcurrency", "searchSpaceFile", "tuner"]))
    if name == "tuner" and draw(st.booleans()):
        del config["tuner"]["name"]
    else:
        del config[name]
    return case_of("missing field", config)


def _refused_duration(value: Any) -> bool:
    try:
        parse_duration(value)
    except ValueError:
        return True
    return False


durations_text = st.one_of(
    st.tuples(
        st.sampled_from(
            ["", "-5", "0", "-0.0", "nan", "inf", "1e400", "abc", "1,5", ".", "1.2.3"]
        ),
        st.sampled_from(["", "s", "m", "h", "d", "x", "mins", "ms", "sec", "y", " w"]),
    ).map("".join),
    st.tuples(st.floats(allow_nan=True, allow_infinity=True), texts).map(
        lambda p: f"{p[0]}{p[1]}"
    ),
    texts,
)


@st.composite
def bad_durations(draw: st.DrawFn) -> Case:
    name = draw(st.sampled_from(["maxExperimentDuration", "maxTrialDuration"]))
    value = draw(
        st.one_of(
            durations_text,
            st.integers(max_value=0),
            st.floats(allow_nan=True, allow_infinity=True),
            st.booleans(),
            st.lists(st.integers(), max_size=2),
        ).filter(_refused_duration)
    )
    return case_of("bad duration", base(**{name: value}))


# -- search spaces -----------------------------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6)
non_numbers = st.one_of(texts, st.booleans(), st.none(), st.lists(st.integers(), max_size=2))


NORMAL_TYPES = ("normal", "qnormal", "lognormal", "qlognormal")


@st.composite
def bad_values(draw: st.DrawFn) -> dict[str, Any]:
    """One parameter whose ``_value`` breaks its type's rule."""
    kind = draw(st.sampled_from(SPACE_TYPES))
    if kind == "choice":
        value: Any = draw(
            st.one_of(st.just([]), st.integers(), texts, st.dictionaries(texts, texts))
        )
        return {"_type": kind, "_value": value}

    size = 2 if kind == "randint" else 3 if kind.startswith("q") else 2
    low, high = sorted(draw(st.lists(finite, min_size=2, max_size=2, unique=True)))
    good = [low, high, 1.0][:size]
    way = draw(st.sampled_from(["length", "type", "nan", "rule"]))
    if way == "length":
        value = draw(st.lists(finite, max_size=5).filter(lambda v: len(v) != size))
    elif way == "type":
        value = draw(st.one_of(st.integers(), texts, st.dictionaries(texts, st.integers())))
        if draw(st.booleans()):
            value = list(good)
            value[draw(st.integers(0, size - 1))] = draw(non_numbers)
    elif way == "nan":
        value = list(good)
        value[draw(st.integers(0, size - 1))] = draw(st.sampled_from([math.nan, math.inf]))
    elif kind == "randint":
        value = [math.floor(low), math.floor(high) + 2.25]  # bounds must be integers
    elif kind in NORMAL_TYPES:
        value = [low, -abs(high), 1.0][:size]  # sigma <= 0
    elif kind in ("loguniform", "qloguniform"):
        value = [-abs(low), abs(high) + 1, 1.0][:size]  # low <= 0
    elif kind == "quniform" and draw(st.booleans()):
        value = [low, high, -abs(draw(finite))]  # q <= 0
    else:
        value = [high, low, 1.0][:size]  # low >= high
    return {"_type": kind, "_value": value}


@st.composite
def bad_spaces(draw: st.DrawFn) -> Case:
    space = copy.deepcopy(SPACE)
    way = draw(st.sampled_from(["type", "value", "spec", "space", "missing", "key"]))
    name = draw(st.sampled_from(["lr", "act", "units", "new"]))
    if way == "type":
        space[name] = {
            "_type": draw(texts.filter(lambda t: t.lower() not in SPACE_TYPES)),
            "_value": [0, 1],
        }
    elif way == "value":
        space[name] = draw(bad_values())
    elif way == "spec":
        space[name] = draw(st.one_of(st.integers(), texts, st.lists(st.integers(), max_size=2)))
    elif way == "space":
        space = draw(st.one_of(st.integers(), texts, st.lists(st.integers(), max_size=3)))
    elif way == "missing":
        del space["lr"][draw(st.sampled_from(["_type", "_value"]))]
    else:
        space[draw(st.integers())] = {"_type": "uniform", "_value": [0, 1]}  # not a JSON key
        return with_space(space, inline=True)
    return with_space(space, inline=draw(st.booleans()))


@st.composite
def nested_choice_errors(draw: st.DrawFn) -> Case:
    space = copy.deepcopy(SPACE)
    options = space["opt"]["_value"]
    way = draw(st.sampled_from(["no name", "same name", "name type", "inner", "deep"]))
    if way == "no name":
        del options[draw(st.integers(0, 1))]["_name"]
    elif way == "same name":
        options[1]["_name"] = options[0]["_name"]
    elif way == "name type":
        options[0]["_name"] = draw(not_strings)
    elif way == "inner":
        options[0]["momentum"] = draw(bad_values())
    else:
        # A nested choice inside an option, itself missing a _name.
        options[1]["beta"] = {
            "_type": "choice",
            "_value": [{"x": {"_type": "uniform", "_value": [0, 1]}}],
        }
    return with_space(space, inline=draw(st.booleans()), kind="nested choice")


# -- bytes, syntax, sizes ---------------------------------------------------------------------

BAD_UTF8 = [b"\xff", b"\xfe", b"\x80", b"\xc3\x28", b"\xed\xa0\x80", b"\xe9", b"\xf8\x88\x80\x80"]


@st.composite
def not_utf8(draw: st.DrawFn) -> Case:
    """Bytes that are not UTF-8 anywhere in the config file (comments too) or the space file."""
    bad = draw(st.sampled_from(BAD_UTF8))
    target = draw(st.sampled_from(["config", "space", "utf16"]))
    case = case_of("not UTF-8", base())
    if target == "utf16":
        case.config = yaml.safe_dump(base()).encode("utf-16")
        return case
    data = case.config if target == "config" else case.files["search_space.json"]
    if draw(st.booleans()):
        data = data + b"# " + bad + b"\n" if target == "config" else data + b" " + bad
    else:
        at = draw(st.integers(0, len(data)))
        data = data[:at] + bad + data[at:]
    if target == "config":
        case.config = data
    else:
        case.files["search_space.json"] = data
    return case


BROKEN_YAML_LINES = [
    "trialConcurrency: [1, 2",
    "tuner: {name: TPE",
    "experimentName: 'unterminated",
    'experimentName: "unterminated',
    "\ttrialConcurrency: 2",
    "maxTrialNumber: 5: 6",
    "- a list item among mapping keys",
    "  indented: wrongly",
    "experimentName: *undefined_alias",
    "@reserved: 1",
    "`backtick: 1",
    "experimentName: &a &b twice",
    "{unclosed",
    "]",
    "key with no colon",
    "%TAG ! tag:example.com,2000:",
]


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (as tunelab does)."""

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        seen = []
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if any(type(key) is type(other) and key == other for other in seen):
                raise yaml.constructor.ConstructorError(None, None, f"{key!r} twice", None)
            seen.append(key)
        return super().construct_mapping(node, deep)


def _yaml_refused(text: str) -> bool:
    try:
        yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError:
        return True
    return False


@st.composite
def yaml_syntax_errors(draw: st.DrawFn) -> Case:
    """Broken YAML lines (or random indicator characters) among a valid config's lines; when
    they happen to stay valid YAML, a key given twice. PyYAML is the judge."""
    lines = _yaml(base()).decode("utf-8").splitlines()
    for _ in range(draw(st.integers(1, 2))):
        junk = draw(
            st.one_of(
                st.sampled_from(BROKEN_YAML_LINES),
                st.text(alphabet="[]{}:,&*!|>'\"%@`\t -#?", min_size=1, max_size=8),
            )
        )
        lines.insert(draw(st.integers(0, len(lines))), junk)
    text = "\n".join(lines) + "\n"
    kind = "YAML syntax"
    if not _yaml_refused(text):
        key = draw(st.sampled_from(["trialConcurrency", "tuner", "experimentName"]))
        text += f"{key}: {json.dumps(BASE[key])}\n"
        kind = "YAML key twice"
    assume(_yaml_refused(text))
    return _text_case(kind, text)


def _text_case(kind: str, text: str) -> Case:
    return Case(kind, text.encode("utf-8"), files={"search_space.json": _space_file(SPACE)})


@st.composite
def json_syntax_errors(draw: st.DrawFn) -> Case:
    """A ``.json`` config (or search-space file) that is not valid JSON, or not an object."""
    good = json.dumps(base())
    way = draw(st.sampled_from(["cut", "junk", "not object", "space"]))
    if way == "cut":
        text = good[: draw(st.integers(1, len(good) - 1))]
    elif way == "junk":
        at = draw(st.integers(0, len(good)))
        text = (
            good[:at]
            + draw(st.sampled_from(["}", "{", ",", "'", "NaN,", "[", ":", "//"]))
            + good[at:]
        )
    elif way == "not object":
        text = json.dumps(
            draw(st.one_of(st.lists(st.integers(), max_size=3), st.integers(), texts))
        )
    else:
        space = json.dumps(SPACE)
        return case_of(
            "JSON syntax (space file)",
            base(),
            space_bytes=space[: draw(st.integers(0, len(space) - 1))].encode(),
        )
    with contextlib.suppress(ValueError):
        if isinstance(json.loads(text), dict):
            text = text + "}"  # what was cut still parsed: break it for sure
    return Case(
        "JSON syntax",
        text.encode("utf-8"),
        "config.json",
        {"search_space.json": _space_file(SPACE)},
    )


@st.composite
def empty_or_not_mapping(draw: st.DrawFn) -> Case:
    text = draw(
        st.sampled_from(
            ["", "\n", "# only a comment\n", "- a\n- b\n", "42\n", "just text\n", "null\n", "~\n"]
        )
    )
    return _text_case("not a mapping", text)


@st.composite
def huge_numbers(draw: st.DrawFn) -> Case:
    """Numbers that overflow what they size: to infinity, past 64 bits, or so wide or so finely
    quantised that sampling cannot represent them."""
    way = draw(st.sampled_from(["config inf", "space inf", "wide", "q", "randint", "exp"]))
    if way == "config inf":
        name = draw(st.sampled_from(["trialConcurrency", "maxTrialNumber", "trialGpuNumber"]))
        return case_of(
            "huge number", base(**{name: draw(st.sampled_from([math.inf, 1e300, -math.inf]))})
        )
    space = copy.deepcopy(SPACE)
    if way == "space inf":
        text = json.dumps(space).replace("[8, 64]", "[8, 1e400]")
        return case_of("huge number", base(), space_bytes=text.encode())
    if way == "wide":
        big = draw(st.floats(min_value=1e308, max_value=1.7e308))
        space["w"] = {
            "_type": draw(st.sampled_from(["uniform", "quniform"])),
            "_value": [-big, big, 1.0],
        }
        if space["w"]["_type"] == "uniform":
            space["w"]["_value"] = [-big, big]
    elif way == "q":
        q = draw(st.floats(min_value=5e-324, max_value=1e-310))
        space["w"] = {"_type": draw(st.sampled_from(["quniform", "qnormal"])), "_value": [0, 1, q]}
    elif way == "exp":
        mu = draw(st.floats(min_value=710, max_value=1e6))
        space["w"] = {
            "_type": draw(st.sampled_from(["lognormal", "qlognormal"])),
            "_value": [mu, 1, 1],
        }
        if space["w"]["_type"] == "lognormal":
            space["w"]["_value"] = [mu, 1]
    else:
        top = draw(st.integers(min_value=2**63, max_value=10**40))
        space["w"] = {"_type": "randint", "_value": [draw(st.sampled_from([0, -top])), top]}
    return with_space(space, inline=draw(st.booleans()), kind="huge number")


@st.composite
def nans(draw: st.DrawFn) -> Case:
    name = draw(
        st.sampled_from(
            [
                "trialConcurrency",
                "maxTrialNumber",
                "maxExperimentDuration",
                "maxTrialDuration",
                "trialGpuNumber",
            ]
        )
    )
    if draw(st.booleans()):
        return case_of("NaN", base(**{name: math.nan}))
    space = copy.deepcopy(SPACE)
    space["lr"]["_value"][draw(st.integers(0, 1))] = math.nan
    return with_space(space, inline=True, kind="NaN")


ALL_CASES = st.one_of(
    wrong_types(),
    nested_wrong_types(),
    unknown_keys(),
    missing_required(),
    bad_durations(),
    bad_spaces(),
    nested_choice_errors(),
    not_utf8(),
    yaml_syntax_errors(),
    json_syntax_errors(),
    empty_or_not_mapping(),
    huge_numbers(),
    nans(),
)


# -- running one example ----------------------------------------------------------------------


@dataclass
class Outcome:
    code: object
    stdout: str
    stderr: str
    problems: list[str]


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def _home(home: Path) -> Iterator[None]:
    before = os.environ.get("TUNELAB_HOME")
    os.environ["TUNELAB_HOME"] = str(home)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TUNELAB_HOME", None)
        else:
            os.environ["TUNELAB_HOME"] = before


def _refuse_launch(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("a malformed config reached the start of a manager")


def run_in_process(
    case: Case, command: str, home: Path, monkeypatch: pytest.MonkeyPatch
) -> Outcome:
    """``tunelab <command>`` on the case, in this process, through the CLI's entry point."""
    from tunelab.cli import main

    monkeypatch.setattr("tunelab.cli._run.create_experiment", _refuse_launch)
    children_before = {p.pid for p in psutil.Process().children(recursive=True)}
    out, err = io.StringIO(), io.StringIO()
    collect = _Collect()
    root = logging.getLogger()
    root.addHandler(collect)
    problems: list[str] = []
    code: object = None
    with (
        tempfile.TemporaryDirectory() as folder,
        _home(home),
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("always")
        path = case.write(Path(folder))
        argv = (
            ["create", "--config", str(path)]
            if command == "create"
            else ["config", "check", str(path)]
        )
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(argv)
            except SystemExit as done:
                code = done.code
            except BaseException as error:  # what the user would see as a traceback
                import traceback

                problems.append("traceback: " + "".join(traceback.format_exception(error))[-1500:])
    root.removeHandler(collect)
    stderr_lines = err.getvalue().splitlines()
    stderr_lines += [f"warning: {w.message}" for w in caught]
    stderr_lines += [f"log: {r.getMessage()}" for r in collect.records]
    problems += _contract(code, out.getvalue(), stderr_lines, home)
    children = {p.pid for p in psutil.Process().children(recursive=True)} - children_before
    if children:
        problems.append(f"child processes left: {sorted(children)}")
    return Outcome(code, out.getvalue(), "\n".join(stderr_lines), problems)


def _contract(code: object, stdout: str, stderr_lines: list[str], home: Path) -> list[str]:
    problems = []
    if code != 2:
        problems.append(f"exit code {code!r}, not 2")
    if len(stderr_lines) != 1:
        problems.append(f"{len(stderr_lines)} lines on stderr, not 1")
    if any("Traceback" in line for line in stderr_lines):
        problems.append("a traceback on stderr")
    if stdout.strip():
        problems.append(f"output on stdout: {stdout[:200]!r}")
    if home.exists() and any(home.iterdir()):
        problems.append(f"left in TUNELAB_HOME: {sorted(p.name for p in home.iterdir())}")
    return problems


def _report(case: Case, command: str, outcome: Outcome) -> None:
    if REPORT is None:
        return
    line = {
        "kind": case.kind,
        "command": command,
        "code": outcome.code,
        "ok": not outcome.problems,
    }
    with open(REPORT, "a", encoding="utf-8") as report:
        report.write(json.dumps(line) + "\n")


def _check(case: Case, command: str, outcome: Outcome) -> None:
    _report(case, command, outcome)
    assert not outcome.problems, (
        f"{case.kind} via {command}: {outcome.problems}\nstderr: {outcome.stderr}\n"
        f"config: {case.config[:600]!r}\nfiles: { {k: v[:300] for k, v in case.files.items()} }"
    )


@pytest.fixture(scope="module")
def fuzz_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The TUNELAB_HOME of the in-process examples; it must stay empty."""
    return tmp_path_factory.mktemp("fuzz") / "home"


def fuzz(examples: int) -> settings:
    """Hypothesis settings of a fuzz test: no deadline (a config check may take a moment)."""
    return settings(
        deadline=None,
        max_examples=_examples(examples),
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        database=None,
    )


commands = st.sampled_from(["create", "config check"])


def test_the_unbroken_base_config_is_valid(
    fuzz_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fuzzer breaks a config that passes; so breaking it is what makes it fail."""
    from tunelab.cli import main

    case = case_of("valid", base())
    with tempfile.TemporaryDirectory() as folder, _home(fuzz_home):
        path = case.write(Path(folder))
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
            main(["config", "check", str(path)])
    assert done.value.code == 0 and "valid" in out.getvalue()


STRATEGIES: dict[str, Callable[[], st.SearchStrategy[Case]]] = {
    "wrong_types": wrong_types,
    "nested_wrong_types": nested_wrong_types,
    "unknown_keys": unknown_keys,
    "missing_required": missing_required,
    "bad_durations": bad_durations,
    "bad_spaces": bad_spaces,
    "nested_choice_errors": nested_choice_errors,
    "not_utf8": not_utf8,
    "yaml_syntax_errors": yaml_syntax_errors,
    "json_syntax_errors": json_syntax_errors,
    "empty_or_not_mapping": empty_or_not_mapping,
    "huge_numbers": huge_numbers,
    "nans": nans,
}
# Examples per strategy, in-process: 13 strategies, 640 examples in all (x TUNELAB_FUZZ_EXAMPLES).
EXAMPLES = {name: 60 for name in STRATEGIES} | {
    "missing_required": 20,
    "empty_or_not_mapping": 20,
    "nans": 40,
}


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_malformed_configs_in_process(
    strategy: str, fuzz_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    @fuzz(EXAMPLES[strategy])
    @given(case=STRATEGIES[strategy](), command=commands)
    def run(case: Case, command: str) -> None:
        _check(case, command, run_in_process(case, command, fuzz_home, monkeypatch))

    run()


@pytest.mark.slow
@fuzz(30)
@given(case=ALL_CASES)
def test_malformed_configs_through_the_real_cli(
    case: Case, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The real ``tunelab create`` in a subprocess: the same contract, and no process left."""
    root = tmp_path_factory.mktemp("real")
    home = root / "home"
    path = case.write(root)
    env = dict(os.environ, TUNELAB_HOME=str(home))
    done = subprocess.run(
        [sys.executable, "-m", "tunelab", "create", "--config", str(path)],
        env=env,
        capture_output=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    stderr = done.stderr.decode("utf-8", "replace")
    problems = _contract(
        done.returncode, done.stdout.decode("utf-8", "replace"), stderr.splitlines(), home
    )
    left = lab_processes(home)
    if left:
        problems.append(f"processes left: {[p.pid for p in left]}")
        for process in left:
            process.kill()
    outcome = Outcome(done.returncode, done.stdout.decode("utf-8", "replace"), stderr, problems)
    _check(case, "tunelab create (subprocess)", outcome)
