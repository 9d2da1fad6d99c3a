"""The synthetic dataset: classes are told apart by motion, not by appearance, and every class is
invariant under the augmentations pretraining applies (a horizontal flip maps it to itself)."""

from __future__ import annotations

import numpy as np
import pytest

from preprocessing.synth import CLASSES, SynthConfig, class_names, motion, render_video, synthesize
from preprocessing.transcode import decode_payload_frames

PER_CLASS = 10
CONFIG = SynthConfig(frames=48, width=64, height=48)


def rendered(seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    videos, labels = [], []
    for label, name in enumerate(CLASSES):
        for index in range(PER_CLASS):
            videos.append(render_video(name, CONFIG, np.random.default_rng([seed, label, index])))
            labels.append(label)
    return np.stack(videos).astype(np.float32), np.array(labels)


def nearest_neighbour(train: np.ndarray, train_labels: np.ndarray, query: np.ndarray,
                      exclude_self: bool = False) -> np.ndarray:
    distances = ((query[:, None] - train[None]) ** 2).sum(-1)
    if exclude_self:
        np.fill_diagonal(distances, np.inf)
    return train_labels[distances.argmin(1)]


def motion_features(videos: np.ndarray) -> np.ndarray:
    """How the pixels that differ from the video's median frame move: (N, 6) per video.

    The moving mask's centroid velocity (unwrapped across the frame edges): |mean vx|, mean vy,
    std vx, std vy, and the mask's area change (std) and mean area. Positions are left out:
    where the object is, is appearance.
    """
    n, t, h, w, _ = videos.shape
    # Undo the illumination drift (a per-frame gain), then compare with the median frame.
    gain = videos.mean((2, 3, 4), keepdims=True)
    steady = videos / gain * gain.mean(1, keepdims=True)
    moving = np.abs(steady - np.median(steady, axis=1, keepdims=True)).sum(-1) > 60  # (N,T,H,W)
    area = moving.sum((2, 3)) + 1e-6  # (N, T)
    # Centroids on the circle, so an object leaving one edge and entering the other is smooth.
    angle_x, angle_y = 2 * np.pi * np.arange(w) / w, 2 * np.pi * np.arange(h) / h
    cx = np.angle((moving * np.exp(1j * angle_x)[None, None, None]).sum((2, 3)))
    cy = np.angle((moving * np.exp(1j * angle_y)[None, None, :, None]).sum((2, 3)))
    vx = np.angle(np.exp(1j * np.diff(cx, axis=1))) * w / (2 * np.pi)
    vy = np.angle(np.exp(1j * np.diff(cy, axis=1))) * h / (2 * np.pi)
    relative_area = area / area.mean(1, keepdims=True)
    return np.stack([np.abs(vx.mean(1)), vy.mean(1), vx.std(1), vy.std(1),
                     relative_area.std(1), area.mean(1) / (h * w)], axis=1)


def test_motion_separates_classes_and_appearance_does_not():
    videos, labels = rendered()
    appearance = np.concatenate([videos.mean((1, 2, 3)), videos.std((1, 2, 3))], axis=1)
    motion_ = motion_features(videos)
    scale = motion_.std(0) + 1e-6
    by_appearance = nearest_neighbour(appearance, labels, appearance, exclude_self=True)
    by_motion = nearest_neighbour(motion_ / scale, labels, motion_ / scale, exclude_self=True)
    chance = 1 / len(CLASSES)
    assert (by_appearance == labels).mean() < chance + 0.15, (by_appearance == labels).mean()
    assert (by_motion == labels).mean() > 0.9, (by_motion == labels).mean()


def test_a_horizontal_flip_keeps_every_class():
    videos, labels = rendered()
    flipped, _ = rendered(seed=8)
    flipped = flipped[:, :, :, ::-1]  # mirrored videos of new draws
    train, query = motion_features(videos), motion_features(flipped)
    scale = train.std(0) + 1e-6
    predicted = nearest_neighbour(train / scale, labels, query / scale)
    assert (predicted == labels).mean() > 0.9, (predicted == labels).mean()


@pytest.mark.parametrize("name", CLASSES)
def test_motion_is_stationary_so_temporal_crops_keep_the_class(name):
    """Constant velocity or a period of at most 20 frames: every 16-frame window shows the same
    kind of motion (a turn, for the oscillations)."""
    path = motion(name, 200, 160, 120, np.random.default_rng(0))
    velocity = np.diff(path.centre, axis=0)
    if name in ("rise", "fall", "slide"):
        assert np.allclose(velocity, velocity[0])
    elif name in ("sway", "bob", "orbit"):
        axis = 1 if name == "bob" else 0
        for start in range(0, 184):  # a sign change of the velocity in every window
            window = np.sign(velocity[start:start + 16, axis])
            assert (window > 0).any() and (window < 0).any()
    elif name == "pulse":
        for start in range(0, 184):
            growth = np.sign(np.diff(path.scale[start:start + 16]))
            assert (growth > 0).any() and (growth < 0).any()
    else:
        assert np.allclose(velocity, 0) and np.allclose(path.scale, 1)


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
        SynthConfig(classes=len(CLASSES) + 1)
    with pytest.raises(TypeError, match="codec"):
        SynthConfig(codec="prores")
    with pytest.raises(ValueError, match="unknown class"):
        motion("spin", 10, 64, 48, np.random.default_rng(0))


def test_shared_appearances_recur_across_videos_and_classes():
    """appearances=1: every video has the same background and object, whatever its class;
    the default gives each video its own."""
    def first_frames(config: SynthConfig) -> np.ndarray:
        return np.stack([render_video(name, config, np.random.default_rng([0, label, 0]))[0]
                         for label, name in enumerate(("still", "rise", "orbit"))])

    shared = first_frames(SynthConfig(frames=2, width=64, height=48, appearances=1))
    shared = shared.astype(float)
    # Same textures and colours everywhere: frames differ only where the objects differ
    # (their positions) and by the per-video illumination drift.
    normalised = shared / shared.mean((1, 2, 3), keepdims=True)
    assert np.median(np.abs(normalised - normalised[0]).sum(-1)) < 0.05
    own = first_frames(SynthConfig(frames=2, width=64, height=48)).astype(float)
    own /= own.mean((1, 2, 3), keepdims=True)
    assert np.median(np.abs(own - own[0]).sum(-1)[1:]) > 0.1
    with pytest.raises(ValueError, match="appearances"):
        SynthConfig(appearances=-1)
