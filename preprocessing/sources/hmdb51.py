"""HMDB-51 split files: `<class>_test_split{N}.txt`, lines `name.avi {0|1|2}`.

1 = train, 2 = test, 0 = not in this split's protocol (such rows are not inputs of this run).
The class is the file-name prefix; class indices are the sorted class names. Videos are found at
`<videos>/<class>/<name>` or anywhere below `videos` by file name; the video id is `class/stem`.
"""

from __future__ import annotations

import re
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

SPLIT_FILE = re.compile(r"^(?P<cls>.+)_test_split(?P<fold>\d)\.txt$")
SPLIT_NAMES = {"1": "train", "2": "test"}


def list_hmdb51(videos: Path | str, annotations: Path, fold: int = 1,
                split: str | None = None) -> DatasetListing:
    split_files = sorted(p for p in annotations.glob(f"*_test_split{fold}.txt"))
    if not split_files:
        raise AnnotationError(f"HMDB-51: no *_test_split{fold}.txt files in {annotations}")
    classes = sorted(SPLIT_FILE.match(p.name)["cls"] for p in split_files)
    index = {name: i for i, name in enumerate(classes)}
    files = index_files(videos)
    by_name = {}
    for relative, path in files.items():
        by_name.setdefault(PurePosixPath(relative).name, path)
    found, rejected = [], []
    for split_file in split_files:
        cls = SPLIT_FILE.match(split_file.name)["cls"]
        for line_number, line in enumerate(split_file.read_text().splitlines(), start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise AnnotationError(f"{split_file}:{line_number}: expected 'name.avi 0|1|2', "
                                      f"got {line!r}")
            if parts[1] == "0":
                continue
            name, split_name = parts[0], SPLIT_NAMES[parts[1]]
            video_id = f"{cls}/{PurePosixPath(name).stem}"
            source = files.get(f"{cls}/{name}") or by_name.get(name)
            if source is None:
                rejected.append(Rejection(located(videos, f"{cls}/{name}"), video_id, split_name,
                                          "no file for this annotation row"))
                continue
            found.append(SourceVideo(video_id, source, index[cls], cls, split_name))
    return finish("hmdb51", classes, found, rejected, split)
