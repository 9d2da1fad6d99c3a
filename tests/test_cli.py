"""The `ctrlaug` entry point: --help, --version, and a light import path."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

# The console script installed beside this interpreter (make test installs the package).
CTRLAUG = str(Path(sys.executable).parent / "ctrlaug")


def test_version_and_help():
    out = subprocess.run([CTRLAUG, "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"ctrlaug {version('ctrlaug')}"
    out = subprocess.run([CTRLAUG, "--help"], capture_output=True, text=True, check=True)
    assert "usage: ctrlaug" in out.stdout and "demo" in out.stdout


def test_help_does_not_import_torch():
    code = ("import sys; from orchestration.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch imported by --help'")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_unknown_command_fails_with_usage():
    out = subprocess.run([sys.executable, "-m", "orchestration.cli", "frobnicate"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "invalid choice" in out.stderr


def test_config_lists_every_key_with_type_default_and_resolved_value():
    import dataclasses

    from orchestration.experiment import ExperimentConfig

    config = str(Path(__file__).resolve().parents[1] / "configs" / "tiny-cpu.toml")
    out = subprocess.run([CTRLAUG, "config", "--config", config, "--optim.lr=0.01"],
                         capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    keys = [line.split()[0] for line in lines[1:]]
    expected = [f"{section.name}.{field.name}"
                for section in dataclasses.fields(ExperimentConfig)
                for field in dataclasses.fields(section.default_factory())]
    assert keys == expected  # every key, in section order
    row = {line.split()[0]: line for line in lines}
    assert row["optim.lr"].split()[1:] == ["float", "0.001", "0.01", "*"]
    assert row["model.width"].split()[1:] == ["int", "64", "8", "*"]  # from the file
    assert row["loss.mi"].split()[1:] == ["bool", "True", "True"]
    bad = subprocess.run([CTRLAUG, "config", "--model.widht=3"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip() == "ctrlaug config: unknown key model.widht"
    help_text = subprocess.run([CTRLAUG, "pretrain", "--help"], capture_output=True, text=True,
                               check=True).stdout
    assert "`ctrlaug config` lists every key" in " ".join(help_text.split())


def test_options_take_defaults_and_choices_from_the_configs():
    from preprocessing.config import PreprocessConfig
    from preprocessing.synth import SynthConfig

    out = subprocess.run([CTRLAUG, "preprocess", "--help"], capture_output=True, text=True,
                         check=True).stdout
    flat = " ".join(out.split())
    assert f"--short-side SHORT_SIDE (default {PreprocessConfig.short_side})" in flat
    assert "--format {video,frames}" in flat and "--codec {vp9,h264}" in flat
    synth = " ".join(subprocess.run([CTRLAUG, "synth", "--help"], capture_output=True,
                                    text=True, check=True).stdout.split())
    assert f"--classes CLASSES (default {SynthConfig.classes})" in synth
    assert "--codec {h264,vp9,mpeg4,mjpeg}" in synth
    bad = subprocess.run([CTRLAUG, "synth", "--out", "/tmp/x", "--classes", "99"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("ctrlaug synth: classes must be in 1..")


def test_ablate_rejects_a_bad_appearance_probe_before_building_anything(tmp_path):
    config = str(Path(__file__).resolve().parents[1] / "configs" / "ablation-cpu.toml")
    base = [CTRLAUG, "ablate", "--config", config, "--table", "7", "--out", str(tmp_path / "a")]
    negative = subprocess.run([*base, "--appearances", "-1"], capture_output=True, text=True)
    assert negative.returncode == 2
    assert negative.stderr.strip() == "ctrlaug ablate: --appearances must be >= 0, got -1"
    with_shards = subprocess.run([*base, "--appearances", "8", "--train", str(tmp_path),
                                  "--test", str(tmp_path)], capture_output=True, text=True)
    assert with_shards.returncode == 2 and "does not apply to --train/--test" in with_shards.stderr
    assert not (tmp_path / "a").exists()  # nothing built, nothing written
