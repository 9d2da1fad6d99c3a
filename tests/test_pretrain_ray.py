"""Pretraining on a local Ray instance with 2 CPU workers (gloo), logging to a real MLflow server.

Slow by nature (each run starts Ray workers): three jobs share one server and one Ray instance.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from orchestration.experiment import load_config
from orchestration.pretrain import INJECTED_FILE, job_folder, run_pretraining
from orchestration.tracking import JOB_TAG
from preprocessing.config import PreprocessConfig
from preprocessing.job import local_executor, run_preprocess
from preprocessing.sources import list_dataset
from preprocessing.synth import SynthConfig, synthesize

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def pretrain_shards(tmp_path_factory) -> Path:
    """16 motion videos as JPEG-frame shards: 2 workers x 2 videos -> 4 steps per epoch."""
    root = tmp_path_factory.mktemp("pretrain")
    synthesize(root / "videos", SynthConfig(classes=4, videos_per_class=4, frames=40,
                                            width=96, height=72))
    run_preprocess(list_dataset("folder", root / "videos"),
                   PreprocessConfig(payload="frames", videos_per_shard=4), root / "shards",
                   local_executor(2), log=io.StringIO())
    return root / "shards"


# Every test here runs on one local Ray instance (conftest.ray_instance) per module.
pytestmark = pytest.mark.usefixtures("ray_instance")


def config_for(name, shards, storage, uri, *extra):
    return load_config(CONFIGS / "tiny-cpu.toml", [
        f"--data.shards={shards}", f"--run.storage_path={storage}", f"--run.tracking_uri={uri}",
        f"--run.name={name}", "--data.batch_size=4", "--optim.epochs=2",
        "--model.width=4", *extra])


def job_runs(client, name):
    experiment = client.get_experiment_by_name("ctrlaug-pretrain")
    return client.search_runs([experiment.experiment_id],
                              filter_string=f"tags.`{JOB_TAG}` = '{name}'")


def steps_of(client, run_id, metric="loss_rc"):
    return sorted({m.step for m in client.get_metric_history(run_id, metric)})


@pytest.fixture(scope="module")
def finished_job(pretrain_shards, mlflow_server, tmp_path_factory):
    storage = tmp_path_factory.mktemp("runs")
    # Relative locations, as a user types them: Ray starts the workers in another directory.
    here = os.getcwd()
    os.chdir(pretrain_shards.parent)
    try:
        config = config_for("plain", os.path.relpath(pretrain_shards), os.path.relpath(storage),
                            mlflow_server)
        metrics = run_pretraining(config)
        config = config.with_absolute_paths()  # for the tests below, from any directory
    finally:
        os.chdir(here)
    return config, metrics


def test_a_short_run_completes_and_logs_to_the_mlflow_server(finished_job, mlflow_server):
    config, metrics = finished_job
    client = MlflowClient(mlflow_server)
    (run,) = job_runs(client, "plain")
    assert run.info.run_id == metrics["mlflow_run_id"] and run.info.status == "FINISHED"
    assert run.data.params["optim.lr"] == "0.001" and run.data.params["model.width"] == "4"
    for name in ("loss", "loss_rc", "loss_mi", "loss_td", "mi_level", "mi_local_global",
                 "td_mi", "lr", "videos_per_s", "data_wait_fraction"):
        assert name in run.data.metrics, name
    assert steps_of(client, run.info.run_id) == list(range(1, 9))  # 2 epochs x 4 steps
    assert run.data.metrics["epoch"] == 2
    assert len(run.data.tags["mlflow.source.git.commit"]) == 40
    (dataset,) = run.inputs.dataset_inputs  # the shards it trained on, by manifest hash
    assert json.loads(dataset.dataset.source)["manifest_sha256"].startswith(
        dataset.dataset.digest) and dataset.tags[0].value == "training"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.json", "augmentation_preview.png", "checkpoints"} <= artifacts
    (model,) = run.outputs.model_outputs  # the encoder, a LoggedModel
    assert client.get_logged_model(model.model_id).name == "encoder"


def test_rerunning_a_finished_job_resumes_instead_of_starting_over(finished_job,
                                                                   mlflow_server):
    config, metrics = finished_job
    client = MlflowClient(mlflow_server)
    before = steps_of(client, metrics["mlflow_run_id"])
    again = run_pretraining(config)
    assert again["mlflow_run_id"] == metrics["mlflow_run_id"]
    assert steps_of(client, metrics["mlflow_run_id"]) == before  # no step was trained again
    assert len(job_runs(client, "plain")) == 1


def test_a_worker_failure_resumes_from_the_last_checkpoint_in_the_same_mlflow_run(
        pretrain_shards, mlflow_server, tmp_path):
    # Checkpoints every 2 steps; worker 1 fails before step 7, mid-epoch 2: the job resumes
    # from the step-6 checkpoint (mid-epoch) and trains steps 7 and 8.
    config = config_for("faulty", pretrain_shards, tmp_path, mlflow_server,
                        "--run.fail_at_step=6", "--run.checkpoint_every_steps=2")
    metrics = run_pretraining(config)
    assert (job_folder(config) / INJECTED_FILE).exists()  # the failure did happen
    client = MlflowClient(mlflow_server)
    (run,) = job_runs(client, "faulty")
    assert run.info.run_id == metrics["mlflow_run_id"] and run.info.status == "FINISHED"
    assert steps_of(client, run.info.run_id) == list(range(1, 9))  # continuous step axis
    assert run.data.metrics["epoch"] == 2


def test_an_unreachable_tracking_server_stops_with_one_line_before_training(pretrain_shards,
                                                                             tmp_path):
    result = subprocess.run(
        [str(BIN / "ctrlaug"), "pretrain", "--config", str(CONFIGS / "tiny-cpu.toml"),
         f"--data.shards={pretrain_shards}", f"--run.storage_path={tmp_path}",
         "--run.tracking_uri=http://127.0.0.1:9"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("ctrlaug pretrain: MLflow tracking server "
                                            "http://127.0.0.1:9 is not reachable")
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_missing_shard_folder_stops_with_one_line(tmp_path):
    result = subprocess.run(
        [str(BIN / "ctrlaug"), "pretrain", "--config", str(CONFIGS / "tiny-cpu.toml"),
         f"--data.shards={tmp_path / 'nope'}"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == (f"ctrlaug pretrain: {tmp_path / 'nope'} is not a shard "
                                     f"folder (no _manifest.json); run `ctrlaug preprocess` first")


def test_a_worker_reads_a_remote_checkpoint_without_the_nodes_shared_download_folder(tmp_path):
    """Restoring reads the checkpoint file from its storage into this process: nothing is
    written to the per-node folder that Checkpoint.as_directory() shares between a node's
    workers (a second worker's download rewrites the file there while the first reads it)."""
    import pyarrow.fs
    import ray.train
    import torch

    from orchestration.runtime import read_ray_checkpoint

    (tmp_path / "checkpoint_000001").mkdir()
    saved = {"step": 7, "model": {"weight": torch.arange(6.0).reshape(2, 3)}}
    torch.save(saved, tmp_path / "checkpoint_000001" / "checkpoint.pt")
    # A filesystem that is not LocalFileSystem, as an object store's is: as_directory downloads.
    remote = pyarrow.fs.SubTreeFileSystem(str(tmp_path), pyarrow.fs.LocalFileSystem())
    checkpoint = ray.train.Checkpoint("checkpoint_000001", filesystem=remote)
    # Block the shared folder's path with a file: whatever uses that folder fails.
    shared = Path(checkpoint._get_temporary_checkpoint_dir())
    shared.write_bytes(b"not a folder")
    try:
        with pytest.raises(OSError), checkpoint.as_directory():
            pass
        loaded = read_ray_checkpoint(checkpoint)
    finally:
        shared.unlink()
    assert loaded["step"] == 7 and torch.equal(loaded["model"]["weight"], saved["model"]["weight"])
