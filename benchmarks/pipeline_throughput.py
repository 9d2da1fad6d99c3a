"""Pretraining-loader throughput: DALI vs the PyAV + numpy reference loader, same batches.

Synthesizes a dataset, preprocesses it into both payload formats, then iterates one epoch of
the pretraining loader (global view + K=4 local clips per video, full augmentation) for every
requested (format, backend, device) and prints videos/s, the ratio to the reference loader and
the loader's host-side cost per video (everything but the decode backend's run).

--ceiling adds, for `frames` payloads on the CPU, what the loader is measured against: the same
epoch's JPEGs and view parameters read ahead into memory, then rendered (1) by a bare DALI
graph of the loader's operators with constant parameters (pipeline.dali_graph.fixed_frame_graph,
the decode-and-augment ceiling), (2) the same without the colour and blur operators, and (3) a
Pillow + numpy renderer written for speed (below), on the same number of threads. (1)-(3) do no
sampling and no reading, so the loader's ratios to them are lower bounds.

--devices names decode placements (pipeline.placement): cpu (CPU batches), gpu (NVDEC /
nvJPEG), host-gpu (decoded on the host's threads, delivered to the GPU), split (each batch
between both at once; --gpu-share of it on the GPU). Runs on the CPU machines (DALI CPU vs
PyAV) and on a GPU host (the host needs DALI and PyAV, see ../shared/tools/device-wheels.sh).
Kept well under 5 minutes by default.

    .venv/bin/python benchmarks/pipeline_throughput.py --ceiling             # this machine
    python benchmarks/pipeline_throughput.py --devices cpu,gpu,host-gpu,split --threads 16
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image, ImageFilter

from pipeline import build_pretrain_loader
from pipeline.config import MEAN, STD, AugmentConfig
from pipeline.packing import BLUR_SIGMA, FLIP, X0, X1, Y0, Y1, colour_affine, pack_view_params
from pipeline.placement import DEFAULT_GPU_SHARE
from preprocessing.config import PreprocessConfig
from preprocessing.job import local_executor, run_preprocess
from preprocessing.sources import list_dataset
from preprocessing.synth import SynthConfig, synthesize

if TYPE_CHECKING:  # DALI is imported where it is used: the reference loader runs without it
    from pipeline.dali_graph import FrameInputs

# --devices name -> (where batches are delivered, where DALI decodes)
PLACEMENTS = {"cpu": ("cpu", "cpu"), "gpu": ("gpu", "gpu"), "host-gpu": ("gpu", "cpu"),
              "split": ("gpu", "split")}


def epoch_rate(shards: Path, backend: str, placement: str, batch_size: int, threads: int,
               gpu_share: float = DEFAULT_GPU_SHARE, epochs: int = 1) -> tuple[float, float]:
    """(videos/s, host milliseconds per video) over `epochs` epochs after a first untimed one,
    which builds the graph and checks every payload once (LoaderStats.host_seconds: sampling,
    reading, packing, building inputs, assembling, on the loader's one producer thread; with
    the split, building the inputs counts as rendering). On a shared 2-core machine one epoch
    of a few batches varies by +-15% from run to run; several even it out."""
    device, decode = PLACEMENTS[placement]
    loader = build_pretrain_loader(shards, batch_size, device=device, backend=backend,
                                   num_threads=threads, levels_per_batch=8, prefetch=2,
                                   decode=decode, gpu_share=gpu_share)
    for _ in loader:
        pass
    videos, seconds, host_seconds = 0, 0.0, 0.0
    for epoch in range(1, epochs + 1):
        loader.set_epoch(epoch)
        start = time.perf_counter()
        for batch in loader:
            videos += len(batch.video_id)
        if device == "gpu":  # the delivery device
            torch.cuda.synchronize()
        seconds += time.perf_counter() - start
        host_seconds += loader.stats.host_seconds
        if loader.stats.skipped:
            raise RuntimeError(f"skipped videos: {loader.stats.skipped}")
    return videos / seconds, 1e3 * host_seconds / videos


@dataclass
class FrameBatch:
    """One batch's decode inputs, read ahead: inputs the frames graph's (each video's distinct
    needed JPEGs and where each of the B*V*L images comes from), rows (B*V*L, PARAMS_WIDTH)
    each image's view parameters, shape (B, V, L)."""

    inputs: FrameInputs
    rows: np.ndarray
    shape: tuple[int, int, int]


def read_ahead(shards: Path, batch_size: int) -> list[FrameBatch]:
    """The second epoch's batches of the pretraining loader (as epoch_rate times them), with
    the loader's own sampling and reading, held in memory."""
    from pipeline.dali_graph import frame_inputs

    loader = build_pretrain_loader(shards, batch_size, backend="reference", levels_per_batch=8,
                                   epoch=1)
    batches = []
    for index, rows in enumerate(loader.batches()):
        views = loader.sample_views(loader.dataset, rows, index, loader.epoch)
        payloads = loader.reader.read(rows)
        b, v, length = views.frame_indices.shape
        rows_per_image = np.repeat(pack_view_params(views).reshape(b * v, -1), length, axis=0)
        batches.append(FrameBatch(frame_inputs(payloads, views.frame_indices), rows_per_image,
                                  views.frame_indices.shape))
    return batches


def timed_second_pass(render, batches: list[FrameBatch]) -> float:
    """videos/s of render(batch) over the batches, the second of two passes (the first
    warms up allocators and thread pools)."""
    for batch in batches:
        render(batch)
    start = time.perf_counter()
    for batch in batches:
        render(batch)
    return sum(b.shape[0] for b in batches) / (time.perf_counter() - start)


def bare_graph_rate(batches: list[FrameBatch], size: int, jitter: bool, threads: int) -> float:
    """videos/s of fixed_frame_graph (the loader's operators, constant parameters)."""
    from pipeline.dali_graph import fixed_frame_graph

    pipe = fixed_frame_graph(size, jitter, jitter, "cpu", num_threads=threads, device_id=None,
                             batch_size=max(len(b.rows) for b in batches),
                             prefetch_queue_depth=1, exec_dynamic=True)
    pipe.build()

    def render(batch: FrameBatch) -> None:
        batch.inputs.feed(pipe)
        (out,) = pipe.run()
        out.as_array()

    return timed_second_pass(render, batches)


def pillow_view(images: list[Image.Image], row: np.ndarray, size: int) -> np.ndarray:
    """One view as a plain loader written for speed would render it: L decoded frames and the
    view's row -> (3, L, size, size) float32. Pillow crops and resizes in one call and blurs
    (before the colour map, not after: both are linear but for the final clip), numpy applies
    the colour map (brightness/contrast, hue/saturation: one affine map), flip and
    normalisation to the whole clip."""
    frames = []
    for image in images:
        w, h = image.size
        image = image.resize((size, size), Image.Resampling.BILINEAR,
                             box=(row[X0] * w, row[Y0] * h, row[X1] * w, row[Y1] * h))
        if row[BLUR_SIGMA] > 0:
            image = image.filter(ImageFilter.GaussianBlur(float(row[BLUR_SIGMA])))
        frames.append(np.asarray(image))
    clip = np.stack(frames).astype(np.float32)  # (L, s, s, 3)
    affine = colour_affine(row)
    clip = np.clip(clip @ affine[:, :3].T + affine[:, 3], 0, 255)
    if row[FLIP] > 0.5:
        clip = clip[:, :, ::-1]
    clip = (clip / 255.0 - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    return np.ascontiguousarray(clip.transpose(3, 0, 1, 2))


def pillow_rate(batches: list[FrameBatch], size: int, threads: int) -> float:
    """videos/s of pillow_view over every view, one video per task on `threads` threads
    (Pillow and numpy release the GIL for decoding, resizing, filtering and array maths);
    like the loader, each distinct frame of a video is decoded once."""
    pool = ThreadPoolExecutor(max_workers=threads)

    def render(batch: FrameBatch) -> None:
        _, v, length = batch.shape
        gather = batch.inputs.gather

        def video(i: int) -> np.ndarray:
            first = i * v * length
            needed = gather[first:first + v * length]
            decoded = {j: Image.open(io.BytesIO(batch.inputs.jpeg(j))).convert("RGB")
                       for j in np.unique(needed).tolist()}
            views = [[decoded[j] for j in gather[start:start + length].tolist()]
                     for start in range(first, first + v * length, length)]
            return np.stack([pillow_view(frames, batch.rows[first + j * length], size)
                             for j, frames in enumerate(views)])

        np.stack(list(pool.map(video, range(batch.shape[0]))))

    return timed_second_pass(render, batches)


def print_ceiling(shards: Path, loader_rate: float, batch_size: int, threads: int,
                  rounds: int, epochs: int) -> None:
    """The loader's rate against the bare graph with and without colour/blur and Pillow, over
    `rounds` rounds that alternate all four (the loader timed again from the second round on),
    then the median of each and the median of the loader's per-round ratios."""
    batches = read_ahead(shards, batch_size)
    size = AugmentConfig().size
    needed = sum(len(b.rows) for b in batches)
    distinct = sum(b.inputs.distinct for b in batches)
    print(f"frames: {needed} images, {distinct} distinct frames of their video, each decoded "
          f"once ({1 - distinct / needed:.0%} of the images are repeats)")
    names = ("bare DALI graph, same operators", "bare DALI graph, no colour/blur",
             "Pillow + numpy, written for speed")
    measured: dict[str, list[float]] = {"loader": [], **{name: [] for name in names}}
    for round_index in range(rounds):
        if round_index:
            loader_rate, _ = epoch_rate(shards, "dali", "cpu", batch_size, threads,
                                        epochs=epochs)
        measured["loader"].append(loader_rate)
        for name, rate in zip(names, (bare_graph_rate(batches, size, True, threads),
                                      bare_graph_rate(batches, size, False, threads),
                                      pillow_rate(batches, size, threads)), strict=True):
            measured[name].append(rate)
            print(f"frames {name:34s} {rate:7.2f} videos/s  the loader is "
                  f"{loader_rate / rate:5.2f}x it" + (f"  (round {round_index + 1}, loader "
                                                     f"{loader_rate:.2f})" if rounds > 1 else ""),
                  flush=True)
    if rounds > 1:
        loader = measured["loader"]
        print(f"median over {rounds} rounds: loader {np.median(loader):.2f} videos/s; " + "; ".join(
            f"{name} {np.median(measured[name]):.2f} (loader "
            f"{np.median(np.array(loader) / np.array(measured[name])):.2f}x)" for name in names))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=32)
    parser.add_argument("--frames", type=int, default=76)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--formats", default="video,frames")
    parser.add_argument("--devices", default="cpu",
                        help=f"decode placements, of {', '.join(PLACEMENTS)}")
    parser.add_argument("--gpu-share", type=float, default=DEFAULT_GPU_SHARE,
                        help="the GPU's share of each batch for --devices split")
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--ceiling", action="store_true",
                        help="frames on the CPU: also the bare graph and a Pillow renderer")
    parser.add_argument("--rounds", type=int, default=1,
                        help="with --ceiling: alternate the four this many times (medians)")
    parser.add_argument("--epochs", type=int, default=1,
                        help="loader epochs timed, after a first untimed one")
    args = parser.parse_args()
    unknown = set(args.devices.split(",")) - set(PLACEMENTS)
    if args.epochs < 1:
        parser.error("--epochs must be at least 1")
    if unknown:
        parser.error(f"unknown --devices {sorted(unknown)}: {', '.join(PLACEMENTS)}")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        synthesize(root / "videos", SynthConfig(classes=4, videos_per_class=args.videos // 4,
                                                frames=args.frames, width=320, height=240))
        listing = list_dataset("folder", root / "videos")
        print(f"{len(listing.videos)} videos of {args.frames} frames, 170x128 after "
              f"preprocessing, batch {args.batch_size}, {args.threads} threads for each "
              f"loader, torch {torch.__version__}"
              + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))
        for payload in args.formats.split(","):
            shards = root / payload
            run_preprocess(listing, PreprocessConfig(payload=payload, videos_per_shard=8),
                           shards, local_executor(args.threads), log=io.StringIO())
            baseline = None
            if not args.skip_reference:
                baseline, _ = epoch_rate(shards, "reference", "cpu", args.batch_size,
                                         args.threads, epochs=args.epochs)
                print(f"{payload:6s} reference (PyAV + numpy) {baseline:7.2f} videos/s")
            for device in args.devices.split(","):
                rate, host_ms = epoch_rate(shards, "dali", device, args.batch_size,
                                           args.threads, args.gpu_share, args.epochs)
                ratio = f"  {rate / baseline:5.2f}x the reference" if baseline else ""
                print(f"{payload:6s} DALI {device:8s}          {rate:7.2f} videos/s{ratio}"
                      f"  host {host_ms:.2f} ms/video (one thread feeds "
                      f"{1e3 / host_ms:.0f} videos/s)", flush=True)
                if args.ceiling and payload == "frames" and device == "cpu":
                    print_ceiling(shards, rate, args.batch_size, args.threads, args.rounds,
                                  args.epochs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
