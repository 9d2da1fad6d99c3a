"""Shards in an object store: preprocess, verify, inspect, resume and train from s3:// URIs,
against a real S3-compatible server (moto, conftest.s3) on 127.0.0.1, credentials from the
environment."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pytest

from pipeline import build_pretrain_loader
from pipeline.shard_reader import ShardDataset
from preprocessing import shards as layout
from preprocessing.config import PreprocessConfig
from preprocessing.job import local_executor, run_preprocess
from preprocessing.sources import list_dataset
from preprocessing.summary import summarize_shards
from preprocessing.verify import verify_shards

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def s3_shards(s3, videos):
    uri = f"{s3}/synth"
    manifest = run_preprocess(list_dataset("folder", videos),
                              PreprocessConfig(payload="frames", videos_per_shard=2), uri,
                              local_executor(2), log=io.StringIO(), task_videos=1)
    return uri, manifest


def test_preprocessing_writes_a_verifiable_shard_folder_to_the_object_store(s3_shards, videos,
                                                                           tmp_path):
    uri, manifest = s3_shards
    assert manifest["num_videos"] == 6 and manifest["num_rejected"] == 5
    report = verify_shards(uri, sample=2)
    assert report.ok, report.problems
    assert "6 videos in" in summarize_shards(uri)
    local = run_preprocess(list_dataset("folder", videos),
                           PreprocessConfig(payload="frames", videos_per_shard=2),
                           tmp_path / "local", local_executor(1), log=io.StringIO())
    assert local == manifest  # the same shards (sizes, sha256) as on a local disk
    s3fs, path = pafs.FileSystem.from_uri(uri)
    assert ds.dataset(path, filesystem=s3fs, format="parquet").count_rows() == 6
    leftovers = s3fs.get_file_info(pafs.FileSelector(f"{path}/_progress"))
    assert not [i.path for i in leftovers if ".videos-" in i.path]  # pieces were assembled


def test_a_rerun_on_the_object_store_resumes_instead_of_redoing(s3_shards, videos):
    uri, manifest = s3_shards
    log = io.StringIO()
    again = run_preprocess(list_dataset("folder", videos),
                           PreprocessConfig(payload="frames", videos_per_shard=2), uri,
                           local_executor(1), log=log)
    assert again == manifest and "6 shards complete" in log.getvalue()


def test_loaders_and_the_cli_read_shards_from_the_object_store(s3_shards):
    uri, manifest = s3_shards
    dataset = ShardDataset.open(uri)
    assert len(dataset) == 6 and dataset.root.uri == uri
    batch = next(iter(build_pretrain_loader(uri, batch_size=2, levels_per_batch=2, size=32)))
    assert batch.local_frames.shape[-1] == 32 and len(batch.video_id) == 2
    verify = subprocess.run([str(BIN / "ctrlaug"), "verify", uri], capture_output=True,
                            text=True)
    assert verify.returncode == 0 and ": OK: 5 shards, 6 rows" in verify.stdout
    assert json.loads(layout.manifest_bytes(uri))["num_videos"] == 6


def test_a_job_stored_in_the_object_store_trains_checkpoints_and_resumes(s3_shards, s3,
                                                                         tmp_path):
    from mlflow.tracking import MlflowClient

    from orchestration.checkpoint import encoder_from, load_checkpoint
    from orchestration.experiment import load_config
    from orchestration.pretrain import run_pretraining

    shards, _ = s3_shards
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "tiny-cpu.toml", [
        f"--data.shards={shards}", f"--run.storage_path={s3}/runs", "--run.name=on-s3",
        f"--run.tracking_uri={uri}", "--run.ray=false", "--run.workers=1",
        "--data.batch_size=2", "--optim.epochs=1", "--model.width=4", "--augment.size=32",
        "--augment.levels_per_batch=2"])
    metrics = run_pretraining(config)
    assert metrics["checkpoint"] == f"{s3}/runs/on-s3/checkpoint.pt"
    assert load_checkpoint(metrics["checkpoint"])["step"] == 3  # 6 videos, batches of 2
    encoder, run_id = encoder_from(metrics["checkpoint"])
    assert run_id == metrics["mlflow_run_id"] and encoder.width == 4
    again = run_pretraining(config)  # resumes from the checkpoint in the bucket: no new step
    steps = {m.step for m in MlflowClient(uri).get_metric_history(run_id, "loss")}
    assert again["mlflow_run_id"] == run_id and steps == {1, 2, 3}
    with pytest.raises(ValueError, match="is an object store: give run.tracking_uri"):
        run_pretraining(load_config(None, [f"--data.shards={shards}", "--data.batch_size=2",
                                           f"--run.storage_path={s3}/runs"]))


def test_raw_videos_in_the_object_store_shard_like_the_same_videos_on_disk(s3, videos,
                                                                          tmp_path):
    import pyarrow.parquet as pq

    from preprocessing.storage import Folder

    s3fs, bucket = pafs.FileSystem.from_uri(s3)
    pafs.copy_files(str(videos), f"{bucket}/raw", source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=s3fs)
    config = PreprocessConfig(payload="frames", videos_per_shard=2)
    listing = list_dataset("folder", f"{s3}/raw")
    assert all(str(v.path).startswith(f"{s3}/raw/") for v in listing.videos)
    remote = run_preprocess(listing, config, f"{s3}/from-raw", local_executor(2),
                            log=io.StringIO())
    local = run_preprocess(list_dataset("folder", videos), config, tmp_path / "local",
                           local_executor(1), log=io.StringIO())

    def rejections(folder):
        table = pq.read_table(Folder(folder).open_input(remote["rejected_file"]))
        return sorted(zip(table["video_id"].to_pylist(), table["reason"].to_pylist(),
                          strict=True))

    assert remote["num_videos"] == local["num_videos"] == 6
    assert rejections(f"{s3}/from-raw") == rejections(tmp_path / "local")  # same reasons
    assert verify_shards(f"{s3}/from-raw", sample=2).ok
    shards = ShardDataset.open(f"{s3}/from-raw")
    assert len(shards) == 6
    missing = list_dataset("folder", f"{s3}/raw")
    rejected = {video_id for video_id, _ in rejections(f"{s3}/from-raw")}
    gone = next(v for v in missing.videos if v.video_id not in rejected)
    s3fs.delete_file(str(gone.path).removeprefix("s3://"))  # deleted after the listing
    again = run_preprocess(missing, config, f"{s3}/after-delete", local_executor(1),
                           log=io.StringIO())
    assert again["num_videos"] == 5 and again["num_rejected"] == remote["num_rejected"] + 1
    assert (gone.video_id, "missing file") in rejections(f"{s3}/after-delete")
    with pytest.raises(Exception, match="does not exist or is not a folder"):
        list_dataset("folder", f"{s3}/no-such-folder")


def test_object_keys_with_spaces_and_uris_with_options_shard_every_video(s3, videos,
                                                                          monkeypatch):
    # Kinetics class folders hold spaces ("air drumming"); pyarrow's URI parser refuses them,
    # so every video of such a folder used to be rejected. Endpoint options in the URI
    # (?endpoint_override=...) used to end up inside every video's key.
    import os

    s3fs, bucket = pafs.FileSystem.from_uri(s3)
    for path in Path(videos).rglob("*"):
        if path.is_file():
            relative = path.relative_to(videos)
            s3fs.create_dir(f"{bucket}/raw kinetics/class {relative.parent}")
            with s3fs.open_output_stream(f"{bucket}/raw kinetics/class {relative}") as out:
                out.write(path.read_bytes())
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # only the URI's options say where the store is
    host = endpoint.removeprefix("http://")
    root = f"{s3}/raw kinetics?endpoint_override={host}&scheme=http"
    listing = list_dataset("folder", root)
    assert all(str(v.path).endswith(f"?endpoint_override={host}&scheme=http")
               for v in listing.videos)
    manifest = run_preprocess(listing, PreprocessConfig(payload="frames", videos_per_shard=2),
                              f"{s3}/spaced?endpoint_override={host}&scheme=http",
                              local_executor(1), log=io.StringIO())
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    on_disk = list_dataset("folder", videos)
    assert len(listing.videos) == len(on_disk.videos)
    assert (manifest["num_videos"], manifest["num_rejected"]) == (6, 5)  # as on a local disk
    assert all(name.startswith("class ") for name in manifest["classes"])
    assert verify_shards(f"{s3}/spaced", sample=2).ok


def test_a_failed_write_to_the_object_store_leaves_no_object(s3):
    from preprocessing.storage import Folder

    folder = Folder(f"{s3}/writes")
    with pytest.raises(RuntimeError, match="the network went away"), \
            folder.open_output("checkpoint.pt") as stream:
        stream.write(b"the first half of a checkpoint")
        raise RuntimeError("the network went away")
    import gc

    gc.collect()  # the stream of the failed block is gone (S3 streams complete when destroyed)
    assert not folder.exists("checkpoint.pt")
    folder.write_bytes("checkpoint.pt", b"a whole checkpoint")  # a later write succeeds
    assert folder.read_bytes("checkpoint.pt") == b"a whole checkpoint"
