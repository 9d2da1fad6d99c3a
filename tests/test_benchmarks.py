"""The benchmark scripts run end to end at tiny size (their figures are not checked: timings on
shared machines are noise; BENCHMARKS.md holds measured figures with their machines)."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
RATE = r"\d+\.\d+ videos/s"


def run_script(*args: str) -> str:
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_the_pipeline_benchmark_prints_every_loader_and_the_ceiling():
    out = run_script("benchmarks/pipeline_throughput.py", "--videos", "4", "--frames", "20",
                     "--batch-size", "2", "--threads", "1", "--ceiling")
    for line in ("video  reference", "video  DALI cpu", "frames reference", "frames DALI cpu",
                 "frames bare DALI graph, same operators", "frames bare DALI graph, no colour",
                 "frames Pillow + numpy"):
        assert re.search(re.escape(line) + r".*" + RATE, out), (line, out)
    assert len(re.findall(r"the loader is +\d+\.\d+x it", out)) == 3, out
    assert len(re.findall(r"host \d+\.\d+ ms/video", out)) == 2, out


def test_the_step_benchmark_runs_on_the_cpu():
    out = run_script("benchmarks/train_step_throughput.py", "--device", "cpu", "--width", "8",
                     "--batch-size", "4", "--steps", "2", "--warmup", "1", "--threads", "1",
                     "--precisions", "fp32")
    assert re.search(r"fp32 +" + RATE + r".*loss \d+\.\d+ -> \d+\.\d+ .*correspondence \+ heads "
                     r"\+ losses \d+\.\d ms of the step.s \d+\.\d ms", out), out
    assert re.search(r"FLOPs per video \(forward \+ backward\): \d+\.\d G", out), out


def _naive_conv_flops(model, view: str, frames: tuple[int, int, int],
                      monkeypatch) -> tuple[int, int]:
    """(FLOPs of every 3D convolution, of the stem's alone) of one forward through f or f':
    2 x output elements x input channels x kernel volume, counted at torch's conv3d (the
    encoder calls it directly for the convolutions whose stride depends on the view)."""
    import torch
    import torch.nn.functional as F

    flops, conv3d = [], F.conv3d

    def counted(x, weight, *args, **kwargs):
        out = conv3d(x, weight, *args, **kwargs)
        flops.append(2 * out.numel() * weight.shape[1] * weight[0, 0].numel())
        return out

    monkeypatch.setattr(F, "conv3d", counted)
    with torch.no_grad():
        forward = model.forward_clip if view == "clip" else model.forward_global
        forward(torch.zeros(1, 3, *frames))
    monkeypatch.setattr(F, "conv3d", conv3d)
    return sum(flops), flops[0]


def test_step_flops_match_a_naive_count_of_the_encoders_convolutions(monkeypatch):
    """step_flops against convolutions counted by hand: one clip through f is the forward
    count; a video's encoder step is forward (K clips through f, the global view through f')
    plus backward, which costs two forwards (input and weight gradients) for every
    convolution but the stem (no gradient for the frames: one)."""
    import importlib.util

    from model.encoder import R3D18

    spec = importlib.util.spec_from_file_location("step_benchmark",
                                                  ROOT / "benchmarks/train_step_throughput.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    frames, width, clips = (16, 64, 64), 8, 4
    per_video, encoder, clip = bench.step_flops(width, frames, clips)
    model = R3D18(width)
    clip_flops, clip_stem = _naive_conv_flops(model, "clip", frames, monkeypatch)
    global_flops, global_stem = _naive_conv_flops(model, "global", frames, monkeypatch)
    assert clip == clip_flops
    forward, stem = clips * clip_flops + global_flops, clips * clip_stem + global_stem
    assert encoder == 3 * forward - stem
    assert encoder < per_video < 1.1 * encoder  # the heads are a few percent


def test_the_level_probe_reads_a_linearly_coded_label_and_not_an_absent_one():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from level_probe import probe_accuracy

    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (800,), generator=generator)
    noise = torch.randn(800, 16, generator=generator)
    coded = noise + 5 * torch.nn.functional.one_hot(labels, 16).float()  # 4 of 16 dims
    assert probe_accuracy(coded[:400], labels[:400], coded[400:], labels[400:], 4) > 0.95
    assert probe_accuracy(noise[:400], labels[:400], noise[400:], labels[400:], 4) < 0.4


def test_the_level_critic_sees_a_coded_level_and_not_an_absent_one():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from level_probe import fit_critic

    generator = torch.Generator().manual_seed(0)

    def batches(coded: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
        out = []
        for _ in range(8):
            level = torch.randint(0, 4, (16, 5), generator=generator)  # (B, V): 4 levels
            features = torch.randn(16, 5, 8, generator=generator)
            if coded:
                features[..., :4] += 3 * torch.nn.functional.one_hot(level, 4).float()
            out.append((features, level))
        return out

    coded, noise = batches(True), batches(False)
    assert fit_critic(coded[:6], coded[6:], hidden_dim=32, steps=300) > 0.5  # <= log 4 = 1.39
    assert abs(fit_critic(noise[:6], noise[6:], hidden_dim=32, steps=300)) < 0.15


def test_the_level_probe_runs_on_shards(shards):
    out = run_script("benchmarks/level_probe.py", "--config", "configs/tiny-cpu.toml",
                     "--train", str(shards["frames"]), "--test", str(shards["frames"]),
                     "--random-seeds", "0", "--critic-epochs", "2", "--critic-steps", "20")
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[0]["chance"] == {"brightness": 0.25, "contrast": 0.25, "saturation": 0.25,
                                  "hue": 0.5, "blur": 0.25}
    assert 0 < lines[0]["critic nats at most"] == round(math.log(4), 3)  # 4 levels a batch
    assert "critic on the applied parameters (ceiling)" in lines[1]
    encoder = lines[2]
    assert encoder["encoder"] == "random init, seed 0"
    assert all(0 <= encoder[name] <= 1 for name in lines[0]["chance"]), lines
    assert encoder["views"][0] > 0 and encoder["views"][0] % 5 == 0, lines  # 1 + K per video
    assert math.isfinite(encoder["critic nats"]) and "own critic nats" not in encoder


def test_the_motion_shortcut_probe_runs_on_shards(shards):
    out = run_script("benchmarks/motion_shortcut.py", "--config", "configs/tiny-cpu.toml",
                     "--shards", str(shards["frames"]), "--random-seeds", "0", "--batches", "1")
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["global view"] for line in lines] == ["as sampled", "static", "reversed",
                                                       "shuffled"]
    for line in lines:
        assert math.isfinite(line["loss_rc"]) and 0 <= line["video top-1"] <= 1
        # A perfect model's loss (the entropy of S's rows) is below a video-only one's.
        assert 0 <= line["perfect"] < line["video only"]


def test_a_static_global_view_is_its_middle_frame_and_the_others_permute_time():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from motion_shortcut import reversed_in_time, shuffled, static

    frames = torch.arange(2 * 3 * 16 * 2 * 2, dtype=torch.float32).reshape(2, 3, 16, 2, 2)
    assert (static(frames) == frames[:, :, 8:9]).all()
    assert (reversed_in_time(frames)[:, :, 0] == frames[:, :, 15]).all()
    for changed in (reversed_in_time(frames), shuffled(frames)):
        assert not torch.equal(changed, frames)
        assert torch.equal(changed.sort(dim=2).values, frames.sort(dim=2).values)
