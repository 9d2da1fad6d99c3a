"""Finetuning on Ray Train with 2 CPU workers improves over the initial accuracy."""

from __future__ import annotations

import io

import pytest
import torch

from model.encoder import R3D18
from orchestration.finetune import FinetuneConfig, run_finetune
from preprocessing.config import PreprocessConfig
from preprocessing.job import local_executor, run_preprocess
from preprocessing.sources import list_dataset
from preprocessing.synth import SynthConfig, synthesize

# Every test here runs on one local Ray instance (conftest.ray_instance) per module.
pytestmark = pytest.mark.usefixtures("ray_instance")


@pytest.fixture(scope="module")
def two_classes(tmp_path_factory):
    """16 videos of two motion classes as JPEG-frame shards."""
    root = tmp_path_factory.mktemp("finetune")
    synthesize(root / "videos", SynthConfig(classes=2, videos_per_class=8, frames=32, width=96,
                                            height=72))
    run_preprocess(list_dataset("folder", root / "videos"), PreprocessConfig(payload="frames"),
                   root / "shards", local_executor(2), log=io.StringIO())
    return root / "shards"


def test_a_short_finetune_improves_over_the_initial_accuracy(two_classes, tmp_path):
    torch.manual_seed(0)
    # Train and test on the same 16 videos: this checks that the protocol trains encoder and
    # head across workers and measures the result, not generalisation.
    result = run_finetune(R3D18(width=8), 2, two_classes, two_classes,
                          FinetuneConfig(epochs=12, lr=3e-4, batch_size=4, workers=2),
                          "finetune-test", tmp_path)
    assert result["finetune_top1"] > result["initial_top1"]


@pytest.mark.gpu
def test_finetuning_on_gpu_workers_improves_over_the_initial_accuracy(two_classes, tmp_path):
    torch.manual_seed(0)
    result = run_finetune(R3D18(width=8), 2, two_classes, two_classes,
                          FinetuneConfig(epochs=12, lr=3e-4, batch_size=4, workers=1, gpu=True),
                          "finetune-gpu", tmp_path)
    assert result["finetune_top1"] > result["initial_top1"]
