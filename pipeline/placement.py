"""Decode placement: which device decodes and augments each video of a batch.

The `decode` setting (DataConfig.decode, the loaders' `decode` option) is independent of where
the batches are delivered (the training device):

  auto   the delivery device's own decoders: DALI on the host's threads for CPU training,
         NVDEC / nvJPEG for GPU training
  cpu    DALI on the host's threads; on a GPU host the views are then copied to the GPU
  gpu    DALI's mixed backends (GPU delivery only)
  split  each batch cut in two, rendered at the same time: its first videos on the host's
         threads, the rest (`gpu_share` of the batch, rounded) on the GPU, so a GPU host uses
         its cores and its decoders together (GPU delivery only)

`SplitViews` is the split: it has the renderers' interface (run / reset / render_seconds), so
the loader treats it as one renderer. Each part applies exactly the views' parameters, so a
split batch holds the views an unsplit one would, up to the two decoders' rounding.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

DECODE_PLACEMENTS = ("auto", "cpu", "gpu", "split")
# The GPU's share of a split batch when none is given: the measured rates of one loader on an
# H200 host with 16 cores (BENCHMARKS.md, 2026-11-26), `frames` payloads: nvJPEG 160 videos/s,
# DALI on the CPU 65-67, so the GPU should take 160 / (160 + 66) = 0.7 of each batch.
DEFAULT_GPU_SHARE = 0.7


def resolve_decode(decode: str, delivery: str, backend: str = "dali") -> str:
    """The placement to build ("cpu", "gpu" or "split") for batches delivered to `delivery`
    ("cpu" or "gpu"); a placement that cannot work is refused here, before anything is read."""
    if decode not in DECODE_PLACEMENTS:
        raise ValueError(f"decode must be one of {', '.join(DECODE_PLACEMENTS)}, got {decode!r}")
    resolved = delivery if decode == "auto" else decode
    if backend != "dali" and resolved != "cpu":
        raise ValueError(f"decode={decode!r} needs backend='dali' (the {backend} backend "
                         f"decodes on the host only)")
    if resolved in ("gpu", "split") and delivery != "gpu":
        raise ValueError(f"decode={decode!r} decodes on a GPU, but batches go to the CPU: train "
                         f"on a GPU (run.gpu = true) or use decode='cpu'")
    return resolved


def split_sizes(videos: int, gpu_share: float) -> tuple[int, int]:
    """(videos on the CPU, videos on the GPU) of a batch: the GPU takes round(videos x share)
    (halves up). Both grow with the batch, so a part never exceeds its size for the largest
    batch."""
    on_gpu = math.floor(videos * gpu_share + 0.5)
    return videos - on_gpu, on_gpu


class SplitViews:
    """Renders a batch's first videos with `cpu` and the rest with `gpu` at the same time ->
    (B, V, 3, L, s, s) on `device`.

    cpu, gpu: renderers (DaliViews) or None when their part is always empty (see
    split_sizes). The CPU part runs on a helper thread while the calling thread runs the GPU
    part; DALI's CPU operators do their work on the pipeline's own threads, so the two
    overlap. render_seconds: wall time from the split's start until both parts are done.
    """

    def __init__(self, cpu, gpu, gpu_share: float, device: torch.device) -> None:
        if not 0.0 <= gpu_share <= 1.0:
            raise ValueError(f"gpu_share must be in [0, 1], got {gpu_share}")
        self.cpu, self.gpu, self.gpu_share, self.device = cpu, gpu, gpu_share, device
        self.helper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ctrlaug-cpu-decode")
        self.render_seconds = 0.0

    def reset(self) -> None:
        for part in (self.cpu, self.gpu):
            if part is not None:
                part.reset()

    def run(self, payloads: list, frame_indices: np.ndarray, rows: np.ndarray) -> torch.Tensor:
        """payloads (B,), frame_indices (B, V, L), rows (B, V, PARAMS_WIDTH) -> (B, V, 3, L, s, s)
        in the batch's order."""
        on_cpu, on_gpu = split_sizes(len(payloads), self.gpu_share)
        start = time.perf_counter()
        cpu_part = (self.helper.submit(self.cpu.run, payloads[:on_cpu], frame_indices[:on_cpu],
                                       rows[:on_cpu]) if on_cpu else None)
        try:
            parts = [] if not on_gpu else [self.gpu.run(payloads[on_cpu:],
                                                        frame_indices[on_cpu:], rows[on_cpu:])]
        finally:  # the CPU part finishes before anything else touches its pipeline
            host = cpu_part.result() if cpu_part is not None else None
        if host is not None:
            pinned = host.pin_memory() if self.device.type == "cuda" else host
            parts.insert(0, pinned.to(self.device, non_blocking=True))
        self.render_seconds += time.perf_counter() - start
        return torch.cat(parts) if len(parts) > 1 else parts[0]
