"""NNI's v1 config format, converted to v2 (the conversion NNI itself makes, restated).

A config is read as v1 when it has a field that only v1 has (``authorName``,
``trainingServicePlatform``, ``trial``, ``searchSpacePath``, ``maxExecDuration``,
``maxTrialNum``, ``localConfig``, ``machineList``, ...; or ``builtinTunerName``, ``codeDir``,
``classFileName`` in an algorithm) and no field that only v2 has. A config that mixes both is
read as v2, and its v1 fields are reported as unknown, each with its v2 name.

Decisions:

- Harmless v1 fields are dropped: ``authorName``, ``description``, ``versionCheck``,
  ``logCollection`` and ``multiThread`` (a hint for NNI's old dispatcher, which tunelab has no
  use for). ``multiPhase: true`` and ``includeIntermediateResults: true`` cannot be honoured
  and are errors; false values are dropped.
- ``maxExecDuration`` given as a number becomes ``"<number>s"``, as NNI converts it.
- A custom algorithm's ``codeDir`` + ``classFileName`` + ``className`` becomes
  ``codeDirectory`` + ``className: 'module.Class'`` (``sub/my_tuner.py`` gives the module
  ``sub.my_tuner``). ``gpuIndices`` of a tuner or advisor becomes ``tunerGpuIndices``.
- A missing ``trainingServicePlatform`` means local, as a missing ``trainingService`` does in
  v2. Platforms that tunelab does not run are errors, and so is v1 ``hybrid`` (write hybrid
  configs in v2, with a list of training services).
- Keys are matched ignoring case and underscores, as in v2.
- Errors found after conversion name the v1 fields the user wrote: :func:`to_v2` returns a map
  from v2 paths to v1 paths for that.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tunelab.config._base import SUPPORTED_PLATFORMS, platform_problem
from tunelab.config._keys import join, normalize, suggest
from tunelab.errors import ConfigError, Issue

__all__ = ["is_v1", "to_v2"]

_V2_ONLY = {
    normalize(key)
    for key in (
        "trialCommand",
        "trialCodeDirectory",
        "trialGpuNumber",
        "maxExperimentDuration",
        "maxTrialNumber",
        "maxTrialDuration",
        "searchSpaceFile",
        "searchSpace",
        "experimentWorkingDirectory",
        "experimentType",
        "tunerGpuIndices",
        "trainingService",
    )
}

# v1 top-level field → v2 field it moves to unchanged.
_MOVES = {
    "experimentName": "experimentName",
    "trialConcurrency": "trialConcurrency",
    "maxTrialNum": "maxTrialNumber",
    "searchSpacePath": "searchSpaceFile",
    "nniManagerIp": "nniManagerIp",
    "logDir": "experimentWorkingDirectory",
    "debug": "debug",
    "logLevel": "logLevel",
    "useAnnotation": "useAnnotation",
    "sharedStorage": "sharedStorage",
}
_DROPS = ("authorName", "description", "multiThread", "versionCheck", "logCollection")
_CLUSTER_CONFIGS = {
    "paiConfig": "openpai",
    "paiYarnConfig": "paiYarn",
    "amlConfig": "aml",
    "kubeflowConfig": "kubeflow",
    "frameworkcontrollerConfig": "frameworkcontroller",
    "dlcConfig": "dlc",
    "adlConfig": "adl",
    "hybridConfig": "hybrid",
}
_SPECIAL = (
    "maxExecDuration",
    "multiPhase",
    "trial",
    "tuner",
    "assessor",
    "advisor",
    "trainingServicePlatform",
    "localConfig",
    "remoteConfig",
    "machineList",
)
_TOP = [*_MOVES, *_DROPS, *_CLUSTER_CONFIGS, *_SPECIAL]
_V1_ONLY = {
    normalize(key)
    for key in (*_DROPS, *_CLUSTER_CONFIGS, *_SPECIAL, "maxTrialNum", "searchSpacePath", "logDir")
    if key not in ("tuner", "assessor", "advisor")
}

_TRIAL = {"command": "trialCommand", "codeDir": "trialCodeDirectory", "gpuNum": "trialGpuNumber"}
_LOCAL = {
    "gpuIndices": "gpuIndices",
    "maxTrialNumPerGpu": "maxTrialNumberPerGpu",
    "useActiveGpu": "useActiveGpu",
}
_REMOTE = {"reuse": "reuseMode"}
_MACHINE = {
    "ip": "host",
    "port": "port",
    "username": "user",
    "passwd": "password",
    "sshKeyPath": "sshKeyFile",
    "passphrase": "sshPassphrase",
    "gpuIndices": "gpuIndices",
    "maxTrialNumPerGpu": "maxTrialNumberPerGpu",
    "useActiveGpu": "useActiveGpu",
    "pythonPath": "pythonPath",
}
_ALGORITHM_V1_ONLY = {
    normalize(key)
    for key in (
        "builtinTunerName",
        "builtinAssessorName",
        "builtinAdvisorName",
        "classFileName",
        "codeDir",
        "includeIntermediateResults",
        "gpuIndices",
    )
}

# Paths that v2 validation may report, and the v1 field they came from.
_STANDARD_ORIGINS = {
    "maxExperimentDuration": "maxExecDuration",
    "maxTrialNumber": "maxTrialNum",
    "searchSpaceFile": "searchSpacePath",
    "searchSpace": "searchSpacePath",
    "experimentWorkingDirectory": "logDir",
    "trialCommand": "trial.command",
    "trialCodeDirectory": "trial.codeDir",
    "trialGpuNumber": "trial.gpuNum",
    "trainingService.platform": "trainingServicePlatform",
}


def _items(mapping: Mapping[Any, Any]) -> Iterable[tuple[str, Any]]:
    return ((key, value) for key, value in mapping.items() if isinstance(key, str))


def _get(mapping: Mapping[Any, Any], name: str) -> Any:
    wanted = normalize(name)
    return next((value for key, value in _items(mapping) if normalize(key) == wanted), None)


def is_v1(data: Mapping[Any, Any]) -> bool:
    """Whether a config mapping is in NNI's v1 format (see the module docstring)."""
    keys = {normalize(key) for key, _ in _items(data)}
    if keys & _V2_ONLY:
        return False
    if keys & _V1_ONLY:
        return True
    for kind in ("tuner", "assessor", "advisor"):
        algorithm = _get(data, kind)
        keys = (
            {normalize(key) for key, _ in _items(algorithm)}
            if isinstance(algorithm, Mapping)
            else set()
        )
        if keys & _ALGORITHM_V1_ONLY:
            return True
    return False


class _Converter:
    def __init__(self) -> None:
        self.issues: list[Issue] = []
        self.origins: dict[str, str] = dict(_STANDARD_ORIGINS)

    def issue(self, where: str, rule: str, value: Any = None, fix: str | None = None) -> None:
        self.issues.append(Issue(where, rule, value, fix, show_value=value is not None))

    def fields(
        self, mapping: Any, where: str, known: Iterable[str], what: str
    ) -> dict[str, tuple[str, Any]]:
        """``mapping``'s entries by known v1 name; unknown and repeated keys are reported."""
        names = list(known)
        by_form = {normalize(name): name for name in names}
        if not isinstance(mapping, Mapping):
            self.issue(where, "must be a mapping (key: value pairs)", mapping)
            return {}
        found: dict[str, tuple[str, Any]] = {}
        for key, value in mapping.items():
            name = by_form.get(normalize(key)) if isinstance(key, str) else None
            if name is None:
                close = suggest(key, names)
                fix = f"did you mean {close!r}?" if close else f"{what} are " + ", ".join(names)
                self.issue(join(where, key), "unknown field in an NNI v1 config", key, fix)
            elif name in found:
                self.issue(
                    join(where, key),
                    f"given twice, as {found[name][0]!r} and {key!r}",
                    fix="keep one of them",
                )
            else:
                found[name] = (join(where, key), value)
        return found

    def move(
        self, out: dict[str, Any], v2_key: str, entry: tuple[str, Any] | None, v2_path: str
    ) -> None:
        if entry is None or entry[1] is None:
            return
        if v2_key in out:
            self.issue(entry[0], f"sets {v2_path} a second time", fix="give it once")
            return
        out[v2_key] = entry[1]
        self.origins[v2_path] = entry[0]

    def convert(self, data: Mapping[Any, Any]) -> dict[str, Any]:
        top = self.fields(data, "", _TOP, "v1 fields")
        out: dict[str, Any] = {}
        for v1_name, v2_name in _MOVES.items():
            self.move(out, v2_name, top.get(v1_name), v2_name)

        duration = top.get("maxExecDuration")
        if duration is not None:
            value = duration[1]
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                value = f"{value}s"
            self.move(out, "maxExperimentDuration", (duration[0], value), "maxExperimentDuration")
        annotation = top.get("useAnnotation")
        if annotation is not None and annotation[1] is False:
            out.pop("useAnnotation", None)  # the v2 default; NNI drops it too
        phase = top.get("multiPhase")
        if phase is not None and phase[1]:
            self.issue(
                phase[0],
                "multi-phase trials are not supported",
                phase[1],
                "remove multiPhase; each trial gets one set of parameters",
            )
        if "trial" in top:
            self.trial(top["trial"], out)
        for kind in ("tuner", "assessor", "advisor"):
            if kind in top and top[kind][1] is not None:
                out[kind] = self.algorithm(kind, top[kind], out)
        out["trainingService"] = self.service(top)
        return out

    def trial(self, entry: tuple[str, Any], out: dict[str, Any]) -> None:
        where, value = entry
        trial = self.fields(value, where, _TRIAL, "trial fields tunelab reads")
        for v1_name, v2_name in _TRIAL.items():
            self.move(out, v2_name, trial.get(v1_name), v2_name)

    def algorithm(self, kind: str, entry: tuple[str, Any], out: dict[str, Any]) -> Any:
        where, value = entry
        builtin = f"builtin{kind.title()}Name"
        known = [builtin, "name", "classArgs", "className", "classFileName", "codeDir"]
        known += ["codeDirectory", "gpuIndices", "includeIntermediateResults"]
        fields = self.fields(value, where, known, f"{kind} fields")
        self.origins[f"{kind}.name"] = join(where, builtin)
        self.origins[f"{kind}.codeDirectory"] = join(where, "codeDir")
        algorithm: dict[str, Any] = {}
        self.move(algorithm, "name", fields.get(builtin), f"{kind}.name")
        self.move(algorithm, "name", fields.get("name"), f"{kind}.name")
        self.move(algorithm, "classArgs", fields.get("classArgs"), f"{kind}.classArgs")
        self.move(algorithm, "codeDirectory", fields.get("codeDir"), f"{kind}.codeDirectory")
        self.move(algorithm, "codeDirectory", fields.get("codeDirectory"), f"{kind}.codeDirectory")
        self.class_name(kind, fields, algorithm)

        gpus = fields.get("gpuIndices")
        if gpus is not None and kind == "assessor":
            self.issue(gpus[0], "GPUs for an assessor are not supported", gpus[1], "remove it")
        elif gpus is not None:
            self.move(out, "tunerGpuIndices", gpus, "tunerGpuIndices")
        intermediate = fields.get("includeIntermediateResults")
        if intermediate is not None and intermediate[1]:
            self.issue(
                intermediate[0],
                "is not supported: tuners learn from final results only",
                intermediate[1],
                "remove includeIntermediateResults",
            )
        return algorithm

    def class_name(
        self, kind: str, fields: dict[str, tuple[str, Any]], algorithm: dict[str, Any]
    ) -> None:
        file_entry, class_entry = fields.get("classFileName"), fields.get("className")
        if file_entry is None:
            if class_entry is not None:
                if isinstance(class_entry[1], str) and "." not in class_entry[1]:
                    self.issue(
                        class_entry[0],
                        "needs classFileName, the file that defines the class",
                        class_entry[1],
                        "add classFileName: my_tuner.py",
                    )
                self.move(algorithm, "className", class_entry, f"{kind}.className")
            return
        where, file_name = file_entry
        if not isinstance(file_name, str) or not file_name.endswith(".py"):
            self.issue(where, "must be a Python file name ending in .py", file_name)
            return
        if class_entry is None or not isinstance(class_entry[1], str):
            self.issue(
                join(kind, "className"),
                "must be given with classFileName",
                fix="write the name of the class defined in classFileName",
            )
            return
        module = file_name[: -len(".py")].replace("\\", "/").strip("/").replace("/", ".")
        self.move(
            algorithm, "className", (where, f"{module}.{class_entry[1]}"), f"{kind}.className"
        )

    def service(self, top: dict[str, tuple[str, Any]]) -> dict[str, Any]:
        entry = top.get("trainingServicePlatform")
        platform: Any = "local" if entry is None or entry[1] is None else entry[1]
        where = entry[0] if entry is not None else "trainingServicePlatform"
        if not isinstance(platform, str) or platform.lower() not in SUPPORTED_PLATFORMS:
            rule, fix = platform_problem(platform)
            if isinstance(platform, str) and platform.lower() == "hybrid":
                fix = "write the config in v2 form, with a list of training services under "
                fix += "trainingService"
            self.issue(where, rule, platform, fix)
            return {"platform": "local"}
        platform = platform.lower()
        service: dict[str, Any] = {"platform": platform}

        for name, cluster in _CLUSTER_CONFIGS.items():
            if name in top:
                self.issue(
                    top[name][0],
                    f"configures NNI's {cluster!r} training service, which tunelab does not run",
                    fix="remove it",
                )
        if "localConfig" in top:
            if platform != "local":
                self.issue(top["localConfig"][0], "applies only to trainingServicePlatform local")
            local = self.fields(top["localConfig"][1], top["localConfig"][0], _LOCAL, "fields")
            for v1_name, v2_name in _LOCAL.items():
                self.origins[f"trainingService.{v2_name}"] = join("localConfig", v1_name)
                self.move(service, v2_name, local.get(v1_name), f"trainingService.{v2_name}")
        if "remoteConfig" in top:
            if platform != "remote":
                self.issue(
                    top["remoteConfig"][0], "applies only to trainingServicePlatform remote"
                )
            remote = self.fields(top["remoteConfig"][1], top["remoteConfig"][0], _REMOTE, "fields")
            self.move(service, "reuseMode", remote.get("reuse"), "trainingService.reuseMode")
        if platform == "remote":
            self.origins["trainingService.machineList"] = "machineList"
        if "machineList" in top:
            if platform != "remote":
                self.issue(top["machineList"][0], "applies only to trainingServicePlatform remote")
            service["machineList"] = self.machines(top["machineList"])
        return service

    def machines(self, entry: tuple[str, Any]) -> Any:
        where, value = entry
        if not isinstance(value, list):
            return value  # v2 validation says it must be a list
        machines = []
        for index, item in enumerate(value):
            item_where, v2_where = f"{where}[{index}]", f"trainingService.machineList[{index}]"
            self.origins[v2_where] = item_where
            fields = self.fields(item, item_where, _MACHINE, "machine fields")
            machine: dict[str, Any] = {}
            for v1_name, v2_name in _MACHINE.items():
                self.origins[f"{v2_where}.{v2_name}"] = join(item_where, v1_name)
                self.move(machine, v2_name, fields.get(v1_name), f"{v2_where}.{v2_name}")
            machines.append(machine)
        return machines


def to_v2(data: Mapping[Any, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Convert an NNI v1 config mapping to v2.

    Args:
        data: The v1 config.

    Returns:
        The v2 mapping, and a map from v2 field paths to the v1 paths they came from.

    Raises:
        ConfigError: v1 fields that tunelab cannot honour, or that v1 does not have.
    """
    converter = _Converter()
    converted = converter.convert(data)
    if converter.issues:
        raise ConfigError(converter.issues)
    return converted, converter.origins
