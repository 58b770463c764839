"""Shared pieces of the dataset converters: atomic writers, the per-split driver, errors.

Every converter writes the st-gcn format: ``{split}_data.npy`` (float32 ``(N, C, T, V, M)``)
and ``{split}_label.pkl`` (a pickled tuple ``(sample_names, labels)``). The array is filled
one sample at a time through :func:`numpy.lib.format.open_memmap` under a temporary name
and moved into place with :func:`os.replace` only when complete, so memory stays bounded
and a crash never leaves a file that loads but is wrong.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import pickle
import struct
import sys
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

log = logging.getLogger("stgcn.convert")


class ConversionError(RuntimeError):
    """A conversion that cannot go on (bad input without ``skip_bad``, nothing to write...)."""


class BadInputError(ValueError):
    """One input file that cannot be read; the message names the file."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


# --------------------------------------------------------------------------- atomic writers

def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_pickle_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Pickle ``obj`` to ``path`` through a temporary file and :func:`os.replace`."""
    path = Path(path)
    tmp = _tmp_name(path)
    try:
        with open(tmp, "wb") as f:
            pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _shrink_npy(path: Path, n: int) -> None:
    """Rewrite the leading dimension of an ``.npy`` header to ``n`` in place and truncate.

    The header keeps its length (it is space-padded), so the data offset does not move.
    """
    with open(path, "r+b") as f:
        major, minor = np.lib.format.read_magic(f)
        if (major, minor) == (1, 0):
            hlen_fmt, hlen_size = "<H", 2
        else:
            hlen_fmt, hlen_size = "<I", 4
        (hlen,) = struct.unpack(hlen_fmt, f.read(hlen_size))
        start = f.tell()
        header = ast.literal_eval(f.read(hlen).decode("latin1"))
        shape = (n,) + tuple(header["shape"][1:])
        text = "{'descr': %r, 'fortran_order': %r, 'shape': %r, }" % (header["descr"], header["fortran_order"], shape)
        if len(text) + 1 > hlen:  # cannot happen: a smaller n never needs more digits
            raise RuntimeError("npy header does not fit")
        f.seek(start)
        f.write((text + " " * (hlen - len(text) - 1) + "\n").encode("latin1"))
        itemsize = np.dtype(header["descr"]).itemsize
        f.truncate(start + hlen + int(np.prod(shape, dtype=np.int64)) * itemsize)


class AtomicNpyWriter:
    """An ``.npy`` file filled sample by sample, visible under its name only when complete.

    >>> with AtomicNpyWriter(out / "train_data.npy", (n, 3, 300, 18, 2)) as w:
    ...     w.array[i] = sample
    ...     w.finish(count)      # optional: keep only the first ``count`` samples

    On an exception the temporary file is removed and nothing replaces ``path``.
    """

    def __init__(self, path: str | os.PathLike, shape: Sequence[int], dtype=np.float32) -> None:
        self.path = Path(path)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.tmp = _tmp_name(self.path)
        self.array: np.memmap | None = None
        self._count: int | None = None

    def __enter__(self) -> "AtomicNpyWriter":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.shape[0] == 0:  # an empty file cannot be memory-mapped
            self.array = np.zeros(self.shape, self.dtype)
        else:
            # open_memmap creates a sparse file: untouched samples read as zeros, no RAM is used.
            self.array = np.lib.format.open_memmap(self.tmp, mode="w+", dtype=self.dtype, shape=self.shape)
        return self

    def finish(self, count: int | None = None) -> None:
        """Keep the first ``count`` samples (default: all)."""
        self._count = count

    def __exit__(self, exc_type, exc, tb) -> None:
        arr, self.array = self.array, None
        try:
            if exc_type is not None:
                return
            if isinstance(arr, np.memmap):
                arr.flush()
            else:
                with open(self.tmp, "wb") as f:
                    np.save(f, arr)
            arr = None  # closes the memory map
            count = self.shape[0] if self._count is None else self._count
            if count != self.shape[0]:
                _shrink_npy(self.tmp, count)
            with open(self.tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(self.tmp, self.path)
        finally:
            arr = None
            if self.tmp.exists():
                self.tmp.unlink()


# --------------------------------------------------------------------------- the split driver

@dataclass
class Sample:
    """One input file to convert: its name in the label pickle, its label and where it is."""

    name: str
    label: int
    path: str


@dataclass
class SplitResult:
    written: int = 0
    bad: int = 0
    skipped: int = 0
    bad_files: list[str] = field(default_factory=list)


def _read_one(reader: Callable[[str], np.ndarray], path: str) -> tuple[np.ndarray | None, str | None]:
    try:
        return reader(path), None
    except BadInputError as e:
        return None, str(e)
    except Exception as e:  # anything else a malformed file provokes, named by file
        return None, f"{path}: {type(e).__name__}: {e}"


class _Call:  # picklable (reader, path) -> result for worker pools
    def __init__(self, reader):
        self.reader = reader

    def __call__(self, path):
        return _read_one(self.reader, path)


def write_split(out: str | os.PathLike, split: str, samples: Sequence[Sample],
                reader: Callable[[str], np.ndarray], sample_shape: Sequence[int], *,
                skip_bad: bool = False, workers: int = 1, progress: bool = True,
                desc: str | None = None) -> SplitResult:
    """Convert ``samples`` with ``reader(path) -> (C, T, V, M)`` into ``out/{split}_*``.

    A bad file raises :class:`ConversionError` naming it (nothing is written), or with
    ``skip_bad`` is logged, counted and left out.
    """
    from tqdm import tqdm

    out = Path(out)
    res = SplitResult()
    names: list[str] = []
    labels: list[int] = []
    sample_shape = tuple(int(s) for s in sample_shape)
    n = len(samples)
    paths = [s.path for s in samples]
    with AtomicNpyWriter(out / f"{split}_data.npy", (n,) + sample_shape) as w:
        if workers > 1 and n > 1:
            pool = get_context("spawn" if sys.platform == "darwin" else "fork").Pool(workers)
            results: Iterable = pool.imap(_Call(reader), paths, chunksize=16)
        else:
            pool = None
            results = (_read_one(reader, p) for p in paths)
        try:
            bar = tqdm(zip(samples, results), total=n, desc=desc or split, unit="file",
                       disable=not progress, leave=False)
            for sample, (data, err) in bar:
                if err is not None:
                    res.bad += 1
                    res.bad_files.append(sample.path)
                    if not skip_bad:
                        raise ConversionError(f"bad input file {err} (use --skip-bad to skip such files)")
                    log.warning("skipping bad file %s", err)
                    continue
                if data.shape != sample_shape:
                    raise ConversionError(f"{sample.path}: reader gave shape {data.shape}, expected {sample_shape}")
                w.array[res.written] = data
                names.append(sample.name)
                labels.append(int(sample.label))
                res.written += 1
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
        w.finish(res.written)
    write_pickle_atomic(out / f"{split}_label.pkl", (names, labels))
    log.info("%s: wrote %d samples to %s (%d bad)", split, res.written, out / f"{split}_data.npy", res.bad)
    return res


def counts(results: dict[str, SplitResult], **extra: int) -> dict[str, int]:
    """Flatten per-split results into the ``dict`` of counts the converters return."""
    out: dict[str, int] = {}
    for split, r in results.items():
        out[split] = r.written
        out[f"{split}_bad"] = r.bad
    out["bad"] = sum(r.bad for r in results.values())
    out.update(extra)
    return out


# --------------------------------------------------------------------------- description files

def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and :func:`os.replace`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_dataset_info(out: str | os.PathLike, class_names: Sequence[str], meta: dict[str, Any]) -> None:
    """``out/class_names.txt`` and ``out/meta.json``."""
    write_text_atomic(Path(out) / "class_names.txt", "".join(f"{c}\n" for c in class_names))
    write_text_atomic(Path(out) / "meta.json", json.dumps(meta, indent=1) + "\n")


def read_class_names(folder: str | os.PathLike) -> list[str]:
    """The class names of a converted dataset (``class_names.txt``)."""
    path = Path(folder) / "class_names.txt"
    if not path.is_file():
        raise ConversionError(f"{path}: no such file (the dataset needs its class names)")
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


def read_meta(folder: str | os.PathLike) -> dict[str, Any]:
    """``meta.json`` of a converted dataset, or ``{}`` when it has none."""
    path = Path(folder) / "meta.json"
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConversionError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise ConversionError(f"{path}: expected a JSON object")
    return meta


def fit_sample(x: np.ndarray, frames: int, persons: int) -> np.ndarray:
    """``(C, T, V, M)`` cut or zero-padded at the end to ``frames`` frames and ``persons`` slots."""
    c, t, v, m = x.shape
    out = np.zeros((c, frames, v, persons), np.float32)
    out[:, : min(t, frames), :, : min(m, persons)] = x[:, :frames, :, :persons]
    return out
