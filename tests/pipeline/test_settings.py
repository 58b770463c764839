"""The settings record: defaults from configs/pipeline.yaml, a config laid over them, flags, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.settings import DEFAULT_CONFIG, PerDevice, load_settings


def test_defaults_come_from_the_shipped_yaml_only() -> None:
    s = load_settings()
    assert s.inference.stride == PerDevice(cuda=1, cpu=1) and s.inference.form.on("cpu") == "continual"
    assert s.inference.max_batch.on("cuda") == 64 and s.inference.persons == 5
    assert s.inference.buffer_frames == 300 and s.inference.diagnostics is False
    assert s.capture.live_queue == 8 and s.endpoints.curve.server_key is None
    assert s.inference.streams is None, "all the model's input streams"
    assert "stride:" in DEFAULT_CONFIG.read_text()


def test_a_config_changes_only_its_keys_and_flags_override(tmp_path: Path) -> None:
    config = tmp_path / "mine.yaml"
    config.write_text("inference:\n  stride: {cpu: 2}\n  max_batch: 16\nendpoints:\n  curve:\n"
                      "    server_key: keys/server.key_secret\n")
    s = load_settings(config)
    assert s.inference.stride == PerDevice(cuda=1, cpu=2), "the other device keeps its default"
    assert s.inference.max_batch == PerDevice(16, 16), "one number: every device"
    assert s.endpoints.curve.server_key == tmp_path / "keys" / "server.key_secret", "relative to the config"
    assert s.inference.persons == 5
    assert load_settings(config, inference__streams=["joint"]).inference.streams == ["joint"]
    s = load_settings(config, inference__stride=5, inference__weights=None)
    assert s.inference.stride == PerDevice(5, 5) and s.inference.weights is None


@pytest.mark.parametrize("text, message", [
    ("inference:\n  strde: 2\n", "unknown setting inference.strde"),
    ("inference:\n  persons: two\n", "setting inference.persons must be int"),
    ("inference:\n  persons: -1\n", "inference.persons must not be negative"),
    ("inference:\n  diagnostics: 1\n", "inference.diagnostics must be true or false"),
    ("capture: 3\n", "setting capture must be a mapping"),
    ("inference:\n  streams: joint\n", "setting inference.streams must be a non-empty list of names"),
    ("- a list\n", "a config must be a mapping"),
    ("inference: [\n", "not valid YAML"),
])
def test_bad_settings_stop_with_one_line_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        load_settings(config)


def test_a_missing_config_file_is_named() -> None:
    with pytest.raises(ValueError, match="nope.yaml: no such config file"):
        load_settings("nope.yaml")
