"""The augmentation preview: what one video's views look like and how they correspond.

Composes the pipeline (a real batch) and the model (S_k from the emitted parameters) into one
image: a row of the global view's frames with every local clip's box drawn in its colour, a
timeline of the video with each clip's time span and the global frames' positions, and the
correspondence S_k of every clip as a heat map (rows: the clip's cells, columns: the global
cells, for the grids the encoder really produces: 2x4x4 and 8x4x4 at 16x112x112).
`ctrlaug preview` writes it; pretraining logs the same image to MLflow.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from model.correspondence import Grid, ViewGeometry, clip_correspondence
from orchestration.experiment import ExperimentConfig
from pipeline.config import MEAN, STD
from pipeline.loader import PretrainBatch

COLOURS = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
           (145, 30, 180), (70, 240, 240), (240, 50, 230)]


def frames_to_uint8(frames: torch.Tensor) -> np.ndarray:
    """(3, L, H, W) normalised -> (L, H, W, 3) uint8."""
    x = frames.detach().float().cpu().numpy()
    x = x * np.array(STD).reshape(3, 1, 1, 1) + np.array(MEAN).reshape(3, 1, 1, 1)
    return np.clip(x * 255, 0, 255).astype(np.uint8).transpose(1, 2, 3, 0)


def _box_in_global_view(local_box: np.ndarray, global_box: np.ndarray, global_flip: bool):
    """A local box (source-normalised) in the global view's pixel-normalised coordinates."""
    gx0, gy0, gx1, gy1 = global_box
    x0 = (local_box[0] - gx0) / (gx1 - gx0)
    x1 = (local_box[2] - gx0) / (gx1 - gx0)
    y0 = (local_box[1] - gy0) / (gy1 - gy0)
    y1 = (local_box[3] - gy0) / (gy1 - gy0)
    if global_flip:
        x0, x1 = 1 - x1, 1 - x0
    return x0, y0, x1, y1


def _heat_map(s: np.ndarray, scale: int) -> Image.Image:
    """S (Nc, Nv) -> an image, black for 0 to yellow for the largest entry."""
    v = np.clip(s / max(float(s.max()), 1e-9), 0, 1)
    rgb = np.stack([np.sqrt(v), v, v**3 * 0.3], -1)
    image = Image.fromarray((rgb * 255).astype(np.uint8))
    return image.resize((s.shape[1] * scale // 2, s.shape[0] * scale), Image.NEAREST)


def render_preview(batch: PretrainBatch, grids: tuple[Grid, Grid], index: int = 0,
                   frames_shown: int = 8) -> Image.Image:
    """The preview image of video `index` of a pretraining batch.

    grids: (local grid, global grid) of the encoder for the batch's views
    (PretrainNetwork.grids), so the heat maps are the S_k that training uses.
    """
    g, loc = batch.global_params, batch.local_params
    global_box = g.box[index].cpu().numpy()
    global_flip = bool(g.flip[index])
    frames = frames_to_uint8(batch.global_frames[index])  # (L, S, S, 3)
    length, size = frames.shape[0], frames.shape[1]
    shown = np.linspace(0, length - 1, frames_shown).round().astype(int)
    num_clips = loc.box.shape[1]
    cells_local, cells_global = (int(np.prod(grid)) for grid in grids)
    heat_scale = max(2, 128 // cells_local)
    heat_width = cells_global * heat_scale // 2 + 10
    width = max(frames_shown * (size + 4), num_clips * heat_width) + 20
    height = 20 + size + 60 + 20 + cells_local * heat_scale + 30
    canvas = Image.new("RGB", (width, height), (24, 24, 24))
    draw = ImageDraw.Draw(canvas)
    draw.text((10, 4), f"{batch.video_id[index]}: global view ({frames_shown} of its {length} "
                       f"frames) with the local clips' boxes", fill=(230, 230, 230))
    for column, frame_index in enumerate(shown):
        x = 10 + column * (size + 4)
        canvas.paste(Image.fromarray(frames[frame_index]), (x, 20))
        for k in range(num_clips):
            x0, y0, x1, y1 = _box_in_global_view(loc.box[index, k].cpu().numpy(), global_box,
                                                 global_flip)
            draw.rectangle([x + x0 * size, 20 + y0 * size, x + x1 * size - 1,
                            20 + y1 * size - 1], outline=COLOURS[k % len(COLOURS)])
    # Timeline: the video's frames [0, T), each clip's span, and the global view's frames.
    total = float(g.t1[index])
    top, left, span = 20 + size + 12, 10, width - 20
    draw.text((left, top - 10), f"time: 0 .. {int(total)} frames", fill=(200, 200, 200))
    draw.rectangle([left, top + 4, left + span, top + 8], fill=(90, 90, 90))
    for frame_index in g.frame_indices[index].tolist():
        tick = left + span * (frame_index + 0.5) / total
        draw.line([tick, top + 2, tick, top + 10], fill=(230, 230, 230))
    for k in range(num_clips):
        t0, t1 = float(loc.t0[index, k]), float(loc.t1[index, k])
        row = top + 16 + 8 * k
        draw.rectangle([left + span * t0 / total, row, left + span * t1 / total, row + 5],
                       fill=COLOURS[k % len(COLOURS)])
    # Correspondence heat maps from the emitted parameters.
    geometry_local = ViewGeometry(loc.t0[index:index + 1], loc.t1[index:index + 1],
                                  loc.box[index:index + 1], loc.flip[index:index + 1])
    geometry_global = ViewGeometry(g.t0[index:index + 1], g.t1[index:index + 1],
                                   g.box[index:index + 1], g.flip[index:index + 1])
    s = clip_correspondence(geometry_local, geometry_global, *grids)[0]
    heat_top = top + 16 + 8 * num_clips + 14
    for k in range(num_clips):
        x = 10 + k * heat_width
        draw.text((x, heat_top - 12), f"S_{k + 1}: {cells_local} clip x {cells_global} global "
                                      f"cells, max {float(s[k].max()):.2f}",
                  fill=COLOURS[k % len(COLOURS)])
        canvas.paste(_heat_map(s[k].cpu().numpy(), heat_scale), (x, heat_top))
    return canvas


def write_preview(shards: Path, out: Path, index: int = 0, seed: int = 0,
                  backend: str = "dali", config: ExperimentConfig | None = None) -> Path:
    """Draw one batch of `shards` and write the preview of video `index` to `out` (PNG).

    config: the experiment whose views and encoder to show (defaults when None).
    """
    from model.encoder import R3D18
    from pipeline import build_pretrain_loader

    config = config or ExperimentConfig()
    augment = dataclasses.replace(config.augment, levels_per_batch=2)
    loader = build_pretrain_loader(shards, batch_size=max(2, index + 1), seed=seed,
                                   backend=backend, config=augment, prefetch=1)
    batch = next(iter(loader))
    encoder = R3D18(1, config.model.global_unstrided_stages)  # grids do not depend on width
    frames = (augment.clip_frames, augment.size, augment.size)
    grids = (encoder.feature_grid(frames, "clip"), encoder.feature_grid(frames, "global"))
    out.parent.mkdir(parents=True, exist_ok=True)
    render_preview(batch, grids, min(index, len(batch.video_id) - 1)).save(out)
    return out
