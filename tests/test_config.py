"""Configuration: defaults, YAML files, dotted overrides, validation errors, and the settings fingerprint."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from conftest import REPO
from fer_pipeline.config import PipelineConfig


def test_shipped_yaml_repeats_every_default():
    shipped = PipelineConfig.load(REPO / "configs" / "pipeline.yaml")
    default = PipelineConfig()
    assert (REPO / shipped.classify.model).resolve() == default.classify.model.resolve()  # relative to the repo
    assert shipped.model_dump(exclude={"classify": {"model"}}) == default.model_dump(exclude={"classify": {"model"}})
    listed = yaml.safe_load((REPO / "configs" / "pipeline.yaml").read_text())
    for section, fields in PipelineConfig().model_dump().items():
        assert set(fields) - {"model_path", "pack", "root", "model"} <= set(listed[section]), section  # insightface: commented


def test_file_then_overrides(tmp_path: Path):
    f = tmp_path / "c.yaml"
    f.write_text("decode:\n  sample_fps: 2\ntrack:\n  min_track_s: 0.5\n")
    cfg = PipelineConfig.load(f, {"decode.sample_fps": 10, "detect.score_threshold": None})
    assert cfg.decode.sample_fps == 10 and cfg.track.min_track_s == 0.5  # override wins, None is no override
    assert cfg.detect.score_threshold == PipelineConfig().detect.score_threshold


@pytest.mark.parametrize("text,field", [("decode:\n  sample_fps: 0\n", "sample_fps"),
                                        ("decode:\n  smaple_fps: 5\n", "smaple_fps"),
                                        ("detect:\n  backend: yolo\n", "backend")])
def test_bad_values_and_unknown_keys_name_the_field(tmp_path: Path, text, field):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ValidationError, match=field):
        PipelineConfig.load(f)


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="config file not found"):
        PipelineConfig.load("/nonexistent/pipeline.yaml")


def test_fingerprint_holds_what_changes_results_only():
    base = PipelineConfig().fingerprint()
    assert base["decode"]["sample_fps"] == 5.0 and "process" not in base["decode"] and "output" not in base
    assert "model" not in base["classify"] and "threads" not in base["detect"]
    fast = PipelineConfig.load(overrides={"classify.batch_size": 7, "decode.process": False, "detect.threads": 1})
    assert fast.fingerprint() == base
    assert PipelineConfig.load(overrides={"track.min_track_s": 2}).fingerprint() != base


def test_sections_are_immutable_and_copies_validate_nothing_away():
    cfg = PipelineConfig()
    with pytest.raises(ValidationError, match="frozen"):
        cfg.decode.sample_fps = 2.0
    slower = cfg.model_copy(update={"decode": cfg.decode.model_copy(update={"sample_fps": 2.0})})
    assert slower.decode.sample_fps == 2.0 and cfg.decode.sample_fps == 5.0
    assert hash(cfg.decode) == hash(PipelineConfig().decode)  # frozen sections can key caches
