"""Kinetics-400 (and -600/700) CSV annotations.

Columns `label,youtube_id,time_start,time_end,split[,is_cc]` with a header; labels may be quoted
and contain spaces or commas; test CSVs may lack `label` (rows become unlabelled, label -1).
Clip files are named `{youtube_id}_{start:06d}_{end:06d}.<ext>`, flat or inside class folders;
that stem is the video id. Class indices: the sorted unique label strings of all rows read.
`annotations` is one CSV file or a folder of them (all *.csv read).
"""

from __future__ import annotations

import csv
from pathlib import Path, PurePosixPath

from preprocessing.sources.listing import (
    UNLABELLED,
    AnnotationError,
    DatasetListing,
    Rejection,
    SourceVideo,
    finish,
    index_files,
    located,
)

REQUIRED = ("youtube_id", "time_start", "time_end", "split")


def _read_rows(csv_path: Path) -> list[dict]:
    with open(csv_path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = [name.strip() for name in (reader.fieldnames or [])]
        missing = [name for name in REQUIRED if name not in header]
        if missing:
            raise AnnotationError(f"{csv_path}: header {header} lacks column(s) {missing}")
        reader.fieldnames = header
        rows = []
        for line, row in enumerate(reader, start=2):
            if None in row or any(row[name] is None for name in REQUIRED):
                raise AnnotationError(f"{csv_path}:{line}: expected {len(header)} fields")
            try:
                start, end = int(float(row["time_start"])), int(float(row["time_end"]))
            except ValueError:
                raise AnnotationError(
                    f"{csv_path}:{line}: time_start/time_end must be numbers, got "
                    f"{row['time_start']!r}, {row['time_end']!r}") from None
            rows.append({"label": (row.get("label") or "").strip(),
                         "youtube_id": row["youtube_id"].strip(), "start": start, "end": end,
                         "split": row["split"].strip()})
        return rows


def list_kinetics(videos: Path | str, annotations: Path,
                  split: str | None = None) -> DatasetListing:
    csv_files = sorted(annotations.glob("*.csv")) if annotations.is_dir() else [annotations]
    if not csv_files or not all(path.is_file() for path in csv_files):
        raise AnnotationError(f"no Kinetics CSV found at {annotations}")
    rows = [row for path in csv_files for row in _read_rows(path)]
    classes = sorted({row["label"] for row in rows if row["label"]})
    index = {name: i for i, name in enumerate(classes)}
    by_stem: dict[str, Path] = {}
    for relative, path in index_files(videos).items():
        by_stem.setdefault(PurePosixPath(relative).stem, path)
    found, rejected = [], []
    for row in rows:
        video_id = f"{row['youtube_id']}_{row['start']:06d}_{row['end']:06d}"
        label = index[row["label"]] if row["label"] else UNLABELLED
        path = by_stem.get(video_id)
        if path is None:
            rejected.append(Rejection(located(videos, f"{video_id}.*"), video_id, row["split"],
                                      "no file for this annotation row"))
            continue
        found.append(SourceVideo(video_id, path, label, row["label"], row["split"]))
    return finish("kinetics400", classes, found, rejected, split)
