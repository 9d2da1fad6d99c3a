"""Loaders for training workers: shard rows -> sampled view parameters -> decoded views -> tensors.

No Ray and no collectives: a worker passes its (rank, world_size). Three loaders share one
machinery (`VideoLoader`) and differ only in how views are sampled and batches assembled:

- `build_pretrain_loader`: the global view and K local clips per video, with intensity levels
  (DESIGN section 2) -> PretrainBatch.
- `build_eval_loader`: N uniformly spaced clips per video (default 10), centre crop, no jitter,
  every video once, in dataset order -> ClipBatch.
- `build_supervised_loader`: one random clip, random crop and flip per video -> ClipBatch.

Decoding runs on DALI (`backend="dali"`) or on the PyAV + numpy reference (`backend="reference"`,
the parity oracle and the baseline loader). Where DALI decodes is the `decode` option ("auto":
the delivery device's own; "cpu", "gpu", or "split" between both: pipeline.placement),
independent of the device the batches are delivered to. A background thread reads
payloads and renders the next `prefetch` batches while the consumer trains. A payload that fails
to decode never ends the run: its batch is re-rendered without it, and the video is counted and
listed in `loader.stats.skipped`; a training batch left with too few videos (none, or one for
the objective's pairs) is topped up with the videos that follow it in the epoch, so every rank
takes every step. Payloads are checked on the host before DALI sees them
(`validate="header"` by default, `"full"` to decode every frame once): see `payload_problem`.
"""

from __future__ import annotations

import contextlib
import io
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

from model.objective import MIN_VIDEOS_PER_BATCH
from pipeline.config import AugmentConfig
from pipeline.packing import pack_view_params
from pipeline.placement import DEFAULT_GPU_SHARE, SplitViews, resolve_decode, split_sizes
from pipeline.reference import render_sample
from pipeline.sampling import (
    ViewParams,
    sample_eval_views,
    sample_pretrain_views,
    sample_supervised_views,
)
from pipeline.shard_reader import (
    DEFAULT_SHUFFLE_BYTES,
    PayloadReader,
    ShardDataset,
    epoch_order,
    rank_batches,
)


@dataclass
class PretrainBatch:
    """global_frames (B, 3, L, S, S), local_frames (B, K, 3, L, S, S) float, normalised;
    global_params / local_params: ViewParams of torch tensors with leading dims (B,) / (B, K);
    video_id: B strings; label (B,) long; sample_index (B,) long (row in the dataset)."""

    global_frames: torch.Tensor
    local_frames: torch.Tensor
    global_params: ViewParams
    local_params: ViewParams
    video_id: list[str]
    label: torch.Tensor
    sample_index: torch.Tensor


@dataclass
class ClipBatch:
    """frames (B, V, 3, L, S, S); params ViewParams (B, V); video_id; label (B,); sample_index."""

    frames: torch.Tensor
    params: ViewParams
    video_id: list[str]
    label: torch.Tensor
    sample_index: torch.Tensor


@dataclass
class LoaderStats:
    """Counters for the current epoch: videos delivered, skipped (id, reason), time the
    consumer waited; and the producer's time split into `render_seconds` (decoding and
    augmenting proper: DALI's pipeline run, or the reference renderer's threads) and
    `host_seconds` (the rest: sampling views, reading rows, checking payloads, packing
    parameters, building the backend's inputs, copying its outputs, assembling the batch), so
    host_seconds / videos is what the loader's one producer thread spends on a video."""

    videos: int = 0
    batches: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    wait_seconds: float = 0.0
    render_seconds: float = 0.0
    host_seconds: float = 0.0


class ReferenceViews:
    """The PyAV + numpy renderer with DaliViews' interface (run / reset), videos in parallel
    over `threads` threads (PyAV and numpy release the GIL for most of the work)."""

    def __init__(self, size: int, jitter: bool, threads: int = 1) -> None:
        self.size, self.jitter = size, jitter
        self.pool = ThreadPoolExecutor(max_workers=max(1, threads))
        self.render_seconds = 0.0  # time in the renderer's threads (LoaderStats)

    def reset(self) -> None:
        pass

    def run(self, payloads: list, frame_indices: np.ndarray, rows: np.ndarray, codecs: list[str]
            ) -> torch.Tensor:
        def render(i: int) -> np.ndarray:
            return render_sample(payloads[i], codecs[i], frame_indices[i], rows[i], self.size,
                                 self.jitter)

        start = time.perf_counter()
        rendered = list(self.pool.map(render, range(len(payloads))))
        self.render_seconds += time.perf_counter() - start
        return torch.from_numpy(np.stack(rendered))


SampleViews = Callable[[ShardDataset, np.ndarray, int, int], ViewParams]

# What DALI's video decoder reads on each device (DALI 2.4; DESIGN section 4); a split batch
# may put any video on either.
DALI_VIDEO_CODECS = {"cpu": {"vp8", "vp9", "mjpeg"}, "gpu": {"h264", "hevc", "vp9", "av1"}}
DALI_VIDEO_CODECS["split"] = DALI_VIDEO_CODECS["cpu"] & DALI_VIDEO_CODECS["gpu"]


def payload_problem(payload: bytes | list[bytes], device: str, full: bool = False
                    ) -> str | None:
    """Why DALI must not be given this payload, or None. device: where DALI decodes it ("cpu",
    "gpu", or "split": either, so only what both read).

    DALI 2.4's decoders can crash the whole process on corrupt input instead of raising (seen
    with garbage WebM and with JPEGs whose entropy data is noise), so payloads are checked on
    the host before they reach DALI, once per row: "header" (default) opens the container with
    PyAV / checks the JPEG structure with Pillow, which catches garbage and truncated files;
    `full` also decodes every frame (as expensive as the reference loader, once per row).
    """
    try:
        if isinstance(payload, list):
            if not payload:
                return "no frames"
            for jpeg in payload:
                image = Image.open(io.BytesIO(jpeg))
                image.load() if full else image.verify()
            return None
        with av.open(io.BytesIO(payload)) as container:
            if not container.streams.video:
                return "no video stream"
            codec = container.streams.video[0].codec_context.name
            if full:
                for _ in container.decode(container.streams.video[0]):
                    pass
    except (av.FFmpegError, OSError, ValueError, SyntaxError) as error:
        return f"payload does not decode: {error}"
    codec = {"libvpx-vp9": "vp9", "libvpx": "vp8", "libdav1d": "av1"}.get(codec, codec)
    if codec not in DALI_VIDEO_CODECS[device]:
        return (f"DALI on {device} does not decode {codec} (it reads "
                f"{', '.join(sorted(DALI_VIDEO_CODECS[device]))})")
    return None


class VideoLoader:
    """Iterates this rank's batches of an epoch; see the module docstring.

    sample_views(dataset, rows, batch_index, epoch) -> ViewParams (B, V) for the rows;
    assemble(frames (B, V, 3, L, S, S), views, dataset, rows) -> the batch object.
    """

    def __init__(self, dataset: ShardDataset, sample_views: SampleViews, assemble: Callable,
                 num_views: int, batch_size: int, config: AugmentConfig, *, device: str = "cpu",
                 rank: int = 0, world_size: int = 1, seed: int = 0, epoch: int = 0,
                 shuffle: bool = True, backend: str = "dali", jitter: bool = True,
                 prefetch: int = 2, num_threads: int = 2, device_id: int = 0,
                 validate: str = "header", min_batch: int = 1,
                 shuffle_memory_mb: int = DEFAULT_SHUFFLE_BYTES // 2**20,
                 decode: str = "auto", gpu_share: float = DEFAULT_GPU_SHARE) -> None:
        if backend not in ("dali", "reference"):
            raise ValueError(f"backend must be dali or reference, got {backend!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if validate not in ("header", "full"):
            raise ValueError(f"validate must be header or full, got {validate!r}")
        self.validate, self.min_batch = validate, min_batch
        self.dataset, self.sample_views, self.assemble = dataset, sample_views, assemble
        self.batch_size, self.config, self.rank, self.world_size = batch_size, config, rank, \
            world_size
        self.seed, self.epoch, self.shuffle, self.prefetch = seed, epoch, shuffle, prefetch
        self.device = torch.device(device if device != "gpu" else f"cuda:{device_id}")
        self.decode = resolve_decode(decode, "cpu" if self.device.type == "cpu" else "gpu",
                                     backend)
        self.stats = LoaderStats()
        self.shuffle_bytes = shuffle_memory_mb * 2**20
        # In dataset order a row group is never needed again once passed: cache just one.
        self.reader = PayloadReader(dataset, self.shuffle_bytes if shuffle else 0)
        self.checked: dict[int, str | None] = {}  # row -> payload_problem, checked once
        # Batch sizes depend only on the counts, not on the epoch's order.
        largest = max(len(b) for b in rank_batches(np.arange(len(dataset)), rank, world_size,
                                                   batch_size, min_batch))
        if backend == "dali":
            from pipeline.dali_graph import DaliViews

            def dali_views(place: str, max_batch: int) -> DaliViews:
                return DaliViews(dataset.payload_format, num_views, config.clip_frames,
                                 config.size, jitter and config.jitter, config.blur, place,
                                 max_batch=max_batch, num_threads=num_threads,
                                 device_id=device_id)

            if self.decode == "split":
                on_cpu, on_gpu = split_sizes(largest, gpu_share)
                self.views = SplitViews(dali_views("cpu", on_cpu) if on_cpu else None,
                                        dali_views("gpu", on_gpu) if on_gpu else None,
                                        gpu_share, self.device)
            else:
                self.views = dali_views(self.decode, largest)
        else:
            self.views = ReferenceViews(config.size, jitter and config.jitter, num_threads)
        self.backend = backend

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[np.ndarray]:
        """This rank's row ids per batch for the current epoch."""
        order = epoch_order(self.dataset, self.seed, self.epoch, self.shuffle,
                            self.shuffle_bytes)
        return rank_batches(order, self.rank, self.world_size, self.batch_size, self.min_batch)

    def __len__(self) -> int:
        return len(self.batches())

    def _render(self, rows: np.ndarray, views: ViewParams) -> tuple[np.ndarray, torch.Tensor]:
        """Decode and augment; on a decode failure, find the bad videos and render the rest."""
        payloads = self.reader.read(rows)
        packed = pack_view_params(views)  # (B, V, PARAMS_WIDTH)
        if self.backend == "dali":
            for i, row in enumerate(rows):
                if int(row) not in self.checked:
                    self.checked[int(row)] = payload_problem(payloads[i], self.decode,
                                                             full=self.validate == "full")
            unusable = [i for i, row in enumerate(rows) if self.checked[int(row)]]
            for i in unusable:
                self.stats.skipped.append((self.dataset.video_id[rows[i]],
                                           self.checked[int(rows[i])]))
            if unusable:
                usable = np.array([i for i in range(len(rows)) if i not in unusable],
                                  dtype=np.int64)
                if len(usable) == 0:
                    return usable, None
                keep, frames = self._render(rows[usable], views.map(lambda f: f[usable]))
                return usable[keep], frames

        def run(keep: np.ndarray) -> torch.Tensor:
            picked = [payloads[i] for i in keep]
            if self.backend == "reference":
                codecs = [self.dataset.codec[rows[i]] for i in keep]
                return self.views.run(picked, views.frame_indices[keep], packed[keep], codecs)
            return self.views.run(picked, views.frame_indices[keep], packed[keep])

        everything = np.arange(len(rows))
        try:
            return everything, run(everything)
        except Exception:  # noqa: BLE001 - any decode failure is isolated below
            self.views.reset()
        good = []
        for i in everything:
            try:
                run(np.array([i]))
                good.append(i)
            except Exception as error:  # noqa: BLE001
                reason = str(error).strip().splitlines()[0][:300] if str(error) else repr(error)
                self.stats.skipped.append((self.dataset.video_id[rows[i]], reason))
                self.views.reset()
        keep = np.array(good, dtype=np.int64)
        return keep, (run(keep) if len(keep) else None)

    def _top_up(self, usable: np.ndarray, tried: np.ndarray, batch_index: int
                ) -> tuple[np.ndarray, ViewParams, np.ndarray, torch.Tensor]:
        """A training batch left with fewer than max(1, min_batch) decodable videos, topped up
        with the videos that follow it in the epoch's order (this rank's next ones first, then
        the next ranks', cyclically): every rank still delivers every batch, so the ranks' step
        counts stay equal (no rank waits in a collective for a step another never takes), and
        the objective gets its pairs. The substitutes appear twice in the epoch.
        -> (rows, views, keep, frames) as from _render."""
        need = max(1, self.min_batch)
        order = epoch_order(self.dataset, self.seed, self.epoch, self.shuffle,
                            self.shuffle_bytes)
        after = int(np.flatnonzero(np.isin(order, tried)).max()) + 1
        in_batch = set(tried.tolist())
        candidates = [int(row) for row in np.roll(order, -after)
                      if int(row) not in in_batch and not self.checked.get(int(row))]
        rows = usable
        while True:
            missing = need - len(rows)
            if missing > len(candidates):
                raise RuntimeError(
                    f"rank {self.rank}: fewer than {need} of the {len(order)} videos "
                    f"decode ({len(self.stats.skipped)} skipped this epoch, first: "
                    f"{self.stats.skipped[:3]}); check the shards with `ctrlaug verify "
                    f"SHARDS --sample N` (N rows decoded)")
            rows = np.concatenate([rows, np.array(candidates[:missing], dtype=rows.dtype)])
            del candidates[:missing]
            views = self.sample_views(self.dataset, rows, batch_index, self.epoch)
            keep, frames = self._render(rows, views)
            if len(keep) >= need:
                return rows, views, keep, frames
            rows = rows[keep]

    def _produce(self, out: queue.Queue, stop: threading.Event, start_batch: int) -> None:
        try:
            for batch_index, rows in enumerate(self.batches()):
                if stop.is_set():
                    return
                if batch_index < start_batch:  # resuming mid-epoch: nothing is read
                    continue
                start, rendered = time.perf_counter(), self.views.render_seconds
                views = self.sample_views(self.dataset, rows, batch_index, self.epoch)
                keep, frames = self._render(rows, views)
                if self.shuffle and len(keep) < max(1, self.min_batch):
                    rows, views, keep, frames = self._top_up(rows[keep], rows, batch_index)
                if frames is not None:
                    views = views.map(lambda f, keep=keep: f[keep])
                    batch = self.assemble(frames.to(self.device), views, self.dataset,
                                          rows[keep])
                render = self.views.render_seconds - rendered
                self.stats.render_seconds += render
                self.stats.host_seconds += time.perf_counter() - start - render
                if frames is not None:
                    out.put(batch)
        except BaseException as error:  # hand the failure to the consumer
            out.put(error)
        finally:
            out.put(None)

    def __iter__(self) -> Iterator:
        return self.iterate()

    def iterate(self, start_batch: int = 0) -> Iterator:
        """This epoch's batches from batch number `start_batch` on (earlier ones are skipped
        without being read: resuming mid-epoch gives the remaining batches unchanged)."""
        self.stats = LoaderStats()
        out: queue.Queue = queue.Queue(maxsize=max(1, self.prefetch))
        stop = threading.Event()
        worker = threading.Thread(target=self._produce, args=(out, stop, start_batch),
                                  daemon=True, name="ctrlaug-loader")
        worker.start()
        try:
            while True:
                start = time.perf_counter()
                item = out.get()
                self.stats.wait_seconds += time.perf_counter() - start
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                self.stats.batches += 1
                self.stats.videos += len(item.video_id)
                yield item
        finally:
            stop.set()
            while worker.is_alive():  # unblock a producer waiting on a full queue
                with contextlib.suppress(queue.Empty):
                    out.get(timeout=0.1)
            worker.join()


def _torch_views(views: ViewParams, device: torch.device) -> ViewParams:
    return views.map(lambda f: torch.from_numpy(np.ascontiguousarray(f)).to(device))


def _labels(dataset: ShardDataset, rows: np.ndarray, device: torch.device):
    return ([dataset.video_id[r] for r in rows],
            torch.from_numpy(dataset.label[rows]).to(device),
            torch.from_numpy(rows.astype(np.int64)).to(device))


def _augment_config(options: dict) -> AugmentConfig:
    config = options.pop("config", None) or AugmentConfig()
    fields = {k: options.pop(k) for k in list(options) if k in AugmentConfig.__dataclass_fields__}
    return AugmentConfig(**{**config.__dict__, **fields}) if fields else config


def build_pretrain_loader(shards: Path | str, batch_size: int, device: str = "cpu",
                          rank: int = 0, world_size: int = 1, seed: int = 0, epoch: int = 0,
                          **options) -> VideoLoader:
    """Pretraining batches (PretrainBatch) of this rank; options: config (AugmentConfig) or
    any of its fields, split, backend ("dali" | "reference"), prefetch, num_threads, device_id,
    shuffle_memory_mb (the epoch shuffle's window, see pipeline.shard_reader), decode ("auto",
    "cpu", "gpu", "split") and gpu_share (where DALI decodes: pipeline.placement).
    """
    config = _augment_config(options)
    dataset = ShardDataset.open(shards, options.pop("split", None))

    def sample(data: ShardDataset, rows: np.ndarray, batch_index: int, epoch: int) -> ViewParams:
        global_views, local_views = sample_pretrain_views(
            data.num_frames[rows], data.width[rows], data.height[rows], rows, seed=seed,
            epoch=epoch, batch_index=batch_index, config=config)
        # (B, 1 + K): the global view first, then the local clips
        return ViewParams(*(np.concatenate([global_field[:, None], local_field], axis=1)
                            for global_field, local_field in zip(global_views, local_views,
                                                                 strict=True)))

    def assemble(frames, views, data, rows) -> PretrainBatch:
        device_views = _torch_views(views, frames.device)
        video_id, label, index = _labels(data, rows, frames.device)
        return PretrainBatch(frames[:, 0], frames[:, 1:], device_views.map(lambda f: f[:, 0]),
                             device_views.map(lambda f: f[:, 1:]), video_id, label, index)

    return VideoLoader(dataset, sample, assemble, config.views_per_video, batch_size, config,
                       device=device, rank=rank, world_size=world_size, seed=seed, epoch=epoch,
                       min_batch=MIN_VIDEOS_PER_BATCH, **options)


def _clip_assemble(frames, views, data, rows) -> ClipBatch:
    video_id, label, index = _labels(data, rows, frames.device)
    return ClipBatch(frames, _torch_views(views, frames.device), video_id, label, index)


def build_eval_loader(shards: Path | str, batch_size: int, device: str = "cpu", rank: int = 0,
                      world_size: int = 1, clips: int = 10, **options) -> VideoLoader:
    """Evaluation batches (ClipBatch, V = clips): every video once, uniform clips, centre crop."""
    config = _augment_config(options)
    dataset = ShardDataset.open(shards, options.pop("split", None))

    def sample(data: ShardDataset, rows: np.ndarray, batch_index: int, epoch: int) -> ViewParams:
        return sample_eval_views(data.num_frames[rows], data.width[rows], data.height[rows],
                                 config, clips)

    return VideoLoader(dataset, sample, _clip_assemble, clips, batch_size, config, device=device,
                       rank=rank, world_size=world_size, shuffle=False, jitter=False, **options)


def build_supervised_loader(shards: Path | str, batch_size: int, device: str = "cpu",
                            rank: int = 0, world_size: int = 1, seed: int = 0, epoch: int = 0,
                            **options) -> VideoLoader:
    """Supervised training batches (ClipBatch, V = 1): random clip, random crop, random flip."""
    config = _augment_config(options)
    dataset = ShardDataset.open(shards, options.pop("split", None))

    def sample(data: ShardDataset, rows: np.ndarray, batch_index: int, epoch: int) -> ViewParams:
        return sample_supervised_views(data.num_frames[rows], data.width[rows],
                                       data.height[rows], rows, seed=seed, epoch=epoch,
                                       config=config)

    return VideoLoader(dataset, sample, _clip_assemble, 1, batch_size, config, device=device,
                       rank=rank, world_size=world_size, seed=seed, epoch=epoch, jitter=False,
                       **options)
