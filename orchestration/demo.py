"""`ctrlaug demo`: the main job end to end on a CPU machine in a few minutes.

synthesize a motion-class dataset -> preprocess it into JPEG-frame shards -> verify them ->
pretrain with Ray Train on 2 CPU workers (configs/tiny-cpu.toml), tracked in MLflow -> report
the pretraining result and where to look. Evaluation joins when the evaluation issue lands.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

from mlflow.tracking import MlflowClient

from orchestration.experiment import load_config
from orchestration.pretrain import run_pretraining
from preprocessing.config import PreprocessConfig
from preprocessing.job import local_executor, run_preprocess
from preprocessing.sources import list_dataset
from preprocessing.synth import SynthConfig, synthesize
from preprocessing.verify import verify_shards

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny-cpu.toml"


def run_demo(workdir: Path, overrides: list[str] = ()) -> dict:
    workdir = workdir.resolve()
    videos, shards = workdir / "videos", workdir / "shards"
    print(f"[1/4] synthesizing motion-class videos in {videos}", flush=True)
    synthesize(videos, SynthConfig(classes=4, videos_per_class=6, frames=48, seed=0))
    print(f"[2/4] preprocessing into {shards}", flush=True)
    manifest = run_preprocess(list_dataset("folder", videos),
                              PreprocessConfig(payload="frames", videos_per_shard=8), shards,
                              local_executor(2), log=io.StringIO())
    report = verify_shards(shards, sample=4)
    if not report.ok:
        raise RuntimeError(f"demo shards failed verification: {report.problems}")
    print(f"      {manifest['num_videos']} videos in {len(manifest['shards'])} shards, "
          f"verified", flush=True)
    config = load_config(DEMO_CONFIG, [f"--data.shards={shards}",
                                       f"--run.storage_path={workdir / 'runs'}",
                                       "--run.name=demo", *overrides])
    print(f"[3/4] pretraining: R3D-18 width {config.model.width}, {config.run.workers} Ray "
          f"workers, {config.optim.epochs} epochs, batch {config.data.batch_size}", flush=True)
    metrics = run_pretraining(config)
    uri, run_id = metrics["tracking_uri"], metrics["mlflow_run_id"]
    print("[4/4] result (first -> last logged step)", flush=True)
    client = MlflowClient(uri)
    for name in ("loss", "loss_rc", "loss_mi", "loss_td", "mi_level", "mi_local_global",
                 "td_mi", "videos_per_s", "data_wait_fraction"):
        history = sorted(client.get_metric_history(run_id, name), key=lambda m: m.step)
        if history:
            print(f"      {name:20s} {history[0].value:9.4f} -> {history[-1].value:9.4f}"
                  f"  (steps {history[0].step}..{history[-1].step})")
    print(f"      MLflow run {metrics['mlflow_run_id']}; look at it with:\n"
          f"      mlflow ui --backend-store-uri {uri}")
    return {**metrics, "config": dataclasses.asdict(config.run)}
