"""Shared test settings and fixtures.

Tests marked `gpu` are skipped where no CUDA device exists. `videos` is a small folder dataset
of real encoded videos (two motion classes) with one bad file of every kind.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from media import truncate, write_audio_only, write_video

from preprocessing.config import PreprocessConfig
from preprocessing.job import local_executor, run_preprocess
from preprocessing.sources import list_dataset
from preprocessing.synth import SynthConfig, synthesize


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
