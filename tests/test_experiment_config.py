"""The experiment config: shipped configs, overrides, and errors raised before any work."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestration.experiment import ConfigError, config_from_dict, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_shipped_configs_reproduce_the_papers_settings():
    ucf = load_config(CONFIGS / "ucf101.toml")
    k400 = load_config(CONFIGS / "kinetics400.toml")
    for config in (ucf, k400):
        assert (config.model.width, config.model.num_clips, config.data.batch_size) == (64, 4, 128)
        assert (config.optim.lr, config.optim.weight_decay, config.optim.decay_factor) == (
            1e-3, 1e-5, 0.1)
        assert config.model.feature_dim == 512 and config.augment.levels_per_batch == 32
    assert (ucf.optim.epochs, ucf.optim.decay_epochs) == (200, (150,))
    assert (k400.optim.epochs, k400.optim.decay_epochs) == (100, (70,))
    tiny = load_config(CONFIGS / "tiny-cpu.toml")
    assert tiny.run.workers == 2 and not tiny.run.gpu


def test_overrides_are_typed_and_round_trip():
    config = load_config(CONFIGS / "tiny-cpu.toml", [
        "--optim.lr=3e-4", "--loss.td=false", "--optim.decay_epochs=[1,2]",
        "--data.shards=/data/x", "--data.split=none", "--model.temporal_head=vcop",
        "--run.name=job-7"])
    assert config.optim.lr == 3e-4 and config.loss.td is False
    assert config.optim.decay_epochs == (1, 2) and config.data.split is None
    assert config.model.temporal_head == "vcop" and config.run.name == "job-7"
    assert config_from_dict(config.to_dict()) == config
    assert config.flat()["optim.lr"] == 3e-4


@pytest.mark.parametrize("overrides, message", [
    (["--optim.lrr=1"], "unknown key optim.lrr"),
    (["--optim.lr=fast"], "cannot parse"),
    (["--model.temporal_head=lstm"], "temporal_head must be one of"),
    (["--data.batch_size=1.5"], "batch_size must be int"),
    (["--trainer.workers=2"], "section one of"),
    (["workers=2"], "must look like --section.key=value"),
    (["--model.num_clips=3"], "must match"),
    (["--run.workers=8"], "fewer than 2 videos each"),
    (["--loss.temperature=0"], "temperature must be > 0"),
    (["--data.decode=nvdec"], "decode must be one of"),
    (["--data.decode=split"], "decodes on a GPU, but run.gpu = false"),
    (["--data.decode_gpu_share=1.2"], r"decode_gpu_share must be in \[0, 1\]"),
    (["--data.backend=reference", "--data.decode=gpu"], "needs data.backend = 'dali'"),
    (["--augment.jitter=false"], "loss.mi .* augment.jitter = false gives every view level 0"),
    (["--augment.levels_per_batch=1"], "loss.mi .* a batch holds 1 level"),
    (["--augment.level_bins=[1,1,1,1,1]"], "loss.mi .* a batch holds 1 level"),
])
def test_bad_overrides_are_clear_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(CONFIGS / "tiny-cpu.toml", overrides)


def test_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")
    (tmp_path / "a.toml").write_text("[optimizer]\nlr = 1\n")
    with pytest.raises(ConfigError, match=r"unknown section \[optimizer\]"):
        load_config(tmp_path / "a.toml")
    (tmp_path / "b.toml").write_text("[optim]\nlearning_rate = 1\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(tmp_path / "b.toml")
    (tmp_path / "c.toml").write_text("[optim\n")
    with pytest.raises(ConfigError):
        load_config(tmp_path / "c.toml")


@pytest.mark.parametrize("kwargs, message", [
    ({"epochs": 0}, "epochs must be >= 1"), ({"batch_size": 1, "workers": 2}, "batch_size"),
    ({"backend": "pyav"}, "FinetuneConfig.backend"), ({"ray": False, "workers": 2}, "one worker"),
])
def test_finetune_config_is_validated_like_every_section(kwargs, message):
    from orchestration.finetune import FinetuneConfig

    with pytest.raises((TypeError, ValueError), match=message):
        FinetuneConfig(**kwargs)
