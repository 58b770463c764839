"""Fixtures and helpers shared across the test tree."""

import time

import pytest

from stgcn import STGCN, save_checkpoint


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory):
    """A small project checkpoint (random weights, openpose, predictor, 16-frame window)."""
    cfg = {"in_channels": 3, "num_class": 5, "graph_args": {"layout": "openpose"}, "predictor": True, "coords": 2}
    path = tmp_path_factory.mktemp("w") / "tiny.pt"
    save_checkpoint(path, STGCN(**cfg), {"model": cfg, "class_names": list("abcde"),
                                          "normalisation": {"name": "person_centric"}, "window": 16})
    return path


def final_stats(sub, timeout: float = 20.0) -> dict:
    """The body of the final stats record an inference worker publishes as it stops."""
    from pipeline.results import WorkerStats

    deadline = time.time() + timeout
    while time.time() < deadline:
        record = sub.recv(timeout_ms=200)
        if isinstance(record, WorkerStats) and record.final:
            return record.stats
    raise AssertionError(f"no final stats record within {timeout} s")
