"""Fixtures shared across the test tree."""

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
