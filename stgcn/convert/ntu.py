"""NTU RGB+D raw ``.skeleton`` files to the st-gcn format (cross-subject and cross-view).

The text format: the frame count; per frame the body count; per body a line of 10 numbers
(body id, clipped edges, hand states, restricted, lean x/y, tracking state), the joint count
(25) and one line of 12 numbers per joint (x, y, z first, metres, camera space). As in the
original release, the first ``persons`` (2) bodies of each frame in file order are kept, the
label is ``A### - 1``, and the ids of the missing-skeleton list are skipped. Sample names
are the file names (``SsssCcccPpppRrrrAaaa.skeleton``), as in the published label pickles.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from .common import BadInputError, ConversionError, Sample, counts, write_split

log = logging.getLogger("stgcn.convert.ntu")

TRAIN_SUBJECTS = (1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38)
TRAIN_CAMERAS = (2, 3)
NUM_JOINTS = 25
BENCHMARKS = ("xsub", "xview")
_NAME_RE = re.compile(r"S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})")


def parse_name(name: str) -> dict[str, int]:
    """``S001C002P003R002A013`` -> setup, camera, subject, replication, action (one-based)."""
    m = _NAME_RE.search(Path(name).name)
    if not m:
        raise ValueError(f"not an NTU sample name: {name!r}")
    s, c, p, r, a = (int(g) for g in m.groups())
    return dict(setup=s, camera=c, subject=p, replication=r, action=a)


def read_ntu_skeleton(path: str | os.PathLike, frames: int | None = 300, persons: int = 2,
                      joints: int = NUM_JOINTS) -> np.ndarray:
    """One ``.skeleton`` file as float32 ``(3, T, joints, persons)`` (x, y, z in metres).

    ``T`` is ``frames`` (zero-padded, longer sequences cut) or the file's frame count when
    ``frames`` is None. A truncated or malformed file raises :class:`BadInputError`.
    """
    try:
        with open(path, "r", encoding="ascii", errors="strict") as f:
            lines = f.read().split("\n")
    except (OSError, UnicodeDecodeError) as e:
        raise BadInputError(path, f"cannot read ({e})") from None
    n_lines = len(lines)
    pos = 0

    def line() -> str:
        nonlocal pos
        if pos >= n_lines:
            raise BadInputError(path, f"truncated: ended at line {pos + 1}")
        s = lines[pos]
        pos += 1
        return s

    def count(what: str) -> int:
        s = line().strip()
        if not s and pos >= n_lines:
            raise BadInputError(path, f"truncated: ended at line {pos}")
        try:
            v = int(s)
        except ValueError:
            raise BadInputError(path, f"line {pos}: expected the {what}, got {s[:40]!r}") from None
        if v < 0:
            raise BadInputError(path, f"line {pos}: negative {what} {v}")
        return v

    num_frames = count("frame count")
    t_out = num_frames if frames is None else int(frames)
    data = np.zeros((3, t_out, joints, persons), np.float32)
    for t in range(num_frames):
        bodies = count(f"body count of frame {t}")
        for m in range(bodies):
            info = line().split()
            if len(info) != 10:
                raise BadInputError(path, f"line {pos}: body info of frame {t} has {len(info)} numbers, expected 10")
            nj = count(f"joint count of frame {t} body {m}")
            if pos + nj > n_lines:
                raise BadInputError(path, f"truncated: frame {t} body {m} needs {nj} joint lines")
            block = lines[pos:pos + nj]
            pos += nj
            try:
                vals = np.array(" ".join(block).split(), dtype=np.float32)
            except ValueError:
                raise BadInputError(path, f"frame {t} body {m}: non-numeric joint values") from None
            if vals.size != nj * 12:
                if pos >= n_lines - 1:
                    raise BadInputError(path, f"truncated: frame {t} body {m} has {vals.size} of {nj * 12} joint values")
                raise BadInputError(path, f"frame {t} body {m}: {vals.size} joint values, expected {nj} x 12")
            if m < persons and t < t_out:
                xyz = vals.reshape(nj, 12)[:joints, :3]
                if not np.all(np.isfinite(xyz)):
                    raise BadInputError(path, f"frame {t} body {m}: NaN or inf")
                data[:, t, : xyz.shape[0], m] = xyz.T
    rest = [s for s in lines[pos:] if s.strip()]
    if rest:
        raise BadInputError(path, f"line {pos + 1}: {len(rest)} unexpected lines after the last frame")
    if frames is not None and num_frames > frames:
        log.debug("%s: %d frames, kept the first %d", path, num_frames, frames)
    return data


class _Reader:
    def __init__(self, frames: int, persons: int) -> None:
        self.frames, self.persons = frames, persons

    def __call__(self, path: str) -> np.ndarray:
        return read_ntu_skeleton(path, self.frames, self.persons)


def load_ignore_list(path: str | os.PathLike | None) -> set[str]:
    """Sample ids (``S001C002P005R002A008``) to skip, one per line."""
    if path is None:
        return set()
    with open(path) as f:
        return {ln.strip().split(".")[0] for ln in f if ln.strip()}


def in_training_set(name: str, benchmark: str) -> bool:
    p = parse_name(name)
    if benchmark == "xsub":
        return p["subject"] in TRAIN_SUBJECTS
    if benchmark == "xview":
        return p["camera"] in TRAIN_CAMERAS
    raise ValueError(f"unknown benchmark {benchmark!r}; use xsub or xview")


def convert_ntu(src: str | os.PathLike, out: str | os.PathLike, *, benchmarks: Sequence[str] = BENCHMARKS,
                ignore_list: str | os.PathLike | None = None, frames: int = 300, persons: int = 2,
                skip_bad: bool = False, workers: int = 1, limit: int | None = None,
                progress: bool = True) -> dict[str, int]:
    """Convert a folder of ``.skeleton`` files to ``out/{xsub,xview}/{train,val}_*``.

    Returns counts ``{bench}_{split}``, ``ignored``, ``bad`` (and per split ``*_bad``).
    """
    src = Path(src)
    if not src.is_dir():
        raise ConversionError(f"{src}: not a folder")
    ignore = load_ignore_list(ignore_list)
    files = []
    ignored = 0
    for p in sorted(src.glob("*.skeleton")):
        try:
            parse_name(p.name)
        except ValueError:
            log.warning("%s: not an NTU file name, skipped", p)
            continue
        if p.name.split(".")[0] in ignore:
            ignored += 1
            continue
        files.append(p)
    if limit is not None:
        files = files[: int(limit)]
    if not files:
        raise ConversionError(f"{src}: no .skeleton files to convert")
    out_counts: dict[str, int] = {}
    first: Path | None = None
    for bench in benchmarks:
        results = {}
        for split in ("train", "val"):
            samples = [Sample(p.name, parse_name(p.name)["action"] - 1, str(p)) for p in files
                       if in_training_set(p.name, bench) == (split == "train")]
            reader = _Reader(frames, persons)
            w = workers
            if first is not None:  # copy from the first benchmark's arrays instead of parsing again
                reader = _FromConverted(first)
                samples = [s for s in samples if s.name in reader.index]
                w = 1
            results[split] = write_split(Path(out) / bench, split, samples, reader,
                                         (3, frames, NUM_JOINTS, persons), skip_bad=skip_bad, workers=w,
                                         progress=progress, desc=f"ntu {bench} {split}")
        if first is None:
            first = Path(out) / bench
        for k, v in counts(results).items():
            out_counts[f"{bench}_{k}"] = v
    out_counts["ignored"] = ignored
    out_counts["bad"] = max((out_counts.get(f"{b}_bad", 0) for b in benchmarks), default=0)
    return out_counts


class _FromConverted:
    """Reads samples, by file path, from an already converted benchmark folder."""

    def __init__(self, folder: Path) -> None:
        import pickle

        self.index: dict[str, tuple[str, int]] = {}
        self.arrays: dict[str, np.ndarray] = {}
        for split in ("train", "val"):
            with open(folder / f"{split}_label.pkl", "rb") as f:
                names, _ = pickle.load(f)
            data = folder / f"{split}_data.npy"
            for i, n in enumerate(names):
                self.index[n] = (str(data), i)

    def __call__(self, path: str) -> np.ndarray:
        file, i = self.index[Path(path).name]
        if file not in self.arrays:
            self.arrays[file] = np.load(file, mmap_mode="r")
        return np.array(self.arrays[file][i])
