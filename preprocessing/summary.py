"""`ctrlaug inspect`: a readable summary of a shard folder (reads metadata, never payloads).

No torch, DALI or Ray.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from preprocessing import shards as layout
from preprocessing.storage import Folder


def _size(count: float) -> str:
    """Bytes in the largest binary unit that keeps the number >= 1."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count:.0f} B"


def summarize_shards(shards: str | Path | Folder, top_classes: int = 20) -> str:
    """The summary as text: counts per split and class, frames, bytes, codecs, rejections."""
    shards = Folder(shards)
    manifest = layout.read_manifest(shards)
    metadata = layout.read_metadata(shards, manifest)
    classes = manifest["classes"]
    total_bytes = sum(shard["bytes"] for shard in manifest["shards"])
    frames = np.array(metadata.column("num_frames").to_pylist() or [0])
    config = manifest["config"]
    lines = [
        f"{shards}: {manifest['dataset']}, {manifest['num_videos']} videos in "
        f"{len(manifest['shards'])} shards ({_size(total_bytes)}), {manifest['num_rejected']} "
        f"rejected of {manifest['num_inputs']} inputs",
        f"payload: {manifest['payload_format']} ({manifest['codec']}), {config['fps']} fps, "
        f"short side {config['short_side']}",
        f"frames: {int(frames.sum())} in all; per video mean {frames.mean():.1f}, min "
        f"{frames.min()}, max {frames.max()}; bytes per video "
        f"{_size(total_bytes / max(1, manifest['num_videos']))}",
        "splits: " + ", ".join(f"{k} {v}" for k, v in manifest["splits"].items()),
    ]
    sizes = Counter(zip(metadata.column("width").to_pylist(),
                        metadata.column("height").to_pylist(), strict=True))
    lines.append("sizes: " + ", ".join(f"{w}x{h} ({n})" for (w, h), n in sizes.most_common(5)))
    sources = Counter(metadata.column("source_codec").to_pylist())
    lines.append("source codecs: " + ", ".join(f"{c} {n}" for c, n in sources.most_common()))
    per_class = Counter(metadata.column("label").to_pylist())
    lines.append(f"classes: {len(classes)}; videos per class:")
    for label, count in sorted(per_class.items())[:top_classes]:
        name = classes[label] if 0 <= label < len(classes) else "(unlabelled)"
        lines.append(f"  {label:4d} {name}: {count}")
    if len(per_class) > top_classes:
        lines.append(f"  ... and {len(per_class) - top_classes} more")
    rejected = layout.read_table(shards, layout.rejected_name(manifest)).to_pylist()
    reasons = Counter(_reason_kind(r["reason"]) for r in rejected)
    if reasons:
        lines.append("rejected by reason:")
        lines += [f"  {count:5d}  {reason}" for reason, count in reasons.most_common()]
    if retryable := sum(bool(r.get("retryable")) for r in rejected):  # absent before 2026-12
        lines.append(f"{retryable} of them could not be read: rerunning the preprocess command "
                     f"retries them")
    return "\n".join(lines)


def _reason_kind(reason: str) -> str:
    """Group reasons that differ only in their details ("decode error after 12 frames: ...")."""
    return reason.split(":")[0]
