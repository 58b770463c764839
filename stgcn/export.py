"""Export a checkpoint to ONNX and check the file against PyTorch with ONNX Runtime.

    python -m stgcn.export --weights CKPT --onnx OUT [--window T] [--opset N] [--no-check]

Inputs ``x`` (N, C, T, V, M) and, for a checkpoint with the next-frame head, ``recent``
(N, C, K, V, M) (its last K = ``predictor_history`` frames, 2 for the original head), both in
model coordinates (what ``transform.prepare`` gives); outputs ``logits`` (N, num_class) and
``next_frame`` (N, C, V, M), or (N, C, H, V, M) for a head that predicts H frames ahead. The batch axis is dynamic, T is fixed
(the checkpoint's window unless ``--window``). The check runs real skeleton windows (UTD-MHAD
from ``shared/data`` unless ``--check-data``) through both runtimes at batch 1 and batch
``--check-batch`` and reports the largest relative error: max |onnx - torch| over max |torch|,
per output.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.cli import add_debug_flag, run_cli, setup_logging

from .checkpoint import load_model
from .model import STGCN

log = logging.getLogger("stgcn.export")

MIN_OPSET = 18  # the torch.onnx (dynamo) exporter writes opset 18 or later
DEFAULT_OPSET = 18
TOLERANCE = 1e-4
INPUTS = ("x", "recent")
OUTPUTS = ("logits", "next_frame")
_REPO = Path(__file__).resolve().parent.parent


def default_check_data() -> Path | None:
    """The UTD-MHAD folder of ``shared/data`` beside the repository (or the working directory), if present."""
    for base in (_REPO.parent, Path.cwd().parent, Path.cwd()):
        path = base / "shared" / "data" / "utd-mhad"
        if path.is_dir():
            return path
    return None


def model_window(model: STGCN, window: int | None = None) -> int:
    """The window to export: ``window`` if given, else the checkpoint's (``load_model`` always sets one)."""
    return int(window or model.config["window"])


def input_names(model: STGCN) -> tuple[str, ...]:
    """``("x", "recent")`` for a model with the next-frame head, else ``("x",)``."""
    return INPUTS if model.predictor is not None else INPUTS[:1]


def export_onnx(model: STGCN, path: str | os.PathLike, window: int, opset: int = DEFAULT_OPSET,
                persons: int = 2) -> Path:
    """Write ``model`` (eval mode, CPU) as ONNX with a dynamic batch axis; atomic (temporary file, rename)."""
    try:
        import onnx
        import onnxscript  # noqa: F401  (the exporter's translator)
    except ImportError as exc:
        raise ImportError(f"ONNX export needs onnx and onnxscript ({exc}); pip install -r requirements.txt") from None
    if not MIN_OPSET <= opset <= onnx.defs.onnx_opset_version():
        raise ValueError(f"--opset {opset}: the exporter writes opsets {MIN_OPSET} to "
                         f"{onnx.defs.onnx_opset_version()}")
    if window < 2:
        raise ValueError(f"--window {window}: needs at least 2 frames")
    if persons < 1:
        raise ValueError(f"--persons {persons}: needs at least 1")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    c, v = model.data_bn.num_features // model.A.shape[-1], model.A.shape[-1]
    args: tuple[torch.Tensor, ...] = (torch.zeros(2, c, window, v, persons),)
    if model.predictor is not None:
        args += (torch.zeros(2, c, model.predictor.history, v, persons),)
    batch = torch.export.Dim("batch", min=1)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with warnings.catch_warnings():  # the exporter's deprecation notes are not the user's business
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", UserWarning)
            torch.onnx.export(model, args, str(tmp), input_names=list(INPUTS[: len(args)]),
                              output_names=list(OUTPUTS[: len(args)]),
                              dynamic_shapes=tuple({0: batch} for _ in args), opset_version=opset,
                              dynamo=True, external_data=False, verbose=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _windows_from_clips(clips: list[np.ndarray], window: int, count: int) -> np.ndarray:
    """``count`` raw windows ``(count, C, window, V, M)`` cut from clips ``(C, T, V, M)``, round robin.

    Each window ends on a frame of the clip that has a skeleton and a frame before it (so the
    predictor's two recent frames are real); a clip used j times gives windows ending at j
    points spread over it. Shorter history is zero on the left, as in the live ring buffer.
    """
    from .data.augment import valid_range

    spans = []
    for clip in clips:
        begin, end = valid_range(clip)
        if end - begin >= 2:
            spans.append((clip, begin, end))
    if not spans:
        raise ValueError("no clip of the check data holds two frames with a skeleton")
    out = np.zeros((count,) + spans[0][0].shape[:1] + (window,) + spans[0][0].shape[2:], np.float32)
    uses = [count // len(spans) + (i < count % len(spans)) for i in range(len(spans))]
    k = 0
    for (clip, begin, end), n in zip(spans, uses):
        for last in np.linspace(end - 1, begin + 1, n, dtype=int) if n > 1 else [end - 1]:
            start = max(begin, last + 1 - window)
            out[k, :, window - (last + 1 - start):] = clip[:, start:last + 1]
            k += 1
    return out


def _read_clips(source: Path, layout: str, persons: int, count: int) -> list[np.ndarray]:
    """Raw clips ``(C, T, V, M)`` from a UTD-MHAD folder or ``.mat``, an st-gcn ``.npy`` or a Kinetics JSON clip."""
    from .graph import get_layout

    if not source.exists():
        raise ValueError(f"{source}: no such check data")
    if source.suffix == ".npy":
        from .data.dataset import inspect_npy

        shape, _, _ = inspect_npy(source)
        if len(shape) != 5 or shape[3] != get_layout(layout).num_node:
            raise ValueError(f"{source}: shape {shape} is not (N, C, T, {get_layout(layout).num_node}, M)")
        arr = np.load(source, mmap_mode="r")
        picks = np.linspace(0, shape[0] - 1, min(count, shape[0]), dtype=int)
        clips = []
        for i in picks:
            clip = np.zeros(shape[1:4] + (persons,), np.float32)
            clip[..., : min(persons, shape[4])] = arr[i, ..., :persons]
            clips.append(clip)
        return clips
    if source.suffix == ".json":
        from .convert.kinetics import read_kinetics_json
        from .data.dataset import kinetics_to_raw

        if get_layout(layout).num_node != 18:
            raise ValueError(f"{source}: a Kinetics clip has 18 openpose joints, the model has layout {layout!r}")
        clip, _ = read_kinetics_json(source, frames=300, persons=persons)
        return [kinetics_to_raw(clip)]
    from .convert.utd_mhad import list_utd_mhad, read_utd_mhad

    files = [source] if source.suffix == ".mat" else [Path(r["file"]) for r in list_utd_mhad(source)]
    picks = np.linspace(0, len(files) - 1, min(count, len(files)), dtype=int)
    return [read_utd_mhad(files[i], layout, frames=300, persons=persons) for i in picks]


def check_inputs(model: STGCN, window: int, count: int = 8, source: str | os.PathLike | None = None,
                 persons: int = 2) -> dict[str, np.ndarray]:
    """Real windows prepared with the checkpoint's transform: ``{"x": ...[, "recent": ...]}`` of ``count`` samples."""
    from .transforms import build_transform

    layout = model.config["model"]["graph_args"]["layout"]
    src = Path(source) if source is not None else default_check_data()
    if src is None:
        raise ValueError("no check data found (shared/data/utd-mhad); pass --check-data or --no-check")
    clips = _read_clips(src, layout, persons, count)
    channels = model.data_bn.num_features // model.A.shape[-1]
    if clips[0].shape[0] != channels:
        raise ValueError(f"{src}: {clips[0].shape[0]} channels, the model reads {channels}")
    raw = _windows_from_clips(clips, window, count)
    history = model.predictor.history if model.predictor is not None else 2
    x, recent, _, _ = build_transform(model.config.get("normalisation"), layout).prepare(raw, history=history)
    inputs = {"x": np.ascontiguousarray(x, np.float32)}
    if model.predictor is not None:
        inputs["recent"] = np.ascontiguousarray(recent, np.float32)
    return inputs


def relative_error(out: np.ndarray, ref: np.ndarray) -> float:
    """max |out - ref| / max |ref| (the error on the output's own scale)."""
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    return float(np.abs(out - ref).max()) / max(scale, 1e-12) if ref.size else 0.0


@torch.no_grad()
def compare(onnx_path: str | os.PathLike, model: STGCN, inputs: dict[str, np.ndarray],
            batch_sizes: tuple[int, ...] = (1, 8)) -> dict[int, dict[str, float]]:
    """Relative error of each ONNX Runtime output against PyTorch (CPU, fp32), per batch size."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ImportError(f"the check needs onnxruntime ({exc}); pip install -r requirements.txt") from None
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    if names != list(inputs):
        raise ValueError(f"{onnx_path}: inputs {names}, expected {list(inputs)}")
    model = model.cpu().eval()
    errors: dict[int, dict[str, float]] = {}
    for b in batch_sizes:
        feed = {k: v[:b] for k, v in inputs.items()}
        ref = model(*(torch.from_numpy(v) for v in feed.values()))
        ref = ref if isinstance(ref, tuple) else (ref,)
        got = session.run(None, feed)
        errors[b] = {name: relative_error(g, r.numpy()) for name, g, r in zip(OUTPUTS, got, ref)}
    return errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stgcn.export", description=__doc__.split("\n")[0])
    parser.add_argument("--weights", required=True, help="checkpoint (project or original st-gcn state dict)")
    parser.add_argument("--onnx", required=True, help="ONNX file to write")
    parser.add_argument("--window", type=int, help="frames T of the exported input (default: the checkpoint's)")
    parser.add_argument("--persons", type=int, default=2, help="person slots M of the exported input")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (>= {MIN_OPSET})")
    parser.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime check")
    parser.add_argument("--check-data", help="real skeletons for the check: a UTD-MHAD folder or .mat, an st-gcn "
                                             ".npy of raw skeletons, or a Kinetics JSON clip "
                                             "(default: shared/data/utd-mhad)")
    parser.add_argument("--check-batch", type=int, default=8, help="the larger batch size of the check")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE, help="largest relative error accepted")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    setup_logging(args.debug)
    for name in ("torch.onnx", "onnxscript", "onnx_ir"):  # the exporter's pass-by-pass notes
        logging.getLogger(name).setLevel(logging.ERROR)

    def export() -> int:
        model = load_model(args.weights)
        window = model_window(model, args.window)
        if args.check_batch < 2:
            raise ValueError(f"--check-batch {args.check_batch}: needs at least 2 (batch 1 is always checked)")
        inputs: dict[str, Any] = {}
        if not args.no_check:
            inputs = check_inputs(model, window, args.check_batch, args.check_data, args.persons)
        log.info("exporting %s (window %d, %s) to %s", args.weights, window,
                 "logits + next frame" if model.predictor is not None else "logits", args.onnx)
        path = export_onnx(model, args.onnx, window, args.opset, args.persons)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, inputs {', '.join(input_names(model))}, "
              f"batch axis dynamic, T = {window}, M = {args.persons})")
        if args.no_check:
            return 0
        errors = compare(path, model, inputs, (1, args.check_batch))
        worst = max(e for per in errors.values() for e in per.values())
        for b, per in errors.items():
            print(f"batch {b}: max relative error vs PyTorch " + ", ".join(f"{k} {v:.2e}" for k, v in per.items()))
        print(f"max relative error {worst:.2e} (tolerance {args.tolerance:.0e}): "
              f"{'ok' if worst <= args.tolerance else 'FAILED'}")
        return 0 if worst <= args.tolerance else 1

    return run_cli(parser.prog, export, debug=args.debug, errors=(ValueError, OSError, ImportError))

if __name__ == "__main__":
    sys.exit(main())
