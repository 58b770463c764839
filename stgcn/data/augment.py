"""Skeleton augmentations on raw ``(C, T, V, M)`` numpy arrays.

Raw means what the live pipeline produces: for 2D layouts channels (x, y, confidence) with
x, y in 0..1 image coordinates (y down); for 3D layouts (x, y, z) in metres with y up.
Absent joints are all-zero and stay exactly zero through every augmentation (a joint is
present when its confidence is > 0 in 2D, when any coordinate is nonzero in 3D).

:func:`build_augment` composes the configured augmentations in a fixed order::

    mirror -> random_speed -> frame_step -> random_shift -> random_choose -> idle_pad -> random_move -> random_rotate
    -> random_scale -> noise -> joint_dropout -> drop_face

Config (every key optional; ``True`` means defaults, ``False``/``None`` disables; a scalar
is the main parameter)::

    mirror:        {p: 0.5, classes: [names or indices] | "all"}
    random_speed:  {range: [0.8, 1.25], p: 1.0}   (list: range; >1 plays the action faster)
    frame_step:    {steps: [2, 3], p: 0.5}   (list: steps; every k-th frame: the clip at 1/k its frame rate)
    random_shift:  {p: 1.0}
    random_choose: {size: <window>, auto_pad: true}
    idle_pad:      {window: <window>, p: 1.0, sigma: 0.002 (2D) / 0.005 m (3D), zero_prob: 0.2}
    random_move:   {angle_candidate: [-10, -5, 0, 5, 10], scale_candidate: [0.9, 1, 1.1],
                    transform_candidate: [-0.2, -0.1, 0, 0.1, 0.2], move_time_candidate: [1]}
    random_rotate: {max_deg: 15}            (scalar: max_deg)
    random_scale:  {range: [0.9, 1.1]}      (list: range)
    noise:         {sigma: 0.002 (2D) / 0.005 (3D)}   (scalar: sigma)
    joint_dropout: {p: 0.2, joints: null (all), max_joints: 3}
    drop_face:     {p: 0.3, nose_p: 0.5}
    aspect:        1.0   (2D only: image width / height, so rotations are rigid in pixels)

``random_move`` rotates 2D data about the image centre (0.5, 0.5) like the original on its
x, y - 0.5 data; for 3D it rotates about the vertical axis through the skeleton's mean,
scales about that mean and translates x and z (metres). The window-making ones
(``random_choose``, ``idle_pad``; ``random_shift`` when the window is the whole array)
tell :meth:`Augment.apply` that the result is already placed in its window.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

from ..graph import Layout, get_layout

ORDER = ("mirror", "random_speed", "frame_step", "random_shift", "random_choose", "idle_pad", "random_move", "random_rotate",
         "random_scale", "noise", "joint_dropout", "drop_face")
_SCALAR_KEY = {"random_speed": "range", "frame_step": "steps", "random_rotate": "max_deg", "random_scale": "range", "noise": "sigma", "random_choose": "size",
               "idle_pad": "window", "mirror": "classes", "joint_dropout": "p", "drop_face": "p",
               "random_shift": "p"}


# ----------------------------------------------------------------------------- helpers

def present_mask(x: np.ndarray, dims: int) -> np.ndarray:
    """``(T, V, M)`` mask of present joints of a raw ``(C, T, V, M)`` array."""
    if dims == 2:
        return x[-1] > 0
    return np.any(x != 0, axis=0)


def valid_range(x: np.ndarray) -> tuple[int, int]:
    """``[begin, end)`` of the frames from the first to the last one holding any nonzero value."""
    valid = np.any(x != 0, axis=(0, 2, 3))
    if not valid.any():
        return 0, 0
    begin = int(valid.argmax())
    end = int(len(valid) - valid[::-1].argmax())
    return begin, end


def _center(x: np.ndarray, mask: np.ndarray, d: int) -> np.ndarray:
    """Mean position ``(d,)`` of the present joints (zeros when none)."""
    n = mask.sum()
    if n == 0:
        return np.zeros(d, np.float32)
    return (x[:d] * mask).reshape(d, -1).sum(axis=1) / n


def _rezero(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.where(mask[None], x, np.float32(0.0))  # absent joints back to exact (+)zeros, every channel


def lr_pairs(layout: Layout) -> list[tuple[int, int]]:
    """Left/right joint pairs from the layout's names (``l_*`` with ``r_*``)."""
    names = list(layout.joints)
    pairs = []
    for i, n in enumerate(names):
        if n.startswith("l_") and ("r_" + n[2:]) in names:
            pairs.append((i, names.index("r_" + n[2:])))
    return pairs


def face_joints(layout: Layout) -> tuple[list[int], list[int]]:
    """(eye and ear joints, nose joints) by name."""
    eyes_ears = [i for i, n in enumerate(layout.joints) if n.endswith(("eye", "ear"))]
    nose = [i for i, n in enumerate(layout.joints) if n == "nose"]
    return eyes_ears, nose


# ----------------------------------------------------------------------------- the augmentations
# Each takes (x (C, T, V, M) float32 raw, rng, layout, ...) and returns the new array.

def mirror(x: np.ndarray, layout: Layout) -> np.ndarray:
    """Swap left/right joints and flip x (2D: x -> 1 - x; 3D: x -> -x); absent stay zero."""
    x = x.copy()
    dims = layout.dims
    mask = present_mask(x, dims)
    if dims == 2:
        x[0] = np.where(mask, 1.0 - x[0], 0.0)
    else:
        x[0] = np.where(mask, -x[0], 0.0)
    for a, b in lr_pairs(layout):
        x[:, :, [a, b]] = x[:, :, [b, a]]
    return x


def resample(x: np.ndarray, layout: Layout, factor: float) -> np.ndarray:
    """The valid segment played ``factor`` times faster (linear interpolation in time), at the
    start of a zero array of the same length (longer results are cut). A joint is present in
    a resampled frame when it is present in both neighbouring source frames."""
    begin, end = valid_range(x)
    n = end - begin
    out = np.zeros_like(x)
    if n < 2:
        return x.copy()
    new_n = min(x.shape[1], max(2, int(round(n / factor))))
    pos = np.linspace(0, n - 1, new_n)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    w = (pos - lo).astype(np.float32)[None, :, None, None]
    clip = x[:, begin:end]
    mask = present_mask(clip, layout.dims)
    both = mask[lo] & mask[hi]
    out[:, :new_n] = np.where(both[None], clip[:, lo] * (1 - w) + clip[:, hi] * w, 0.0)
    return out


def frame_step(x: np.ndarray, step: int, rng: np.random.Generator) -> np.ndarray:
    """Every ``step``-th frame of the valid segment from a random one of its first ``step``, at the
    start of a zero array of the same length: the clip as a camera at 1/``step`` of its frame rate
    would have seen it (no interpolation, unlike :func:`resample`: real steps between frames)."""
    begin, end = valid_range(x)
    out = np.zeros_like(x)
    clip = x[:, begin + int(rng.integers(step)):end:step]
    out[:, :clip.shape[1]] = clip
    return out


def random_shift(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Move the valid segment to a random start in the zero-padded array (the original)."""
    c, t, v, m = x.shape
    begin, end = valid_range(x)
    size = end - begin
    out = np.zeros_like(x)
    bias = int(rng.integers(0, t - size + 1))
    out[:, bias:bias + size] = x[:, begin:end]
    return out


def random_choose(x: np.ndarray, rng: np.random.Generator, size: int, auto_pad: bool = True) -> np.ndarray:
    """A random ``size``-frame crop of the array, or, when shorter, the array at a random
    position in ``size`` zero frames (``auto_pad``) (the original)."""
    c, t, v, m = x.shape
    if t == size:
        return x
    if t < size:
        if not auto_pad:
            return x
        out = np.zeros((c, size, v, m), x.dtype)
        begin = int(rng.integers(0, size - t + 1))
        out[:, begin:begin + t] = x
        return out
    begin = int(rng.integers(0, t - size + 1))
    return x[:, begin:begin + size].copy()


def idle_pad(x: np.ndarray, rng: np.random.Generator, layout: Layout, window: int, sigma: float,
             zero_prob: float = 0.2) -> np.ndarray:
    """A ``window``-frame array with the clip at a random position; before it the clip's first
    frame is held, after it its last frame, each held frame with Gaussian jitter ``sigma`` on
    present joints (a person standing still before and after the action). Each side is zeros
    instead with probability ``zero_prob``. A clip longer than ``window`` is randomly cropped."""
    begin, end = valid_range(x)
    clip = x[:, begin:end]
    c, n, v, m = clip.shape
    if n >= window:
        s = int(rng.integers(0, n - window + 1))
        return clip[:, s:s + window].copy()
    out = np.zeros((c, window, v, m), np.float32)
    if n == 0:
        return out
    s = int(rng.integers(0, window - n + 1))
    out[:, s:s + n] = clip
    d = layout.dims
    for lo, hi, frame in ((0, s, clip[:, 0]), (s + n, window, clip[:, -1])):
        k = hi - lo
        if k <= 0 or rng.random() < zero_prob:
            continue
        held = np.repeat(frame[:, None], k, axis=1)
        fmask = present_mask(frame[:, None], d)  # (1, V, M)
        if sigma > 0:
            held[:d] += rng.normal(0.0, sigma, size=(d, k, v, m)).astype(np.float32) * fmask[None]
        out[:, lo:hi] = held
    return out


def random_move(x: np.ndarray, rng: np.random.Generator, layout: Layout,
                angle_candidate: Sequence[float] = (-10.0, -5.0, 0.0, 5.0, 10.0),
                scale_candidate: Sequence[float] = (0.9, 1.0, 1.1),
                transform_candidate: Sequence[float] = (-0.2, -0.1, 0.0, 0.1, 0.2),
                move_time_candidate: Sequence[int] = (1,)) -> np.ndarray:
    """The original random_move: angle, scale and translation drawn at key frames and
    interpolated linearly over time. 2D: rotation/scale about the image centre (0.5, 0.5),
    translation of x, y. 3D: rotation about the vertical axis and scale about the skeleton's
    mean, translation of x, z."""
    c, t, v, m = x.shape
    dims = layout.dims
    mask = present_mask(x, dims)
    move_time = int(rng.choice(np.asarray(move_time_candidate)))
    node = np.arange(0, t, t * 1.0 / move_time).round().astype(int)
    node = np.append(node, t)
    k = len(node)
    a_key = rng.choice(np.asarray(angle_candidate, dtype=np.float64), k)
    s_key = rng.choice(np.asarray(scale_candidate, dtype=np.float64), k)
    tx_key = rng.choice(np.asarray(transform_candidate, dtype=np.float64), k)
    ty_key = rng.choice(np.asarray(transform_candidate, dtype=np.float64), k)
    a, s, tx, ty = (np.zeros(t) for _ in range(4))
    for i in range(k - 1):
        n = node[i + 1] - node[i]
        sl = slice(node[i], node[i + 1])
        a[sl] = np.linspace(a_key[i], a_key[i + 1], n) * np.pi / 180
        s[sl] = np.linspace(s_key[i], s_key[i + 1], n)
        tx[sl] = np.linspace(tx_key[i], tx_key[i + 1], n)
        ty[sl] = np.linspace(ty_key[i], ty_key[i + 1], n)
    cos, sin = (np.cos(a) * s)[:, None, None], (np.sin(a) * s)[:, None, None]
    out = x.copy()
    if dims == 2:
        px, py = x[0] - 0.5, x[1] - 0.5
        out[0] = cos * px - sin * py + 0.5 + tx[:, None, None]
        out[1] = sin * px + cos * py + 0.5 + ty[:, None, None]
    else:
        cx, _, cz = _center(x, mask, 3)
        px, pz = x[0] - cx, x[2] - cz
        out[0] = cos * px + sin * pz + cx + tx[:, None, None]
        out[2] = -sin * px + cos * pz + cz + ty[:, None, None]
        cy = _center(x, mask, 3)[1]
        out[1] = (x[1] - cy) * s[:, None, None] + cy
    return _rezero(out, mask)


def rotate(x: np.ndarray, layout: Layout, deg: float, aspect: float = 1.0) -> np.ndarray:
    """Rotate by ``deg`` about the skeleton's mean: in the image plane for 2D (pixel-rigid with
    ``aspect`` = width/height), about the vertical axis for 3D."""
    dims = layout.dims
    mask = present_mask(x, dims)
    ctr = _center(x, mask, dims)
    th = math.radians(deg)
    cos, sin = math.cos(th), math.sin(th)
    out = x.copy()
    if dims == 2:
        px, py = (x[0] - ctr[0]) * aspect, x[1] - ctr[1]
        out[0] = (cos * px - sin * py) / aspect + ctr[0]
        out[1] = sin * px + cos * py + ctr[1]
    else:
        px, pz = x[0] - ctr[0], x[2] - ctr[2]
        out[0] = cos * px + sin * pz + ctr[0]
        out[2] = -sin * px + cos * pz + ctr[2]
    return _rezero(out, mask)


def scale(x: np.ndarray, layout: Layout, factor: float) -> np.ndarray:
    """Scale the coordinates by ``factor`` about the skeleton's mean."""
    dims = layout.dims
    mask = present_mask(x, dims)
    ctr = _center(x, mask, dims)
    out = x.copy()
    out[:dims] = (x[:dims] - ctr[:, None, None, None]) * factor + ctr[:, None, None, None]
    return _rezero(out, mask)


def noise(x: np.ndarray, rng: np.random.Generator, layout: Layout, sigma: float) -> np.ndarray:
    """Gaussian noise on the coordinates of present joints."""
    dims = layout.dims
    mask = present_mask(x, dims)
    out = x.copy()
    out[:dims] += rng.normal(0.0, sigma, size=x[:dims].shape).astype(np.float32)
    return _rezero(out, mask)


def drop_joints(x: np.ndarray, joints: Sequence[int], persons: Sequence[int] | None = None) -> np.ndarray:
    """Zero ``joints`` (every channel, every frame) of ``persons`` (default all)."""
    out = x.copy()
    j = np.asarray(list(joints), dtype=int)
    if persons is None:
        out[:, :, j, :] = 0.0
    else:
        for p in persons:
            out[:, :, j, p] = 0.0
    return out


def joint_dropout(x: np.ndarray, rng: np.random.Generator, layout: Layout, joints: Sequence[int] | None = None,
                  max_joints: int = 3) -> np.ndarray:
    """Zero a random subset of 1..``max_joints`` joints (from ``joints``, default all) per person."""
    cand = np.arange(layout.num_node) if joints is None else np.asarray(list(joints), dtype=int)
    out = x
    for p in range(x.shape[-1]):
        k = int(rng.integers(1, min(max_joints, len(cand)) + 1))
        out = drop_joints(out, rng.choice(cand, size=k, replace=False), [p])
    return out


# ----------------------------------------------------------------------------- composition

class Augment:
    """The composed augmentations: ``aug(x, label, rng) -> x``; :meth:`apply` also says
    whether a window-making augmentation placed the result in its window."""

    def __init__(self, ops: list[tuple[str, Callable, float]], layout: Layout, placing: set[str],
                 cfg: dict) -> None:
        self.ops = ops
        self.layout = layout
        self.placing = placing
        self.cfg = cfg

    @property
    def names(self) -> list[str]:
        return [n for n, _, _ in self.ops]

    def __call__(self, x: np.ndarray, label: int, rng: np.random.Generator) -> np.ndarray:
        return self.apply(x, label, rng)[0]

    def apply(self, x: np.ndarray, label: int, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
        x = np.array(x, dtype=np.float32)  # a copy: the caller's array is never changed
        placed = False
        for name, fn, p in self.ops:
            if p < 1.0 and rng.random() >= p:
                continue
            out = fn(x, int(label), rng)
            if out is None:  # not applicable to this sample (e.g. mirror of another class)
                continue
            x = out
            if name in self.placing:
                placed = True
        return x, placed

    def __repr__(self) -> str:
        return f"Augment({', '.join(self.names)})"


def _opts(name: str, value: Any) -> dict | None:
    if value is None or value is False:
        return None
    if value is True:
        return {}
    if isinstance(value, dict):
        return dict(value)
    return {_SCALAR_KEY[name]: value}


def _take(opts: dict, name: str, allowed: Sequence[str]) -> None:
    unknown = set(opts) - set(allowed)
    if unknown:
        raise ValueError(f"augment {name}: unknown option(s) {sorted(unknown)}; known: {sorted(allowed)}")


def build_augment(cfg: dict | None, layout: str | dict | Layout = "openpose", num_classes: int | None = None,
                  class_names: Sequence[str] | None = None, window: int | None = None) -> Augment | None:
    """Compose the augmentations of ``cfg`` (see the module doc) in the fixed order.

    ``class_names`` resolves ``mirror.classes`` given by name; ``window`` is the default
    ``random_choose.size`` and ``idle_pad.window``. Returns None for an empty config.
    """
    if not cfg:
        return None
    cfg = dict(cfg)
    layout = get_layout(layout)
    dims = layout.dims
    aspect = float(cfg.pop("aspect", 1.0))
    unknown = set(cfg) - set(ORDER)
    if unknown:
        raise ValueError(f"unknown augmentation(s) {sorted(unknown)}; known: {list(ORDER)}")
    ops: list[tuple[str, Callable, float]] = []
    placing: set[str] = set()
    default_sigma = 0.002 if dims == 2 else 0.005

    for name in ORDER:
        if name not in cfg:
            continue
        o = _opts(name, cfg[name])
        if o is None:
            continue
        if name == "mirror":
            _take(o, name, ("p", "classes"))
            classes = o.get("classes")
            if classes is None:
                raise ValueError("augment mirror needs 'classes' (the symmetric classes, by name or index) or 'all'")
            if classes == "all":
                allowed = None
            else:
                allowed = set()
                for c in classes:
                    if isinstance(c, str):
                        if class_names is None or c not in class_names:
                            raise ValueError(f"augment mirror: class {c!r} is not a known class name")
                        allowed.add(list(class_names).index(c))
                    else:
                        allowed.add(int(c))
                if num_classes is not None and any(not 0 <= c < num_classes for c in allowed):
                    raise ValueError(f"augment mirror: class index outside 0..{num_classes - 1}")
            if not lr_pairs(layout):
                raise ValueError(f"augment mirror: layout {layout.name!r} has no l_*/r_* joint pairs")

            def fn(x, label, rng, allowed=allowed):
                if allowed is not None and label not in allowed:
                    return None
                return mirror(x, layout)
            ops.append((name, fn, float(o.get("p", 0.5))))
        elif name == "random_speed":
            _take(o, name, ("range", "p"))
            lo_f, hi_f = (float(v) for v in o.get("range", (0.8, 1.25)))
            # log-uniform, so speeding up and slowing down are equally likely
            ops.append((name, lambda x, label, rng, lo_f=lo_f, hi_f=hi_f: resample(
                x, layout, float(np.exp(rng.uniform(np.log(lo_f), np.log(hi_f))))), float(o.get("p", 1.0))))
        elif name == "frame_step":
            _take(o, name, ("steps", "p"))
            choices = [int(k) for k in o.get("steps", (2, 3))]
            if not choices or min(choices) < 1:
                raise ValueError(f"augment frame_step: steps {choices} must be integers >= 1")
            ops.append((name, lambda x, label, rng, choices=choices: frame_step(
                x, choices[int(rng.integers(len(choices)))], rng), float(o.get("p", 0.5))))
        elif name == "random_shift":
            _take(o, name, ("p",))
            ops.append((name, lambda x, label, rng: random_shift(x, rng), float(o.get("p", 1.0))))
            placing.add(name)
        elif name == "random_choose":
            _take(o, name, ("size", "auto_pad"))
            size = o.get("size", window)
            if size is None:
                raise ValueError("augment random_choose needs 'size' (or a dataset window)")
            auto_pad = bool(o.get("auto_pad", True))
            ops.append((name, lambda x, label, rng, size=int(size), auto_pad=auto_pad: random_choose(x, rng, size, auto_pad), 1.0))
            placing.add(name)
        elif name == "idle_pad":
            _take(o, name, ("window", "p", "sigma", "zero_prob"))
            win = o.get("window", window)
            if win is None:
                raise ValueError("augment idle_pad needs 'window' (or a dataset window)")
            sigma = float(o.get("sigma", default_sigma))
            zero_prob = float(o.get("zero_prob", 0.2))
            ops.append((name, lambda x, label, rng, win=int(win), sigma=sigma, zero_prob=zero_prob: idle_pad(
                x, rng, layout, win, sigma, zero_prob),
                        float(o.get("p", 1.0))))
            placing.add(name)
        elif name == "random_move":
            keys = ("angle_candidate", "scale_candidate", "transform_candidate", "move_time_candidate")
            _take(o, name, keys + ("p",))
            kw = {k: o[k] for k in keys if k in o}
            ops.append((name, lambda x, label, rng, kw=kw: random_move(x, rng, layout, **kw), float(o.get("p", 1.0))))
        elif name == "random_rotate":
            _take(o, name, ("max_deg", "p"))
            max_deg = float(o.get("max_deg", 15.0))
            ops.append((name, lambda x, label, rng, max_deg=max_deg: rotate(x, layout, rng.uniform(-max_deg, max_deg), aspect),
                        float(o.get("p", 1.0))))
        elif name == "random_scale":
            _take(o, name, ("range", "p"))
            lo, hi = (float(v) for v in o.get("range", (0.9, 1.1)))
            ops.append((name, lambda x, label, rng, lo=lo, hi=hi: scale(x, layout, rng.uniform(lo, hi)), float(o.get("p", 1.0))))
        elif name == "noise":
            _take(o, name, ("sigma", "p"))
            sig = float(o.get("sigma", default_sigma))
            ops.append((name, lambda x, label, rng, sig=sig: noise(x, rng, layout, sig), float(o.get("p", 1.0))))
        elif name == "joint_dropout":
            _take(o, name, ("p", "joints", "max_joints"))
            joints = o.get("joints")
            if joints is not None:  # indices or joint names
                joints = [layout.joints.index(j) if isinstance(j, str) else int(j) for j in joints]
            max_joints = int(o.get("max_joints", 3))
            ops.append((name, lambda x, label, rng, joints=joints, max_joints=max_joints: joint_dropout(
                x, rng, layout, joints, max_joints),
                        float(o.get("p", 0.2))))
        elif name == "drop_face":
            _take(o, name, ("p", "nose_p"))
            eyes_ears, nose_j = face_joints(layout)
            nose_p = float(o.get("nose_p", 0.5))

            def fn(x, label, rng, eyes_ears=eyes_ears, nose_j=nose_j, nose_p=nose_p):
                joints = list(eyes_ears) + (list(nose_j) if rng.random() < nose_p else [])
                return drop_joints(x, joints) if joints else None
            ops.append((name, fn, float(o.get("p", 0.3))))
    return Augment(ops, layout, placing, dict(cfg, aspect=aspect))
