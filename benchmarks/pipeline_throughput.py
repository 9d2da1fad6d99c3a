"""Pretraining-loader throughput: DALI vs the PyAV + numpy reference loader, same batches.

Synthesizes a dataset, preprocesses it into both payload formats, then iterates one epoch of
the pretraining loader (global view + K=4 local clips per video, full augmentation) for every
requested (format, backend, device) and prints videos/s, the ratio to the reference loader and
the loader's host-side cost per video (everything but the decode backend's run).
Runs on the CPU machines (DALI CPU vs PyAV) and on a GPU host (add --devices gpu; the host needs
DALI and PyAV, see ../shared/tools/device-wheels.sh). Kept well under 5 minutes by default.

    .venv/bin/python benchmarks/pipeline_throughput.py                       # this machine
    python benchmarks/pipeline_throughput.py --devices cpu,gpu --threads 16  # a GPU host
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from pipeline import build_pretrain_loader
from preprocessing.config import PreprocessConfig
from preprocessing.job import local_executor, run_preprocess
from preprocessing.sources import list_dataset
from preprocessing.synth import SynthConfig, synthesize


def epoch_rate(shards: Path, backend: str, device: str, batch_size: int, threads: int
               ) -> tuple[float, float]:
    """(videos/s, host milliseconds per video) over the second of two epochs: the first
    builds the graph and checks every payload once (LoaderStats.host_seconds: sampling,
    reading, packing, building inputs, assembling, on the loader's one producer thread)."""
    loader = build_pretrain_loader(shards, batch_size, device=device, backend=backend,
                                   num_threads=threads, levels_per_batch=8, prefetch=2)
    for _ in loader:
        pass
    loader.set_epoch(1)
    start = time.perf_counter()
    videos = 0
    for batch in loader:
        videos += len(batch.video_id)
    if device == "gpu":
        torch.cuda.synchronize()
    if loader.stats.skipped:
        raise RuntimeError(f"skipped videos: {loader.stats.skipped}")
    return videos / (time.perf_counter() - start), 1e3 * loader.stats.host_seconds / videos


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=32)
    parser.add_argument("--frames", type=int, default=76)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--formats", default="video,frames")
    parser.add_argument("--devices", default="cpu")
    parser.add_argument("--skip-reference", action="store_true")
    args = parser.parse_args()
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
                                         args.threads)
                print(f"{payload:6s} reference (PyAV + numpy) {baseline:7.2f} videos/s")
            for device in args.devices.split(","):
                rate, host_ms = epoch_rate(shards, "dali", device, args.batch_size,
                                           args.threads)
                ratio = f"  {rate / baseline:5.2f}x the reference" if baseline else ""
                print(f"{payload:6s} DALI {device:3s}               {rate:7.2f} videos/s{ratio}"
                      f"  host {host_ms:.2f} ms/video (one thread feeds "
                      f"{1e3 / host_ms:.0f} videos/s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
