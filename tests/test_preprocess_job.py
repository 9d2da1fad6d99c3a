"""The preprocessing job end to end: every input accounted for, resumable, deterministic."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from preprocessing.config import PreprocessConfig
from preprocessing.job import (
    PieceTask,
    PlanMismatch,
    _plan_record,
    _prepare_folder,
    local_executor,
    plan_shards,
    process_piece,
    run_preprocess,
)
from preprocessing.shards import LOCK, REJECTED, shard_schema, write_shard
from preprocessing.sources import list_dataset
from preprocessing.storage import Folder
from preprocessing.summary import summarize_shards
from preprocessing.verify import verify_shards

CTRLAUG = str(Path(sys.executable).parent / "ctrlaug")
BAD_REASONS = {"zero": "empty file", "junk": "not a readable video container",
               "sound": "no video stream", "short": "too short", "cut": "truncated"}


def config(**changes) -> PreprocessConfig:
    return PreprocessConfig(**{"videos_per_shard": 2, **changes})


def run(videos: Path, out: Path, workers: int = 1, **changes) -> dict:
    listing = list_dataset("folder", videos)
    return run_preprocess(listing, config(**changes), out, local_executor(workers),
                          log=io.StringIO())


def shard_ids(out: Path) -> list[str]:
    return [vid for path in sorted(out.glob("part-*.parquet"))
            for vid in pq.read_table(path, columns=["video_id"]).column("video_id").to_pylist()]


def test_every_input_is_in_exactly_one_row_or_rejected(videos, tmp_path):
    manifest = run(videos, tmp_path / "shards", workers=2)
    inputs = {f"{p.parent.name}/{p.stem}" for p in videos.glob("*/*")}
    rows = shard_ids(tmp_path / "shards")
    rejected = pq.read_table(tmp_path / "shards" / REJECTED).to_pylist()
    assert len(rows) == len(set(rows)) == 6
    assert len(rejected) == 5
    assert set(rows) | {r["video_id"] for r in rejected} == inputs
    assert not set(rows) & {r["video_id"] for r in rejected}
    for record in rejected:
        assert record["reason"].startswith(BAD_REASONS[record["video_id"].split("/")[1]])
    assert manifest["num_inputs"] == 11 and manifest["num_videos"] == 6
    assert manifest["num_rejected"] == 5 and manifest["splits"] == {"train": 6}
    assert manifest["num_frames"] == 6 * 32
    assert len(manifest["classes"]) == 2
    report = verify_shards(tmp_path / "shards", sample=6)
    assert report.ok, report.problems
    assert report.decoded == 6


def test_shard_files_have_the_row_schema(videos, tmp_path):
    manifest = run(videos, tmp_path / "shards", videos_per_shard=11)
    assert len(manifest["shards"]) == 1
    parquet = pq.ParquetFile(tmp_path / "shards" / manifest["shards"][0]["file"])
    assert parquet.schema_arrow.equals(shard_schema("video"))
    row = parquet.read().slice(0, 1).to_pylist()[0]
    assert row["codec"] == "vp9" and row["fps"] == 25 and (row["width"], row["height"]) == (
        170, 128)
    assert row["label_name"] in manifest["classes"]
    assert manifest["classes"][row["label"]] == row["label_name"]


def test_row_groups_close_at_the_target_size(tmp_path):
    rows = [{"video_id": f"v{i}", "label": 0, "label_name": "a", "split": "train",
             "source_path": "/x", "fps": 25.0, "num_frames": 16, "height": 128, "width": 170,
             "codec": "vp9", "source_codec": "h264", "payload": bytes([i]) * 20_000}
            for i in range(7)]
    write_shard(Folder(tmp_path), "part.parquet", rows, "video", row_group_bytes=50_000)
    parquet = pq.ParquetFile(tmp_path / "part.parquet")
    assert [parquet.metadata.row_group(i).num_rows for i in range(parquet.num_row_groups)] == [
        3, 3, 1]
    assert parquet.read().to_pylist() == rows
    assert not list(tmp_path.glob(".*tmp*"))  # the temporary file was renamed into place


def test_frames_payload_verifies_and_decodes(videos, tmp_path):
    manifest = run(videos, tmp_path / "frames", payload="frames")
    assert manifest["payload_format"] == "frames" and manifest["codec"] == "jpeg"
    report = verify_shards(tmp_path / "frames", sample=3)
    assert report.ok, report.problems
    table = pq.read_table(tmp_path / "frames" / manifest["shards"][0]["file"])
    assert table.schema.field("payload").type == shard_schema("frames").field("payload").type
    assert len(table.column("payload")[0]) == table.column("num_frames")[0].as_py()


def test_rerun_of_a_finished_job_changes_nothing(videos, tmp_path):
    out = tmp_path / "shards"
    first = run(videos, out)
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")}
    log = tmp_path / "log.txt"
    with open(log, "w") as handle:
        second = run_preprocess(list_dataset("folder", videos), config(), out,
                                local_executor(1), log=handle)
    assert second == first
    assert {p: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")} == stamps
    assert "resuming: 11 of 11 videos already done (6 of 6 shards complete)" in log.read_text()


def test_a_source_that_could_not_be_read_is_retried_by_the_rerun(videos, tmp_path):
    """A video that vanished (or could not be read) between listing and transcoding is a
    retryable rejection: once it is back, the rerun transcodes its shard again and ends with
    the shards of a run that never lost it; content rejections and other shards stay."""
    import shutil
    root = tmp_path / "videos"
    shutil.copytree(videos, root)
    clean = run(root, tmp_path / "clean")
    listing = list_dataset("folder", root)
    sharded = set(shard_ids(tmp_path / "clean"))
    lost = next(video.path for video in listing.videos if video.video_id in sharded)
    moved = tmp_path / "away"
    Path(lost).rename(moved)
    out = tmp_path / "shards"
    first = run_preprocess(listing, config(), out, local_executor(1), log=io.StringIO())
    rejected = {r["source_path"]: r for r in pq.read_table(out / REJECTED).to_pylist()}
    assert first["num_rejected"] == clean["num_rejected"] + 1
    assert rejected[str(lost)]["reason"] == "missing file" and rejected[str(lost)]["retryable"]
    assert not any(r["retryable"] for path, r in rejected.items() if path != str(lost))
    assert "1 of them could not be read: rerunning the preprocess command retries them" in \
        summarize_shards(out)
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")}
    moved.rename(lost)
    log = io.StringIO()
    second = run_preprocess(list_dataset("folder", root), config(), out, local_executor(1),
                            log=log)
    assert "retrying 1 videos an earlier run could not read" in log.getvalue()
    assert second == clean
    for part in (tmp_path / "clean").glob("part-*.parquet"):
        assert (out / part.name).read_bytes() == part.read_bytes()
    rewritten = [name for name, stamp in stamps.items()
                 if (out / name).stat().st_mtime_ns != stamp]
    assert len(rewritten) <= 1  # only the lost video's shard (none if it held only that video)
    assert verify_shards(out, sample=1).ok


def test_a_different_plan_is_refused_unless_overwritten(videos, tmp_path):
    out = tmp_path / "shards"
    run(videos, out)
    with pytest.raises(PlanMismatch, match="different config"):
        run(videos, out, crf=40)
    manifest = run_preprocess(list_dataset("folder", videos), config(crf=40), out,
                              local_executor(1), overwrite=True, log=io.StringIO())
    assert manifest["config"]["crf"] == 40
    assert verify_shards(out, sample=1).ok


def test_pieces_smaller_than_shards_give_the_same_shards_and_resume_per_piece(videos, tmp_path):
    """The unit of work (a piece) is not the unit of output (a shard): 11 inputs in shards of
    5 run as pieces of 2, and a run that stopped after some pieces picks up from them."""
    listing = list_dataset("folder", videos)
    whole = run_preprocess(listing, config(videos_per_shard=5), tmp_path / "whole",
                           local_executor(1), log=io.StringIO(), task_videos=32)
    split = run_preprocess(listing, config(videos_per_shard=5), tmp_path / "split",
                           local_executor(2), log=io.StringIO(), task_videos=2)
    assert split == whole
    for part in sorted(p.name for p in (tmp_path / "whole").glob("part-*.parquet")):
        assert (tmp_path / "split" / part).read_bytes() == (tmp_path / "whole" / part).read_bytes()
    assert not list((tmp_path / "split" / "_progress").glob("*.videos-*"))  # pieces removed
    # A run that finished two pieces of shard 0 and then stopped: the rerun keeps them.
    out = tmp_path / "stopped"
    tasks = plan_shards(listing, config(videos_per_shard=5), out)
    _prepare_folder(Folder(out), _plan_record(listing, config(videos_per_shard=5), tasks), False)
    for start in (0, 2):
        process_piece(PieceTask(0, start, str(out), config(videos_per_shard=5),
                                tasks[0].videos[start:start + 2]))
    log = io.StringIO()
    resumed = run_preprocess(listing, config(videos_per_shard=5), out, local_executor(1),
                             log=log, task_videos=2)
    assert "resuming: 4 of 11 videos already done (0 of 3 shards complete)" in log.getvalue()
    assert resumed == whole


def test_a_stopped_run_s_piece_with_an_unreadable_source_is_retried_and_counted(videos,
                                                                                  tmp_path):
    """Pieces left by a run that stopped before their shard was assembled: a piece whose
    video could not be read is transcoded again (and counted in the retry line), the others
    are kept."""
    import shutil
    root = tmp_path / "videos"
    shutil.copytree(videos, root)
    listing = list_dataset("folder", root)
    whole = run_preprocess(listing, config(videos_per_shard=5), tmp_path / "whole",
                           local_executor(1), log=io.StringIO(), task_videos=2)
    out = tmp_path / "stopped"
    tasks = plan_shards(listing, config(videos_per_shard=5), out)
    _prepare_folder(Folder(out), _plan_record(listing, config(videos_per_shard=5), tasks), False)
    lost = Path(tasks[0].videos[2].path)
    lost.rename(tmp_path / "away")
    for start in (0, 2):
        process_piece(PieceTask(0, start, str(out), config(videos_per_shard=5),
                                tasks[0].videos[start:start + 2]))
    (tmp_path / "away").rename(lost)
    log = io.StringIO()
    resumed = run_preprocess(listing, config(videos_per_shard=5), out, local_executor(1),
                             log=log, task_videos=2)
    assert "retrying 1 videos an earlier run could not read" in log.getvalue()
    assert "resuming: 2 of 11 videos already done (0 of 3 shards complete)" in log.getvalue()
    assert resumed == whole
    for part in (tmp_path / "whole").glob("part-*.parquet"):
        assert (out / part.name).read_bytes() == part.read_bytes()


def test_killed_run_then_rerun_gives_identical_shards(videos, tmp_path):
    command = [CTRLAUG, "preprocess", "--dataset", "folder", "--videos", str(videos),
               "--videos-per-shard", "1", "--workers", "1"]
    subprocess.run([*command, "--out", str(tmp_path / "clean")], check=True,
                   capture_output=True)
    killed = tmp_path / "killed"
    process = subprocess.Popen([*command, "--out", str(killed)], start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first_record = killed / "_progress" / "part-00000.json"
    deadline = time.monotonic() + 120
    while not first_record.exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert first_record.exists()
    assert not (killed / "_manifest.json").exists(), "the run finished before it was killed"
    # One video a shard: the shards with a record (a shard's, or its piece's when the kill
    # fell between writing the shard record and removing the piece's) are the videos done.
    done_before = len({p.name[:len("part-00000")]
                       for p in (killed / "_progress").glob("part-*.json")})
    rerun = subprocess.run([*command, "--out", str(killed)], check=True, capture_output=True,
                           text=True)
    assert f"resuming: {done_before} of" in rerun.stderr
    clean = json.loads((tmp_path / "clean" / "_manifest.json").read_text())
    assert json.loads((killed / "_manifest.json").read_text()) == clean
    assert shard_ids(killed) == shard_ids(tmp_path / "clean")
    assert pq.read_table(killed / REJECTED).equals(pq.read_table(tmp_path / "clean" / REJECTED))
    assert verify_shards(killed, sample=2).ok


def test_verify_finds_corruption_and_missing_shards(videos, tmp_path):
    out = tmp_path / "shards"
    manifest = run(videos, out)
    first = out / manifest["shards"][0]["file"]
    data = bytearray(first.read_bytes())
    data[len(data) // 2] ^= 0xFF
    first.write_bytes(bytes(data))
    (out / manifest["shards"][1]["file"]).unlink()
    report = verify_shards(out)
    assert not report.ok
    assert any("sha256 differs" in p for p in report.problems)
    assert any("is missing" in p for p in report.problems)
    intact = tmp_path / "intact"
    run(videos, intact)
    (intact / manifest["rejected_file"]).unlink()
    report = verify_shards(intact)  # a listed problem, not a traceback
    assert not report.ok and any(manifest["rejected_file"] in p and "missing" in p
                                 for p in report.problems)


def test_inspect_summarises_counts_codecs_and_rejections(videos, tmp_path):
    run(videos, tmp_path / "shards")
    text = summarize_shards(tmp_path / "shards")
    assert "6 videos in 5 shards" in text and "5 rejected of 11 inputs" in text
    assert "payload: video (vp9)" in text and "splits: train 6" in text
    assert "source codecs: h264 6" in text
    for reason in BAD_REASONS.values():
        assert reason in text


def test_cli_bad_annotations_and_bad_shards_give_one_clear_line(tmp_path):
    (tmp_path / "videos").mkdir()
    (tmp_path / "bad.csv").write_text("youtube_id\nabc\n")
    out = subprocess.run([CTRLAUG, "preprocess", "--dataset", "kinetics400", "--videos",
                          str(tmp_path / "videos"), "--annotations", str(tmp_path / "bad.csv"),
                          "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"ctrlaug preprocess: {tmp_path / 'bad.csv'}: header ['youtube_id'] lacks column(s) "
        f"['time_start', 'time_end', 'split']"]
    assert not (tmp_path / "out").exists()
    out = subprocess.run([CTRLAUG, "verify", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 1 and "no _manifest.json" in out.stdout


def test_cli_out_that_is_a_file_gives_one_clear_line(videos, tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    out = subprocess.run([CTRLAUG, "preprocess", "--dataset", "folder", "--videos", str(videos),
                          "--out", str(tmp_path / "afile")], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == (
        f"ctrlaug preprocess: --out {tmp_path / 'afile'} is a file; give a folder (new or "
        f"holding shards)")
    assert (tmp_path / "afile").read_text() == "not a folder"  # nothing lost


def _double_or_crash(task):
    """A piece function for the executor tests: shard 2's process dies (as on a decoder crash
    or the OOM killer), shard 7 raises, every other returns twice its shard; each call leaves
    a marker file."""
    Path(task.marker_dir, str(task.shard)).touch()
    if task.shard == 2:
        os._exit(9)
    if task.shard == 7:
        raise ValueError("a bug in the piece function")
    time.sleep(0.2)
    return 2 * task.shard


def _tasks(tmp_path, shards):
    from types import SimpleNamespace

    return [SimpleNamespace(shard=i, start=0, marker_dir=str(tmp_path),
                            videos=[SimpleNamespace(path=f"/videos/{i}.mp4")])
            for i in shards]


def test_a_worker_that_dies_fails_the_job_after_every_other_piece_naming_its_videos(tmp_path):
    from preprocessing.job import WorkerDied

    results = []
    with pytest.raises(WorkerDied, match=r"shard 2, videos 0-0: /videos/2\.mp4"):
        for result in local_executor(2)(_double_or_crash, _tasks(tmp_path, range(6))):
            results.append(result)
    assert sorted(results) == [0, 2, 6, 8, 10]  # every other piece finished


def test_an_error_cancels_the_pieces_not_started(tmp_path):
    with pytest.raises(ValueError, match="a bug in the piece function"):
        list(local_executor(2)(_double_or_crash, _tasks(tmp_path, [7, *range(10, 30)])))
    # The failing piece, the one beside it and those already queued to the workers ran; the
    # rest were cancelled (all 21 ran before the error surfaced).
    assert len(list(tmp_path.iterdir())) <= 6


def test_a_second_job_on_the_same_local_folder_is_refused_while_the_first_runs(videos,
                                                                               tmp_path):
    import fcntl

    out = tmp_path / "shards"
    out.mkdir()
    with open(out / LOCK, "a") as held:  # what a running job holds
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(PlanMismatch, match="another preprocessing job is writing to"):
            run(videos, out)
        assert not (out / "_progress").exists()  # refused before touching the folder
    assert run(videos, out)["num_videos"] == 6  # free again: the job runs
    assert verify_shards(out).ok
