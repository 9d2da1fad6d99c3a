"""The augmentation preview image and its command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from orchestration.preview import COLOURS, render_preview
from pipeline import build_pretrain_loader

CTRLAUG = str(Path(sys.executable).parent / "ctrlaug")


def test_preview_draws_frames_boxes_time_spans_and_heat_maps(shards):
    batch = next(iter(build_pretrain_loader(shards["video"], batch_size=2, levels_per_batch=2)))
    image = np.asarray(render_preview(batch, ((2, 4, 4), (8, 4, 4)), index=1))
    assert image.shape[0] > 300 and image.shape[1] > 8 * 112
    for colour in COLOURS[:4]:  # every local clip has its box, span and label drawn
        assert (image == np.array(colour, dtype=np.uint8)).all(-1).sum() > 50
    heat = image[-130:]
    assert heat.max() > 200  # S_k cells with large overlaps are bright


def test_preview_command_writes_a_png(shards, tmp_path):
    out = tmp_path / "preview.png"
    result = subprocess.run([CTRLAUG, "preview", str(shards["frames"]), "--out", str(out)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert Image.open(out).format == "PNG"
    missing = subprocess.run([CTRLAUG, "preview", str(tmp_path), "--out", str(out)],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "no _manifest.json" in missing.stderr
