"""A torch Dataset over st-gcn format files (``*_data.npy`` + ``*_label.pkl``).

The data file is float32 ``(N, C, T, V, M)`` of RAW skeletons (see :mod:`stgcn.transforms`),
memory-mapped (Kinetics train is 31 GB) and opened lazily in each process, so DataLoader
workers each map it themselves. Per item: read sample i, find its valid frames, augment (raw
space), cut the window, normalise with the transform.

Windows follow the live ring buffer: right-aligned, zeros on the left when there is not
enough history.

- classification, eval (no augment): the valid clip; its centre ``window`` frames when it is
  longer, else right-aligned (it ends at the window's end, zeros before it);
- classification, train (augment): a window-making augmentation's result when it made one
  (``random_choose``, ``idle_pad``, ``random_shift`` with the window = the array length),
  else a random ``window``-frame crop of a longer clip, or the clip right-aligned;
- ``next_frame``: an end frame t drawn uniformly among frames where t-1, t and t+1 all hold
  a skeleton (and t+H, with a ``horizon`` H, where the clip has such frames); the window is
  frames t-W+1..t right-aligned and the target is frame t+1 (frames t+1..t+H, zeros past the
  clip's end), both through ``transform.prepare`` with the last ``history`` frames as the
  predictor's input; ``scale`` is the window's scale (local units to the data's units). Eval
  mode draws t from a generator seeded by ``(seed, index)``, so the choice is the same every
  epoch.

Random numbers: the main process uses ``default_rng(seed)``; a DataLoader worker uses a
generator seeded by ``(torch worker seed, seed)``, which differs per worker and per epoch
and is reproducible when torch is seeded (``torch.manual_seed`` or a DataLoader generator).
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..open_set import motion
from ..graph import Layout, get_layout
from ..transforms import Transform, build_transform
from .augment import Augment, build_augment, valid_range


def inspect_npy(path: str | os.PathLike) -> tuple[tuple[int, ...], np.dtype, int]:
    """``(shape, dtype, data offset)`` of an ``.npy`` file from its header, checking that the
    file is as long as the header says. Raises ValueError naming the file."""
    path = str(path)
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file")
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                shape, fortran, dtype = np.lib.format._read_array_header(f, version)  # (3, 0)
        except Exception as e:
            raise ValueError(f"{path}: not an .npy file ({e})") from None
        offset = f.tell()
    if dtype.hasobject:
        raise ValueError(f"{path}: holds Python objects (dtype {dtype}), expected float32")
    expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size < expected:
        raise ValueError(f"{path}: truncated: {size} bytes, the header's shape {shape} needs {expected}")
    return tuple(int(s) for s in shape), dtype, offset


def load_labels(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """``(sample_names, labels)`` from an st-gcn ``*_label.pkl``. Raises ValueError naming the file."""
    path = str(path)
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file")
    try:
        with open(path, "rb") as f:
            obj = pickle.load(f)
    except Exception as e:
        raise ValueError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from None
    if not isinstance(obj, (tuple, list)) or len(obj) != 2:
        raise ValueError(f"{path}: expected a pickled tuple (sample_names, labels), got {type(obj).__name__}"
                         + (f" of length {len(obj)}" if isinstance(obj, (tuple, list)) else ""))
    names, labels = obj
    try:
        names = [str(n) for n in names]
        labels = list(labels)
    except TypeError:
        raise ValueError(f"{path}: sample_names and labels must be sequences") from None
    if len(names) != len(labels):
        raise ValueError(f"{path}: {len(names)} sample names but {len(labels)} labels")
    bad = [v for v in labels if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer))]
    if bad:
        raise ValueError(f"{path}: labels must be integers, found {bad[0]!r} ({type(bad[0]).__name__})")
    arr = np.asarray(labels, dtype=np.int64)
    if arr.size and arr.min() < 0:
        raise ValueError(f"{path}: negative label {int(arr.min())}")
    return names, arr


def load_class_names(src: str | os.PathLike | Sequence[str] | None) -> list[str] | None:
    """Class names from a list, a JSON list file or a text file with one name a line."""
    if src is None:
        return None
    if not isinstance(src, (str, os.PathLike)):
        return [str(c) for c in src]
    text = Path(src).read_text()
    if str(src).endswith(".json"):
        return [str(c) for c in json.loads(text)]
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


def kinetics_to_raw(x: np.ndarray) -> np.ndarray:
    """Undo the Kinetics preprocessing (x, y minus 0.5) on a 2D ``(C, ...)`` array, present joints only."""
    x = x.copy()
    present = x[2] > 0
    x[0] = np.where(present, x[0] + 0.5, 0.0)
    x[1] = np.where(present, x[1] + 0.5, 0.0)
    return x


class SkeletonDataset(Dataset):
    """st-gcn format files as a torch Dataset of ``{"x", "label", "index"[, "recent", "target"]}``.

    ``transform``: a :class:`~stgcn.transforms.Transform`, or a name/config for
    :func:`~stgcn.transforms.build_transform` with ``layout`` (None: identity).
    ``augment``: a config for :func:`~stgcn.data.augment.build_augment` (None: eval mode).
    ``class_names`` (list or file) resolves augment classes given by name.
    ``source_format="kinetics"`` reads files holding the original Kinetics values (x, y minus
    0.5, e.g. the published data or the Kinetics converter's output) and turns them back into
    raw coordinates first; use ``transform="kinetics"`` to feed the model the original values.
    """

    def __init__(self, data_path: str | os.PathLike, label_path: str | os.PathLike, *, window: int | None = None,
                 transform: Transform | str | dict | None = None, layout: str | dict | Layout = "openpose",
                 augment: dict | None = None, next_frame: bool = False, horizon: int = 1, history: int = 2,
                 mmap: bool = True, seed: int | None = None,
                 class_names: str | os.PathLike | Sequence[str] | None = None,
                 source_format: str = "raw") -> None:
        self.data_path = str(data_path)
        self.label_path = str(label_path)
        shape, dtype, _ = inspect_npy(self.data_path)
        if len(shape) != 5:
            raise ValueError(f"{self.data_path}: expected 5 dimensions (N, C, T, V, M), got shape {shape}")
        if dtype.kind != "f":
            raise ValueError(f"{self.data_path}: dtype {dtype} is not floating point (expected float32)")
        self.shape = shape
        self.names, self.labels = load_labels(self.label_path)
        if len(self.labels) != shape[0]:
            raise ValueError(f"{self.label_path}: {len(self.labels)} labels but {self.data_path} holds "
                             f"{shape[0]} samples")
        self.layout = get_layout(layout)
        n, c, t, v, m = shape
        if v != self.layout.num_node:
            raise ValueError(f"{self.data_path}: {v} joints, but layout {self.layout.name!r} has "
                             f"{self.layout.num_node}")
        if c != 3:
            raise ValueError(f"{self.data_path}: {c} channels, expected 3")
        if source_format not in ("raw", "kinetics"):
            raise ValueError(f"source_format must be 'raw' or 'kinetics', not {source_format!r}")
        if source_format == "kinetics" and self.layout.dims != 2:
            raise ValueError("source_format='kinetics' is for 2D layouts")
        self.source_format = source_format
        self.class_names = load_class_names(class_names)
        self.num_classes = int(self.labels.max()) + 1 if len(self.labels) else 0
        if self.class_names is not None:
            if self.num_classes > len(self.class_names):
                raise ValueError(f"{self.label_path}: label {self.num_classes - 1} but only "
                                 f"{len(self.class_names)} class names")
            self.num_classes = len(self.class_names)
        self.window = int(window) if window is not None else t
        if self.window < 1:
            raise ValueError("window must be >= 1")
        if isinstance(transform, Transform):
            self.transform = transform
        else:
            self.transform = build_transform(transform, self.layout)
        if self.transform.layout.num_node != v:
            raise ValueError(f"transform layout {self.transform.layout.name!r} does not match {v} joints")
        self.augment: Augment | None = build_augment(augment, self.layout, self.num_classes, self.class_names,
                                                     window=self.window)
        self.next_frame = bool(next_frame)
        self.horizon, self.history = int(horizon), int(history)
        if self.next_frame and self.window < 2:
            raise ValueError("next_frame needs window >= 2 (the last two frames are the predictor's input)")
        if self.next_frame and not 2 <= self.history <= self.window:
            raise ValueError(f"predictor history {self.history} must be 2..window ({self.window})")
        self.mmap = bool(mmap)
        self.seed = seed
        self._arr: np.ndarray | None = None
        self._arr_pid: int | None = None
        self._rng: np.random.Generator | None = None
        self._rng_key: Any = None
        self.epoch = 0
        if not self.mmap:
            self._arr = np.load(self.data_path)
            self._arr_pid = None

    # ------------------------------------------------------------------ plumbing
    def __len__(self) -> int:
        return self.shape[0]

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if self.mmap:
            state["_arr"] = None  # every process maps the file itself
        state["_rng"] = None
        state["_rng_key"] = None
        return state

    @property
    def data(self) -> np.ndarray:
        """The ``(N, C, T, V, M)`` array (memory-mapped read-only in this process)."""
        if self.mmap and (self._arr is None or self._arr_pid != os.getpid()):
            try:
                self._arr = np.load(self.data_path, mmap_mode="r")
            except Exception as e:
                raise ValueError(f"{self.data_path}: cannot map ({e})") from None
            self._arr_pid = os.getpid()
        return self._arr

    def set_epoch(self, epoch: int) -> None:
        """Reseed the main-process generator per epoch, so a resumed run draws what an
        uninterrupted one would (worker generators follow torch's seed already)."""
        self.epoch = int(epoch)

    def rng(self) -> np.random.Generator:
        """This process's training generator (see the module doc)."""
        info = torch.utils.data.get_worker_info()
        key = (os.getpid(), self.epoch if info is None else info.seed)
        if self._rng is None or self._rng_key != key:
            if info is None:
                self._rng = np.random.default_rng([0 if self.seed is None else self.seed, self.epoch])
            else:
                self._rng = np.random.default_rng([info.seed % (1 << 63), 0 if self.seed is None else self.seed])
            self._rng_key = key
        return self._rng

    def raw(self, i: int) -> np.ndarray:
        """Sample ``i`` as a raw float32 ``(C, T, V, M)`` copy."""
        x = np.array(self.data[i], dtype=np.float32)
        if self.source_format == "kinetics":
            x = kinetics_to_raw(x)
        return x

    # ------------------------------------------------------------------ items
    def __getitem__(self, i: int) -> dict[str, Any]:
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        x = self.raw(i)
        label = int(self.labels[i])
        train = self.augment is not None
        rng = self.rng() if train else np.random.default_rng([0 if self.seed is None else self.seed, i])
        placed = False
        if train:
            x, placed = self.augment.apply(x, label, rng)
        item: dict[str, Any] = {"label": torch.tensor(label, dtype=torch.int64), "index": i}
        if self.next_frame:
            win, after = next_frame_window(x, self.window, rng, horizon=self.horizon)
            xn, recent, params, target = self.transform.prepare(win, next_frame=after, history=self.history)
            item["recent"] = torch.from_numpy(np.ascontiguousarray(recent, dtype=np.float32))
            item["target"] = torch.from_numpy(np.ascontiguousarray(target, dtype=np.float32))
            item["scale"] = torch.from_numpy(np.ascontiguousarray(params.scale, dtype=np.float32))
        else:
            if placed and x.shape[1] == self.window:
                win = x
            else:
                win = classification_window(x, self.window, rng if train else None)
            xn = self.transform(win)
            item["motion"] = torch.tensor(motion(win[None])[0])  # for the open-set calibration
        item["x"] = torch.from_numpy(np.ascontiguousarray(xn, dtype=np.float32))
        return item

    def __repr__(self) -> str:
        return (f"SkeletonDataset({self.data_path!r}, N={len(self)}, shape={self.shape[1:]}, "
                f"layout={self.layout.name!r}, window={self.window}, transform={self.transform.name!r}, "
                f"augment={self.augment!r}, next_frame={self.next_frame})")


def classification_window(x: np.ndarray, window: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """The valid clip of ``x`` (C, T, V, M) in a ``window``-frame array: a crop when longer
    (the centre one, or a random one with ``rng``), else right-aligned with zeros before it."""
    begin, end = valid_range(x)
    clip = x[:, begin:end]
    n = clip.shape[1]
    if n >= window:
        start = (n - window) // 2 if rng is None else int(rng.integers(0, n - window + 1))
        return np.ascontiguousarray(clip[:, start:start + window])
    out = np.zeros((x.shape[0], window) + x.shape[2:], np.float32)
    if n:
        out[:, window - n:] = clip
    return out


def next_frame_ends(x: np.ndarray) -> np.ndarray:
    """Frames t where t-1, t and t+1 all hold a skeleton (candidate window ends)."""
    nz = np.any(x != 0, axis=(0, 2, 3))
    if len(nz) < 3:
        return np.zeros(0, dtype=int)
    ok = nz[:-2] & nz[1:-1] & nz[2:]
    return np.flatnonzero(ok) + 1


def next_frame_window(x: np.ndarray, window: int, rng: np.random.Generator, t: int | None = None,
                      horizon: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``(window (C, W, V, M), frame t+1 (C, V, M))`` for an end frame t (drawn when not given);
    with ``horizon`` H above 1 the second is frames t+1..t+H ``(C, H, V, M)``, zeros past the end."""
    if t is None:
        ends = next_frame_ends(x)
        if horizon > 1 and len(ends):
            nz = np.any(x != 0, axis=(0, 2, 3))
            whole = ends[(ends + horizon < len(nz)) & nz[np.minimum(ends + horizon, len(nz) - 1)]]
            ends = whole if len(whole) else ends
        if len(ends):
            t = int(rng.choice(ends))
        else:  # fewer than three consecutive frames: the last pair there is
            begin, end = valid_range(x)
            t = max(end - 2, 0)
    c, total = x.shape[0], x.shape[1]
    win = np.zeros((c, window) + x.shape[2:], np.float32)
    lo = max(0, t - window + 1)
    win[:, window - (t + 1 - lo):] = x[:, lo:t + 1]
    after = np.zeros((c, horizon) + x.shape[2:], np.float32)
    ahead = x[:, t + 1:t + 1 + horizon]
    after[:, :ahead.shape[1]] = ahead
    return win, (after[:, 0] if horizon == 1 else after)
