"""MLflow for pretraining: where runs go, one run per job, and what rank 0 logs to it.

Where runs go: run.tracking_uri (or --tracking-uri) if set, else the standard
MLFLOW_TRACKING_URI environment variable (how the compose stack points every service at its
server), else a SQLite file in the job's storage folder (no server needed). A server URL is
checked for reachability before training starts. A job (run.name) maps
to one MLflow run, found again by its `ctrlaug.job` tag, so a resumed or restarted job keeps
logging to the same run.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from preprocessing import shards as layout

JOB_TAG = "ctrlaug.job"


class TrackingUnavailable(RuntimeError):
    """The tracking server cannot be reached."""


def resolve_tracking_uri(tracking_uri: str, storage_path: str) -> str:
    """The configured URI, else $MLFLOW_TRACKING_URI, else sqlite:///STORAGE/mlflow.db."""
    if tracking_uri:
        return tracking_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    folder = Path(storage_path).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


@contextmanager
def fluent_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API (log_model, load_model) at `uri` for the block only.

    mlflow.set_tracking_uri also sets $MLFLOW_TRACKING_URI for the whole process, so without
    this, the first model logged would redirect every later job of a long-lived process (an
    ablation, a test session) that relies on the default store.
    """
    import mlflow

    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)  # None unsets the variable again


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Raise TrackingUnavailable with one clear line if an http(s) tracking server is down."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as response:
            if response.status != 200:
                raise TrackingUnavailable(f"MLflow server {uri} answered {response.status}")
    except OSError as error:
        raise TrackingUnavailable(f"MLflow tracking server {uri} is not reachable "
                                  f"({getattr(error, 'reason', error)})") from None


def git_commit() -> str:
    """The source's git commit; in an image (no .git) the one it was built from, if given."""
    if os.environ.get("CTRLAUG_GIT_COMMIT", "unknown") != "unknown":
        return os.environ["CTRLAUG_GIT_COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parent, timeout=10,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def manifest_hash(shards: str) -> str:
    return hashlib.sha256(layout.manifest_bytes(Path(shards))).hexdigest()


def job_run(uri: str, experiment: str, job: str, tags: dict[str, str]) -> str:
    """The MLflow run id of this job: the existing one (tagged with the job name) or a new one."""
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{JOB_TAG}` = '{job}'",
                              max_results=1)
    if runs:
        return runs[0].info.run_id
    run = client.create_run(experiment_id, run_name=job, tags={JOB_TAG: job, **tags})
    return run.info.run_id


class RunLogger:
    """Rank 0's handle on the job's MLflow run (client API: no global active-run state)."""

    def __init__(self, uri: str, run_id: str) -> None:
        self.client, self.run_id = MlflowClient(uri), run_id

    def params_once(self, params: dict[str, Any]) -> None:
        if self.client.get_run(self.run_id).data.params:
            return
        self.client.log_batch(self.run_id, params=[Param(k, str(v)[:6000])
                                                   for k, v in params.items()])

    def metrics(self, values: dict[str, float], step: int) -> None:
        import time

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step)
                                                    for k, v in values.items()])

    def json(self, value: Any, name: str) -> None:
        self.client.log_dict(self.run_id, value, name)

    def image(self, image, name: str) -> None:
        self.client.log_image(self.run_id, image, name)

    def file(self, path: Path, folder: str) -> None:
        self.client.log_artifact(self.run_id, str(path), folder)

    def has_artifact(self, path: str) -> bool:
        return any(a.path == path for a in self.client.list_artifacts(self.run_id))

    def tag(self, key: str, value: str) -> None:
        self.client.set_tag(self.run_id, key, value)

    def model(self, module, name: str) -> None:
        """Log a torch module as an MLflow PyTorch model under the run's artifacts."""
        import mlflow.pytorch

        with fluent_tracking_uri(self.client.tracking_uri), \
                tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / name
            # Pickled module (its class is importable from this package); requirements stated
            # rather than inferred, which would import and probe the whole environment.
            mlflow.pytorch.save_model(module, str(path), serialization_format="pickle",
                                      pip_requirements=["torch", "ctrlaug"])
            self.client.log_artifacts(self.run_id, str(path), name)

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status)
