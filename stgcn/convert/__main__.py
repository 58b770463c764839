"""``python -m stgcn.convert FORMAT SRC OUT [options]``: convert a dataset to the st-gcn format;
``python -m stgcn.convert merge OUT SRC... --classes FILE``: merge converted datasets."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from pipeline.cli import add_debug_flag, run_cli, setup_logging

from .common import ConversionError

CONVERSION_FAILED = 1  # exit status of a conversion stopped by a bad input file


def _common(p: argparse.ArgumentParser, persons: int = 2) -> None:
    p.add_argument("src", help="input folder")
    p.add_argument("out", help="output folder")
    p.add_argument("--frames", type=int, default=300, help="T of the output (default 300)")
    if persons:
        p.add_argument("--persons", type=int, default=persons, help=f"M of the output (default {persons})")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable input files with a warning")
    p.add_argument("--workers", type=int, default=1, help="reader processes (default 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_debug_flag(p)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m stgcn.convert", description=__doc__)
    sub = ap.add_subparsers(dest="format", required=True, metavar="FORMAT")

    p = sub.add_parser("kinetics", help="Kinetics-skeleton per-clip JSON",
                       description="SRC holds train/ and val/ (or kinetics_train/, kinetics_val/) with "
                                   "kinetics_{train,val}_label.json, or is one folder given with --label-json.")
    _common(p)
    p.add_argument("--label-json", help="label JSON for a single folder of clips")
    p.add_argument("--split", default="train", help="split name for --label-json (default train)")
    p.add_argument("--limit", type=int, help="at most this many clips per split")

    p = sub.add_parser("ntu", help="NTU RGB+D raw .skeleton files",
                       description="SRC is a folder of .skeleton files; writes OUT/xsub and OUT/xview.")
    _common(p)
    p.add_argument("--ignore-list", help="file of sample ids to skip (ntu_samples_with_missing_skeletons.txt)")
    p.add_argument("--benchmark", nargs="+", choices=("xsub", "xview"), default=["xsub", "xview"])
    p.add_argument("--limit", type=int, help="at most this many files")

    p = sub.add_parser("utd-mhad", help="UTD-MHAD Kinect skeletons (.mat)",
                       description="SRC is the UTD-MHAD folder (manifest.csv + Skeleton/*.mat); "
                                   "cross-subject split (subjects 1,3,5,7 train; 2,4,6,8 val).")
    _common(p)
    p.add_argument("--layout", default="kinect-v1", choices=("kinect-v1", "openpose", "ntu-rgb+d"),
                   help="kinect-v1: native 3D; openpose: projected to 2D image coordinates; ntu-rgb+d: 3D mapped")
    p.add_argument("--subjects", type=int, nargs="+", help="only these subjects")
    p.add_argument("--limit", type=int, help="at most this many files per split")

    for name, helptext, desc in (
            ("utd-mhad-2d", "UTD-MHAD OpenPose 2D keypoints of the RGB videos (CSV)",
             "SRC is utd-mhad-openpose2d (manifest.csv + csv/*.csv); cross-subject split; openpose layout."),
            ("penn-action", "Penn Action 2D joints (labels/NNNN.mat)",
             "SRC holds labels/NNNN.mat; the official train/test split; openpose layout."),
            ("jhmdb", "JHMDB 2D joints, split 1 (GT_{train,test}_1.pkl)",
             "SRC holds GT_train_1.pkl and GT_test_1.pkl; openpose layout.")):
        p = sub.add_parser(name, help=helptext, description=desc + " Writes class_names.txt and meta.json too.")
        _common(p)
        p.add_argument("--limit", type=int, help="at most this many samples per split")

    p = sub.add_parser("merge", help="merge converted datasets under one class list",
                       description="OUT first, then the converted dataset folders; writes class_names.txt, "
                                   "sources.json (the dataset of each sample) and meta.json.")
    p.add_argument("out", help="output folder")
    p.add_argument("srcs", nargs="+", metavar="SRC", help="converted dataset folders")
    p.add_argument("--classes", required=True, help="merged class list (YAML, e.g. configs/classes/real_video.yaml)")
    p.add_argument("--frames", type=int, help="T of the output (default: the largest T of the sources)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_debug_flag(p)

    p = sub.add_parser("recordings", help="the pipeline's *.skel recordings, labelled by folder or CSV",
                       description="SRC holds SRC/<label>/*.skel (run_pipeline.py --record SRC --label NAME), "
                                   "or takes whose metadata carries a label, or any recordings with --labels CSV. "
                                   "Writes class_names.txt too.")
    _common(p, persons=1)  # the live worker classifies each person alone
    p.add_argument("--labels", help="CSV with columns file, label (class name); default: labels from the folders")
    p.add_argument("--classes", help="class names, one a line (default: sorted unique labels)")
    p.add_argument("--layout", default="openpose")
    val = p.add_mutually_exclusive_group()
    val.add_argument("--val", metavar="DIR2", help="validation takes, laid out like SRC (e.g. other people)")
    val.add_argument("--val-fraction", type=float, default=0.2,
                     help="else this fraction of each class's takes, drawn at random (default 0.2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-gap", type=int, default=10, help="hold the last frame over gaps up to this many frames")
    return ap


def run(args: argparse.Namespace) -> dict:
    if args.format == "merge":
        from .merge import merge_datasets
        return merge_datasets(args.out, args.srcs, args.classes, frames=args.frames, progress=not args.no_progress)
    common = dict(frames=args.frames, skip_bad=args.skip_bad, workers=args.workers, progress=not args.no_progress)
    if args.format == "kinetics":
        from .kinetics import convert_kinetics
        return convert_kinetics(args.src, args.out, label_json=args.label_json, split=args.split,
                                persons=args.persons, limit=args.limit, **common)
    if args.format == "ntu":
        from .ntu import convert_ntu
        return convert_ntu(args.src, args.out, benchmarks=args.benchmark, ignore_list=args.ignore_list,
                           persons=args.persons, limit=args.limit, **common)
    if args.format == "utd-mhad":
        from .utd_mhad import convert_utd_mhad
        return convert_utd_mhad(args.src, args.out, layout=args.layout, persons=args.persons,
                                subjects=args.subjects, limit=args.limit, **common)
    if args.format == "utd-mhad-2d":
        from .utd_mhad_2d import convert_utd_mhad_2d
        return convert_utd_mhad_2d(args.src, args.out, persons=args.persons, limit=args.limit, **common)
    if args.format == "penn-action":
        from .penn_action import convert_penn_action
        return convert_penn_action(args.src, args.out, persons=args.persons, limit=args.limit, **common)
    if args.format == "jhmdb":
        from .jhmdb import convert_jhmdb
        return convert_jhmdb(args.src, args.out, persons=args.persons, limit=args.limit, **common)
    if args.format == "recordings":
        from .recordings import convert_recordings
        return convert_recordings(args.src, args.out, args.labels, val_src=args.val, classes=args.classes,
                                  layout=args.layout,
                                  persons=args.persons, val_fraction=args.val_fraction, seed=args.seed,
                                  max_gap=args.max_gap, **common)
    raise ValueError(args.format)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.debug)

    def convert() -> int:
        t0 = time.perf_counter()
        result = run(args)
        logging.getLogger("stgcn.convert").info("done in %.1f s: %s", time.perf_counter() - t0, json.dumps(result))
        return 0

    return run_cli(parser.prog, convert, debug=args.debug, errors=(ConversionError, OSError),
                   code=CONVERSION_FAILED)


if __name__ == "__main__":
    sys.exit(main())
