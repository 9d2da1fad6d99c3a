"""`ctrlaug demo`: the main job end to end on a CPU machine in a few minutes.

synthesize a motion-class dataset -> preprocess it into JPEG-frame shards -> verify them ->
pretrain with Ray Train on 2 CPU workers (configs/tiny-cpu.toml), tracked in MLflow -> report
the pretraining result and where to look. Evaluation joins when the evaluation issue lands.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

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
    print("[4/4] result", flush=True)
    terms = {k: v for k, v in metrics.items() if k.startswith(("loss", "mi_", "td_"))}
    for name, value in sorted(terms.items()):
        print(f"      {name:22s} {value:.4f}")
    uri = metrics["tracking_uri"]
    print(f"      MLflow run {metrics['mlflow_run_id']}; look at it with:\n"
          f"      mlflow ui --backend-store-uri {uri}")
    return {**metrics, "config": dataclasses.asdict(config.run)}
