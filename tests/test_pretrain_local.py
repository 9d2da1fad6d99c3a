"""Pretraining in this process (run.ray = false): the same loop as on Ray Train, without a
cluster: it logs to MLflow, checkpoints, resumes on rerun and survives an injected failure."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from orchestration.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from orchestration.evaluate import load_encoder
from orchestration.experiment import ConfigError, load_config
from orchestration.pretrain import INJECTED_FILE, job_folder, run_pretraining
from orchestration.tracking import RunLogger

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def config_for(name, shards, storage, *extra):
    return load_config(CONFIGS / "tiny-cpu.toml", [
        f"--data.shards={shards}", f"--run.storage_path={storage}", f"--run.name={name}",
        "--run.ray=false", "--run.workers=1", "--data.batch_size=2", "--optim.epochs=2",
        "--model.width=4", "--augment.size=32", "--augment.levels_per_batch=2", *extra])


def steps_of(uri, run_id, metric="loss_rc"):
    return sorted({m.step for m in MlflowClient(uri).get_metric_history(run_id, metric)})


def test_an_in_process_run_trains_logs_checkpoints_and_resumes(shards, tmp_path, monkeypatch):
    config = config_for("local", shards["frames"], tmp_path)
    metrics = run_pretraining(config)
    uri, run_id = metrics["tracking_uri"], metrics["mlflow_run_id"]
    assert steps_of(uri, run_id) == list(range(1, 7))  # 6 videos / 2 per batch x 2 epochs
    run = MlflowClient(uri).get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params["run.ray"] == "False"
    saved = load_checkpoint(Path(metrics["checkpoint"]))
    assert (saved["epoch"], saved["step"]) == (2, 6)
    # Evaluating the checkpoint uses the views it was pretrained with (32 x 32 here).
    encoder, pretrain_run, augment = load_encoder(Path(metrics["checkpoint"]), None, uri)
    assert (pretrain_run, augment) == (run_id, config.augment) and encoder.width == 4
    assert Path(metrics["checkpoint"]).parent == job_folder(config).local_path()
    # The job's folder names its latest checkpoint too.
    assert latest_checkpoint(job_folder(config).local_path()) == metrics["checkpoint"]
    logged = []
    monkeypatch.setattr(RunLogger, "file", lambda self, path, folder: logged.append(folder))
    monkeypatch.setattr(RunLogger, "model", lambda self, module, name, step: logged.append(name))
    again = run_pretraining(config)  # the same command: nothing left to train
    assert again["mlflow_run_id"] == run_id and steps_of(uri, run_id) == list(range(1, 7))
    assert again["epoch"] == 2 and again["loss_rc"] == metrics["loss_rc"]  # its last report
    assert logged == []  # the final checkpoint and encoder are not logged a second time
    assert torch.equal(load_checkpoint(Path(again["checkpoint"]))["model"]["encoder.stem.0"
                                                                          ".weight"],
                       saved["model"]["encoder.stem.0.weight"])


def test_a_rerun_with_other_settings_is_refused_and_one_that_extends_the_job_resumes(
        shards, tmp_path):
    def all_runs(uri):
        client = MlflowClient(uri)
        return client.search_runs([e.experiment_id for e in client.search_experiments()])

    first = run_pretraining(config_for("fixed", shards["frames"], tmp_path, "--optim.epochs=1"))
    runs = all_runs(first["tracking_uri"])
    changed = config_for("fixed", shards["frames"], tmp_path, "--optim.epochs=1",
                         "--model.width=8", "--data.batch_size=3")
    with pytest.raises(ValueError, match=r"job fixed in .* was started with other settings "
                                         r"\(model\.width: 4 -> 8; data\.batch_size: 2 -> 3\)"):
        run_pretraining(changed)
    assert len(all_runs(first["tracking_uri"])) == len(runs)  # refused before MLflow was touched
    # More epochs and other loader threads: the same experiment, continued.
    longer = run_pretraining(config_for("fixed", shards["frames"], tmp_path, "--optim.epochs=2",
                                        "--data.num_threads=2"))
    assert longer["mlflow_run_id"] == first["mlflow_run_id"]
    assert steps_of(longer["tracking_uri"], longer["mlflow_run_id"]) == list(range(1, 7))


def test_an_in_process_failure_restarts_from_the_last_checkpoint(shards, tmp_path):
    config = config_for("faulty", shards["frames"], tmp_path, "--run.fail_at_step=4",
                        "--run.checkpoint_every_steps=2")
    metrics = run_pretraining(config)
    assert (job_folder(config) / INJECTED_FILE).exists()  # the failure did happen
    assert steps_of(metrics["tracking_uri"], metrics["mlflow_run_id"]) == list(range(1, 7))
    # Restarted at step 2, it ends where a run without the failure ends: the same batches,
    # views and random draws (L_mi's pairs, L_td's orders) after the restart as without it.
    clean = run_pretraining(config_for("clean", shards["frames"], tmp_path,
                                       "--run.checkpoint_every_steps=2"))
    faulty, clean = (load_checkpoint(Path(m["checkpoint"]))["model"] for m in (metrics, clean))
    for name, weights in clean.items():
        torch.testing.assert_close(faulty[name], weights, rtol=0, atol=0, msg=name)


def test_in_process_means_one_worker():
    with pytest.raises(ConfigError, match="run.ray = false runs one worker"):
        load_config(CONFIGS / "tiny-cpu.toml", ["--run.ray=false"])  # tiny-cpu has 2 workers


def test_a_new_job_can_start_from_another_jobs_encoder(shards, tmp_path):
    first = run_pretraining(config_for("source", shards["frames"], tmp_path))
    source = load_checkpoint(Path(first["checkpoint"]))["model"]["encoder.stem.0.weight"]
    # A learning rate too small to move the weights: the job's encoder is the one it started from.
    warm = run_pretraining(config_for("warm", shards["frames"], tmp_path, "--optim.lr=1e-12",
                                      f"--run.init_encoder={first['checkpoint']}"))
    started = load_checkpoint(Path(warm["checkpoint"]))["model"]["encoder.stem.0.weight"]
    torch.testing.assert_close(started, source, atol=1e-6, rtol=0)
    cold = run_pretraining(config_for("cold", shards["frames"], tmp_path, "--optim.lr=1e-12"))
    fresh = load_checkpoint(Path(cold["checkpoint"]))["model"]["encoder.stem.0.weight"]
    assert not torch.allclose(fresh, source, atol=1e-3)


def test_an_in_process_finetune_rerun_returns_its_results_without_training(shards, tmp_path):
    from model.encoder import R3D18
    from orchestration.finetune import FinetuneConfig, run_finetune
    from pipeline.config import AugmentConfig

    config = FinetuneConfig(epochs=1, batch_size=2, ray=False)
    augment = AugmentConfig(size=32)
    first = run_finetune(R3D18(4), 2, shards["frames"], shards["frames"], config, "ft", tmp_path,
                         augment)
    saved = load_checkpoint(tmp_path / "ft" / "finetune.pt")
    again = run_finetune(R3D18(4), 2, shards["frames"], shards["frames"], config, "ft", tmp_path,
                         augment)
    assert again == first and saved["epoch"] == 1
    assert load_checkpoint(tmp_path / "ft" / "finetune.pt")["epoch"] == 1


def test_artifacts_stay_beside_the_store_not_in_the_current_directory(shards, tmp_path,
                                                                     monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = config_for("tidy", shards["frames"], tmp_path / "runs", "--optim.epochs=1")
    metrics = run_pretraining(config)
    assert list(cwd.iterdir()) == []  # no ./mlruns
    artifacts = tmp_path / "runs" / "artifacts"
    logged = {p.name for p in artifacts.rglob("*") if p.is_file()}
    assert {"config.json", "augmentation_preview.png", "checkpoint.pt", "MLmodel"} <= logged
    run = MlflowClient(metrics["tracking_uri"]).get_run(metrics["mlflow_run_id"])
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(
        run.data.metrics)  # CPU and memory samples
    assert MlflowClient(metrics["tracking_uri"]).get_run(
        metrics["mlflow_run_id"]).info.artifact_uri.startswith(artifacts.as_uri())


def test_a_ray_job_folder_names_the_checkpoint_with_the_most_steps(tmp_path):
    job = tmp_path / "job"
    for name, step in (("checkpoint_2026-12-01_10-00-09.000001", 8),
                       ("checkpoint_2026-12-01_10-00-02.000001", 4)):
        save_checkpoint(job / name / "checkpoint.pt", {"step": step})
    (job / "checkpoint_manager_snapshot.json").write_text("{}")  # Ray's, not a checkpoint
    assert latest_checkpoint(job) == str(job / "checkpoint_2026-12-01_10-00-09.000001" /
                                         "checkpoint.pt")
    file = job / "checkpoint_2026-12-01_10-00-02.000001" / "checkpoint.pt"
    assert latest_checkpoint(file) == str(file)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="folder without a checkpoint.pt"):
        latest_checkpoint(tmp_path / "empty")
    with pytest.raises(ValueError, match="not found"):
        latest_checkpoint(tmp_path / "missing")


def test_the_progress_line_names_every_term_the_rate_and_where_the_time_went():
    from orchestration.checkpoint import TrainState
    from orchestration.pretrain import ConsoleLine
    from pipeline.loader import LoaderStats

    console = ConsoleLine(epoch=0, epochs=3, steps_per_epoch=10, start_batch=0)
    metrics = {"loss": 1.5, "loss_rc": 1.0, "loss_mi": 0.5, "mi_level": 0.2,
               "videos_per_s": 12.0}
    line = console.line(TrainState(0, 5, 5), metrics, LoaderStats(wait_seconds=0.5))
    assert line.startswith("epoch 1/3  step 5/10 (5)  loss 1.500 (rc 1.000  mi 0.500)  "
                           "videos/s 12.0  data 0.10 s  step ")
    # The next line averages over the steps since this one only.
    later = console.line(TrainState(0, 7, 7), metrics, LoaderStats(wait_seconds=0.9))
    assert "data 0.20 s" in later and "step 7/10 (7)" in later
