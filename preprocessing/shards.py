"""The shard folder on disk: its layout, the row schema, atomic writers and readers.

No torch, DALI or Ray. The one statement of the shard contract: every path, column and manifest
key is derived here and nowhere else (the pipeline's reader imports it too):

    SHARDS/
      _manifest.json          written last: format version, dataset, preprocessing config, class
                              list, every shard's file / rows / bytes / sha256, counts
      part-00000.parquet      one row per video (ROW_FIELDS + payload), row groups of about
      part-00001.parquet      row_group_mb; shards without any accepted video are not written
      _rejected.parquet       every input that is not in a shard: source_path, video_id, split,
                              reason
      _progress/plan.json     the shard plan (config + the video ids of every shard); a rerun
                              with a different plan is refused
      _progress/part-00000.json  one record per finished shard (rows, bytes, sha256, rejections),
                              written by the worker right after its shard, so a rerun after a
                              crash redoes only the shards without one

Only the parts match `*.parquet` without a leading underscore: pyarrow dataset discovery, Ray
Data, DuckDB and Spark skip `_`-prefixed files, so a reader of the folder sees video rows only.
Format version 1 folders (manifest.json and rejected.parquet, no underscore) still read.

Every file is written to a temporary name in the same folder and renamed into place, so a reader
(or a crash) never sees half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from preprocessing.sources import Rejection

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
MANIFEST = "_manifest.json"
REJECTED = "_rejected.parquet"
LEGACY_NAMES = {MANIFEST: "manifest.json", REJECTED: "rejected.parquet"}  # format version 1
PART_GLOB = "part-*.parquet"
PROGRESS_DIR = "_progress"
PLAN = "plan.json"
PAYLOAD = "payload"

ROW_FIELDS = [
    pa.field("video_id", pa.string()),
    pa.field("label", pa.int32()),
    pa.field("label_name", pa.string()),
    pa.field("split", pa.string()),
    pa.field("source_path", pa.string()),
    pa.field("fps", pa.float32()),
    pa.field("num_frames", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("width", pa.int32()),
    pa.field("codec", pa.string()),
    pa.field("source_codec", pa.string()),
]
METADATA_COLUMNS = [f.name for f in ROW_FIELDS]
# What training reads of every row up front (payloads are streamed later).
INDEX_COLUMNS = ["video_id", "label", "split", "num_frames", "height", "width", "codec"]
REJECTED_SCHEMA = pa.schema([pa.field("source_path", pa.string()),
                             pa.field("video_id", pa.string()),
                             pa.field("split", pa.string()),
                             pa.field("reason", pa.string())])


def shard_schema(payload_format: str) -> pa.Schema:
    """Row schema: ROW_FIELDS and `payload`, large_binary ("video") or list of them ("frames")."""
    payload = pa.large_binary() if payload_format == "video" else pa.list_(pa.large_binary())
    return pa.schema([*ROW_FIELDS, pa.field(PAYLOAD, payload)])


def shard_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def part_files(shards: Path) -> list[Path]:
    """The Parquet parts present in a folder (listed in the manifest or not), sorted."""
    return sorted(Path(shards).glob(PART_GLOB))


def metadata_path(shards: Path, name: str) -> Path:
    """Where a metadata file (MANIFEST or REJECTED) of the folder is: its own name, or its
    format-1 name in a folder written before the rename."""
    path = Path(shards) / name
    legacy = Path(shards) / LEGACY_NAMES[name]
    return legacy if not path.exists() and legacy.exists() else path


def manifest_bytes(shards: Path) -> bytes:
    """The manifest file's bytes (what identifies a shard folder's content, e.g. for caches)."""
    return metadata_path(shards, MANIFEST).read_bytes()


def progress_record_path(out_dir: Path, index: int) -> Path:
    return out_dir / PROGRESS_DIR / f"part-{index:05d}.json"


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    temporary = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_json_atomic(path: Path, value) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")


def remove_temporaries(out_dir: Path) -> None:
    """Delete leftovers of writes that a crash interrupted."""
    for folder in (out_dir, out_dir / PROGRESS_DIR):
        for leftover in folder.glob(".*.tmp-*"):
            leftover.unlink(missing_ok=True)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_shard(path: Path, rows: list[dict], payload_format: str, row_group_bytes: int) -> None:
    """Write rows (dicts with every schema field) as one Parquet file, atomically.

    Row groups close once their payloads reach row_group_bytes, so a reader can stream a shard a
    group at a time. Payloads are stored uncompressed (they are compressed media already) and
    without statistics; the metadata columns get dictionary encoding and statistics.
    """
    schema = shard_schema(payload_format)
    with atomic_path(path) as temporary:
        writer = pq.ParquetWriter(
            temporary, schema, compression="none", use_dictionary=METADATA_COLUMNS,
            write_statistics=METADATA_COLUMNS)
        with writer:
            group: list[dict] = []
            group_bytes = 0
            for row in rows:
                group.append(row)
                group_bytes += payload_bytes(row["payload"])
                if group_bytes >= row_group_bytes:
                    writer.write_table(pa.Table.from_pylist(group, schema=schema))
                    group, group_bytes = [], 0
            if group:
                writer.write_table(pa.Table.from_pylist(group, schema=schema))


def payload_bytes(payload: bytes | list[bytes]) -> int:
    return len(payload) if isinstance(payload, bytes) else sum(len(part) for part in payload)


def write_rejected(path: Path, rejected: list[Rejection]) -> None:
    table = pa.Table.from_pylist([asdict(r) for r in rejected], schema=REJECTED_SCHEMA)
    with atomic_path(path) as temporary:
        pq.write_table(table, temporary)


def read_manifest(shards: Path) -> dict:
    """The manifest of a shard folder, format version checked; ValueError with one clear line
    when the folder is not a finished shard folder or its manifest is broken."""
    path = metadata_path(shards, MANIFEST)
    if not path.is_file():
        raise ValueError(f"{shards} is not a shard folder (no {MANIFEST}); run `ctrlaug "
                         f"preprocess` first")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    if manifest.get("format_version") not in READABLE_VERSIONS:
        raise ValueError(f"{path}: format_version {manifest.get('format_version')!r}, this "
                         f"ctrlaug reads {', '.join(map(str, READABLE_VERSIONS))}")
    return manifest


def rejected_path(shards: Path, manifest: dict) -> Path:
    """The folder's table of rejected inputs (named in its manifest)."""
    return Path(shards) / manifest.get("rejected_file", LEGACY_NAMES[REJECTED])


def read_metadata(shards: Path, manifest: dict) -> pa.Table:
    """Every row's metadata columns (no payloads) across the manifest's shards."""
    tables = [pq.read_table(shards / shard["file"], columns=METADATA_COLUMNS)
              for shard in manifest["shards"]]
    if not tables:
        return pa.schema(ROW_FIELDS).empty_table()
    return pa.concat_tables(tables)
