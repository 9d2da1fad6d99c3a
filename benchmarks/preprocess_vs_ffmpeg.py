"""Preprocessing throughput per core: our PyAV transcoder vs the ffmpeg command line, same work.

Both transcode the same synthetic H.264 source videos to VP9 WebM (25 fps, short side 128,
crf 32, GOP 16, cpu-used 5, no alt-ref, one thread, no audio), one video at a time on one core,
and the ratio of videos per second is printed. Needs the `ffmpeg` binary (Debian: apt-get
install ffmpeg). Run: .venv/bin/python benchmarks/preprocess_vs_ffmpeg.py [--videos N]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from preprocessing.config import PreprocessConfig
from preprocessing.synth import SynthConfig, synthesize
from preprocessing.transcode import output_size, transcode


def ffmpeg_command(source: Path, target: Path, config: PreprocessConfig, width: int,
                   height: int) -> list[str]:
    return ["ffmpeg", "-v", "error", "-y", "-threads", "1", "-i", str(source), "-an",
            "-vf", f"fps={config.fps},scale={width}:{height}", "-pix_fmt", "yuv420p",
            "-c:v", "libvpx-vp9", "-crf", str(config.crf), "-b:v", "0", "-deadline", "good",
            "-cpu-used", "5", "-g", str(config.keyframe_interval), "-auto-alt-ref", "0",
            "-row-mt", "0", "-threads", "1", str(target)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--frames", type=int, default=100)
    args = parser.parse_args()
    if shutil.which("ffmpeg") is None:
        print("ffmpeg not found; install it (Debian: apt-get install ffmpeg)", file=sys.stderr)
        return 2
    config = PreprocessConfig()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        sources = synthesize(root / "src", SynthConfig(
            classes=4, videos_per_class=max(1, args.videos // 4), frames=args.frames,
            width=320, height=240, codec="h264"))
        width, height = output_size(320, 240, config.short_side)

        start = time.perf_counter()
        ours_bytes = sum(len(transcode(path, config).payload) for path in sources)
        ours = time.perf_counter() - start

        start = time.perf_counter()
        for index, path in enumerate(sources):
            subprocess.run(ffmpeg_command(path, root / f"{index}.webm", config, width, height),
                           check=True)
        ffmpeg = time.perf_counter() - start
        ffmpeg_bytes = sum((root / f"{i}.webm").stat().st_size for i in range(len(sources)))

    n = len(sources)
    print(f"{n} videos, {args.frames} frames 320x240 H.264 -> VP9 {width}x{height}, one core")
    for name, seconds, size in (("ctrlaug transcode", ours, ours_bytes),
                                ("ffmpeg CLI", ffmpeg, ffmpeg_bytes)):
        print(f"{name:18s} {n / seconds:6.2f} videos/s  ({size / n / 1024:.1f} KiB/video)")
    print(f"ratio ctrlaug / ffmpeg: {ffmpeg / ours:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
