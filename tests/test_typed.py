"""Typed configs from raw values: every field type a model option may have, errors that name the key."""

from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest
from click.testing import CliRunner

from vidpipe.errors import VidpipeError
from vidpipe.typed import from_dict


@dataclass
class Options:
    depth: int = 2
    drop: float = 0.1
    window: Optional[int] = None
    pooling: Literal["cls", "mean"] = "cls"
    layers: list[int] = field(default_factory=lambda: [1, 2])
    betas: tuple[float, float] = (0.9, 0.999)
    name: str | None = "x"


def test_every_field_kind_is_coerced_from_strings_and_native_values():
    o = from_dict(Options, {"depth": "3", "drop": 1, "window": "16", "pooling": "mean", "layers": "[4, 5]", "betas": [0.5, "0.6"], "name": "null"})
    assert (o.depth, o.drop, o.window, o.pooling, o.layers, o.betas, o.name) == (3, 1.0, 16, "mean", [4, 5], (0.5, 0.6), None)
    assert from_dict(Options, {"window": None}).window is None and from_dict(Options, {}) == Options()


@pytest.mark.parametrize("raw, message", [
    ({"depth": "two"}, "m.depth: expected int, got 'two'"),
    ({"window": "soon"}, "m.window: expected"),
    ({"pooling": "max"}, "m.pooling: expected one of cls, mean; got 'max'"),
    ({"layers": "[1, 'a']"}, "m.layers: expected JSON"),
    ({"layers": [1, "a"]}, r"m.layers\[1\]: expected int"),
    ({"betas": [0.9]}, "m.betas: expected 2 values, got 1"),
    ({"depht": 3}, r"unknown config key\(s\) \['m.depht'\]"),
])
def test_wrong_values_are_one_line_errors_naming_the_key(raw, message):
    with pytest.raises(VidpipeError, match=message):
        from_dict(Options, raw, "m.")


def test_the_run_config_types_the_chosen_models_options_at_parse_time():
    from vidpipe.models.temporal_vit import TemporalViTConfig
    from vidpipe.train.config import load_config

    cfg = load_config(None, ["model_options.depth=3"], base={"model": "resnet_temporal_vit"})
    assert isinstance(cfg.model_options, TemporalViTConfig) and cfg.model_options.depth == 3
    assert cfg.to_dict()["model_options"]["dim"] == TemporalViTConfig().dim  # the run records every option, defaults included
    with pytest.raises(VidpipeError, match=r"model tsn_mean has no option\(s\) \['depth'\]"):
        load_config(None, ["model_options.depth=3"], base={"model": "tsn_mean"})
    with pytest.raises(VidpipeError, match="unknown model 'nope'"):
        load_config(None, [], base={"model": "nope"})


def test_train_help_and_models_show_a_models_options():
    from vidpipe.cli.main import cli

    res = CliRunner().invoke(cli, ["train", "--model", "resnet_temporal_vit", "--help"])
    assert res.exit_code == 0 and "Options of resnet_temporal_vit" in res.output and "max_frames" in res.output
    res = CliRunner().invoke(cli, ["models", "r2plus1d_18"])
    assert res.exit_code == 0 and "KINETICS400_V1" in res.output and "dropout" in res.output and "torchvision" in res.output
    res = CliRunner().invoke(cli, ["models"])
    for text in ("clips (B,3,T,H,W)", "dense 16x1, 128->112, Kinetics mean/std", "TSN 8 segments", "KINETICS400_V1"):
        assert text in res.output
