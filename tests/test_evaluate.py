"""Evaluation of an encoder on real shards: features, linear probe, retrieval, MLflow records."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from model.encoder import R3D18
from orchestration import evaluate
from orchestration.evaluate import cached_features, run_evaluation
from orchestration.experiment import load_config
from orchestration.finetune import FinetuneConfig
from orchestration.tracking import experiment_id
from pipeline.config import AugmentConfig

CTRLAUG = str(Path(sys.executable).parent / "ctrlaug")


def test_features_are_ten_clips_per_video_and_cached(shards, tmp_path):
    torch.manual_seed(0)
    encoder = R3D18(width=4)
    first = cached_features(encoder, shards["frames"], tmp_path)
    assert first.clips.shape == (6, 10, 32) and len(first.video_id) == 6
    assert first.first_frames.shape == (6, 112, 112, 3)
    (cache_file,) = tmp_path.glob("features-*.pt")
    stamp = cache_file.stat().st_mtime_ns
    again = cached_features(encoder, shards["frames"], tmp_path)
    assert torch.equal(again.clips, first.clips) and cache_file.stat().st_mtime_ns == stamp


def test_a_damaged_cache_entry_is_recomputed_and_replaced(shards, tmp_path):
    torch.manual_seed(0)
    encoder = R3D18(width=4)
    first = cached_features(encoder, shards["frames"], tmp_path)
    (cache_file,) = tmp_path.glob("features-*.pt")
    cache_file.write_bytes(cache_file.read_bytes()[:100])  # a save killed part-way
    again = cached_features(encoder, shards["frames"], tmp_path)
    assert torch.equal(again.clips, first.clips) and again.video_id == first.video_id
    assert [p.name for p in tmp_path.iterdir()] == [cache_file.name]  # no partial file left
    assert torch.equal(torch.load(cache_file, weights_only=True)["clips"], first.clips)


def test_train_and_test_with_different_class_lists_are_refused(shards, tmp_path):
    test = tmp_path / "test-shards"
    shutil.copytree(shards["frames"], test)
    manifest = json.loads((test / "_manifest.json").read_text())
    manifest["classes"] = manifest["classes"][::-1]  # the same names, numbered the other way
    (test / "_manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="number their classes differently.*class 0 is"):
        run_evaluation(["linear"], R3D18(width=4), shards["frames"], test,
                       f"sqlite:///{tmp_path / 'mlflow.db'}", None, tmp_path / "cache")
    assert not (tmp_path / "cache").exists()  # refused before any feature was computed


def test_unlabelled_test_videos_are_refused(shards, tmp_path, monkeypatch):
    real = evaluate.cached_features

    def unlabelled_test(encoder, folder, *args, **kwargs):  # as Kinetics' test split: label -1
        features = real(encoder, folder, *args, **kwargs)
        if folder == shards["video"]:
            features.labels = torch.full_like(features.labels, -1)
        return features

    monkeypatch.setattr(evaluate, "cached_features", unlabelled_test)
    with pytest.raises(ValueError, match="6 of the test videos have no class label"):
        run_evaluation(["linear"], R3D18(width=4), shards["frames"], shards["video"],
                       f"sqlite:///{tmp_path / 'mlflow.db'}", None, tmp_path / "cache")


@pytest.mark.gpu
def test_gpu_features_match_the_cpu_features(shards, tmp_path):
    torch.manual_seed(0)
    encoder = R3D18(width=8)
    on_cpu = evaluate.extract_features(encoder, shards["frames"])
    on_gpu = evaluate.extract_features(encoder, shards["frames"], device="gpu")
    assert on_gpu.clips.device.type == "cpu" and on_gpu.video_id == on_cpu.video_id
    # bf16 autocast and nvJPEG vs libjpeg-turbo: close, not equal
    cosine = torch.nn.functional.cosine_similarity(on_gpu.clips, on_cpu.clips, dim=-1)
    assert cosine.min() > 0.98


def test_gpu_evaluation_without_a_gpu_is_a_clear_error(shards, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ValueError, match="no CUDA device"):
        run_evaluation(["linear"], R3D18(width=4), shards["frames"], shards["frames"],
                       f"sqlite:///{tmp_path / 'mlflow.db'}", None, tmp_path, device="gpu")


def test_linear_and_retrieval_are_logged_and_linked_to_the_pretraining_run(shards, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    parent = client.create_run(experiment_id(client, "ctrlaug-pretrain")).info.run_id
    torch.manual_seed(0)
    # The same videos as VP9 (queries) and as JPEG frames (gallery): each query's nearest
    # neighbour is itself, so retrieval must be perfect even with a random encoder.
    results = run_evaluation(["linear", "retrieval"], R3D18(width=4), shards["frames"],
                             shards["video"], uri, parent, tmp_path / "cache")
    assert results["R@1"] == 1.0 and results["R@5"] == 1.0
    assert 0 <= results["linear_top1"] <= 1 and results["linear_top5"] == 1.0  # 2 classes
    run = client.get_run(results["mlflow_run_id"])
    assert run.data.tags["ctrlaug.pretrain_run"] == parent
    assert run.data.tags["mlflow.parentRunId"] == parent  # nested under the pretraining run
    assert run.data.metrics["R_at_1"] == 1.0 and "linear_top1" in run.data.metrics
    assert run.data.params["protocols"] == "linear,retrieval" and run.data.params["size"] == "112"
    assert sorted(i.tags[0].value for i in run.inputs.dataset_inputs) == ["test", "train"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"confusion_matrix.png", "retrieval.png", "per_class_accuracy.json"} <= artifacts


def test_evaluate_command_errors_are_one_line(shards, tmp_path):
    both = subprocess.run([CTRLAUG, "evaluate", "--checkpoint", "x.pt", "--model-uri", "m",
                           "--train", str(shards["frames"]), "--test", str(shards["video"])],
                          capture_output=True, text=True)
    assert both.returncode == 2 and "exactly one of" in both.stderr
    missing = subprocess.run([CTRLAUG, "evaluate", "--checkpoint", str(tmp_path / "x.pt"),
                              "--train", str(shards["frames"]), "--test", str(shards["video"]),
                              "--storage-path", str(tmp_path)], capture_output=True, text=True)
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"ctrlaug evaluate: checkpoint {tmp_path / 'x.pt'} not found"
    remote = subprocess.run([CTRLAUG, "evaluate", "--checkpoint", str(tmp_path / "x.pt"),
                             "--train", str(shards["frames"]), "--test", str(shards["video"]),
                             "--storage-path", "s3://bucket/runs"], capture_output=True,
                            text=True)
    assert remote.returncode == 2 and len(remote.stderr.strip().splitlines()) == 1
    assert "--storage-path s3://bucket/runs is an object store" in remote.stderr


def test_an_encoder_logged_to_mlflow_loads_back_by_model_uri(tmp_path):
    from orchestration.evaluate import load_encoder
    from orchestration.tracking import RunLogger

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run_id = client.create_run(experiment_id(client, "x")).info.run_id
    torch.manual_seed(0)
    encoder = R3D18(width=4)
    RunLogger(uri, run_id).model(encoder, "encoder")
    loaded, pretrain_run, augment = load_encoder(None, f"runs:/{run_id}/encoder", uri)
    assert pretrain_run == run_id and augment == AugmentConfig()  # the run logged no config
    pretrained_at_32 = load_config(None, ["--augment.size=32"]).to_dict()
    client.log_dict(run_id, pretrained_at_32, "config.json")  # as pretraining logs it
    assert load_encoder(None, f"runs:/{run_id}/encoder", uri)[2].size == 32
    x = torch.randn(1, 3, 16, 32, 32)
    encoder.eval()
    loaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.forward_clip(x), encoder.forward_clip(x))


def test_a_failed_protocol_marks_the_run_failed_and_keeps_what_finished(shards, tmp_path,
                                                                         monkeypatch):
    def failing_finetune(*args, **kwargs):
        raise RuntimeError("the finetuning job failed")

    monkeypatch.setattr(evaluate, "run_finetune", failing_finetune)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(RuntimeError, match="the finetuning job failed"):
        run_evaluation(["retrieval", "finetune"], R3D18(width=4), shards["frames"],
                       shards["video"], uri, None, tmp_path / "cache",
                       finetune=FinetuneConfig(epochs=1))
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("ctrlaug-evaluate").experiment_id])
    assert run.info.status == "FAILED"
    assert run.data.metrics["R_at_1"] == 1.0  # retrieval finished before finetuning failed
