"""`ctrlaug verify`: check a shard folder against its manifest, and decode a sample of rows.

No torch, DALI or Ray. Checks: the manifest parses; every listed shard exists with the listed
size, sha256 and row count, and the expected schema; no unlisted part files; video ids are unique;
labels index the class list; rows + rejected = inputs; and a seeded sample of rows decodes to
exactly num_frames frames of height x width.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from preprocessing import shards as layout
from preprocessing.sources import UNLABELLED
from preprocessing.storage import Folder
from preprocessing.transcode import decode_payload_frames


@dataclass
class VerifyReport:
    shards: int = 0
    rows: int = 0
    decoded: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_shards(shards: str | Path | Folder, sample: int = 8, seed: int = 0) -> VerifyReport:
    """Verify `shards` (a path or URI); `sample` rows in all are decoded (0 skips decoding)."""
    report = VerifyReport()
    shards = Folder(shards)
    try:
        manifest = layout.read_manifest(shards)
    except ValueError as error:
        report.problems.append(str(error))
        return report
    expected_schema = layout.shard_schema(manifest["payload_format"])
    listed = {shard["file"] for shard in manifest["shards"]}
    for stray in sorted(set(layout.part_names(shards)) - listed):
        report.problems.append(f"{stray} is not listed in the manifest")
    for shard in manifest["shards"]:
        name = shard["file"]
        if not shards.is_file(name):
            report.problems.append(f"{name} is missing")
            continue
        if shards.size(name) != shard["bytes"]:
            report.problems.append(f"{name}: {shards.size(name)} bytes, manifest says "
                                   f"{shard['bytes']}")
        elif layout.sha256_of(shards, name) != shard["sha256"]:
            report.problems.append(f"{name}: sha256 differs from the manifest")
        with shards.open_input(name) as source:
            parquet = pq.ParquetFile(source)
            if not parquet.schema_arrow.equals(expected_schema):
                report.problems.append(f"{name}: schema differs from the shard schema")
            if parquet.metadata.num_rows != shard["rows"]:
                report.problems.append(f"{name}: {parquet.metadata.num_rows} rows, "
                                       f"manifest says {shard['rows']}")
        report.shards += 1
    if report.problems:
        return report
    metadata = layout.read_metadata(shards, manifest)
    report.rows = metadata.num_rows
    ids = metadata.column("video_id").to_pylist()
    if len(set(ids)) != len(ids):
        report.problems.append(f"{len(ids) - len(set(ids))} duplicate video ids")
    labels = np.array(metadata.column("label").to_pylist(), dtype=np.int64)
    bad = (labels != UNLABELLED) & ((labels < 0) | (labels >= len(manifest["classes"])))
    if bad.any():
        report.problems.append(f"{int(bad.sum())} labels outside the {len(manifest['classes'])}"
                               f" classes")
    rejected_file = layout.rejected_name(manifest)
    try:
        with shards.open_input(rejected_file) as source:
            rejected = pq.read_metadata(source).num_rows
    except (OSError, pa.ArrowException) as error:
        report.problems.append(f"{rejected_file}: missing or unreadable ({error})")
        return report
    if report.rows + rejected != manifest["num_inputs"]:
        report.problems.append(f"{report.rows} rows + {rejected} rejected != "
                               f"{manifest['num_inputs']} inputs")
    _decode_sample(shards, manifest, sample, seed, report)
    return report


def _decode_sample(shards: Folder, manifest: dict, sample: int, seed: int,
                   report: VerifyReport) -> None:
    if sample <= 0 or report.rows == 0:
        return
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(report.rows, size=min(sample, report.rows), replace=False))
    offset = 0
    for shard in manifest["shards"]:
        wanted = [i - offset for i in chosen if offset <= i < offset + shard["rows"]]
        offset += shard["rows"]
        if not wanted:
            continue
        table = layout.read_table(shards, shard["file"]).take(wanted)
        for row in table.to_pylist():
            try:
                frames = decode_payload_frames(row["payload"], row["codec"])
            except Exception as error:
                report.problems.append(f"{row['video_id']}: payload does not decode ({error})")
                continue
            if frames.shape[:3] != (row["num_frames"], row["height"], row["width"]):
                report.problems.append(
                    f"{row['video_id']}: decoded {frames.shape[:3]}, row says "
                    f"({row['num_frames']}, {row['height']}, {row['width']})")
            report.decoded += 1
