"""UCF-101 split files (ucfTrainTestlist): classInd.txt, trainlist0N.txt, testlist0N.txt.

classInd.txt lines are `index name`, 1-based; the class index is index - 1 (the file's order).
trainlist lines are `Class/v_Class_gXX_cYY.avi label` (1-based), testlist lines the path only,
the class taken from the folder. Folder and file names are matched case-insensitively because of
the known `HandstandPushups` folder vs `v_HandStandPushups_*` file names. The video id is the file
stem. `fold` (1-3) picks the split files; splits are named "train" and "test".
"""

from __future__ import annotations

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


def _read_class_index(path: Path) -> list[str]:
    if not path.is_file():
        raise AnnotationError(f"UCF-101: {path} not found")
    entries = {}
    for line_number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise AnnotationError(f"{path}:{line_number}: expected 'index name', got {line!r}")
        entries[int(parts[0])] = parts[1]
    if sorted(entries) != list(range(1, len(entries) + 1)):
        raise AnnotationError(f"{path}: indices must run 1..N without gaps")
    return [entries[i] for i in range(1, len(entries) + 1)]


def list_ucf101(videos: Path | str, annotations: Path, fold: int = 1,
                split: str | None = None) -> DatasetListing:
    classes = _read_class_index(annotations / "classInd.txt")
    by_lower_name = {name.lower(): i for i, name in enumerate(classes)}
    files = {relative.lower(): path for relative, path in index_files(videos).items()}
    by_lower_basename = {PurePosixPath(r).name: p for r, p in files.items()}
    found, rejected = [], []
    for split_name, list_file in (("train", f"trainlist0{fold}.txt"),
                                  ("test", f"testlist0{fold}.txt")):
        path = annotations / list_file
        if not path.is_file():
            raise AnnotationError(f"UCF-101: {path} not found")
        for line_number, line in enumerate(path.read_text().splitlines(), start=1):
            parts = line.split()
            if not parts:
                continue
            where = f"{path}:{line_number}"
            relative = PurePosixPath(parts[0])
            if len(relative.parts) != 2 or len(parts) > 2:
                raise AnnotationError(f"{where}: expected 'Class/file.avi [label]', got {line!r}")
            folder = relative.parts[0].lower()
            if folder not in by_lower_name:
                raise AnnotationError(f"{where}: class folder {relative.parts[0]!r} is not in "
                                      f"classInd.txt")
            label = by_lower_name[folder]
            if len(parts) == 2 and (not parts[1].isdigit() or int(parts[1]) - 1 != label):
                raise AnnotationError(f"{where}: label {parts[1]!r} does not match class "
                                      f"{classes[label]!r} (index {label + 1})")
            source = files.get(relative.as_posix().lower()) or by_lower_basename.get(
                relative.name.lower())
            if source is None:
                rejected.append(Rejection(located(videos, relative.as_posix()), relative.stem,
                                          split_name, "no file for this annotation row"))
                continue
            found.append(SourceVideo(relative.stem, source, label, classes[label], split_name))
    return finish("ucf101", classes, found, rejected, split)
