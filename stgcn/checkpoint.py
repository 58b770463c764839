"""Loading and saving checkpoints: the original ST-GCN state dicts and the project's own.

The project's checkpoints are ``{"format": "stgcn-stream", "version": 1, "state_dict": ...,
"config": {...}, "meta": {...}}`` where ``config`` carries everything serving needs: the
model arguments, layout, class names, normalisation and window length.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from .graph import get_layout, layout_for_joints
from .model import STGCN
from .streams import MultiStream, check_streams, parents

log = logging.getLogger(__name__)

FORMAT = "stgcn-stream"
FORMAT_VERSION = 1
DEFAULT_WINDOW = 300  # frames a checkpoint without its own window is served on (the original ST-GCN clips)
DEFAULT_PERSONS = 2  # person slots (M) of a checkpoint that does not say: the st-gcn data format's


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and what is wrong."""


def build_model(model_cfg: dict[str, Any]) -> STGCN | MultiStream:
    """Build the network of the ``config["model"]`` section of a checkpoint or YAML config.

    ``streams`` (default ``[joint]``) lists the input streams; more than the joint stream gives a
    :class:`~stgcn.streams.MultiStream` of one ST-GCN per stream (``stream_weights``: their
    weights in the fused probability, default equal), the predictor head on the first stream.
    """
    cfg = dict(model_cfg)
    streams = check_streams(cfg.pop("streams", None) or ["joint"])
    weights = cfg.pop("stream_weights", None)
    if streams == ["joint"]:
        return STGCN(**cfg)
    layout = (cfg.get("graph_args") or {}).get("layout", "openpose")
    coords = cfg.get("coords") or get_layout(layout).dims
    if cfg.get("predictor") and streams[0] != "joint":
        raise ValueError(f"streams {streams}: the next-frame predictor needs the joint stream first")
    nets = {name: STGCN(**{**cfg, "predictor": bool(cfg.get("predictor")) and i == 0})
            for i, name in enumerate(streams)}
    return MultiStream(nets, parents(layout), coords, weights)


def _read(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt/truncated files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({reason[:200]})") from None


def _infer_original_config(path: Path, state: dict[str, torch.Tensor], layout: str | dict | None,
                           num_class: int | None) -> dict[str, Any]:
    """Model arguments for an original-format state dict, inferred from tensor shapes."""
    for key in ("A", "data_bn.weight", "fcn.weight"):
        if key not in state:
            raise CheckpointError(f"{path}: not an ST-GCN state dict (missing key {key!r})")
    k, v, _ = state["A"].shape
    if layout is None:
        try:
            layout = layout_for_joints(v)
        except ValueError as exc:
            raise CheckpointError(f"{path}: {exc}; pass layout=") from None
    lay = get_layout(layout)
    if lay.num_node != v:
        raise CheckpointError(f"{path}: checkpoint has {v} joints but layout {lay.name!r} has {lay.num_node}")
    in_channels, rem = divmod(state["data_bn.weight"].numel(), v)
    if rem:
        raise CheckpointError(f"{path}: data_bn size {state['data_bn.weight'].numel()} is not a multiple of {v} joints")
    ckpt_classes = state["fcn.weight"].shape[0]
    if num_class is not None and num_class != ckpt_classes:
        raise CheckpointError(f"{path}: checkpoint has {ckpt_classes} classes, num_class={num_class} was asked for")
    strategy = {1: "uniform", 3: "spatial"}.get(k, "distance")
    graph_args: dict[str, Any] = {"layout": layout, "strategy": strategy}
    if strategy == "distance":
        graph_args["max_hop"] = k - 1
    return {
        "in_channels": in_channels,
        "num_class": ckpt_classes,
        "graph_args": graph_args,
        "edge_importance_weighting": "edge_importance.0" in state,
        "predictor": any(key.startswith("predictor.") for key in state),
    }


def _load_state(path: Path, model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Strict load; BatchNorm's ``num_batches_tracked`` may be absent (older PyTorch)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
              for k in expected if k in state and state[k].shape != expected[k].shape]
    problems = []
    if missing:
        problems.append(f"missing keys {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
    if shapes:
        problems.append(f"shape mismatch {shapes[:3]}{' ...' if len(shapes) > 3 else ''}")
    if problems:
        raise CheckpointError(f"{path}: does not match the model: " + "; ".join(problems))
    bad = [k for k, t in state.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise CheckpointError(f"{path}: non-finite values in {bad[:5]}")
    full = {k: state.get(k, expected[k]).to(expected[k].dtype) for k in expected}
    model.load_state_dict(full, strict=True)


def load_model(path: str | os.PathLike, *, layout: str | dict | None = None, num_class: int | None = None,
               device: str | torch.device = "cpu") -> STGCN | MultiStream:
    """Load an eval-mode ST-GCN from an original or project checkpoint.

    Original checkpoints are plain state dicts (``module.`` prefix and float16 allowed); their
    layout and class count are inferred from the tensors unless given. The returned model has
    a ``config`` dict attribute (model arguments with the layout, class_names, normalisation,
    window, ...).
    """
    path = Path(path)
    obj = _read(path)
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        if obj.get("version") != FORMAT_VERSION:
            raise CheckpointError(f"{path}: checkpoint format version {obj.get('version')} "
                                  f"is not supported (expected {FORMAT_VERSION})")
        config = dict(obj.get("config") or {})
        state = obj.get("state_dict")
        if "model" not in config or not isinstance(state, dict):
            raise CheckpointError(f"{path}: project checkpoint without model config or state_dict")
        ckpt_classes = config["model"].get("num_class")
        if num_class is not None and num_class != ckpt_classes:
            raise CheckpointError(f"{path}: checkpoint has {ckpt_classes} classes, num_class={num_class} was asked for")
        if layout is not None and get_layout(layout).name != get_layout(config["model"]["graph_args"]["layout"]).name:
            raise CheckpointError(f"{path}: checkpoint layout {config['model']['graph_args']['layout']!r} "
                                  f"does not match layout={layout!r}")
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}
        model_cfg = _infer_original_config(path, state, layout, num_class)
        config = {"model": model_cfg, "normalisation": {"name": "kinetics"} if model_cfg["in_channels"] == 3
                  and get_layout(model_cfg["graph_args"]["layout"]).dims == 2 else {"name": "none"}}
    else:
        raise CheckpointError(f"{path}: neither an ST-GCN state dict nor a {FORMAT} checkpoint")
    try:
        model = build_model(config["model"])
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{path}: bad model config ({exc})") from None
    _load_state(path, model, state)
    config.pop("layout", None)  # older checkpoints repeated model.graph_args.layout here
    config["window"] = int(config.get("window") or DEFAULT_WINDOW)
    config["persons"] = int(config.get("persons") or DEFAULT_PERSONS)
    model.config = config
    return model.to(device).eval()


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, config: dict[str, Any],
                    meta: dict[str, Any] | None = None, extra: dict[str, Any] | None = None,
                    dtype: torch.dtype | None = None) -> Path:
    """Write a project checkpoint atomically (temporary file, fsync, rename); ``dtype`` stores the
    floating-point tensors in it (e.g. float16 for a shipped file; loading casts them back)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = getattr(model, "module", model)
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    payload = {"format": FORMAT, "version": FORMAT_VERSION, "state_dict": state,
               "config": config, "meta": meta or {}}
    if extra:
        payload.update(extra)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        cause = _os_error(exc)
        if cause is not None and cause is not exc:  # torch's zip writer wraps e.g. ENOSPC in a RuntimeError
            raise OSError(cause.errno, f"{path}: checkpoint not written ({cause.strerror or cause})") from None
        raise
    return path


def _os_error(exc: BaseException | None) -> OSError | None:
    """The OSError in ``exc``'s chain of causes, if any."""
    seen = 0
    while exc is not None and seen < 16:
        if isinstance(exc, OSError):
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None
