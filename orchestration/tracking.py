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
import json
import os
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from preprocessing import shards as layout
from preprocessing.storage import Folder, is_uri

JOB_TAG = "ctrlaug.job"
JOB_FOLDER_TAG = "ctrlaug.job_folder"  # with JOB_TAG, what identifies a job: storage / name
SEARCH_PAGE = 1000  # runs per MLflow search request (its largest page)


class TrackingUnavailable(RuntimeError):
    """The tracking server cannot be reached."""


def resolve_tracking_uri(tracking_uri: str, storage_path: str) -> str:
    """The configured URI, else $MLFLOW_TRACKING_URI, else sqlite:///STORAGE/mlflow.db."""
    if tracking_uri:
        return tracking_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    if is_uri(storage_path):
        raise ValueError(f"run.storage_path {storage_path} is an object store: give "
                         f"run.tracking_uri (an MLflow server) or set MLFLOW_TRACKING_URI (the "
                         f"default SQLite store needs a local folder)")
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
    return hashlib.sha256(layout.manifest_bytes(shards)).hexdigest()


def artifact_location(uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: beside a SQLite store (STORE_DIR/artifacts),
    so that nothing lands in the current directory (MLflow's default, ./mlruns); None for a
    tracking server, which stores or proxies artifacts itself."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").resolve().as_uri()


def experiment_id(client: MlflowClient, name: str) -> str:
    """The id of the experiment `name`, created (artifacts beside its store) if missing."""
    found = client.get_experiment_by_name(name)
    if found:
        return found.experiment_id
    return client.create_experiment(name, artifact_location=artifact_location(
        client.tracking_uri))


def source_tags() -> dict[str, str]:
    """MLflow's own source tags: the code's git commit, the program, the kind of source."""
    from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT, MLFLOW_SOURCE_NAME, MLFLOW_SOURCE_TYPE

    return {MLFLOW_GIT_COMMIT: git_commit(), MLFLOW_SOURCE_NAME: "ctrlaug",
            MLFLOW_SOURCE_TYPE: "JOB"}


def job_run(uri: str, experiment: str, job: str, folder: str, tags: dict[str, str],
            shards: str | None = None) -> str:
    """The MLflow run id of the job `job` (run.name) in `folder` (run.storage_path / run.name,
    as a URI): the existing one (tagged with both, so two jobs of one name in two storage
    paths are two runs) or a new one, with the source tags and, given `shards`, the shard
    folder as the run's training dataset."""
    client = MlflowClient(uri)
    experiment_id_ = experiment_id(client, experiment)
    token = None
    while True:  # every run of this name, page by page; the folder is compared here (a path
        # may hold characters MLflow's filter syntax does not take)
        same_name = client.search_runs([experiment_id_],
                                       filter_string=f"tags.`{JOB_TAG}` = '{job}'",
                                       max_results=SEARCH_PAGE, page_token=token)
        for run in same_name:
            if run.data.tags.get(JOB_FOLDER_TAG) == folder:
                return run.info.run_id
        token = same_name.token
        if not token:
            break
    run = client.create_run(experiment_id_, run_name=job,
                            tags={JOB_TAG: job, JOB_FOLDER_TAG: folder, **source_tags(),
                                  **tags})
    if shards is not None:
        log_shards_input(client, run.info.run_id, shards, "training")
    return run.info.run_id


def log_shards_input(client: MlflowClient, run_id: str, shards: str, context: str) -> None:
    """Record a shard folder as a dataset input of the run: the digest is the start of its
    manifest's sha256 (MLflow keeps 36 characters; the whole hash is in the source), the folder
    the source, the videos per split and the classes its profile."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    folder = Folder(shards)
    manifest = layout.read_manifest(folder)
    digest = manifest_hash(shards)
    dataset = Dataset(name=folder.name, digest=digest[:32],
                      source_type="local" if folder.is_local else folder.uri.split(":")[0],
                      source=json.dumps({"uri": folder.uri,
                                         "manifest_sha256": digest}),
                      profile=json.dumps({"videos": manifest["num_videos"],
                                          "splits": manifest["splits"],
                                          "classes": len(manifest["classes"]),
                                          "payload": manifest["payload_format"]}))
    inputs = [DatasetInput(dataset, [InputTag("mlflow.data.context", context)])]
    try:
        client.log_inputs(run_id, datasets=inputs)
    except MlflowException:
        # Jobs side by side on one store (ctrlaug ablate --jobs N) log the same new dataset at
        # once: MLflow looks the dataset up, then inserts it, and the later insert breaks the
        # store's unique key. The dataset exists after that, so a second try links it; any
        # other failure fails again and is raised.
        time.sleep(0.5)
        client.log_inputs(run_id, datasets=inputs)


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

    def link(self) -> str:
        """Where a person finds the run: its page on a tracking server, or for a local store
        the run id and the `mlflow ui` command that serves it."""
        if self.client.tracking_uri.startswith(("http://", "https://")):
            experiment = self.client.get_run(self.run_id).info.experiment_id
            return (f"{self.client.tracking_uri.rstrip('/')}/#/experiments/{experiment}/runs/"
                    f"{self.run_id}")
        return f"run {self.run_id} (mlflow ui --backend-store-uri {self.client.tracking_uri})"

    def has_model(self) -> bool:
        """Whether the run has produced a LoggedModel already."""
        return bool(self.client.get_run(self.run_id).outputs.model_outputs)

    def tag(self, key: str, value: str) -> None:
        self.client.set_tag(self.run_id, key, value)

    def model(self, module, name: str, step: int = 0) -> str:
        """Log a torch module as an MLflow LoggedModel produced by this run (a model registry
        can take it: models:/<id>; runs:/<run id>/<name> finds it too); returns its id."""
        import mlflow.pytorch
        from mlflow.entities import LoggedModelOutput, LoggedModelStatus

        run = self.client.get_run(self.run_id)
        logged = self.client.create_logged_model(
            experiment_id=run.info.experiment_id, name=name, source_run_id=self.run_id)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / name
            # Pickled module (its class is importable from this package); requirements stated
            # rather than inferred, which would import and probe the whole environment.
            mlflow.pytorch.save_model(module, str(path), serialization_format="pickle",
                                      pip_requirements=["torch", "ctrlaug"])
            self.client.log_model_artifacts(logged.model_id, str(path))
        self.client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
        self.client.log_outputs(self.run_id, [LoggedModelOutput(logged.model_id, step)])
        return logged.model_id

    def system_metrics(self) -> SystemMetrics:
        """CPU, memory (and GPU, with pynvml) sampled into the run until stopped."""
        return SystemMetrics(self.run_id, self.client.tracking_uri)

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status)


class SystemMetrics:
    """MLflow's system-metrics monitor on a run (a background thread), started and stopped by
    the caller; a no-op where its optional dependency (psutil) is missing."""

    def __init__(self, run_id: str, tracking_uri: str, interval: float = 10.0) -> None:
        self.monitor = None
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            self.monitor = SystemMetricsMonitor(run_id, sampling_interval=interval,
                                                resume_logging=True, tracking_uri=tracking_uri)
        except ImportError:
            return

    def start(self) -> SystemMetrics:
        if self.monitor is not None:
            self.monitor.start()
        return self

    def stop(self) -> None:
        """Stop sampling; the samples since the last publication are published too (MLflow's
        monitor drops them), so even a run shorter than one interval has its system metrics."""
        if self.monitor is None:
            return
        self.monitor.finish()
        remaining = self.monitor.aggregate_metrics()
        if remaining:
            self.monitor.publish_metrics(remaining)
            self.monitor.mlflow_logger.flush()
