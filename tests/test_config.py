"""Model and loss configs reject wrong types and values on construction."""

from __future__ import annotations

import pytest

from model.config import LossConfig, ModelConfig


def test_defaults_are_the_papers_settings():
    model, loss = ModelConfig(), LossConfig()
    assert model.feature_dim == 512 and model.num_clips == 4
    assert model.temporal_head == "gru" and model.projection_dim == 128
    assert (loss.contrast, loss.mi, loss.td, loss.temperature) == ("region", True, True, 0.07)


@pytest.mark.parametrize("field, value", [
    ("width", "64"), ("width", 64.0), ("width", True), ("temporal_head", "lstm"),
    ("num_clips", None),
])
def test_model_config_rejects_wrong_types(field, value):
    with pytest.raises(TypeError, match=f"ModelConfig.{field}"):
        ModelConfig(**{field: value})


@pytest.mark.parametrize("field, value", [
    ("contrast", "global"), ("mi", 1), ("temperature", "0.07"), ("td_weight", False),
])
def test_loss_config_rejects_wrong_types(field, value):
    with pytest.raises(TypeError, match=f"LossConfig.{field}"):
        LossConfig(**{field: value})


@pytest.mark.parametrize("config, kwargs, message", [
    (ModelConfig, {"width": 0}, "width"),
    (ModelConfig, {"global_unstrided_stages": 4}, "global_unstrided_stages"),
    (ModelConfig, {"num_clips": 9}, "num_clips"),
    (LossConfig, {"temperature": 0.0}, "temperature"),
    (LossConfig, {"mine_ema_rate": 1.0}, "mine_ema_rate"),
    (LossConfig, {"mi_weight": -1.0}, "mi_weight"),
    (LossConfig, {"contrast": "none", "mi": False, "td": False}, "at least one objective"),
])
def test_configs_reject_out_of_range_values(config, kwargs, message):
    with pytest.raises(ValueError, match=message):
        config(**kwargs)


def test_an_int_is_accepted_where_a_float_is_expected():
    assert LossConfig(temperature=1).temperature == 1
