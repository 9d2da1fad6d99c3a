"""ExperimentConfig: the one typed config of a run, loaded from a TOML file plus overrides.

Sections: model (model.ModelConfig), loss (model.LossConfig), augment (pipeline.AugmentConfig),
data, optim, run. A file sets any subset of keys; `--section.key=value` overrides follow; an
unknown section or key, a value of the wrong type, or an invalid value is an error raised here,
before any work starts. Each consumer receives only its own section.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from model.config import LossConfig, ModelConfig
from model.objective import MIN_VIDEOS_PER_BATCH
from pipeline.config import AugmentConfig
from pipeline.placement import DEFAULT_GPU_SHARE
from preprocessing.storage import is_uri
from preprocessing.validation import check_field_types, describe_type, require


class ConfigError(ValueError):
    """A config file or override is wrong; the message says which key and why."""


@dataclass(frozen=True)
class DataConfig:
    """shards: the pretraining shard folder; split: keep only this split (None: all rows).
    batch_size: global, split across workers (each needs model.objective.MIN_VIDEOS_PER_BATCH,
    checked by ExperimentConfig). backend: "dali" or "reference" (PyAV).
    shuffle_memory_mb: payload memory per worker for the epoch shuffle: the training order
    permutes the rows of windows of row groups this large (pipeline/shard_reader.py); a budget
    that holds a worker's share of the dataset gives a uniform permutation.
    decode: where DALI decodes, independent of where the model trains (pipeline.placement):
    "auto" (the training device's own decoders), "cpu", "gpu", or "split" (each batch between
    the host's num_threads and the GPU at once, decode_gpu_share of it on the GPU; the default
    share is from the measured one-loader rates on an H200 host). "gpu" and "split" need
    run.gpu."""

    shards: str = ""
    split: str | None = None
    batch_size: int = 128
    backend: Literal["dali", "reference"] = "dali"
    prefetch: int = 2
    num_threads: int = 4
    shuffle_memory_mb: int = 2048
    decode: Literal["auto", "cpu", "gpu", "split"] = "auto"
    decode_gpu_share: float = DEFAULT_GPU_SHARE

    def __post_init__(self) -> None:
        check_field_types(self)
        require(self.shuffle_memory_mb >= 1, "shuffle_memory_mb must be >= 1")
        require(0.0 <= self.decode_gpu_share <= 1.0, "decode_gpu_share must be in [0, 1]")
        require(self.backend == "dali" or self.decode in ("auto", "cpu"),
                f"data.decode = {self.decode!r} needs data.backend = 'dali' (the reference "
                f"backend decodes on the host)")
        require(self.prefetch >= 1 and self.num_threads >= 1,
                "prefetch and num_threads must be >= 1")


@dataclass(frozen=True)
class OptimConfig:
    """Adam with weight decay; the learning rate is multiplied by decay_factor at each epoch in
    decay_epochs (the paper: x0.1 at 150 of 200 on UCF-101, 70 of 100 on Kinetics-400)."""

    epochs: int = 200
    lr: float = 1e-3
    weight_decay: float = 1e-5
    decay_epochs: tuple[int, ...] = (150,)
    decay_factor: float = 0.1

    def __post_init__(self) -> None:
        check_field_types(self)
        require(self.epochs >= 1 and self.lr > 0, "epochs must be >= 1 and lr > 0")
        require(self.weight_decay >= 0 and self.decay_factor > 0,
                "weight_decay must be >= 0 and decay_factor > 0")


@dataclass(frozen=True)
class RunConfig:
    """name + storage_path identify the job: rerunning the same command resumes it.

    ray: run on Ray Train (true) or in this process without Ray (false: one worker, no
    cluster; for debugging and small CPU jobs such as the ablations).
    workers: Ray Train workers; gpu: one GPU per worker (bf16 autocast, channels_last_3d).
    max_failures: worker failures survived by restarting from the last checkpoint.
    checkpoint_every_steps: also checkpoint inside an epoch (0: only at epoch ends).
    tracking_uri: MLflow ("" = a local SQLite file in storage_path; or a server URL).
    fail_at_step: fault injection for drills and tests: the rank-1 worker (rank 0 when alone)
    raises once when it reaches this global step (-1: never).
    """

    name: str = "ctrlaug"
    storage_path: str = "runs"
    ray: bool = True
    workers: int = 1
    gpu: bool = False
    max_failures: int = 3
    checkpoint_every_steps: int = 0
    seed: int = 0
    log_every_steps: int = 10
    tracking_uri: str = ""
    experiment: str = "ctrlaug-pretrain"
    fail_at_step: int = -1
    init_encoder: str = ""

    def __post_init__(self) -> None:
        check_field_types(self)
        require(self.workers >= 1 and self.max_failures >= 0,
                "workers must be >= 1 and max_failures >= 0")
        require(bool(self.name) and "/" not in self.name, "name must be a non-empty name "
                                                          "without '/'")
        require(self.ray or self.workers == 1, "run.ray = false runs one worker in this "
                                               "process; set run.workers = 1 or run.ray = true")
        require(self.checkpoint_every_steps >= 0 and self.log_every_steps >= 1,
                "checkpoint_every_steps must be >= 0 and log_every_steps >= 1")


@dataclass(frozen=True)
class ExperimentConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        require(self.model.num_clips == self.augment.num_clips,
                f"model.num_clips ({self.model.num_clips}) and augment.num_clips "
                f"({self.augment.num_clips}) must match")
        require(self.data.batch_size >= self.run.workers * MIN_VIDEOS_PER_BATCH,
                f"data.batch_size {self.data.batch_size} gives workers fewer than "
                f"{MIN_VIDEOS_PER_BATCH} videos each (run.workers = {self.run.workers})")
        levels = min(self.augment.levels_per_batch, self.augment.num_levels)
        why = "augment.jitter = false gives every view level 0" if not self.augment.jitter \
            else f"a batch holds {levels} level"
        require(not self.loss.mi or (self.augment.jitter and levels >= 2),
                f"loss.mi removes what the features say about the intensity level, but {why} "
                f"(nothing to remove): set loss.mi = false, or jitter with 2+ levels per batch")
        require(self.run.gpu or self.data.decode in ("auto", "cpu"),
                f"data.decode = {self.data.decode!r} decodes on a GPU, but run.gpu = false: "
                f"set run.gpu = true or data.decode = 'cpu'")

    def with_absolute_paths(self) -> ExperimentConfig:
        """The same config with its local locations (data.shards, run.storage_path,
        run.init_encoder) made absolute; URIs as they are. Workers run in other directories
        (Ray Train starts them in its session folder), so the driver resolves paths first."""
        def absolute(location: str) -> str:
            return location if not location or is_uri(location) else \
                str(Path(location).resolve())

        return dataclasses.replace(
            self, data=dataclasses.replace(self.data, shards=absolute(self.data.shards)),
            run=dataclasses.replace(self.run, storage_path=absolute(self.run.storage_path),
                                    init_encoder=absolute(self.run.init_encoder)))

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {section.name: dataclasses.asdict(getattr(self, section.name))
                for section in dataclasses.fields(self)}

    def flat(self) -> dict[str, Any]:
        """{"section.key": value} for logging as parameters."""
        return {f"{section}.{key}": value for section, values in self.to_dict().items()
                for key, value in values.items()}


SECTIONS = {f.name: f.default_factory for f in dataclasses.fields(ExperimentConfig)}

# What a rerun of a job may change: how it runs, not what it computes (and optim.epochs, to
# extend a finished job). run.name and run.storage_path locate the job, so they match.
RESUMABLE_CHANGES = frozenset({
    "optim.epochs", "data.backend", "data.prefetch", "data.num_threads", "data.decode",
    "data.decode_gpu_share", "run.gpu", "run.max_failures", "run.checkpoint_every_steps",
    "run.log_every_steps", "run.tracking_uri", "run.experiment", "run.fail_at_step",
    "run.init_encoder", "run.name", "run.storage_path"})


def resume_conflicts(saved: dict[str, dict[str, Any]], config: ExperimentConfig) -> list[str]:
    """"section.key: saved -> now" for each setting in which `config` differs from `saved` (the
    config a job's checkpoint was written with, ExperimentConfig.to_dict()), RESUMABLE_CHANGES
    aside. A setting the checkpoint predates is not compared."""
    def plain(value: Any) -> Any:  # tuples and lists alike, as after a JSON round trip
        return json.loads(json.dumps(value))

    now = config.to_dict()
    return [f"{section}.{key}: {value!r} -> {now[section][key]!r}"
            for section, values in saved.items() if section in now
            for key, value in values.items()
            if key in now[section] and f"{section}.{key}" not in RESUMABLE_CHANGES
            and plain(value) != plain(now[section][key])]


def _coerce(text: str, hint: Any, where: str) -> Any:
    """Parse an override string as the field's type (JSON-ish: 1e-3, true, [150], "none")."""
    origin = typing.get_origin(hint)
    if hint is str or (origin is Literal and all(isinstance(a, str) for a in hint.__args__)):
        return text
    if text.lower() in ("none", "null") and type(None) in typing.get_args(hint):
        return None
    try:
        value = json.loads(text.lower() if text.lower() in ("true", "false") else text)
    except json.JSONDecodeError:
        if type(None) in typing.get_args(hint) and str in typing.get_args(hint):
            return text
        raise ConfigError(f"{where}: cannot parse {text!r}") from None
    return tuple(value) if isinstance(value, list) else value


def _build(section: str, values: dict[str, Any]):
    cls = SECTIONS[section]
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"unknown key(s) in [{section}]: {', '.join(unknown)}; known: "
                          f"{', '.join(sorted(names))}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    try:
        return cls(**values)  # every section checks itself on construction
    except (TypeError, ValueError) as error:
        raise ConfigError(f"[{section}] {error}") from None


def load_config(path: Path | str | None = None, overrides: list[str] = ()) -> ExperimentConfig:
    """Read a TOML config (or defaults), apply `section.key=value` overrides, validate."""
    sections: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} not found")
        try:
            document = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path}: {error}") from None
        for name, values in document.items():
            if name not in SECTIONS or not isinstance(values, dict):
                raise ConfigError(f"{path}: unknown section [{name}]; sections are "
                                  f"{', '.join(SECTIONS)}")
            sections[name].update(values)
    for override in overrides:
        key, sep, text = override.removeprefix("--").partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot or section not in SECTIONS:
            raise ConfigError(f"override {override!r} must look like --section.key=value with "
                              f"section one of {', '.join(SECTIONS)}")
        hints = typing.get_type_hints(SECTIONS[section])
        if name not in hints:
            raise ConfigError(f"unknown key {section}.{name}")
        sections[section][name] = _coerce(text, hints[name], f"--{key}")
    built = {name: _build(name, values) for name, values in sections.items()}
    try:
        return ExperimentConfig(**built)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def describe(config: ExperimentConfig) -> str:
    """Every key of the config, one a line: section.key, its type, its default and the value
    this config gives it (marked * where that differs from the default): `ctrlaug config`."""
    rows = [("key", "type", "default", "value")]
    for section in dataclasses.fields(ExperimentConfig):
        values = getattr(config, section.name)
        defaults = SECTIONS[section.name]()
        hints = typing.get_type_hints(type(values))
        for item in dataclasses.fields(values):
            value, default = getattr(values, item.name), getattr(defaults, item.name)
            kind = describe_type(hints[item.name])
            rows.append((f"{section.name}.{item.name}", kind, repr(default),
                         repr(value) + (" *" if value != default else "")))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(f"{row[0]:{widths[0]}}  {row[1]:{widths[1]}}  {row[2]:{widths[2]}}  "
                     f"{row[3]}".rstrip() for row in rows) + "\n"


def config_from_dict(values: dict[str, dict[str, Any]]) -> ExperimentConfig:
    """The inverse of ExperimentConfig.to_dict (checkpoints, Ray workers)."""
    return ExperimentConfig(**{name: _build(name, section) for name, section in values.items()})
