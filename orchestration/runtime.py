"""Where a training loop runs: in this process (`LocalRuntime`) or in a Ray Train worker
(`RayRuntime`). Pretraining and finetuning share one loop each, written against this interface:

    rank, world, device      this worker's place
    restore() -> dict | None the job's latest checkpoint (orchestration.checkpoint)
    prepare(module)          move to the device; under Ray with several workers, wrap in DDP
    report(metrics, ckpt)    a checkpoint (rank 0 passes the dict, others None) and metrics
    agree(flag) -> bool      True on every worker when it is true on one (a stop decision)

Ray is imported only inside RayRuntime, so the in-process path needs no cluster.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

import torch

from orchestration.checkpoint import (
    CHECKPOINT_FILE,
    checkpoint_from_bytes,
    load_checkpoint,
    save_checkpoint,
)
from orchestration.distributed import any_rank
from preprocessing.storage import Folder

# Credentials and endpoints the workers need to reach the tracking server and object stores;
# forwarded from the driver's environment (on a remote cluster the workers do not inherit it).
FORWARDED_ENV = ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                 "MLFLOW_TRACKING_INSECURE_TLS", "MLFLOW_TRACKING_SERVER_CERT_PATH",
                 "MLFLOW_TRACKING_CLIENT_CERT_PATH", "MLFLOW_S3_ENDPOINT_URL",
                 "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_ENDPOINT_URL",
                 "GOOGLE_APPLICATION_CREDENTIALS")


def forwarded_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The FORWARDED_ENV variables set in `environ` (default: this process's environment),
    less those that a submitted job's runtime_env sets already (`ray job submit
    --runtime-env-json`: the driver's environment then holds them, and Ray refuses a ray.init
    that sets the same variable again)."""
    environ = os.environ if environ is None else environ
    job = json.loads(environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}"))
    from_job = (job.get("runtime_env") or {}).get("env_vars") or {}
    return {name: environ[name] for name in FORWARDED_ENV
            if name in environ and name not in from_job}


def connect_ray(address: str | None = None, **options) -> bool:
    """Start or join Ray (address None: $RAY_ADDRESS if set, else a local instance) with the
    credentials of FORWARDED_ENV in the job's runtime environment; returns whether this call
    connected (False when Ray was already initialised by the caller, whose runtime environment
    then applies)."""
    import ray

    if ray.is_initialized():
        return False
    # The dashboard serves the state API, through which Ray Train's placement-group cleaner
    # checks the controller (without it, a warning every few seconds and no cleanup). Ray
    # Train's print patch would print each worker line twice (its log handler and a tee).
    ray.init(address=address, include_dashboard=True,
             runtime_env={"env_vars": {**forwarded_env(), "RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}},
             **options)
    return True


def quiet_train_logging() -> dict:
    """RunConfig options that keep Ray Train's own INFO lines per report ("Reported metrics",
    "Checkpoint successfully created") off the console, so the loop's progress line is what a
    user reads; warnings still show. Ray releases before LoggingConfig (2026) print them."""
    import ray.train

    if not hasattr(ray.train, "LoggingConfig"):
        return {}
    return {"logging_config": ray.train.LoggingConfig(log_level="WARNING")}


def quiet_report_lines() -> None:
    """In a Ray Train worker: keep Ray's "Reporting training result N: TrainingReport(...)"
    line per report off the console. Ray 2.60 logs it at INFO on a logger named by its file's
    path, outside "ray.train", so LoggingConfig's level (quiet_train_logging) misses it."""
    try:
        from ray.train.v2._internal.execution import context
    except ImportError:  # a Ray without that module logs no such line
        return
    logging.getLogger(context.__file__).setLevel(logging.WARNING)


class LocalRuntime:
    """A loop's runtime in this process, without Ray: one worker, checkpoints in the job folder.

    restore() reads FOLDER/<file> if a previous run left one; report() writes it atomically,
    with the reported metrics beside it, so that rerunning a finished job (which trains
    nothing) still returns its last metrics, as Ray's result does.
    """

    rank, world = 0, 1

    def __init__(self, folder: str | Path | Folder, device: torch.device,
                 file: str = CHECKPOINT_FILE) -> None:
        self.folder, self.device, self.file = Folder(folder), device, file
        self.last_metrics: dict = {}

    def restore(self) -> dict | None:
        if not self.folder.is_file(self.file):
            return None
        saved = load_checkpoint(self.folder / self.file)
        self.last_metrics = saved.get("reported_metrics", {})
        return saved

    def prepare(self, network: torch.nn.Module) -> torch.nn.Module:
        return network.to(self.device)

    def report(self, metrics: dict, checkpoint: dict | None) -> None:
        self.last_metrics = metrics
        if checkpoint is not None:
            save_checkpoint(self.folder / self.file, {**checkpoint, "reported_metrics": metrics})

    def agree(self, flag: bool) -> bool:
        return flag


def read_ray_checkpoint(checkpoint, file: str = CHECKPOINT_FILE) -> dict:
    """The checkpoint dict in `file` of a ray.train.Checkpoint, read by this process alone.

    Not Checkpoint.as_directory(): on remote storage it downloads into one folder per node
    shared by the node's workers, and a worker that starts its download after another finished
    rewrites the file while the other reads it (a corrupted-archive error when a job resumes
    after losing a worker). Reading straight from the checkpoint's filesystem shares nothing.
    """
    with checkpoint.filesystem.open_input_file(f"{checkpoint.path}/{file}") as stream:
        return checkpoint_from_bytes(stream.read())


class RayRuntime:
    """A loop's runtime inside a Ray Train worker: DDP, Ray's checkpoints and reports."""

    def __init__(self, gpu: bool, file: str = CHECKPOINT_FILE) -> None:
        import ray.train
        import ray.train.torch

        quiet_report_lines()
        self.file = file
        context = ray.train.get_context()
        self.rank, self.world = context.get_world_rank(), context.get_world_size()
        self.device = ray.train.torch.get_device() if gpu else torch.device("cpu")

    def restore(self) -> dict | None:
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        return None if checkpoint is None else read_ray_checkpoint(checkpoint, self.file)

    def prepare(self, network: torch.nn.Module) -> torch.nn.Module:
        import ray.train.torch

        return ray.train.torch.prepare_model(network) if self.world > 1 else \
            network.to(self.device)

    def report(self, metrics: dict, checkpoint: dict | None) -> None:
        import ray.train

        if checkpoint is None:
            ray.train.report(metrics, checkpoint=None)
            return
        with tempfile.TemporaryDirectory() as folder:
            torch.save(checkpoint, Path(folder) / self.file)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))

    def agree(self, flag: bool) -> bool:
        return any_rank(flag, self.device)
