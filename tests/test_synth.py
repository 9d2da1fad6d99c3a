"""The synthetic dataset: classes are told apart by motion, not by appearance."""

from __future__ import annotations

import numpy as np
import pytest

from preprocessing.synth import SynthConfig, class_names, render_video, synthesize, trajectory
from preprocessing.transcode import decode_payload_frames

CLASSES, PER_CLASS = 6, 12
CONFIG = SynthConfig(classes=CLASSES, frames=24, width=64, height=48)


def rendered():
    videos, labels = [], []
    for label, name in enumerate(class_names()[:CLASSES]):
        for index in range(PER_CLASS):
            videos.append(render_video(name, CONFIG, np.random.default_rng([7, label, index])))
            labels.append(label)
    return np.stack(videos).astype(np.float32), np.array(labels)


def leave_one_out_nearest_neighbour(features: np.ndarray, labels: np.ndarray) -> float:
    distances = ((features[:, None] - features[None]) ** 2).sum(-1)
    np.fill_diagonal(distances, np.inf)
    return float((labels[distances.argmin(1)] == labels).mean())


def motion_features(videos: np.ndarray) -> np.ndarray:
    """The disk's path, found as the pixels that differ from the video's median frame."""
    moving = np.abs(videos - np.median(videos, axis=1, keepdims=True)).sum(-1) > 60  # (N,T,H,W)
    ys, xs = np.mgrid[0:videos.shape[2], 0:videos.shape[3]]
    weight = moving.sum((2, 3)) + 1e-6
    path = np.stack([(moving * xs).sum((2, 3)) / weight, (moving * ys).sum((2, 3)) / weight], -1)
    path -= path[:, :1]  # relative to the start: position is appearance, not motion
    return (path / (np.abs(path).max((1, 2), keepdims=True) + 1e-6)).reshape(len(videos), -1)


def test_motion_separates_classes_and_appearance_does_not():
    videos, labels = rendered()
    appearance = np.concatenate([videos.mean((1, 2, 3)), videos.std((1, 2, 3))], axis=1)
    appearance_accuracy = leave_one_out_nearest_neighbour(appearance, labels)
    motion_accuracy = leave_one_out_nearest_neighbour(motion_features(videos), labels)
    chance = 1 / CLASSES
    assert appearance_accuracy < chance + 0.2, appearance_accuracy
    assert motion_accuracy > 0.9, motion_accuracy


def test_every_class_differs_in_direction_shape_or_order():
    names = class_names()
    assert len(names) == len(set(names)) == 42
    paths = {name: trajectory(name, 32) for name in names}
    for a in names:
        for b in names:
            if a != b:
                assert not np.allclose(paths[a], paths[b])


def test_synthesize_writes_the_folder_layout_deterministically(tmp_path):
    config = SynthConfig(classes=2, videos_per_class=2, frames=20, width=48, height=32,
                         codec="vp9", seed=3)
    first = synthesize(tmp_path / "a", config)
    second = synthesize(tmp_path / "b", config)
    assert [p.relative_to(tmp_path / "a") for p in first] == [
        p.relative_to(tmp_path / "b") for p in second]
    assert all(p.read_bytes() == q.read_bytes() for p, q in zip(first, second, strict=True))
    assert sorted({p.parent.name for p in first}) == sorted(class_names()[:2])
    frames = decode_payload_frames(first[0].read_bytes(), "vp9")
    assert frames.shape == (20, 32, 48, 3)


def test_bad_synth_settings_are_errors():
    with pytest.raises(ValueError, match="classes"):
        SynthConfig(classes=43)
    with pytest.raises(ValueError, match="codec"):
        SynthConfig(codec="prores")
