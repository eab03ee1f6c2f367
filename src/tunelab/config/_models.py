"""The experiment config: NNI v2's fields, types and defaults, and its canonical JSON form.

A config is built from a YAML/JSON mapping (:meth:`ExperimentConfig.from_dict`) or in Python
(``ExperimentConfig(trial_command=..., tuner=AlgorithmConfig(name="TPE"))``, then attribute by
attribute). Types are checked as values arrive; ``validate()`` checks what can only be judged on
the whole config (required fields, rules between fields, files and folders) and
:meth:`ExperimentConfig.to_json` gives the canonical form that the engine reads.

Decisions where NNI leaves a choice or where tunelab departs from it:

- ``useActiveGpu`` of a local training service is not required when ``trialGpuNumber > 0``
  (NNI requires it): unset means false, the safe choice on a shared machine, and a config
  that runs on NNI's other platforms should not fail locally for lack of it.
- A remote machine needs no password: a key file with a passphrase, or an SSH agent, is
  enough (NNI demanded a password or an existing default key file). ``sshKeyFile`` has no
  default; a key file that is named must exist.
- ``tuner``, ``assessor`` and ``advisor`` start as empty :class:`AlgorithmConfig` objects, so
  ``config.tuner.name = "TPE"`` works on a fresh config; an empty one counts as not set.
  ``advisor`` is NNI's old name for a tuner: it is moved into ``tuner`` (both is an error).
- ``trainingService`` defaults to the local service; ``trainingService: null`` means the same.
  A training-service mapping must name its ``platform`` (matched in any case, stored in lower
  case). NNI platforms that tunelab does not run, and unknown ones, are errors naming the
  supported services.
- The shortcut fields (``trialCommand``, ``trialCodeDirectory``, ``trialGpuNumber``,
  ``nniManagerIp``, ``debug``) may be written at the top level or in a training service; a
  top-level value is copied into each service that has none (NNI's rule). When the top level
  has none and every service gives the same value, that value is also shown at the top level
  of the canonical form, which is where the engine reads it.
- ``searchSpaceFile`` wins over an inline ``searchSpace`` when both are given, as in NNI; the
  canonical form inlines the space and keeps the file's absolute path for information.
- ``useAnnotation: true``, ``sharedStorage`` and ``experimentType: nas`` are refused: tunelab
  does not support them (NNI 3.0 refuses annotations too). ``nniManagerIp`` and ``reuseMode``
  are accepted and have no effect.
- Passwords and passphrases are pydantic ``SecretStr``: repr and str never show them,
  :meth:`~ExperimentConfig.to_json` leaves them out unless asked, and
  :meth:`~ExperimentConfig.v2_yaml` writes them as ``'***'``.
- Paths are resolved against the config file's folder (the current folder for a config built
  in Python), with ``~`` expanded, and are absolute in the canonical form.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar

import yaml
from pydantic import (
    BeforeValidator,
    Discriminator,
    Field,
    PrivateAttr,
    SecretStr,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    Tag,
    ValidationError,
    field_validator,
)

from tunelab.config._base import (
    ConfigModel,
    as_input,
    issues_from,
    platform_problem,
    register_platform,
)
from tunelab.config._fields import (
    Command,
    Duration,
    ExperimentType,
    GpuIndices,
    LogLevel,
    MemorySize,
    PathText,
    Text,
    rule_error,
)
from tunelab.config._files import FileProblem, read_structured
from tunelab.config._keys import camel, normalize
from tunelab.config._v1 import is_v1, to_v2
from tunelab.errors import ConfigError, Issue

__all__ = [
    "AlgorithmConfig",
    "CustomAlgorithmConfig",
    "ExperimentConfig",
    "LocalConfig",
    "RayConfig",
    "RemoteConfig",
    "RemoteMachineConfig",
    "TrainingServiceConfig",
]

_logger = logging.getLogger("tunelab.config")

SHORTCUT_FIELDS = (
    "trial_command",
    "trial_code_directory",
    "trial_gpu_number",
    "nni_manager_ip",
    "debug",
)
"""Fields that may be written at the top level or in each training service."""


def _v1_hint(v2_name: str) -> str:
    return f"this is an NNI v1 name; in v2 write {v2_name!r}"


_DROP_HINT = "this NNI v1 field has no meaning in v2; remove it"
_PER_GPU_HINT = _v1_hint("maxTrialNumberPerGpu")


class AlgorithmConfig(ConfigModel):
    """A tuner, assessor or advisor: a built-in by ``name``, or a class of your own.

    Give either ``name`` (a built-in or registered algorithm; matched case-insensitively by the
    registry, kept here as written) or ``class_name`` (``"module.Class"``) with
    ``code_directory`` (the folder that holds the module; the config file's folder if unset).
    ``class_args`` are given to the class as keyword arguments, untouched; it starts as an
    empty dict, so that ``config.tuner.class_args["optimize_mode"] = "maximize"`` works on a
    new config, as it does in NNI.
    """

    name: Text | None = None
    class_name: Text | None = None
    code_directory: PathText | None = None
    class_args: dict[str, Any] = Field(default_factory=dict)

    @field_validator("class_args", mode="before")
    @classmethod
    def _null_class_args(cls, value: Any) -> Any:
        return {} if value is None else value

    _key_hints: ClassVar[dict[str, str]] = {
        "builtintunername": _v1_hint("name"),
        "builtinassessorname": _v1_hint("name"),
        "builtinadvisorname": _v1_hint("name"),
        "classfilename": "this is an NNI v1 field; in v2 write className: 'module.Class'",
        "codedir": _v1_hint("codeDirectory"),
        "gpuindices": "this is an NNI v1 field; in v2 write tunerGpuIndices at the top level",
        "includeintermediateresults": "this NNI v1 field is not supported; remove it",
    }

    def is_set(self) -> bool:
        """Whether any field is given (an empty algorithm config stands for "not set")."""
        return any(getattr(self, name) not in (None, {}) for name in type(self).model_fields)


CustomAlgorithmConfig = AlgorithmConfig
"""NNI's name for an algorithm given by ``class_name``; one class serves both here."""


class TrainingServiceConfig(ConfigModel):
    """Fields every training service has: its ``platform`` and the shortcut fields."""

    platform: str = ""
    trial_command: Command | None = None
    trial_code_directory: PathText | None = None
    trial_gpu_number: StrictInt | None = Field(default=None, ge=0)
    nni_manager_ip: StrictStr | None = None
    debug: StrictBool | None = None

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        platform = cls.model_fields["platform"].default
        if isinstance(platform, str) and platform:
            register_platform(f"<{platform}>", cls)

    @field_validator("platform", mode="plain")
    @classmethod
    def _check_platform(cls, value: Any) -> str:
        own = str(cls.model_fields["platform"].default)
        if isinstance(value, str) and value.lower() == own:
            return own
        rule, fix = platform_problem(value)
        if isinstance(value, str) and value.lower() in _SERVICE_CLASSES:
            rule = f"must be {own!r} in a {cls.__name__}"
            fix = f"use {_SERVICE_CLASSES[value.lower()]} for {value.lower()!r}"
        raise rule_error(rule, fix)


class LocalConfig(TrainingServiceConfig):
    """Trials run on this machine.

    ``use_active_gpu`` unset means false: GPUs that run other processes are not used.
    ``max_trial_number_per_gpu`` (default 1) lets trials share a GPU and needs
    ``trial_gpu_number``. ``gpu_indices`` limits the GPUs used. ``reuse_mode`` is accepted
    and has no effect.
    """

    platform: str = "local"
    use_active_gpu: StrictBool | None = None
    max_trial_number_per_gpu: StrictInt = Field(default=1, gt=0)
    gpu_indices: GpuIndices | None = None
    reuse_mode: StrictBool | None = None

    _key_hints: ClassVar[dict[str, str]] = {"maxtrialnumpergpu": _PER_GPU_HINT}


class RemoteMachineConfig(ConfigModel):
    """One SSH server of a remote training service.

    ``host`` and ``user`` are required. Authentication uses ``password``, or the key in
    ``ssh_key_file`` (with ``ssh_passphrase`` if it has one), or an SSH agent; none is
    required here. ``python_path`` is a folder put in front of ``PATH`` on the server.
    """

    host: Text | None = None
    port: StrictInt = Field(default=22, gt=0, lt=65536)
    user: Text | None = None
    password: SecretStr | None = None
    ssh_key_file: PathText | None = None
    ssh_passphrase: SecretStr | None = None
    use_active_gpu: StrictBool = False
    max_trial_number_per_gpu: StrictInt = Field(default=1, gt=0)
    gpu_indices: GpuIndices | None = None
    python_path: StrictStr | None = None

    _key_hints: ClassVar[dict[str, str]] = {
        "ip": _v1_hint("host"),
        "username": _v1_hint("user"),
        "passwd": _v1_hint("password"),
        "sshkeypath": _v1_hint("sshKeyFile"),
        "passphrase": _v1_hint("sshPassphrase"),
        "maxtrialnumpergpu": _PER_GPU_HINT,
    }


class RemoteConfig(TrainingServiceConfig):
    """Trials run on SSH servers, listed in ``machine_list``. ``reuse_mode`` has no effect."""

    platform: str = "remote"
    machine_list: list[RemoteMachineConfig] = Field(default_factory=list)
    reuse_mode: StrictBool | None = None


class RayConfig(TrainingServiceConfig):
    """Trials run as tasks on a Ray cluster.

    ``address`` names the cluster to join; unset, tunelab starts a local one. Each trial
    reserves ``trial_cpu_number`` CPUs (default 1) and, if given, ``trial_memory_size``
    (``"2gb"``). ``runtime_env`` is handed to Ray untouched.
    """

    platform: str = "ray"
    address: Text | None = None
    trial_cpu_number: StrictFloat = Field(default=1.0, gt=0, allow_inf_nan=False)
    trial_memory_size: MemorySize | None = None
    runtime_env: dict[str, Any] | None = None


_SERVICE_CLASSES = {"local": "LocalConfig", "remote": "RemoteConfig", "ray": "RayConfig"}


def _platform_of(value: Mapping[Any, Any]) -> object:
    for key, item in value.items():
        if isinstance(key, str) and normalize(key) == "platform":
            return item
    return None


def _platform_tag(value: Any) -> str | None:
    if isinstance(value, TrainingServiceConfig):
        return f"<{value.platform}>"
    if isinstance(value, Mapping):
        platform = _platform_of(value)
        if platform is None:
            return None
        return f"<{platform.lower()}>" if isinstance(platform, str) else "<?>"
    return "<local>"  # not a mapping: LocalConfig reports that it must be one


def _shape_tag(value: Any) -> str:
    return "<list>" if isinstance(value, (list, tuple)) else "<one>"


def _default_service(value: Any) -> Any:
    return {"platform": "local"} if value is None else value


OneService = Annotated[
    Annotated[LocalConfig, Tag("<local>")]
    | Annotated[RemoteConfig, Tag("<remote>")]
    | Annotated[RayConfig, Tag("<ray>")],
    Discriminator(_platform_tag),
]
Services = Annotated[
    Annotated[OneService, Tag("<one>")]
    | Annotated[list[OneService], Field(min_length=1), Tag("<list>")],
    Discriminator(_shape_tag),
    BeforeValidator(_default_service),
]


def _local_service() -> Any:
    return LocalConfig()


class ExperimentConfig(ConfigModel):
    """One experiment, with NNI v2's fields (snake_case in Python, camelCase in files).

    Build it from a mapping with :meth:`from_dict` (or a file with
    :func:`~tunelab.config.load_config`), or in Python::

        config = ExperimentConfig("local")
        config.trial_command = "python3 trial.py"
        config.trial_concurrency = 2
        config.search_space = {"lr": {"_type": "loguniform", "_value": [1e-4, 0.1]}}
        config.tuner.name = "TPE"

    Values are type-checked when given; :meth:`validate` checks the whole config and raises
    :class:`~tunelab.errors.ConfigError` with every problem found.
    """

    experiment_name: StrictStr | None = None
    experiment_type: ExperimentType = "hpo"
    search_space_file: PathText | None = None
    search_space: dict[str, Any] | None = None
    trial_command: Command | None = None
    trial_code_directory: PathText | None = None
    trial_concurrency: StrictInt | None = Field(default=None, gt=0)
    trial_gpu_number: StrictInt | None = Field(default=None, ge=0)
    max_experiment_duration: Duration | None = None
    max_trial_number: StrictInt | None = Field(default=None, gt=0)
    max_trial_duration: Duration | None = None
    nni_manager_ip: StrictStr | None = None
    use_annotation: StrictBool = False
    debug: StrictBool = False
    log_level: LogLevel | None = None
    experiment_working_directory: PathText | None = None
    tuner_gpu_indices: GpuIndices | None = None
    tuner: AlgorithmConfig | None = Field(default_factory=AlgorithmConfig)
    assessor: AlgorithmConfig | None = Field(default_factory=AlgorithmConfig)
    advisor: AlgorithmConfig | None = Field(default_factory=AlgorithmConfig)
    training_service: Services = Field(default_factory=_local_service)
    shared_storage: Any = None

    _base_dir: Path | None = PrivateAttr(None)
    _v1_converted: bool = PrivateAttr(False)
    _origins: dict[str, str] = PrivateAttr(default_factory=dict)
    _warned: set[str] = PrivateAttr(default_factory=set)

    _key_hints: ClassVar[dict[str, str]] = {
        **{key: _DROP_HINT for key in ("authorname", "description", "versioncheck")},
        **{key: _DROP_HINT for key in ("logcollection", "multithread")},
        "trainingserviceplatform": "this is an NNI v1 field; in v2 write trainingService: "
        "{platform: ...}",
        "trial": "this is NNI's v1 form; in v2 write trialCommand, trialCodeDirectory and "
        "trialGpuNumber at the top level",
        "searchspacepath": _v1_hint("searchSpaceFile"),
        "maxexecduration": _v1_hint("maxExperimentDuration"),
        "maxtrialnum": _v1_hint("maxTrialNumber"),
        "logdir": _v1_hint("experimentWorkingDirectory"),
        "multiphase": "multi-phase trials are not supported; remove it",
        "localconfig": "this is an NNI v1 field; in v2 its fields go in trainingService",
        "remoteconfig": "this is an NNI v1 field; in v2 its fields go in trainingService",
        "machinelist": "this is an NNI v1 field; in v2 write it in trainingService "
        "(platform: remote)",
    }

    def __init__(
        self, training_service_platform: str | list[str] | None = None, /, **data: Any
    ) -> None:
        if training_service_platform is not None and not any(
            normalize(key) == "trainingservice" for key in data
        ):
            if isinstance(training_service_platform, list):
                data["training_service"] = [{"platform": p} for p in training_service_platform]
            else:
                data["training_service"] = {"platform": training_service_platform}
        super().__init__(**data)

    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]  # see ConfigModel

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], base_dir: str | os.PathLike[str] | None = None
    ) -> ExperimentConfig:
        """Build a config from a mapping as found in a YAML or JSON file (v1 or v2).

        Types are checked; required fields and rules between fields are checked by
        :meth:`validate`.

        Args:
            data: The config; keys in any case, with or without underscores. An NNI v1
                config is converted to v2 first (then :attr:`v1_converted` is true).
            base_dir: The folder relative paths are read from (the config file's folder);
                the current folder when None.

        Raises:
            ConfigError: a value of the wrong type, an unknown key, or a v1 field that tunelab
                cannot honour.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(
                Issue(
                    "config",
                    "must be a mapping of field names to values",
                    type(data).__name__,
                    "write the config as 'field: value' lines",
                )
            )
        origins: dict[str, str] = {}
        converted = is_v1(data)
        if converted:
            data, origins = to_v2(data)
        try:
            config = cls.model_validate(data)
        except ValidationError as error:
            issues = issues_from(error, cls) + _missing(data)
            raise ConfigError(_rename(issues, origins)) from None
        config._base_dir = Path(base_dir).absolute() if base_dir is not None else None
        config._v1_converted = converted
        config._origins = origins
        return config

    @property
    def v1_converted(self) -> bool:
        """Whether this config was written in NNI's v1 format and converted."""
        return self._v1_converted

    @property
    def base_dir(self) -> Path:
        """The folder relative paths are read from."""
        return self._base_dir or Path.cwd()

    def validate(self) -> None:  # type: ignore[override]
        """Check the whole config: required fields, rules between fields, files and folders.

        Raises:
            ConfigError: with one issue per problem found.
        """
        _, issues = self._canonical(include_secrets=False)
        if issues:
            raise ConfigError(issues)

    def to_json(self, include_secrets: bool = False) -> dict[str, Any]:
        """The canonical form: validated, camelCase keys, defaults filled in, None left out.

        Paths are absolute, the search space is inlined, and each training service carries the
        shortcut fields. The result can be given to :func:`json.dumps` and read back with
        :meth:`from_dict`.

        Args:
            include_secrets: Put passwords and passphrases in (for the manager, through a pipe;
                never for the store, logs or API answers).

        Raises:
            ConfigError: the config does not validate.
        """
        canonical, issues = self._canonical(include_secrets=include_secrets)
        if issues:
            raise ConfigError(issues)
        return canonical

    def v2_yaml(self) -> str:
        """The config as written, in NNI v2 form, as YAML (secrets shown as ``'***'``).

        For a converted v1 config, this is the v2 config it was converted to.
        """
        written = _written(self)
        plain = json.loads(json.dumps(written, default=repr))
        return yaml.safe_dump(plain, sort_keys=False, allow_unicode=True, width=99)

    def _canonical(self, include_secrets: bool) -> tuple[dict[str, Any], list[Issue]]:
        # Lists and dicts can be changed in place without validation (machine_list.append):
        # check everything again on a fresh copy.
        try:
            fresh = type(self).model_validate(as_input(self))
        except ValidationError as error:
            return {}, _rename(issues_from(error, type(self)), self._origins)
        builder = _Canonical(self.base_dir, include_secrets, self._warned)
        canonical = builder.experiment(fresh)
        return canonical, _rename(builder.issues, self._origins)


_REQUIRED_FIXES = {
    "searchSpace": "write searchSpace or searchSpaceFile (an empty space is written {})",
    "trialCommand": "write the command that runs one trial, e.g. trialCommand: python3 trial.py",
    "trialConcurrency": "for example trialConcurrency: 1",
    "tuner": "for example tuner: {name: TPE}",
}


def _required(where: str) -> Issue:
    return Issue(where, "must be given", fix=_REQUIRED_FIXES[where], show_value=False)


def _missing(data: Mapping[Any, Any]) -> list[Issue]:
    """Required top-level fields absent from a mapping whose types did not validate.

    Reported with the type errors, so that one look at a broken config shows every problem;
    the full check (:meth:`ExperimentConfig.validate`) needs a config whose types are right.
    """
    given = {normalize(key): value for key, value in data.items() if isinstance(key, str)}
    services = given.get("trainingservice")
    service_list = services if isinstance(services, list) else [services]
    commands = [given.get("trialcommand")] + [
        _platform_key(service, "trialcommand") for service in service_list
    ]
    missing = {
        "searchSpace": given.get("searchspace") is None and given.get("searchspacefile") is None,
        "trialCommand": all(command is None for command in commands),
        "trialConcurrency": given.get("trialconcurrency") is None,
        "tuner": given.get("tuner") is None and given.get("advisor") is None,
    }
    return [_required(where) for where, absent in missing.items() if absent]


def _platform_key(service: Any, form: str) -> Any:
    if not isinstance(service, Mapping):
        return None
    return next(
        (v for k, v in service.items() if isinstance(k, str) and normalize(k) == form), None
    )


def _rename(issues: list[Issue], origins: Mapping[str, str]) -> list[Issue]:
    """Name fields of a converted v1 config as the user wrote them."""
    if not origins:
        return issues
    renamed = []
    for issue in issues:
        where = issue.where
        for v2_path in sorted(origins, key=len, reverse=True):
            if where == v2_path or where.startswith((v2_path + ".", v2_path + "[")):
                where = origins[v2_path] + where[len(v2_path) :]
                break
        renamed.append(Issue(where, issue.rule, issue.value, issue.fix, issue.show_value))
    return renamed


def _touched(model: ConfigModel) -> bool:
    if model.model_fields_set:
        return True
    return any(
        isinstance(item := getattr(model, name), ConfigModel) and _touched(item)
        for name in type(model).model_fields
    )


def _written(value: Any) -> Any:
    """A model as its user wrote it: camelCase, fields given (or filled in) only."""
    if isinstance(value, SecretStr):
        return "***"
    if isinstance(value, list):
        return [_written(item) for item in value]
    if not isinstance(value, ConfigModel):
        return value
    out: dict[str, Any] = {}
    for name in type(value).model_fields:
        item = getattr(value, name)
        if item is None:
            continue
        given = name in value.model_fields_set or name == "platform"
        if isinstance(item, ConfigModel):
            given = given or _touched(item)
        elif isinstance(item, list) and item:
            given = True
        if given:
            out[camel(name)] = _written(item)
    return out


_JSON_RULE = "must be plain JSON data"
_JSON_FIX = (
    "use mappings with string keys, lists, strings, finite numbers, true/false and null only"
)


def _json_problem(value: Any, depth: int = 0) -> str | None:
    """Why ``value`` is not plain JSON data, or None if it is."""
    if depth > 100:
        return "is nested too deeply"
    if value is None or isinstance(value, (str, bool, int)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"contains {value!r}"
    if isinstance(value, (list, tuple)):
        return next(filter(None, (_json_problem(item, depth + 1) for item in value)), None)
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"has a key that is not a string: {key!r}"
            problem = _json_problem(item, depth + 1)
            if problem:
                return problem
        return None
    return f"contains a {type(value).__name__} value"


class _Canonical:
    """Builds the canonical form of a freshly validated config and collects its problems."""

    def __init__(self, base: Path, include_secrets: bool, warned: set[str]) -> None:
        self.base = base
        self.include_secrets = include_secrets
        self.warned = warned
        self.issues: list[Issue] = []
        self.command_somewhere = False

    def issue(self, where: str, rule: str, value: Any = None, fix: str | None = None) -> None:
        self.issues.append(Issue(where, rule, value, fix, show_value=value is not None))

    def path(self, text: str, where: str, kind: str | None = None) -> str:
        """``text`` resolved against the base folder; ``kind`` "dir" or "file" must exist."""
        path = Path(os.path.expanduser(text))
        if not path.is_absolute():
            path = self.base / path
        path = path.resolve()
        if kind == "dir" and not path.is_dir():
            rule = "is not a folder" if path.exists() else "folder not found"
            self.issue(where, f"{rule}: {path}", text, "name an existing folder")
        elif kind == "file" and not path.is_file():
            rule = "is not a file" if path.exists() else "file not found"
            self.issue(where, f"{rule}: {path}", text, "name an existing file")
        return str(path)

    def data(self, value: Any, where: str) -> Any:
        """User data (a search space, class arguments), checked to be JSON, as a copy."""
        problem = _json_problem(value)
        if problem:
            self.issue(where, f"{_JSON_RULE}; it {problem}", value, _JSON_FIX)
            return value
        return copy.deepcopy(value)

    def experiment(self, config: ExperimentConfig) -> dict[str, Any]:
        out: dict[str, Any] = {}
        _put(out, "experimentName", config.experiment_name)
        out["experimentType"] = config.experiment_type
        self.search_space(config, out)

        services = config.training_service
        service_list = services if isinstance(services, list) else [services]
        top = self.shortcuts(config, service_list)
        _put(out, "trialCommand", top["trial_command"])
        out["trialCodeDirectory"] = top["trial_code_directory"]
        if config.trial_concurrency is None:
            self.issues.append(_required("trialConcurrency"))
        _put(out, "trialConcurrency", config.trial_concurrency)
        _put(out, "trialGpuNumber", top["trial_gpu_number"])
        _put(out, "maxExperimentDuration", config.max_experiment_duration)
        _put(out, "maxTrialNumber", config.max_trial_number)
        _put(out, "maxTrialDuration", config.max_trial_duration)
        _put(out, "nniManagerIp", top["nni_manager_ip"])
        if config.use_annotation:
            self.issue(
                "useAnnotation",
                "annotations are not supported (NNI 3.0 refuses them too)",
                True,
                "remove useAnnotation and give the search space in searchSpace or searchSpaceFile",
            )
        out["debug"] = top["debug"]
        out["logLevel"] = config.log_level or ("debug" if config.debug else "info")
        if config.experiment_working_directory is not None:
            out["experimentWorkingDirectory"] = self.path(
                config.experiment_working_directory, "experimentWorkingDirectory"
            )
        _put(out, "tunerGpuIndices", config.tuner_gpu_indices)
        self.algorithms(config, out)

        if isinstance(services, list):
            out["trainingService"] = [
                self.service(service, f"trainingService[{index}]", top)
                for index, service in enumerate(services)
            ]
        else:
            out["trainingService"] = self.service(services, "trainingService", top)
        if config.shared_storage is not None:
            self.issue(
                "sharedStorage",
                "shared storage is not supported",
                config.shared_storage,
                "remove sharedStorage; trial code is copied to each training service",
            )
        return out

    def search_space(self, config: ExperimentConfig, out: dict[str, Any]) -> None:
        space = config.search_space
        if config.search_space_file is not None:
            path = self.path(config.search_space_file, "searchSpaceFile")
            out["searchSpaceFile"] = path
            try:
                from_file = read_structured(Path(path), json_first=True)
            except FileProblem as problem:
                self.issue("searchSpaceFile", f"{problem.where}: {problem.rule}", fix=problem.fix)
                return
            if from_file is None:
                self.issue(
                    "searchSpaceFile",
                    f"the file is empty: {path}",
                    fix="an empty search space is written {}",
                )
                return
            if not isinstance(from_file, dict):
                self.issue(
                    "searchSpaceFile",
                    f"must hold a JSON object (parameter names and their specs): {path}",
                    type(from_file).__name__,
                    'for example {"lr": {"_type": "loguniform", "_value": [0.0001, 0.1]}}',
                )
                return
            if space is not None and space != from_file and "space" not in self.warned:
                self.warned.add("space")
                _logger.warning(
                    "Config gives both searchSpace and searchSpaceFile; using the file %s", path
                )
            space = from_file
            where = "searchSpaceFile"
        else:
            where = "searchSpace"
        if space is None:
            self.issues.append(_required("searchSpace"))
            return
        out["searchSpace"] = self.data(space, where)

    def shortcuts(
        self, config: ExperimentConfig, services: Sequence[TrainingServiceConfig]
    ) -> dict[str, Any]:
        """The top-level shortcut values: as given, or the one value all services agree on."""
        top: dict[str, Any] = {}
        for name in SHORTCUT_FIELDS:
            value = getattr(config, name)
            if value is None:
                given = [getattr(service, name) for service in services]
                if None not in given and len(set(given)) == 1:
                    value = given[0]
            top[name] = value

        self.command_somewhere = any(s.trial_command is not None for s in services)
        if top["trial_command"] is None and not self.command_somewhere:
            self.issues.append(_required("trialCommand"))
        code = top["trial_code_directory"] or "."
        top["trial_code_directory"] = self.path(code, "trialCodeDirectory", "dir")
        return top

    def algorithms(self, config: ExperimentConfig, out: dict[str, Any]) -> None:
        tuner, advisor = config.tuner, config.advisor
        where = "tuner"
        if advisor is not None and advisor.is_set():
            if tuner is not None and tuner.is_set():
                self.issue(
                    "advisor",
                    "cannot be given together with tuner",
                    fix="advisor is NNI's old name for a tuner: keep only tuner",
                )
            else:
                tuner, where = advisor, "advisor"
        if tuner is None or not tuner.is_set():
            self.issues.append(_required("tuner"))
        else:
            out["tuner"] = self.algorithm(tuner, where)
        if config.assessor is not None and config.assessor.is_set():
            out["assessor"] = self.algorithm(config.assessor, "assessor")

    def algorithm(self, algorithm: AlgorithmConfig, where: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        name, class_name = algorithm.name, algorithm.class_name
        if name is not None and class_name is not None:
            self.issue(
                where,
                "gives both name and className",
                fix="use name for a built-in algorithm, or className with codeDirectory for "
                "a class of your own",
            )
        elif name is None and class_name is None:
            self.issue(
                f"{where}.name",
                "must be given",
                fix="write name (a built-in, e.g. TPE) or className: 'module.Class'",
            )
        _put(out, "name", name)
        if class_name is not None:
            module, _, attribute = class_name.rpartition(".")
            if not module or not attribute or not all(class_name.split(".")):
                self.issue(
                    f"{where}.className",
                    "must be a module and a class, separated by a dot",
                    class_name,
                    "for example className: my_tuner.MyTuner",
                )
            out["className"] = class_name
            out["codeDirectory"] = self.path(
                algorithm.code_directory or ".", f"{where}.codeDirectory", "dir"
            )
        elif algorithm.code_directory is not None:
            self.issue(
                f"{where}.codeDirectory",
                "only applies with className",
                algorithm.code_directory,
                "remove codeDirectory, or give className",
            )
        if algorithm.class_args:
            out["classArgs"] = self.data(algorithm.class_args, f"{where}.classArgs")
        return out

    def service(
        self, service: TrainingServiceConfig, where: str, top: dict[str, Any]
    ) -> dict[str, Any]:
        out: dict[str, Any] = {"platform": service.platform}
        command = _first(service.trial_command, top["trial_command"])
        if command is None and self.command_somewhere:
            self.issue(
                f"{where}.trialCommand",
                "must be given (other training services have one, this one has none)",
                fix="write trialCommand at the top level or in this training service",
            )
        _put(out, "trialCommand", command)
        if service.trial_code_directory is not None:
            out["trialCodeDirectory"] = self.path(
                service.trial_code_directory, f"{where}.trialCodeDirectory", "dir"
            )
        else:
            out["trialCodeDirectory"] = top["trial_code_directory"]
        gpu_number = _first(service.trial_gpu_number, top["trial_gpu_number"])
        _put(out, "trialGpuNumber", gpu_number)
        if not isinstance(service, LocalConfig):  # NNI ignores nniManagerIp for local
            _put(out, "nniManagerIp", _first(service.nni_manager_ip, top["nni_manager_ip"]))
        out["debug"] = _first(service.debug, top["debug"])

        if isinstance(service, LocalConfig):
            self.per_gpu(service.max_trial_number_per_gpu, gpu_number, where)
            _put(out, "useActiveGpu", service.use_active_gpu)
            out["maxTrialNumberPerGpu"] = service.max_trial_number_per_gpu
            _put(out, "gpuIndices", service.gpu_indices)
            _put(out, "reuseMode", service.reuse_mode)
        elif isinstance(service, RemoteConfig):
            if not service.machine_list:
                self.issue(
                    f"{where}.machineList",
                    "must list at least one machine",
                    fix="for example machineList: [{host: 10.0.0.2, user: alice}]",
                )
            out["machineList"] = [
                self.machine(machine, f"{where}.machineList[{index}]", gpu_number)
                for index, machine in enumerate(service.machine_list)
            ]
            _put(out, "reuseMode", service.reuse_mode)
        elif isinstance(service, RayConfig):
            _put(out, "address", service.address)
            out["trialCpuNumber"] = service.trial_cpu_number
            _put(out, "trialMemorySize", service.trial_memory_size)
            if service.runtime_env is not None:
                out["runtimeEnv"] = self.data(service.runtime_env, f"{where}.runtimeEnv")
        return out

    def per_gpu(self, per_gpu: int, gpu_number: int | None, where: str) -> None:
        if per_gpu != 1 and not gpu_number:  # NNI's rule: trials that use no GPU share none
            self.issue(
                f"{where}.maxTrialNumberPerGpu",
                "only applies when trialGpuNumber is at least 1",
                per_gpu,
                "set trialGpuNumber, or remove maxTrialNumberPerGpu",
            )

    def machine(
        self, machine: RemoteMachineConfig, where: str, gpu_number: int | None
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in ("host", "user"):
            if getattr(machine, name) is None:
                self.issue(f"{where}.{name}", "must be given", fix=f"write the machine's {name}")
        _put(out, "host", machine.host)
        out["port"] = machine.port
        _put(out, "user", machine.user)
        if self.include_secrets:
            _put(out, "password", _secret(machine.password))
        if machine.ssh_key_file is not None:
            out["sshKeyFile"] = self.path(machine.ssh_key_file, f"{where}.sshKeyFile", "file")
        if self.include_secrets:
            _put(out, "sshPassphrase", _secret(machine.ssh_passphrase))
        out["useActiveGpu"] = machine.use_active_gpu
        self.per_gpu(machine.max_trial_number_per_gpu, gpu_number, where)
        out["maxTrialNumberPerGpu"] = machine.max_trial_number_per_gpu
        _put(out, "gpuIndices", machine.gpu_indices)
        _put(out, "pythonPath", machine.python_path)
        return out


def _put(out: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        out[key] = value


def _first(*values: Any) -> Any:
    return next((value for value in values if value is not None), None)


def _secret(value: SecretStr | None) -> str | None:
    return None if value is None else value.get_secret_value()
