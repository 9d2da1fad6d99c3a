"""Dataset sources: annotation parsers that list the videos to shard. One file per format.

No torch, DALI or Ray. `list_dataset` dispatches on the dataset name.
"""

from __future__ import annotations

from pathlib import Path

from preprocessing.sources.diving48 import list_diving48
from preprocessing.sources.folder import list_folder
from preprocessing.sources.hmdb51 import list_hmdb51
from preprocessing.sources.kinetics import list_kinetics
from preprocessing.sources.listing import (
    UNLABELLED,
    AnnotationError,
    DatasetListing,
    Rejection,
    SourceVideo,
)
from preprocessing.sources.ucf101 import list_ucf101

DATASETS = ("kinetics400", "ucf101", "hmdb51", "diving48", "folder")


def list_dataset(dataset: str, videos: Path | str, annotations: Path | None = None,
                 split: str | None = None, fold: int = 1) -> DatasetListing:
    """Parse a dataset's annotations; raises AnnotationError before any video is read.
    videos: a local folder or an s3:// / gs:// URI; annotations: local files."""
    if dataset not in DATASETS:
        raise AnnotationError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    if dataset == "folder":
        return list_folder(videos, split or "train")
    if annotations is None:
        raise AnnotationError(f"--annotations is required for {dataset}")
    if not annotations.exists():
        raise AnnotationError(f"annotations {annotations} do not exist")
    if dataset == "kinetics400":
        return list_kinetics(videos, annotations, split)
    if dataset == "ucf101":
        return list_ucf101(videos, annotations, fold, split)
    if dataset == "hmdb51":
        return list_hmdb51(videos, annotations, fold, split)
    return list_diving48(videos, annotations, split)


__all__ = ["DATASETS", "UNLABELLED", "AnnotationError", "DatasetListing", "Rejection",
           "SourceVideo", "list_dataset"]
