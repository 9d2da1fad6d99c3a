"""The user's commands, unchanged, on a two-node Ray cluster with every location remote.

A head node and a second node (ray.cluster_utils.Cluster: two raylets on this machine, one CPU
each), raw videos, shards and run storage in an S3 bucket (conftest.s3, moto), MLflow on a
tracking server (conftest.mlflow_server). The cluster starts without the user's credentials in
its environment, as a remote cluster would: they reach its workers only as the project forwards
them (or as a submitted job's runtime_env sets them). The commands run as subprocesses that
find the cluster through RAY_ADDRESS: `ctrlaug preprocess --ray` reads the raw videos from the
bucket and writes shards into it, `ctrlaug pretrain` trains one worker on each node, the second
node's worker is killed with SIGKILL mid-run and the job resumes from its last checkpoint in
the bucket, in the same MLflow run; `ctrlaug evaluate` reads the checkpoint and the shards from
the bucket. Last, the same pretrain command is submitted as a Ray job (`ray job submit
--runtime-env-json`), as README describes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pyarrow.fs as pafs
import pytest
from mlflow.tracking import MlflowClient

from orchestration.runtime import FORWARDED_ENV
from orchestration.tracking import JOB_TAG
from preprocessing.synth import SynthConfig, synthesize

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
BIN = Path(sys.executable).parent
TRAIN_WORKER = "RayTrainWorker"  # in the process title of every Ray Train worker


@pytest.fixture(scope="module")
def cluster():
    """(address, dashboard URL, the second node's raylet process): a head and one more node,
    1 CPU each, started without any of the credentials the project forwards."""
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster

    with pytest.MonkeyPatch.context() as patch:
        for name in FORWARDED_ENV:
            patch.delenv(name, raising=False)
        cluster = Cluster(initialize_head=True, shutdown_at_exit=True,
                          head_node_args={"num_cpus": 1, "include_dashboard": True})
        second = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
    raylet = second.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process
    yield cluster.address, f"http://{cluster.webui_url}", psutil.Process(raylet.pid)
    cluster.shutdown()


def ctrlaug(*args: str, address: str, **options) -> subprocess.Popen:
    environment = {**os.environ, "RAY_ADDRESS": address}
    return subprocess.Popen([str(BIN / "ctrlaug"), *args], env=environment, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **options)


def finish(process: subprocess.Popen, timeout: float = 600) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-4000:]
    return output


def pretrain_command(shards: str, s3: str, tracking: str, name: str, epochs: int
                     ) -> list[str]:
    """`ctrlaug pretrain` on both nodes: global batches of 4 (2 a worker), 4 steps an epoch
    of the 16 videos, a checkpoint in the bucket every 2 steps."""
    return ["pretrain", "--config", str(CONFIGS / "tiny-cpu.toml"), f"--data.shards={shards}",
            f"--run.storage_path={s3}/runs", f"--run.tracking_uri={tracking}",
            f"--run.name={name}", "--run.workers=2", "--run.max_failures=1",
            "--run.checkpoint_every_steps=2", "--data.batch_size=4", f"--optim.epochs={epochs}",
            "--model.width=4"]


def job_run(client: MlflowClient, name: str) -> list:
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, filter_string=f"tags.`{JOB_TAG}` = '{name}'")


def train_workers(raylet: psutil.Process) -> list[psutil.Process]:
    return [p for p in raylet.children(recursive=True) if TRAIN_WORKER in " ".join(p.cmdline())]


@pytest.fixture(scope="module")
def cluster_shards(cluster, s3, tmp_path_factory) -> str:
    """16 motion videos, uploaded to the bucket, preprocessed by Ray tasks on the cluster
    into shards in the bucket."""
    address, _, _ = cluster
    videos = tmp_path_factory.mktemp("cluster-videos")
    synthesize(videos, SynthConfig(classes=4, videos_per_class=4, frames=40, width=96,
                                   height=72))
    s3fs, bucket = pafs.FileSystem.from_uri(s3)
    pafs.copy_files(str(videos), f"{bucket}/raw-videos",
                    source_filesystem=pafs.LocalFileSystem(), destination_filesystem=s3fs)
    uri = f"{s3}/cluster-shards"
    output = finish(ctrlaug("preprocess", "--dataset", "folder", "--videos", f"{s3}/raw-videos",
                            "--out", uri, "--format", "frames", "--videos-per-shard", "4",
                            "--task-videos", "2", "--ray", address=address))
    assert f"{uri}: 16 videos in 4 shards" in output
    return uri


def test_the_commands_run_on_two_nodes_from_the_bucket_and_survive_a_killed_worker(
        cluster, cluster_shards, s3, mlflow_server, tmp_path):
    address, _, second_node = cluster
    job = ctrlaug(*pretrain_command(cluster_shards, s3, mlflow_server, "two-nodes", epochs=4),
                  address=address)
    client = MlflowClient(mlflow_server)
    killed = None
    deadline = time.monotonic() + 480
    while killed is None and job.poll() is None and time.monotonic() < deadline:
        runs = job_run(client, "two-nodes")
        steps = {m.step for m in client.get_metric_history(runs[0].info.run_id, "loss")} \
            if runs else set()
        if steps and max(steps) >= 3:  # past the step-2 checkpoint
            workers = train_workers(second_node)
            assert len(workers) == 1, "one training worker on the second node"
            killed = workers[0]
            killed.send_signal(signal.SIGKILL)
        time.sleep(0.5)
    output = finish(job)
    assert killed is not None, f"the job ended before a worker could be killed:\n{output}"
    assert not killed.is_running()
    assert "Reporting training result" not in output  # Ray's line per report stays quiet

    (run,) = job_run(client, "two-nodes")
    assert run.info.status == "FINISHED"
    steps = sorted({m.step for m in client.get_metric_history(run.info.run_id, "loss")})
    assert steps == list(range(1, 17))  # one step axis across the restart
    (dataset,) = run.inputs.dataset_inputs
    assert cluster_shards in dataset.dataset.source
    assert run.data.params["run.storage_path"] == f"{s3}/runs"

    evaluation = finish(subprocess.Popen(
        [str(BIN / "ctrlaug"), "evaluate", "--protocol", "linear,retrieval",
         "--checkpoint", f"{s3}/runs/two-nodes", "--train", cluster_shards,
         "--test", cluster_shards, "--tracking-uri", mlflow_server,
         "--storage-path", str(tmp_path)], text=True, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT))
    assert "linear_top1" in evaluation and "R@1" in evaluation
    experiments = [e.experiment_id for e in client.search_experiments()]
    (evaluation_run,) = client.search_runs(
        experiments, filter_string=f"tags.`mlflow.parentRunId` = '{run.info.run_id}'")
    assert evaluation_run.data.params["protocols"] == "linear,retrieval"  # nested, with params


def test_the_pretrain_command_runs_as_a_submitted_ray_job_with_its_runtime_env(
        cluster, cluster_shards, s3, mlflow_server):
    _, dashboard, _ = cluster
    # What a user submits to a remote cluster: the code (working_dir) and the credentials in the
    # job's runtime_env; the cluster's own environment has neither credential.
    runtime_env = {"working_dir": str(CONFIGS.parent),
                   "env_vars": {name: os.environ[name] for name in FORWARDED_ENV
                                if name.startswith("AWS_") and name in os.environ}}
    output = finish(subprocess.Popen(
        [str(BIN / "ray"), "job", "submit", "--address", dashboard, "--runtime-env-json",
         json.dumps(runtime_env), "--", str(BIN / "ctrlaug"),
         *pretrain_command(cluster_shards, s3, mlflow_server, "submitted", epochs=1)],
        text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    assert "succeeded" in output, output[-4000:]
    (run,) = job_run(MlflowClient(mlflow_server), "submitted")
    assert run.info.status == "FINISHED" and run.data.metrics["epoch"] == 1
