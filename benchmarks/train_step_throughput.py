"""Pretraining step throughput of the full objective: fp32 vs bf16 + channels_last_3d, same batch.

Synthesizes a few videos, shards them, takes real pretraining batches from the DALI loader
(global view + K local clips, full augmentation, every parameter emitted), then times
`orchestration.train_step.training_step` of the full-width PretrainNetwork (R3D-18 f / f',
projection heads, L_rc, MINE + GRL, L_td) on those batches, once per precision, and prints
videos/s, clips/s (1 + K per video) and the ratio to fp32. The loss after the timed steps is
printed too: repeated steps on the same batches must lower it. First it prints the step's FLOPs
per video (`step_flops`: forward and backward, counted by torch's FlopCounterMode) next to the
anchor, torchvision's R3D-18 on one 16 x 112 x 112 clip (40.697 G multiply-adds in its weights'
metadata = 81.4 GFLOPs forward). Meant for a GPU host (it runs on
the CPU too, slowly: use --width 8 --batch-size 4 there to try it).

    python benchmarks/train_step_throughput.py                 # a GPU host
    .venv/bin/python benchmarks/train_step_throughput.py --device cpu --width 8 \
        --batch-size 4 --steps 2
"""

from __future__ import annotations

import argparse
import io
import math
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from model import LossConfig, ModelConfig, PretrainNetwork, clip_correspondence
from orchestration.train_step import geometry, training_step
from pipeline import build_pretrain_loader
from pipeline.config import AugmentConfig
from preprocessing.config import PreprocessConfig
from preprocessing.job import local_executor, run_preprocess
from preprocessing.sources import list_dataset
from preprocessing.synth import SynthConfig, synthesize

# torchvision.models.video.R3D_18_Weights.KINETICS400_V1.meta["_ops"]: 40.697 G multiply-adds
# (torchvision counts one multiply-add as one op) per 16 x 112 x 112 clip, forward only.
TORCHVISION_R3D18_GFLOPS = 2 * 40.697


def step_flops(width: int, frames: tuple[int, int, int], clips: int,
               videos: int = 2) -> tuple[float, float, float]:
    """(step FLOPs per video, of which encoder, encoder FLOPs of one forward_clip) for the full
    objective: forward and backward of the encoder (f on K clips, f' on the global view),
    counted on the meta device (no arithmetic is done), plus the objective's heads and losses
    forward and backward on real random features of the same shapes (their FLOPs do not depend
    on the values). The optimiser's update is not counted."""
    network = PretrainNetwork(ModelConfig(width=width), LossConfig())
    encoder, objective = network.encoder, network.objective
    meta_encoder = type(encoder)(width, encoder.global_unstrided_stages).to("meta")
    with FlopCounterMode(display=False) as counter:
        local = torch.empty(videos * clips, 3, *frames, device="meta")
        global_view = torch.empty(videos, 3, *frames, device="meta")
        local_maps = meta_encoder.forward_clip(local)
        global_maps = meta_encoder.forward_global(global_view)
        (local_maps.sum() + global_maps.sum()).backward()
    encoder_flops = counter.get_total_flops()
    with FlopCounterMode(display=False) as one_clip:
        meta_encoder.forward_clip(torch.empty(1, 3, *frames, device="meta"))
    local_grid, global_grid = network.grids(frames)
    correspondence = torch.rand(videos, clips, math.prod(local_grid), math.prod(global_grid))
    correspondence = correspondence / correspondence.sum(-1, keepdim=True)
    levels = torch.zeros(videos, clips + 1, dtype=torch.long)
    with FlopCounterMode(display=False) as counter:
        local_maps = torch.randn(videos, clips, encoder.feature_dim, *local_grid,
                                 requires_grad=True)
        global_maps = torch.randn(videos, encoder.feature_dim, *global_grid, requires_grad=True)
        objective(local_maps, global_maps, correspondence, levels[:, 1:],
                  levels[:, 0]).total.backward()
    total = encoder_flops + counter.get_total_flops()
    return total / videos, encoder_flops / videos, one_clip.get_total_flops()


def real_batches(shards: Path, batch_size: int, device: str, count: int, threads: int) -> list:
    """`count` pretraining batches from the DALI loader, kept on the device."""
    loader = build_pretrain_loader(shards, batch_size, device=device, num_threads=threads,
                                   levels_per_batch=4, config=AugmentConfig(), prefetch=1)
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) == count:
            return batches
    raise RuntimeError(f"{shards} gave {len(batches)} batches of {batch_size}, need {count}")


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def objective_seconds(network: PretrainNetwork, batches: list, grids, steps: int) -> float:
    """Seconds per step of what a step does besides the encoder and the optimiser: the
    correspondence S_k from the batch's view parameters and the objective (projection, MINE and
    temporal heads, the losses) forward and backward, on encoder features of the same batches
    computed beforehand."""
    device = batches[0].global_frames.device
    features = []
    with torch.no_grad():
        for batch in batches:
            b, k = batch.local_frames.shape[:2]
            local = network.encoder.forward_clip(batch.local_frames.flatten(0, 1))
            features.append((local.unflatten(0, (b, k)).float(),  # (B, K, C, Tc, Hc, Wc)
                             network.encoder.forward_global(batch.global_frames).float()))
    synchronise(device)
    start = time.perf_counter()
    for i in range(steps):
        batch, (local, global_maps) = batches[i % len(batches)], features[i % len(batches)]
        correspondence = clip_correspondence(geometry(batch.local_params),
                                             geometry(batch.global_params), *grids)
        network.objective(local.requires_grad_(), global_maps.requires_grad_(), correspondence,
                          batch.local_params.level, batch.global_params.level).total.backward()
        local.grad = global_maps.grad = None
    synchronise(device)
    return (time.perf_counter() - start) / steps


def host_syncs(network, optimizer, batch, grids, step: int, bf16: bool) -> int:
    """Host-device synchronisations in one training step on a GPU, as torch's sync debug
    mode reports them (one is the logged scalars, LossBreakdown.scalars)."""
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            training_step(network, optimizer, batch, grids, step, bf16=bf16)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(warning.message) for warning in caught)


def step_rate(batches: list, width: int, bf16: bool, steps: int, warmup: int,
              compile_encoder: bool = False) -> tuple[float, float, float, float]:
    """(videos/s, first loss, last loss, seconds of objective_seconds per step) of `steps`
    timed training steps over `batches`. compile_encoder: f and f' through torch.compile (the
    heads stay eager; the warm-up steps include the compilation)."""
    torch.manual_seed(0)
    device = batches[0].global_frames.device
    network = PretrainNetwork(ModelConfig(width=width), LossConfig()).to(device)
    if bf16:
        network = network.to(memory_format=torch.channels_last_3d)
    if compile_encoder:
        encoder = network.encoder
        encoder.forward_clip = torch.compile(encoder.forward_clip)
        encoder.forward_global = torch.compile(encoder.forward_global)
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-4)
    frames = tuple(batches[0].global_frames.shape[2:])
    grids = network.grids(frames)
    losses = []
    for i in range(warmup):
        losses.append(training_step(network, optimizer, batches[i % len(batches)], grids, i,
                                    bf16=bf16).total.item())
    synchronise(device)
    start = time.perf_counter()
    videos = 0
    for i in range(steps):
        batch = batches[i % len(batches)]
        breakdown = training_step(network, optimizer, batch, grids, warmup + i, bf16=bf16)
        videos += len(batch.video_id)
    last = breakdown.total.item()  # synchronises
    rate = videos / (time.perf_counter() - start)
    if device.type == "cuda":
        print(f"  host-device syncs in one step: "
              f"{host_syncs(network, optimizer, batches[0], grids, warmup + steps, bf16)} (one "
              f"is the logged scalars)", flush=True)
    return rate, losses[0] if losses else last, last, objective_seconds(network, batches, grids,
                                                                          steps)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="gpu", choices=["gpu", "cpu"])
    parser.add_argument("--batch-size", type=int, default=32, help="videos per step")
    parser.add_argument("--width", type=int, default=64, help="R3D-18 base width (64 = full)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--precisions", default="fp32,bf16",
                        help="variants side by side: fp32, bf16 (with channels_last_3d), each "
                             "optionally +compile (torch.compile of the encoder), e.g. "
                             "fp32,bf16,bf16+compile")
    args = parser.parse_args()
    if args.device == "gpu" and not torch.cuda.is_available():
        parser.error("no CUDA device: use --device cpu")
    precisions = args.precisions.split(",")
    unknown = set(precisions) - {"fp32", "bf16", "fp32+compile", "bf16+compile"}
    if unknown:
        parser.error(f"unknown --precisions {sorted(unknown)}: fp32, bf16, fp32+compile, "
                     f"bf16+compile")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        synthesize(root / "videos", SynthConfig(classes=4, videos_per_class=args.batch_size // 2,
                                                frames=76, width=320, height=240))
        listing = list_dataset("folder", root / "videos")
        run_preprocess(listing, PreprocessConfig(payload="frames", videos_per_shard=16),
                       root / "shards", local_executor(args.threads), log=io.StringIO())
        batches = real_batches(root / "shards", args.batch_size, args.device, 2, args.threads)
        clips = 1 + batches[0].local_frames.shape[1]
        print(f"batch {args.batch_size} videos x {clips} clips of "
              f"{tuple(batches[0].global_frames.shape[2:])}, R3D-18 width {args.width}, "
              f"torch {torch.__version__}"
              + (f", {torch.cuda.get_device_name()}" if args.device == "gpu" else ", CPU"))
        frames = tuple(batches[0].global_frames.shape[2:])
        per_video, encoder, clip = step_flops(args.width, frames, clips - 1)
        print(f"FLOPs per video (forward + backward): {per_video / 1e9:.1f} G, of which the "
              f"encoder {encoder / per_video:.1%}; one clip through f (forward): "
              f"{clip / 1e9:.1f} G, torchvision's R3D-18 on 16x112x112: "
              f"{TORCHVISION_R3D18_GFLOPS:.1f} G")
        baseline = None
        for precision in precisions:
            rate, first, last, objective = step_rate(
                batches, args.width, precision.startswith("bf16"), args.steps, args.warmup,
                precision.endswith("+compile"))
            step = args.batch_size / rate  # seconds
            baseline = baseline or rate
            print(f"{precision:12s} {rate:8.2f} videos/s {rate * clips:8.1f} clips/s "
                  f"{rate / baseline:5.2f}x {precisions[0]}   loss {first:.3f} -> {last:.3f}   "
                  f"correspondence + heads + losses {objective * 1e3:.1f} ms of the step's "
                  f"{step * 1e3:.1f} ms ({objective / step:.1%})",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
