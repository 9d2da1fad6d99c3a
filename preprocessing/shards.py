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
                              written right after its shard, so a rerun after a crash redoes
                              only the shards without one
      _progress/part-00000.videos-000032-000064.parquet / .json
                              a piece: the rows (and record) of videos [32, 64) of shard 0, one
                              unit of work; pieces are assembled into their shard, then removed

Only the parts match `*.parquet` without a leading underscore: pyarrow dataset discovery, Ray
Data, DuckDB and Spark skip `_`-prefixed files, so a reader of the folder sees video rows only.
Format version 1 folders (manifest.json and rejected.parquet, no underscore) still read.

SHARDS may be a local path or an object-store URI (preprocessing.storage.Folder); every file is
written atomically (locally: a temporary name renamed into place; on object stores: one PUT), so
a reader (or a crash) never sees half a file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from preprocessing.sources import Rejection
from preprocessing.storage import Folder

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
MANIFEST = "_manifest.json"
REJECTED = "_rejected.parquet"
LEGACY_NAMES = {MANIFEST: "manifest.json", REJECTED: "rejected.parquet"}  # format version 1
PART_GLOB = "part-*.parquet"
PROGRESS_DIR = "_progress"
LOCK = "_lock"  # held (flock) by the job writing a local folder
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
                             pa.field("reason", pa.string()),
                             # the source could not be read: a rerun of the job retries it
                             pa.field("retryable", pa.bool_())])


def shard_schema(payload_format: str) -> pa.Schema:
    """Row schema: ROW_FIELDS and `payload`, large_binary ("video") or list of them ("frames")."""
    payload = pa.large_binary() if payload_format == "video" else pa.list_(pa.large_binary())
    return pa.schema([*ROW_FIELDS, pa.field(PAYLOAD, payload)])


def shard_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def part_names(shards: Folder) -> list[str]:
    """The Parquet parts present in a folder (listed in the manifest or not), sorted."""
    return shards.glob(PART_GLOB)


def metadata_name(shards: Folder, name: str) -> str:
    """The name a metadata file (MANIFEST or REJECTED) has in the folder: its own, or its
    format-1 name in a folder written before the rename."""
    legacy = LEGACY_NAMES[name]
    return legacy if not shards.exists(name) and shards.exists(legacy) else name


def manifest_bytes(shards: str | Path | Folder) -> bytes:
    """The manifest file's bytes (what identifies a shard folder's content, e.g. for caches)."""
    shards = Folder(shards)
    return shards.read_bytes(metadata_name(shards, MANIFEST))


def progress_record_name(index: int) -> str:
    return f"{PROGRESS_DIR}/part-{index:05d}.json"


def piece_name(shard: int, start: int, count: int, suffix: str) -> str:
    """The name of the piece of videos [start, start + count) of a shard (".parquet" rows,
    ".json" record), kept until its shard is assembled."""
    return f"{PROGRESS_DIR}/part-{shard:05d}.videos-{start:06d}-{start + count:06d}{suffix}"


def write_json(folder: Folder, name: str, value) -> None:
    folder.write_text(name, json.dumps(value, indent=2, sort_keys=True) + "\n")


def remove_temporaries(out_dir: Folder) -> None:
    """Delete leftovers of local writes that a crash interrupted."""
    for folder in ("", PROGRESS_DIR):
        for leftover in out_dir.glob(".*.tmp-*", folder):
            out_dir.delete(leftover)


def sha256_of(folder: Folder, name: str) -> str:
    digest = hashlib.sha256()
    with folder.fs.open_input_stream(folder._at(name)) as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_shard(folder: Folder, name: str, rows: list[dict], payload_format: str,
                row_group_bytes: int) -> None:
    """Write rows (dicts with every schema field) as one Parquet file, atomically.

    Row groups close once their payloads reach row_group_bytes, so a reader can stream a shard a
    group at a time. Payloads are stored uncompressed (they are compressed media already) and
    without statistics; the metadata columns get dictionary encoding and statistics.
    """
    schema = shard_schema(payload_format)
    with folder.open_output(name) as sink:
        writer = pq.ParquetWriter(
            sink, schema, compression="none", use_dictionary=METADATA_COLUMNS,
            write_statistics=METADATA_COLUMNS)
        with writer:
            group: list[dict] = []
            group_bytes = 0
            for row in rows:
                group.append(row)
                group_bytes += payload_bytes(row[PAYLOAD])
                if group_bytes >= row_group_bytes:
                    writer.write_table(pa.Table.from_pylist(group, schema=schema))
                    group, group_bytes = [], 0
            if group:
                writer.write_table(pa.Table.from_pylist(group, schema=schema))


def payload_bytes(payload: bytes | list[bytes]) -> int:
    return len(payload) if isinstance(payload, bytes) else sum(len(part) for part in payload)


def write_table(folder: Folder, name: str, table: pa.Table) -> None:
    """Any table (pieces, rejections) as one uncompressed Parquet file, atomically."""
    with folder.open_output(name) as sink:
        pq.write_table(table, sink, compression="none")


def write_rejected(folder: Folder, rejected: list[Rejection]) -> None:
    write_table(folder, REJECTED,
                pa.Table.from_pylist([asdict(r) for r in rejected], schema=REJECTED_SCHEMA))


def read_manifest(shards: str | Path | Folder) -> dict:
    """The manifest of a shard folder, format version checked; ValueError with one clear line
    when the folder is not a finished shard folder or its manifest is broken."""
    shards = Folder(shards)
    name = metadata_name(shards, MANIFEST)
    if not shards.is_file(name):
        raise ValueError(f"{shards} is not a shard folder (no {MANIFEST}); run `ctrlaug "
                         f"preprocess` first")
    try:
        manifest = json.loads(shards.read_text(name))
    except json.JSONDecodeError as error:
        raise ValueError(f"{shards / name} is not valid JSON: {error}") from None
    if manifest.get("format_version") not in READABLE_VERSIONS:
        raise ValueError(f"{shards / name}: format_version {manifest.get('format_version')!r}, "
                         f"this ctrlaug reads {', '.join(map(str, READABLE_VERSIONS))}")
    return manifest


def rejected_name(manifest: dict) -> str:
    """The folder's table of rejected inputs (named in its manifest)."""
    return manifest.get("rejected_file", LEGACY_NAMES[REJECTED])


def read_table(folder: Folder, name: str, columns: list[str] | None = None) -> pa.Table:
    with folder.open_input(name) as source:
        return pq.read_table(source, columns=columns)


def read_metadata(shards: Folder, manifest: dict) -> pa.Table:
    """Every row's metadata columns (no payloads) across the manifest's shards."""
    tables = [read_table(shards, shard["file"], METADATA_COLUMNS)
              for shard in manifest["shards"]]
    if not tables:
        return pa.schema(ROW_FIELDS).empty_table()
    return pa.concat_tables(tables)
