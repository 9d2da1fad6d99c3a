"""Annotation parsers on small files in the real formats, with their known edge cases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from preprocessing.sources import UNLABELLED, AnnotationError, list_dataset


def touch(root: Path, *relatives: str) -> None:
    for relative in relatives:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


def reasons(listing) -> dict[str, str]:
    return {r.video_id: r.reason for r in listing.rejected}


# Kinetics-400 -------------------------------------------------------------------------------

KINETICS_TRAIN = '''label,youtube_id,time_start,time_end,split,is_cc
"passing American football (in game)",abc123,14,24,train,0
"dribbling basketball",def456,0,10,train,0
"dribbling basketball",missing1,5,15,train,0
"dribbling basketball",abc123,14,24,train,0
"cooking, on campfire",ghi789,30,40,train,1
'''
KINETICS_TEST = '''youtube_id,time_start,time_end,split
zzz000,1,11,test
'''


def test_kinetics_csv_with_quoted_labels_missing_files_duplicates_and_unlabelled_test(tmp_path):
    videos, notes = tmp_path / "videos", tmp_path / "annotations"
    touch(videos, "passing American football (in game)/abc123_000014_000024.mp4",
          "def456_000000_000010.webm", "cooking on campfire/ghi789_000030_000040.mkv",
          "zzz000_000001_000011.mp4")
    notes.mkdir()
    (notes / "train.csv").write_text(KINETICS_TRAIN)
    (notes / "test.csv").write_text(KINETICS_TEST)
    listing = list_dataset("kinetics400", videos, notes)
    assert listing.classes == ["cooking, on campfire", "dribbling basketball",
                               "passing American football (in game)"]
    by_id = {v.video_id: v for v in listing.videos}
    assert set(by_id) == {"abc123_000014_000024", "def456_000000_000010",
                          "ghi789_000030_000040", "zzz000_000001_000011"}
    assert by_id["ghi789_000030_000040"].label == 0
    assert by_id["ghi789_000030_000040"].label_name == "cooking, on campfire"
    assert by_id["zzz000_000001_000011"].label == UNLABELLED
    assert by_id["zzz000_000001_000011"].split == "test"
    assert set(reasons(listing)) == {"missing1_000005_000015", "abc123_000014_000024"}
    assert reasons(listing)["missing1_000005_000015"] == "no file for this annotation row"
    assert reasons(listing)["abc123_000014_000024"].startswith("duplicate video id")
    assert listing.num_inputs == 6
    train_only = list_dataset("kinetics400", videos, notes, split="train")
    assert {v.split for v in train_only.videos} == {"train"}
    assert train_only.num_inputs == 5


@pytest.mark.parametrize("text, message", [
    ("label,youtube_id,split\nx,abc,train\n", "lacks column"),
    ("label,youtube_id,time_start,time_end,split\nx,abc,soon,10,train\n", "must be numbers"),
    ("label,youtube_id,time_start,time_end,split\nx,abc,1\n", "expected 5 fields"),
])
def test_kinetics_malformed_csv_is_an_error_before_any_work(tmp_path, text, message):
    (tmp_path / "bad.csv").write_text(text)
    (tmp_path / "videos").mkdir()
    with pytest.raises(AnnotationError, match=message):
        list_dataset("kinetics400", tmp_path / "videos", tmp_path / "bad.csv")


# UCF-101 ------------------------------------------------------------------------------------

def write_ucf(notes: Path, train: str, test: str) -> None:
    notes.mkdir(parents=True, exist_ok=True)
    (notes / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 HandstandPushups\n3 YoYo\n")
    (notes / "trainlist01.txt").write_text(train)
    (notes / "testlist01.txt").write_text(test)


def test_ucf101_split_files_and_the_handstand_case_mismatch(tmp_path):
    videos, notes = tmp_path / "UCF-101", tmp_path / "ucfTrainTestlist"
    touch(videos, "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi",
          "HandstandPushups/v_HandStandPushups_g08_c01.avi",
          "HandstandPushups/v_HandStandPushups_g01_c01.avi", "YoYo/v_YoYo_g01_c01.avi")
    write_ucf(notes,
              "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\n"
              "HandstandPushups/v_HandStandPushups_g08_c01.avi 2\n"
              "YoYo/v_YoYo_g09_c01.avi 3\n",
              "HandStandPushups/v_HandStandPushups_g01_c01.avi\nYoYo/v_YoYo_g01_c01.avi\n")
    listing = list_dataset("ucf101", videos, notes)
    assert listing.classes == ["ApplyEyeMakeup", "HandstandPushups", "YoYo"]
    by_id = {v.video_id: v for v in listing.videos}
    assert by_id["v_HandStandPushups_g01_c01"].label == 1
    assert by_id["v_HandStandPushups_g01_c01"].split == "test"
    assert by_id["v_HandStandPushups_g08_c01"].path.name == "v_HandStandPushups_g08_c01.avi"
    assert by_id["v_YoYo_g01_c01"].label == 2
    assert reasons(listing) == {"v_YoYo_g09_c01": "no file for this annotation row"}
    assert {v.split for v in list_dataset("ucf101", videos, notes, split="test").videos} == {
        "test"}
    # A split the annotations do not have is an error, not an empty shard folder.
    with pytest.raises(AnnotationError, match=r"no videos in split 'val': this ucf101 listing "
                                              r"has 'test', 'train'"):
        list_dataset("ucf101", videos, notes, split="val")


@pytest.mark.parametrize("train, message", [
    ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 2\n", "does not match class"),
    ("Juggling/v_Juggling_g08_c01.avi 1\n", "not in classInd"),
    ("v_ApplyEyeMakeup_g08_c01.avi 1\n", "expected 'Class/file.avi"),
])
def test_ucf101_malformed_lists_are_errors(tmp_path, train, message):
    (tmp_path / "videos").mkdir()
    write_ucf(tmp_path / "lists", train, "")
    with pytest.raises(AnnotationError, match=message):
        list_dataset("ucf101", tmp_path / "videos", tmp_path / "lists")


def test_ucf101_class_index_must_be_1_based_without_gaps(tmp_path):
    (tmp_path / "videos").mkdir()
    write_ucf(tmp_path / "lists", "", "")
    (tmp_path / "lists" / "classInd.txt").write_text("0 ApplyEyeMakeup\n1 YoYo\n")
    with pytest.raises(AnnotationError, match="1..N"):
        list_dataset("ucf101", tmp_path / "videos", tmp_path / "lists")


# HMDB-51 ------------------------------------------------------------------------------------

def test_hmdb51_split_files(tmp_path):
    videos, notes = tmp_path / "hmdb51", tmp_path / "splits"
    touch(videos, "brush_hair/a.avi", "brush_hair/b.avi", "brush_hair/c.avi", "wave/a.avi",
          "wave/d.avi")
    notes.mkdir()
    (notes / "brush_hair_test_split1.txt").write_text("a.avi 1 \nb.avi 2 \nc.avi 0 \n")
    (notes / "wave_test_split1.txt").write_text("a.avi 1\nd.avi 2\ne.avi 1\n")
    (notes / "wave_test_split2.txt").write_text("a.avi 2\n")
    listing = list_dataset("hmdb51", videos, notes)
    assert listing.classes == ["brush_hair", "wave"]
    by_id = {v.video_id: (v.label, v.split) for v in listing.videos}
    assert by_id == {"brush_hair/a": (0, "train"), "brush_hair/b": (0, "test"),
                     "wave/a": (1, "train"), "wave/d": (1, "test")}
    assert reasons(listing) == {"wave/e": "no file for this annotation row"}


def test_hmdb51_malformed_line_is_an_error(tmp_path):
    (tmp_path / "v").mkdir()
    (tmp_path / "wave_test_split1.txt").write_text("a.avi 3\n")
    with pytest.raises(AnnotationError, match="0\\|1\\|2"):
        list_dataset("hmdb51", tmp_path / "v", tmp_path)


# Diving-48 ----------------------------------------------------------------------------------

def write_diving(notes: Path, train: list, test: list) -> None:
    notes.mkdir(parents=True, exist_ok=True)
    vocab = [["Back", "15som", "05Twis", "FREE"], ["Forward", "25som", "NoTwis", "PIKE"]]
    (notes / "Diving48_vocab.json").write_text(json.dumps(vocab))
    (notes / "Diving48_train.json").write_text(json.dumps(train))
    (notes / "Diving48_test.json").write_text(json.dumps(test))


def test_diving48_json_with_vocabulary_and_frame_ranges(tmp_path):
    videos, notes = tmp_path / "rgb", tmp_path / "notes"
    touch(videos, "-mmq0PT-u8k_00155.mp4", "0LtLS9wROrk_00076.mp4")
    write_diving(notes,
                 [{"vid_name": "-mmq0PT-u8k_00155", "label": 1, "start_frame": 0,
                   "end_frame": 63}, {"vid_name": "gone_00001", "label": 0, "start_frame": 0,
                                      "end_frame": 10}],
                 [{"vid_name": "0LtLS9wROrk_00076", "label": 0, "start_frame": 5,
                   "end_frame": 40}])
    listing = list_dataset("diving48", videos, notes)
    assert listing.classes == ["Back_15som_05Twis_FREE", "Forward_25som_NoTwis_PIKE"]
    by_id = {v.video_id: v for v in listing.videos}
    assert by_id["-mmq0PT-u8k_00155"].label == 1
    assert by_id["0LtLS9wROrk_00076"].frame_range == (5, 40)
    assert by_id["0LtLS9wROrk_00076"].split == "test"
    assert reasons(listing) == {"gone_00001": "no file for this annotation row"}


@pytest.mark.parametrize("entry, message", [
    ({"vid_name": "x", "label": 7, "start_frame": 0, "end_frame": 1}, "outside"),
    ({"vid_name": "x", "label": 0, "start_frame": 0}, "lacks"),
    ({"vid_name": "x", "label": 0, "start_frame": 9, "end_frame": 1}, "ends before"),
])
def test_diving48_malformed_entries_are_errors(tmp_path, entry, message):
    (tmp_path / "rgb").mkdir()
    write_diving(tmp_path / "notes", [entry], [])
    with pytest.raises(AnnotationError, match=message):
        list_dataset("diving48", tmp_path / "rgb", tmp_path / "notes")


def test_diving48_invalid_json_is_an_error(tmp_path):
    (tmp_path / "rgb").mkdir()
    write_diving(tmp_path / "notes", [], [])
    (tmp_path / "notes" / "Diving48_train.json").write_text("[{")
    with pytest.raises(AnnotationError, match="not valid JSON"):
        list_dataset("diving48", tmp_path / "rgb", tmp_path / "notes")


# Folder of class folders --------------------------------------------------------------------

def test_folder_dataset_sorted_classes_and_split(tmp_path):
    touch(tmp_path, "walk/b.mp4", "walk/a.webm", "run/x.avi", "README.txt", ".hidden/y.mp4",
          "run/.DS_Store")
    listing = list_dataset("folder", tmp_path, split="val")
    assert listing.classes == ["run", "walk"]
    assert [(v.video_id, v.label, v.split) for v in listing.videos] == [
        ("run/x", 0, "val"), ("walk/a", 1, "val"), ("walk/b", 1, "val")]


def test_folder_without_class_folders_and_missing_folders_are_errors(tmp_path):
    with pytest.raises(AnnotationError, match="no class folders"):
        list_dataset("folder", tmp_path)
    with pytest.raises(AnnotationError, match="does not exist"):
        list_dataset("folder", tmp_path / "nope")
    with pytest.raises(AnnotationError, match="--annotations is required"):
        list_dataset("ucf101", tmp_path)
