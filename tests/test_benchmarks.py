"""The benchmark scripts run end to end at tiny size (their figures are not checked: timings on
shared machines are noise; BENCHMARKS.md holds measured figures with their machines)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

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
    assert re.search(r"fp32 +" + RATE + r".*loss \d+\.\d+ -> \d+\.\d+", out), out
