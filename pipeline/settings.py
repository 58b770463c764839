"""The pipeline's settings: one typed record built once from YAML and command-line flags.

``configs/pipeline.yaml`` holds every default and is the only place where they live; a
user's ``--config`` file is laid over it (it needs only the keys it changes), then flags
override single values. Unknown keys and wrong types fail at once with one line that names
the key. Per-device values (``stride``, ``max_batch``) are read with :meth:`PerDevice.on`
once the inference device is known. The window length is the checkpoint's, not a setting.
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "configs" / "pipeline.yaml"


@dataclass(frozen=True)
class PerDevice:
    """A value that differs between CUDA and the CPU."""

    cuda: int
    cpu: int

    def on(self, device_type: str) -> int:
        return self.cuda if device_type == "cuda" else self.cpu


@dataclass(frozen=True)
class FormPerDevice:
    """Which form of the model serves, per device type: ``window`` (the whole window for every
    result) or ``continual`` (per-person state, only the new frames: :mod:`stgcn.continual`)."""

    cuda: str
    cpu: str

    def on(self, device_type: str) -> str:
        form = self.cuda if device_type == "cuda" else self.cpu
        if form not in ("window", "continual"):
            raise ValueError(f"setting inference.form.{device_type} must be window or continual, not {form!r}")
        return form


@dataclass(frozen=True)
class CurvePaths:
    """CURVE certificate paths (``python -m pipeline.keys`` makes them); None: not set."""

    server_key: Path | None
    allowed_clients: Path | None
    client_key: Path | None
    server_public: Path | None


@dataclass(frozen=True)
class Endpoints:
    frames: str
    results: str
    curve: CurvePaths


@dataclass(frozen=True)
class CaptureSettings:
    num_poses: int
    pose_model: str | None
    live_queue: int


@dataclass(frozen=True)
class InferenceSettings:
    weights: str | None
    device: str
    form: FormPerDevice
    stride: PerDevice
    min_frames: int
    buffer_frames: int
    max_gap: int
    persons: int
    max_batch: PerDevice
    max_wait_ms: float
    max_pending: int
    stats_interval_s: float
    diagnostics: bool
    streams: list[str] | None
    future: bool


@dataclass(frozen=True)
class ClusterSettings:
    """``run_pipeline.py --cluster``: how workers are placed and restarted as Ray actors."""

    max_restarts: int
    source_share: float
    inference_cpus: float
    start_timeout_s: float
    move_timeout_s: float


@dataclass(frozen=True)
class Settings:
    endpoints: Endpoints
    capture: CaptureSettings
    inference: InferenceSettings
    cluster: ClusterSettings


def merge(base: dict, override: dict) -> dict:
    """Deep-merge ``override`` into a copy of ``base``."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML file that must hold a mapping; ValueError with one line naming the file otherwise."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ValueError(f"{path}: no such config file") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config must be a mapping")
    return data


def _build(cls: type, data: Any, where: str, base_dir: Path) -> Any:
    """``cls`` from a mapping, every field present and of its type."""
    if cls is PerDevice and isinstance(data, int) and not isinstance(data, bool):
        return PerDevice(data, data)  # one value for every device
    if cls is FormPerDevice and isinstance(data, str):
        return FormPerDevice(data, data)
    if not isinstance(data, dict):
        raise ValueError(f"setting {where or 'file'} must be a mapping")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(f"unknown setting {where + '.' if where else ''}{unknown[0]} (known: {', '.join(names)})")
    values = {}
    for name in names:
        key = f"{where}.{name}" if where else name
        if name not in data:
            raise ValueError(f"setting {key} is missing")
        values[name] = _value(hints[name], data[name], key, base_dir)
    return cls(**values)


def _value(hint: Any, value: Any, key: str, base_dir: Path) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key, base_dir)
    args = set(typing.get_args(hint))
    if type(None) in args:
        if value is None:
            return None
        hint = next(a for a in args if a is not type(None))
    if hint is Path:
        if not isinstance(value, str):
            raise ValueError(f"setting {key} must be a path")
        path = Path(value).expanduser()
        return path if path.is_absolute() else base_dir / path
    if typing.get_origin(hint) is list:
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise ValueError(f"setting {key} must be a non-empty list of names, not {value!r}")
        return list(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"setting {key} must be true or false, not {value!r}")
        return value
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"setting {key} must not be negative")
        return value
    if hint is str and isinstance(value, str):
        return value
    raise ValueError(f"setting {key} must be {getattr(hint, '__name__', hint)}, not {value!r}")


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """The defaults, then the YAML at ``path``, then ``overrides`` given as
    ``section__name=value`` (None values are ignored: an unset flag)."""
    data = read_yaml(DEFAULT_CONFIG)
    base_dir = DEFAULT_CONFIG.parent
    if path is not None:
        data = merge(data, read_yaml(Path(path)))
        base_dir = Path(path).parent
    for name, value in overrides.items():
        if value is None:
            continue
        section, key = name.split("__", 1)
        data.setdefault(section, {})[key] = value
    return _build(Settings, data, "", base_dir)
