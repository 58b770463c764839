"""Pieces shared by training and ``stgcn.eval``: the serving config, loader workers, the weakest-classes line."""

import os

import pytest

from stgcn.config import serving_config
from stgcn.data import available_cpus, resolve_workers
from stgcn.eval import weakest_classes


def test_serving_config_keeps_the_layout_only_in_the_graph_args():
    cfg = {"model": {"in_channels": 3, "num_class": 4}, "data": {"layout": "ntu-rgb+d", "window": 50},
           "train": {"task": "joint"}}
    serve = serving_config(cfg, 4)
    assert "layout" not in serve
    assert serve["model"]["graph_args"]["layout"] == "ntu-rgb+d" and serve["model"]["coords"] == 3
    assert serve["model"]["predictor"] and serve["window"] == 50 and serve["class_names"] == ["0", "1", "2", "3"]


def test_num_workers_auto_is_the_cpus_available():
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert available_cpus() == cpus
    assert resolve_workers("auto") == resolve_workers(None) == cpus
    assert resolve_workers(0) == 0 and resolve_workers(3) == 3 and resolve_workers("2") == 2
    for bad in (-1, "many"):
        with pytest.raises(ValueError, match="num_workers"):
            resolve_workers(bad)


def test_weakest_classes_leave_out_classes_without_samples():
    confusion = [[2, 0, 0], [1, 1, 0], [0, 0, 0]]  # class c has no validation sample
    assert weakest_classes(confusion, ["a", "b", "c"]) == "b 50 %, a 100 %; no samples: c"
    assert weakest_classes([[0, 0], [0, 0]], ["a", "b"]) == "none scored; no samples: a, b"
    many = [[0] * 8 for _ in range(8)]
    assert weakest_classes(many, list("abcdefgh"), n=5).endswith("no samples: a, b, c, d, e (+3 more)")
