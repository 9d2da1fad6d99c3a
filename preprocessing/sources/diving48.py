"""Diving-48 V1 JSON annotations: Diving48_{train,test}.json and Diving48_vocab.json.

Each entry has `vid_name`, `label`, `start_frame`, `end_frame`; videos are `<vid_name>.<ext>`
below `videos`. The vocabulary lists each class as [takeoff, somersault, twist, flight]; the class
index is the vocabulary position and its name the parts joined with "_". start_frame/end_frame
are kept as an inclusive source-frame range. Splits are named after the file: "train", "test".
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

from preprocessing.sources.listing import (
    AnnotationError,
    DatasetListing,
    Rejection,
    SourceVideo,
    finish,
    index_files,
    located,
)

FIELDS = ("vid_name", "label", "start_frame", "end_frame")


def _load_json(path: Path):
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise AnnotationError(f"{path}: not valid JSON ({error})") from None


def _find(annotations: Path, word: str) -> Path:
    matches = sorted(annotations.glob(f"*{word}*.json"))
    if len(matches) != 1:
        raise AnnotationError(f"Diving-48: expected one *{word}*.json in {annotations}, "
                              f"found {[m.name for m in matches]}")
    return matches[0]


def list_diving48(videos: Path | str, annotations: Path,
                  split: str | None = None) -> DatasetListing:
    vocab_path = _find(annotations, "vocab")
    vocab = _load_json(vocab_path)
    if not isinstance(vocab, list) or not all(isinstance(v, list) for v in vocab):
        raise AnnotationError(f"{vocab_path}: expected a list of [takeoff, somersault, twist, "
                              f"flight] lists")
    classes = ["_".join(str(part) for part in entry) for entry in vocab]
    by_stem = {}
    for relative, path in index_files(videos).items():
        by_stem.setdefault(PurePosixPath(relative).stem, path)
    found, rejected = [], []
    for split_name in ("train", "test"):
        path = _find(annotations, split_name)
        entries = _load_json(path)
        if not isinstance(entries, list):
            raise AnnotationError(f"{path}: expected a list of entries")
        for position, entry in enumerate(entries):
            if not isinstance(entry, dict) or any(key not in entry for key in FIELDS):
                raise AnnotationError(f"{path}: entry {position} lacks one of {FIELDS}")
            label = entry["label"]
            if not isinstance(label, int) or not 0 <= label < len(classes):
                raise AnnotationError(f"{path}: entry {position} has label {label!r}, outside "
                                      f"the {len(classes)}-class vocabulary")
            start, end = int(entry["start_frame"]), int(entry["end_frame"])
            if end < start:
                raise AnnotationError(f"{path}: entry {position} ends before it starts")
            video_id = str(entry["vid_name"])
            source = by_stem.get(video_id)
            if source is None:
                rejected.append(Rejection(located(videos, f"{video_id}.*"), video_id, split_name,
                                          "no file for this annotation row"))
                continue
            found.append(SourceVideo(video_id, source, label, classes[label], split_name,
                                     frame_range=(start, end)))
    return finish("diving48", classes, found, rejected, split)
