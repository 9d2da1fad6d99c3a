"""The DALI decode graphs, one per payload format, each cutting every view from one decode.

The only module that imports DALI. Each graph reads top to bottom and applies, per view, exactly
the packed parameter row the host sampler produced (pipeline.packing):

    decode -> crop ROI + resize (bilinear, no antialias) -> colour (brightness/contrast then
           hue/saturation as one affine map of RGB, pipeline.packing.colour_affine)
           -> Gaussian blur -> flip + normalise (float, channels first)

On the GPU the colour map and the blur are DALI's operators; on the CPU they are one compiled
kernel (pipeline.colour_blur) run by DALI's numba operator on its threads.

`video` payloads: `fn.decoders.video` decodes the sorted distinct frames that any of the V views
needs, once per video, in one forward pass (no backward seeks: NVDEC pays dearly for each);
`fn.sequence_rearrange` then lays them out view after view (V * L frames, repeats allowed) and
each view is a slice of that sequence.
`frames` payloads: the image decoder decodes each distinct frame that any view of a video needs
once (its batch is B * V * L images, the rest 1x1 fillers), `fn.permute_batch` lays the decoded
frames out view after view, and the host regroups them; the JPEGs are fed as one padded array
(FrameInputs).

device "cpu" decodes with libavcodec / libjpeg-turbo (VP8, VP9, MJPEG, JPEG); "gpu" uses NVDEC /
nvJPEG through DALI's mixed backends (H.264, HEVC, VP9, AV1, JPEG) and keeps frames on the GPU.
"""

from __future__ import annotations

import functools
import io
import time
from dataclasses import dataclass

import numpy as np
import torch
from nvidia.dali import fn, pipeline_def, types
from PIL import Image

from pipeline.config import MEAN, STD
from pipeline.packing import BLUR_SIGMA, FLIP, PARAMS_WIDTH, X0, X1, Y0, Y1, colour_affine


def _augment(frames, roi_start, roi_end, colour, sigma, mirror, size: int, layout: str):
    """The per-view chain on (F)HWC uint8 frames. Its arguments are per-sample DataNodes (the
    loader's graphs: fed per image, image_arguments, or cut from a packed row per view,
    _row_arguments) or constants (fixed_frame_graph): roi_start / roi_end (y, x) relative,
    colour a (3, 4) affine map of RGB or None (no jitter), sigma the blur's, (1,), or None
    (no blur), mirror 0 or 1."""
    # DALI's ROI follows the (H, W) layout: (y, x) points.
    out = fn.resize(frames, size=[size, size], roi_start=roi_start, roi_end=roi_end,
                    roi_relative=True, antialias=False, interp_type=types.INTERP_LINEAR)
    if colour is not None:
        out = _colour_and_blur(out, colour, sigma, layout="FHWC" if "F" in layout else "HWC")
    return fn.crop_mirror_normalize(
        out, mirror=mirror, dtype=types.FLOAT, output_layout=layout,
        mean=[m * 255 for m in MEAN], std=[s * 255 for s in STD])


def _colour_and_blur(frames, colour, sigma, layout: str):
    """frames (F, H, W, 3) or (H, W, 3) uint8 through the colour map (3, 4), then the blur when
    sigma (a (1,) DataNode or a float) is not None. On the GPU: DALI's operators (one pass
    each). On the CPU: one compiled kernel for both (pipeline.colour_blur; DALI's CPU kernels
    for these two steps were three quarters of the graph's time, BENCHMARKS.md), within 1
    grey level of the reference's."""
    if frames.device == "gpu":
        out = fn.coord_transform(frames, MT=colour, dtype=types.UINT8)
        return out if sigma is None else fn.gaussian_blur(out, sigma=sigma)
    if isinstance(colour, list | tuple | np.ndarray):  # a constant map (fixed_frame_graph)
        colour = types.Constant(np.asarray(colour, dtype=np.float32).reshape(3, 4))
    if sigma is None or isinstance(sigma, int | float):  # no blur (sigma 0) or a constant one
        sigma = types.Constant(np.full(1, sigma or 0.0, dtype=np.float32))
    if layout == "HWC":  # the kernel takes frame sequences
        frames = fn.expand_dims(frames, axes=[0], new_axis_names="F")
    out = _colour_blur_operator()(frames, colour, sigma)  # (F, H, W, 3)
    if layout == "HWC":
        out = fn.squeeze(out, axes=[0])
    return fn.reshape(out, layout=layout)


@functools.cache
def _colour_blur_operator():
    """DALI's numba operator running pipeline.colour_blur, compiled once per process (a few
    seconds) and shared by every graph built after. Imported here: GPU-only graphs need no
    numba."""
    from nvidia.dali.plugin.numba.experimental import NumbaFunction

    from pipeline.colour_blur import colour_blur, same_shape

    return NumbaFunction(run_fn=colour_blur, setup_fn=same_shape,
                         in_types=[types.UINT8, types.FLOAT, types.FLOAT],
                         ins_ndim=[4, 2, 1], out_types=[types.UINT8], outs_ndim=[4])


def _row_arguments(row, colour, blur: bool) -> dict:
    """_augment's arguments from one packed row (PARAMS_WIDTH,) and its colour map (3, 4),
    None without jitter: blur only with jitter (the sampler's intensity levels cover both)."""
    sigma = row[BLUR_SIGMA:BLUR_SIGMA + 1] if colour is not None and blur else None  # (1,)
    return dict(roi_start=fn.stack(row[Y0], row[X0]), roi_end=fn.stack(row[Y1], row[X1]),
                colour=colour, sigma=sigma, mirror=fn.cast(row[FLIP], dtype=types.INT32))


@pipeline_def
def video_views_graph(views: int, clip_frames: int, size: int, jitter: bool, blur: bool,
                      decoder_device: str):
    """Per sample: encoded video, distinct sorted frames (U,), order (V*L,) into them,
    rows (V, PARAMS_WIDTH), colour (V, 3, 4) when jitter -> (V, C, L, s, s): the views
    stacked inside DALI (its threads copy the samples in parallel; a torch.stack of V
    outputs on the host thread cost more than all the other host work of a batch)."""
    encoded = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1)
    distinct = fn.external_source(name="frames", dtype=types.INT32, ndim=1)
    order = fn.external_source(name="order", dtype=types.INT32, ndim=1)
    rows = fn.external_source(name="rows", dtype=types.FLOAT, ndim=2)
    colour = fn.external_source(name="colour", dtype=types.FLOAT, ndim=3) if jitter else None
    decoded = fn.decoders.video(encoded, device=decoder_device, frames=distinct)  # (U,H,W,3)
    video = fn.sequence_rearrange(decoded, new_order=order)  # (V*L, H, W, 3)
    outputs = []
    for view in range(views):
        clip = video[view * clip_frames:(view + 1) * clip_frames]  # (L, H, W, 3)
        arguments = _row_arguments(rows[view], colour[view] if jitter else None, blur)
        outputs.append(_augment(clip, size=size, layout="CFHW", **arguments))
    return fn.stack(*outputs, axis=0)


@pipeline_def
def frame_views_graph(size: int, jitter: bool, blur: bool, decoder_device: str):
    """FrameInputs (the batch's JPEGs and which one each image is), and per image its view's
    arguments (image_arguments) -> per image (C, s, s)."""
    image = _decoded_frames(decoder_device)
    arguments = dict(roi_start=fn.external_source(name="roi_start", dtype=types.FLOAT, ndim=1),
                     roi_end=fn.external_source(name="roi_end", dtype=types.FLOAT, ndim=1),
                     mirror=fn.external_source(name="mirror", dtype=types.INT32, ndim=0),
                     colour=None, sigma=None)
    if jitter:
        arguments["colour"] = fn.external_source(name="colour", dtype=types.FLOAT, ndim=2)
        if blur:
            arguments["sigma"] = fn.external_source(name="sigma", dtype=types.FLOAT, ndim=1)
    return _augment(image, size=size, layout="CHW", **arguments)


def _decoded_frames(decoder_device: str):
    """The frames graphs' images, one per (video, view, frame) of the batch, from FrameInputs:
    the padded JPEG rows cut to their lengths (a copy of each JPEG on DALI's threads, far
    cheaper than feeding one host array per image), decoded once per distinct frame of a video
    (the rest of the decoder's batch is a 1x1 filler), then laid out by `gather`."""
    padded = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1)
    lengths = fn.external_source(name="lengths", dtype=types.INT32, ndim=0)
    gather = fn.external_source(name="gather", dtype=types.INT32, ndim=0)
    decoded = fn.decoders.image(fn.slice(padded, 0, lengths, axes=[0]), device=decoder_device,
                                output_type=types.RGB)
    return fn.permute_batch(decoded, indices=gather)


# fixed_frame_graph's colour: brightness 1.1, contrast 0.9, saturation 1.1, hue 0.05.
FIXED_ROW = np.array([0, 0, 1, 1, 1, 1.1, 0.9, 1.1, 0.05, 1.0], dtype=np.float32)


@pipeline_def
def fixed_frame_graph(size: int, jitter: bool, blur: bool, decoder_device: str):
    """The ceiling of frame_views_graph (benchmarks/pipeline_throughput.py --ceiling): the same
    operators on the same FrameInputs, every parameter a constant instead of a per-sample row
    (a 0.8 x 0.8 crop, mid-range jitter, sigma 1, mirrored) -> (C, s, s)."""
    image = _decoded_frames(decoder_device)
    colour = colour_affine(FIXED_ROW).ravel().tolist() if jitter else None
    return _augment(image, roi_start=[0.1, 0.1], roi_end=[0.9, 0.9], colour=colour,
                    sigma=1.0 if jitter and blur else None, mirror=1, size=size, layout="CHW")


def _filler_jpeg() -> bytes:
    """A 1x1 JPEG: what the image decoder's batch holds beyond a batch's distinct frames (the
    decoder's batch is fixed at B*V*L images; a filler costs next to nothing to decode)."""
    out = io.BytesIO()
    Image.new("RGB", (1, 1)).save(out, format="JPEG")
    return out.getvalue()


FILLER_JPEG = _filler_jpeg()


@dataclass(frozen=True)
class FrameInputs:
    """A frames batch's decode inputs as three arrays, fed in three calls whatever the batch
    (a list of N arrays costs DALI's feed a Python-side check per array, the largest host-side
    item of a frames batch: BENCHMARKS.md). For the N = B*V*L images of the batch in (video,
    view, frame) order: padded (N, W) uint8, JPEG j in padded[j, :lengths[j]], zeros after it
    (W the longest); lengths (N,) int32; gather (N,) int32, image i is the decode of JPEG
    gather[i]. The first `distinct` JPEGs are the distinct frames of each video, the rest
    FILLER_JPEG."""

    padded: np.ndarray
    lengths: np.ndarray
    gather: np.ndarray
    distinct: int

    @classmethod
    def pack(cls, jpegs: list[bytes], gather: np.ndarray) -> FrameInputs:
        """jpegs (U,) the distinct JPEGs, gather (N,) indices into them, N >= U."""
        distinct, total = len(jpegs), len(gather)
        if distinct > total:
            raise ValueError(f"{distinct} distinct JPEGs for {total} images")
        jpegs = jpegs + [FILLER_JPEG] * (total - distinct)
        lengths = np.fromiter(map(len, jpegs), dtype=np.int32, count=total)
        padded = np.zeros((total, int(lengths.max(initial=0))), dtype=np.uint8)
        for row, jpeg in zip(padded, jpegs, strict=True):
            row[:len(jpeg)] = np.frombuffer(jpeg, dtype=np.uint8)
        return cls(padded, lengths, gather.astype(np.int32, copy=False), distinct)

    def jpeg(self, j: int) -> np.ndarray:
        """JPEG j's bytes, (lengths[j],) uint8 (a view, no copy)."""
        return self.padded[j, :self.lengths[j]]

    def feed(self, pipe) -> None:
        pipe.feed_input("encoded", self.padded)
        pipe.feed_input("lengths", self.lengths)
        pipe.feed_input("gather", self.gather)


def _distinct_frames(frame_indices: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """frame_indices (B, V, L) -> per video (its sorted distinct frames (U,), where each of its
    V*L needed frames is among them (V*L,)): both graphs decode each distinct frame once."""
    return [np.unique(f.reshape(-1), return_inverse=True) for f in frame_indices]


def frame_inputs(payloads: list, frame_indices: np.ndarray) -> FrameInputs:
    """frame_views_graph's JPEGs for a batch: payloads (B,) lists of JPEGs, frame_indices
    (B, V, L) -> the JPEGs of each video's distinct needed frames and where each of the B*V*L
    images comes from."""
    b, v, length = frame_indices.shape
    jpegs: list[bytes] = []
    gather = np.empty((b, v * length), dtype=np.int32)
    for i, (frames, inverse) in enumerate(_distinct_frames(frame_indices)):
        gather[i] = len(jpegs) + inverse
        jpegs.extend(payloads[i][frame] for frame in frames.tolist())
    return FrameInputs.pack(jpegs, gather.reshape(-1))


def image_arguments(rows: np.ndarray, length: int, jitter: bool, blur: bool
                    ) -> dict[str, np.ndarray]:
    """frame_views_graph's per-image arguments, each one dense array fed by name, from the rows
    (M, PARAMS_WIDTH) of M views of `length` frames each (N = M * length images, view after
    view): roi_start / roi_end (N, 2) (y, x), mirror (N,) int32; with jitter colour (N, 3, 4),
    and with blur too sigma (N, 1). Fed so, rather than cut out of a fed row inside the graph
    (as the video graph does per view), they cost the graph no per-image slicing operators."""
    per_view = {"roi_start": rows[:, [Y0, X0]], "roi_end": rows[:, [Y1, X1]],
                "mirror": rows[:, FLIP] > 0.5}
    if jitter:
        per_view["colour"] = colour_affine(rows)
        if blur:
            per_view["sigma"] = rows[:, BLUR_SIGMA:BLUR_SIGMA + 1]
    return {name: np.repeat(value.astype(np.int32 if name == "mirror" else np.float32,
                                         copy=False), length, axis=0)
            for name, value in per_view.items()}


def _to_torch(tensor_list, device: torch.device) -> torch.Tensor:
    if device.type == "cpu":
        return torch.from_numpy(tensor_list.as_array())
    from nvidia.dali.plugin.pytorch import feed_ndarray

    dense = tensor_list.as_tensor()
    out = torch.empty(dense.shape(), dtype=torch.float32, device=device)
    feed_ndarray(dense, out, cuda_stream=torch.cuda.current_stream(device))
    return out


class DaliViews:
    """Renders the views of a batch with DALI: run(...) -> (B, V, 3, L, size, size) float32.

    payload_format: "video" or "frames"; device: "cpu" or "gpu" (decode and augment there).
    The graph is built once for up to max_batch videos of `views` views; `reset` rebuilds it
    (after a decode error, DALI's pipeline is not reused).
    """

    def __init__(self, payload_format: str, views: int, clip_frames: int, size: int,
                 jitter: bool, blur: bool, device: str, max_batch: int, num_threads: int = 2,
                 device_id: int = 0) -> None:
        if payload_format not in ("video", "frames"):
            raise ValueError(f"payload_format must be video or frames, got {payload_format!r}")
        if device not in ("cpu", "gpu"):
            raise ValueError(f"device must be cpu or gpu, got {device!r}")
        self.payload_format, self.views, self.clip_frames = payload_format, views, clip_frames
        self.size, self.jitter, self.blur, self.device = size, jitter, blur, device
        self.max_batch, self.num_threads, self.device_id = max_batch, num_threads, device_id
        self.torch_device = torch.device("cpu" if device == "cpu" else f"cuda:{device_id}")
        self.render_seconds = 0.0  # time inside the pipeline's run (LoaderStats)
        self.reset()

    def reset(self) -> None:
        decoder = "cpu" if self.device == "cpu" else "mixed"
        common = dict(num_threads=self.num_threads, prefetch_queue_depth=1,
                      device_id=None if self.device == "cpu" else self.device_id,
                      exec_dynamic=True)
        if self.payload_format == "video":
            self.pipe = video_views_graph(self.views, self.clip_frames, self.size, self.jitter,
                                          self.blur, decoder, batch_size=self.max_batch,
                                          **common)
        else:
            images = self.max_batch * self.views * self.clip_frames
            self.pipe = frame_views_graph(self.size, self.jitter, self.blur, decoder,
                                          batch_size=images, **common)
        self.pipe.build()

    def _run_pipeline(self) -> list[torch.Tensor]:
        """Run the graph on the fed inputs -> its outputs as tensors on torch_device. Timed up
        to the tensors, not just run(): DALI returns from run() before its last operators
        finish, and the first read of an output waits for them."""
        start = time.perf_counter()
        try:
            return [_to_torch(out, self.torch_device) for out in self.pipe.run()]
        finally:
            self.render_seconds += time.perf_counter() - start

    def run(self, payloads: list, frame_indices: np.ndarray, rows: np.ndarray) -> torch.Tensor:
        """payloads (B,), frame_indices (B, V, L), rows (B, V, PARAMS_WIDTH) -> views
        (B, V, 3, L, s, s)."""
        b, v, length = frame_indices.shape
        assert rows.shape == (b, v, PARAMS_WIDTH) and v == self.views
        if self.payload_format == "video":
            self.pipe.feed_input("encoded", [np.frombuffer(p, dtype=np.uint8) for p in payloads])
            distinct, order = zip(*_distinct_frames(frame_indices), strict=True)
            self.pipe.feed_input("frames", [d.astype(np.int32) for d in distinct])
            self.pipe.feed_input("order", [o.astype(np.int32) for o in order])
            self.pipe.feed_input("rows", [np.ascontiguousarray(r) for r in rows])
            if self.jitter:
                self.pipe.feed_input("colour", list(colour_affine(rows)))  # (V, 3, 4) each
            (views,) = self._run_pipeline()  # (B, V, 3, L, s, s)
            return views
        frame_inputs(payloads, frame_indices).feed(self.pipe)
        arguments = image_arguments(rows.reshape(b * v, PARAMS_WIDTH), length, self.jitter,
                                    self.blur)
        for name, value in arguments.items():
            self.pipe.feed_input(name, value)
        (out,) = self._run_pipeline()  # (B*V*L, 3, s, s)
        return out.reshape(b, v, length, 3, self.size, self.size).permute(0, 1, 3, 2, 4, 5)
