"""Finetuning protocol: the whole encoder plus a new linear head, on Ray Train workers (or in
this process with `ray=False`, through the same loop).

Each worker trains on its share of the train videos (supervised loader: one random clip, random
crop and flip per video) with Adam, a cosine learning-rate schedule over the epochs and
cross-entropy, under DDP when there are several workers;
every epoch is checkpointed, so a failed worker group restarts from the last epoch. The test
accuracy (10 clips per video, centre crop, softmax averaged) is measured before training and
after the last epoch, each worker on its share of the test videos (no worker waits in a
collective while another evaluates alone), and logged to the evaluation's MLflow run.
With `gpu`, each worker has one GPU: DALI decodes there (mixed backends), DDP over NCCL, the
forward pass under bf16 autocast; the same loop and checkpoints as on CPU.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from model.encoder import R3D18, pool_features
from model.evaluation import average_clip_softmax, top_k_accuracy
from orchestration.checkpoint import FINETUNE_FILE, finetuning_checkpoint
from orchestration.distributed import gather_rows
from orchestration.runtime import LocalRuntime, RayRuntime, connect_ray, quiet_train_logging
from orchestration.train_step import bf16_autocast
from pipeline import build_eval_loader, build_supervised_loader
from pipeline.config import AugmentConfig
from preprocessing.progress import format_seconds
from preprocessing.validation import check_field_types, require


@dataclass(frozen=True)
class FinetuneConfig:
    """The finetuning protocol: epochs of Adam (cosine schedule from lr), weight decay, global
    batch_size split over Ray `workers` (or in this process, one worker, when ray is false),
    restarts after up to max_failures failures, the decode backend; gpu: one GPU per worker
    (GPU decode, NCCL, bf16 autocast)."""

    epochs: int = 10
    lr: float = 3e-4
    weight_decay: float = 1e-5
    batch_size: int = 16
    workers: int = 1
    max_failures: int = 2
    seed: int = 0
    backend: Literal["dali", "reference"] = "dali"
    ray: bool = True
    gpu: bool = False

    def __post_init__(self) -> None:
        check_field_types(self)
        require(self.epochs >= 1 and self.lr > 0 and self.weight_decay >= 0,
                "epochs must be >= 1, lr > 0 and weight_decay >= 0")
        require(self.batch_size >= self.workers >= 1,
                f"batch_size ({self.batch_size}) must be >= workers ({self.workers}) >= 1")
        require(self.max_failures >= 0, "max_failures must be >= 0")
        require(self.ray or self.workers == 1, "ray = false runs one worker in this process")
        require(not self.gpu or self.backend == "dali", "gpu decodes with the dali backend")


def _decode_on(device: torch.device) -> dict:
    """Loader options that decode where the model runs."""
    return {"device": "gpu" if device.type == "cuda" else "cpu", "device_id": device.index or 0}


class VideoClassifier(nn.Module):
    """Encoder f, global average pooling, a linear head: (B, 3, T, H, W) -> (B, classes)."""

    def __init__(self, encoder: R3D18, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.feature_dim, num_classes)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.head(pool_features(self.encoder.forward_clip(clips)))


@torch.no_grad()
def test_probabilities(model: nn.Module, test_shards: str, backend: str, augment: AugmentConfig,
                       rank: int = 0, world: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean clip softmax (N, C), labels (N,)) of every test video in dataset order, from 10
    centre clips per video decoded on the model's device. This rank scores its share (the eval
    loader's exactly-once split) and the shares are gathered, so every rank of a process group
    calls it and no rank waits in a collective while another evaluates alone."""
    model.eval()
    probabilities, labels = [], []
    device = next(model.parameters()).device
    loader = build_eval_loader(test_shards, 8, rank=rank, world_size=world, backend=backend,
                               config=augment, **_decode_on(device))
    for batch in loader:
        b, n = batch.frames.shape[:2]
        with bf16_autocast(device):
            logits = model(batch.frames.flatten(0, 1).to(device))
        logits = logits.float().unflatten(0, (b, n))  # (B, N, C)
        probabilities.append(average_clip_softmax(logits))
        labels.append(batch.label.to(device))
    model.train()
    return gather_rows(torch.cat(probabilities)).cpu(), gather_rows(torch.cat(labels)).cpu()


def test_accuracy(model: nn.Module, test_shards: str, backend: str, augment: AugmentConfig,
                  rank: int = 0, world: int = 1) -> dict[str, float]:
    """Top-1 / top-5 of test_probabilities."""
    p, y = test_probabilities(model, test_shards, backend, augment, rank, world)
    return {"top1": top_k_accuracy(p, y, 1), "top5": top_k_accuracy(p, y, 5)}


def finetune_loop(loop_config: dict, runtime: LocalRuntime | RayRuntime) -> None:
    """Epochs of supervised training of the classifier, from wherever the job stands."""
    config = FinetuneConfig(**loop_config["finetune"])
    augment = AugmentConfig(**loop_config["augment"])
    rank, world = runtime.rank, runtime.world
    torch.manual_seed(config.seed)
    encoder = R3D18(loop_config["width"], loop_config["global_unstrided_stages"])
    encoder.load_state_dict(loop_config["encoder_state"])
    model = VideoClassifier(encoder, loop_config["num_classes"])
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr,
                                 weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.epochs)
    start, initial = 0, None
    saved = runtime.restore()
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        start, initial = saved["epoch"], saved["initial"]
    plain = model.to(runtime.device)
    if initial is None:
        initial = test_accuracy(plain, loop_config["test"], config.backend, augment, rank, world)
    model = runtime.prepare(model)
    device = runtime.device
    loader = build_supervised_loader(loop_config["train"], max(1, config.batch_size // world),
                                     rank=rank, world_size=world, seed=config.seed,
                                     backend=config.backend, config=augment,
                                     **_decode_on(device))
    started = time.perf_counter()
    for epoch in range(start, config.epochs):
        loader.set_epoch(epoch)
        total, correct, seen = 0.0, 0, 0
        for batch in loader:
            frames, labels = batch.frames[:, 0].to(device), batch.label.to(device)
            with bf16_autocast(device):
                logits = model(frames)  # (B, classes)
            loss = F.cross_entropy(logits.float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(labels)
            correct += int((logits.argmax(1) == labels).sum())
            seen += len(labels)
        scheduler.step()
        metrics = {"epoch": epoch + 1, "train_loss": total / max(seen, 1),
                   "train_accuracy": correct / max(seen, 1)}
        if epoch + 1 == config.epochs:
            final = test_accuracy(plain, loop_config["test"], config.backend, augment, rank,
                                  world)
            metrics |= {"initial_top1": initial["top1"], "initial_top5": initial["top5"],
                        "finetune_top1": final["top1"], "finetune_top5": final["top5"]}
        checkpoint = finetuning_checkpoint(plain, optimizer, scheduler, epoch + 1, initial,
                                           encoder) if rank == 0 else None
        runtime.report(metrics, checkpoint)
        if rank == 0:
            per_epoch = (time.perf_counter() - started) / (epoch + 1 - start)
            eta = per_epoch * (config.epochs - epoch - 1)
            print(f"finetune epoch {epoch + 1}/{config.epochs}  loss {metrics['train_loss']:.4f}"
                  f"  train accuracy {metrics['train_accuracy']:.3f}  ETA {format_seconds(eta)}",
                  flush=True)


def finetune_worker(loop_config: dict) -> None:
    """The Ray Train worker: the loop under RayRuntime."""
    finetune_loop(loop_config, RayRuntime(loop_config["finetune"]["gpu"], FINETUNE_FILE))


def run_finetune(encoder: R3D18, num_classes: int, train_shards: Path, test_shards: Path,
                 config: FinetuneConfig, name: str, storage_path: Path,
                 augment: AugmentConfig | None = None) -> dict[str, float]:
    """Finetune (on Ray Train, or in this process when config.ray is false); returns the
    initial and final test accuracy and the trained classifier's encoder weights are left in
    the job folder's checkpoint. Rerunning with the same name resumes."""
    loop_config = {"finetune": asdict(config), "encoder_state": encoder.state_dict(),
                   "width": encoder.width,
                   "global_unstrided_stages": encoder.global_unstrided_stages,
                   "num_classes": num_classes, "train": str(train_shards),
                   "test": str(test_shards), "augment": asdict(augment or AugmentConfig())}
    if config.ray:
        metrics = _fit_on_ray(loop_config, config, name, storage_path)
    else:
        device = torch.device("cuda", 0) if config.gpu else torch.device("cpu")
        runtime = LocalRuntime(Path(storage_path).resolve() / name, device, FINETUNE_FILE)
        finetune_loop(loop_config, runtime)
        metrics = runtime.last_metrics
    return {key: metrics[key] for key in ("initial_top1", "initial_top5", "finetune_top1",
                                          "finetune_top5")}


def _fit_on_ray(loop_config: dict, config: FinetuneConfig, name: str, storage_path: Path
                ) -> dict:
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    connect_ray()
    trainer = TorchTrainer(
        finetune_worker, train_loop_config=loop_config,
        torch_config=TorchConfig(backend="nccl" if config.gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=config.workers, use_gpu=config.gpu),
        run_config=RunConfig(name=name, storage_path=str(Path(storage_path).resolve()),
                             failure_config=FailureConfig(max_failures=config.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=1),
                             **quiet_train_logging()))
    return trainer.fit().metrics
