"""Command-line flags generated from AttentionTrainConfig's fields (scripts/train_default_model.py)."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field

import pytest

from fh_screen.models.attention import AttentionTrainConfig

from fh_screen.models.fit import add_config_arguments, config_from_args

NAMES = ("epochs", "batch_size", "learning_rate", "weight_decay", "seed", "threads")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, AttentionTrainConfig, NAMES)
    return parser


def test_every_config_field_is_documented():
    for config_field in dataclasses.fields(AttentionTrainConfig):
        assert config_field.metadata.get("help"), config_field.name


def test_flags_take_the_config_defaults_and_help():
    parser = _parser()
    assert config_from_args(parser.parse_args([]), AttentionTrainConfig, NAMES) == AttentionTrainConfig()
    text = parser.format_help()
    for flag in ("--epochs", "--batch-size", "--learning-rate", "--weight-decay", "--seed", "--threads"):
        assert flag in text
    assert "peak AdamW learning rate" in text and "(default: 0.0015)" in text


def test_parsed_flags_give_the_same_identity_as_keywords():
    args = _parser().parse_args(["--epochs", "3", "--batch-size", "64", "--learning-rate", "2e-3", "--weight-decay", "0"])
    config = config_from_args(args, AttentionTrainConfig, NAMES, device="cuda")
    expected = AttentionTrainConfig(epochs=3, batch_size=64, learning_rate=2e-3, weight_decay=0.0, device="cuda")
    assert config == expected and config.identity() == expected.identity()
    assert isinstance(config.weight_decay, float) and isinstance(config.epochs, int)


def test_a_field_without_a_plain_default_is_refused():
    @dataclass
    class Settings:
        sizes: list = field(default_factory=list, metadata={"help": "layer sizes"})

    with pytest.raises(TypeError, match="Settings.sizes"):
        add_config_arguments(argparse.ArgumentParser(), Settings, ["sizes"])
