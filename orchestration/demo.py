"""`ctrlaug demo`: the main job end to end on a CPU machine in a few minutes.

synthesize a motion-class dataset (and a separate test set) -> preprocess both into JPEG-frame
shards -> verify them -> pretrain with Ray Train on 2 CPU workers (configs/tiny-cpu.toml),
tracked in MLflow -> linear probe and retrieval of the pretrained encoder next to a randomly
initialised one -> where to look.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import torch
from mlflow.tracking import MlflowClient

from model.encoder import R3D18
from orchestration.evaluate import encoder_from_checkpoint, run_evaluation
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
    test_videos, test_shards = workdir / "test-videos", workdir / "test-shards"
    print(f"[1/5] synthesizing motion-class videos in {videos} and {test_videos}", flush=True)
    synthesize(videos, SynthConfig(classes=4, videos_per_class=6, frames=48, seed=0))
    synthesize(test_videos, SynthConfig(classes=4, videos_per_class=3, frames=48, seed=1))
    print(f"[2/5] preprocessing into {shards} and {test_shards}", flush=True)
    for source, target, split in ((videos, shards, "train"), (test_videos, test_shards, "test")):
        manifest = run_preprocess(list_dataset("folder", source, split=split),
                                  PreprocessConfig(payload="frames", videos_per_shard=8),
                                  target, local_executor(2), log=io.StringIO())
        report = verify_shards(target, sample=4)
        if not report.ok:
            raise RuntimeError(f"demo shards failed verification: {report.problems}")
        print(f"      {split}: {manifest['num_videos']} videos in {len(manifest['shards'])} "
              f"shards, verified", flush=True)
    config = load_config(DEMO_CONFIG, [f"--data.shards={shards}",
                                       f"--run.storage_path={workdir / 'runs'}",
                                       "--run.name=demo", *overrides])
    print(f"[3/5] pretraining: R3D-18 width {config.model.width}, {config.run.workers} Ray "
          f"workers, {config.optim.epochs} epochs, batch {config.data.batch_size}", flush=True)
    metrics = run_pretraining(config)
    uri, run_id = metrics["tracking_uri"], metrics["mlflow_run_id"]
    print("[4/5] pretraining result (first -> last logged step)", flush=True)
    client = MlflowClient(uri)
    for name in ("loss", "loss_rc", "loss_mi", "loss_td", "mi_level", "mi_local_global",
                 "td_mi", "videos_per_s", "data_wait_fraction"):
        history = sorted(client.get_metric_history(run_id, name), key=lambda m: m.step)
        if history:
            print(f"      {name:20s} {history[0].value:9.4f} -> {history[-1].value:9.4f}"
                  f"  (steps {history[0].step}..{history[-1].step})")
    print("[5/5] evaluation on the held-out test videos (linear probe: 10 clips, softmax "
          "averaged; retrieval: test queries train)", flush=True)
    pretrained, _ = encoder_from_checkpoint(Path(metrics["checkpoint"]))
    torch.manual_seed(0)
    random_init = R3D18(config.model.width, config.model.global_unstrided_stages)
    scores = {}
    for name, encoder, parent in (("pretrained", pretrained, run_id),
                                  ("random init", random_init, None)):
        scores[name] = run_evaluation(["linear", "retrieval"], encoder, shards, test_shards, uri,
                                      parent, workdir / "runs" / "feature-cache",
                                      name=f"demo {name}")
    print(f"      {'':12s} {'top-1':>7s} {'top-5':>7s} {'R@1':>7s} {'R@5':>7s} {'R@10':>7s}")
    for name, result in scores.items():
        print(f"      {name:12s} {result['linear_top1']:7.3f} {result['linear_top5']:7.3f} "
              f"{result['R@1']:7.3f} {result['R@5']:7.3f} {result['R@10']:7.3f}")
    print(f"      (chance top-1 {1 / len(manifest['classes']):.3f}; a 3-epoch CPU pretraining "
          f"of a width-8 encoder is a smoke test, not a result)")
    print(f"      MLflow runs (pretraining {run_id} and the evaluations); look at them with:\n"
          f"      mlflow ui --backend-store-uri {uri}")
    return {**metrics, "evaluation": scores, "config": dataclasses.asdict(config.run)}
