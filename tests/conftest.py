"""Shared test settings and fixtures.

Tests marked `gpu` are skipped where no CUDA device exists. `videos` is a small folder dataset
of real encoded videos (two motion classes) with one bad file of every kind. `s3` (moto's S3
server) and `mlflow_server` are real servers on 127.0.0.1, one per test module that asks.
"""

from __future__ import annotations

import io
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from media import truncate, write_audio_only, write_video

from preprocessing.config import PreprocessConfig
from preprocessing.job import local_executor, run_preprocess
from preprocessing.sources import list_dataset
from preprocessing.synth import SynthConfig, synthesize

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(url: str, process: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    """Poll `url` until it answers; on timeout or exit of `process`, fail with its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    process.kill()
    raise RuntimeError(f"{url} did not answer: {log.read_text()[-2000:]}")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def no_mlflow_artifacts_in_the_current_directory():
    """MLflow's default artifact root is ./mlruns: every experiment the project (or a test)
    creates must keep its artifacts beside its store instead."""
    stray = Path.cwd() / "mlruns"
    before = set(stray.rglob("*")) if stray.exists() else set()
    yield
    left = (set(stray.rglob("*")) if stray.exists() else set()) - before
    assert not left, f"the tests left MLflow artifacts in {stray}: {sorted(left)[:3]}"


@pytest.fixture(scope="session")
def videos(tmp_path_factory) -> Path:
    """Two motion classes of three videos each, plus one bad file of every kind."""
    root = tmp_path_factory.mktemp("videos")
    synthesize(root, SynthConfig(classes=2, videos_per_class=3, frames=32, width=96, height=72))
    bad = root / sorted(p.name for p in root.iterdir())[0]
    (bad / "zero.mp4").write_bytes(b"")
    (bad / "junk.mp4").write_bytes(b"\x00garbage" * 64)
    write_audio_only(bad / "sound")
    write_video(bad / "short", "h264", frames=5)
    whole = write_video(root / "whole", "h264-mkv", frames=60)
    truncate(whole, 0.5, bad / "cut")
    whole.unlink()
    return root


@pytest.fixture(scope="session")
def shards(videos, tmp_path_factory) -> dict[str, Path]:
    """The `videos` dataset preprocessed in both payload formats: {"video": dir, "frames": dir}."""
    out = {}
    for payload in ("video", "frames"):
        folder = tmp_path_factory.mktemp(f"shards-{payload}")
        run_preprocess(list_dataset("folder", videos),
                       PreprocessConfig(payload=payload, videos_per_shard=2), folder,
                       local_executor(1), log=io.StringIO())
        out[payload] = folder
    return out


@pytest.fixture(scope="module")
def ray_instance():
    """A local Ray instance (2 CPUs) for the tests of one module, shut down after them."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 server on a free port with bucket `shards`, and the standard AWS variables
    pointing at it (for this process and every process it starts)."""
    root = tmp_path_factory.mktemp("s3")
    endpoint = f"http://127.0.0.1:{free_port()}"
    with open(root / "server.log", "w") as log:
        server = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p",
                                   endpoint.rsplit(":", 1)[1]], stdout=log,
                                  stderr=subprocess.STDOUT)
    wait_for(endpoint, server, root / "server.log", timeout=60)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                            "AWS_DEFAULT_REGION": "us-east-1",
                            "AWS_ENDPOINT_URL": endpoint}.items():
            patch.setenv(name, value)
        import boto3  # comes with moto; reads the same environment

        boto3.client("s3").create_bucket(Bucket="shards")
        yield "s3://shards"
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """`mlflow server` on 127.0.0.1 with its own store and artifact root, stopped after the
    module."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"http://127.0.0.1:{free_port()}"
    with open(root / "server.log", "w") as log:
        process = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port",
             uri.rsplit(":", 1)[1], "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
             "--artifacts-destination", str(root / "artifacts"), "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT)
    wait_for(uri + "/health", process, root / "server.log")
    yield uri
    process.terminate()
    process.wait(timeout=30)
