"""Graph construction: hop distances, partitions, normalisation, layouts."""

import numpy as np
import pytest

from stgcn.graph import LAYOUTS, Graph, get_layout, hop_distance, normalize_digraph


@pytest.mark.parametrize("name,num_node,center,num_edges", [
    ("openpose", 18, 1, 17), ("ntu-rgb+d", 25, 20, 24), ("kinect-v1", 20, 1, 19)])
def test_layouts_are_trees_with_expected_sizes(name, num_node, center, num_edges):
    layout = get_layout(name)
    assert layout.num_node == num_node and layout.center == center and len(layout.edges) == num_edges
    hop = hop_distance(num_node, layout.edges, max_hop=num_node)
    assert np.isfinite(hop).all(), "every joint reaches every other: the skeleton is connected"


def test_openpose_degrees_match_the_published_edges():
    g = Graph("openpose", "uniform")
    adj = (g.hop_dis == 1).astype(int)
    degree = adj.sum(0)
    # neck: nose, both shoulders, (no hips in the 18-joint openpose chain: hips hang off shoulders)
    assert degree[1] == 3
    assert degree[0] == 3  # nose: neck, both eyes
    assert degree[4] == 1 and degree[16] == 1  # wrist and ear are leaves
    assert degree[2] == 3  # r-shoulder: neck, elbow, r-hip


def test_ntu_uses_the_original_chain():
    g = Graph("ntu-rgb+d", "uniform")
    # one-based (22, 23) and (23, 8): hand tip connects to the thumb, thumb to the hand
    assert g.hop_dis[21, 22] == 1 and g.hop_dis[22, 7] == 1 and g.hop_dis[21, 7] == np.inf


@pytest.mark.parametrize("strategy,k", [("uniform", 1), ("distance", 2), ("spatial", 3)])
@pytest.mark.parametrize("layout", ["openpose", "ntu-rgb+d", "kinect-v1"])
def test_partitions_sum_to_the_normalised_adjacency(layout, strategy, k):
    g = Graph(layout, strategy)
    assert g.A.shape == (k, g.num_node, g.num_node) and g.A.dtype == np.float32
    full = normalize_digraph(((g.hop_dis <= 1)).astype(float))
    np.testing.assert_allclose(g.A.sum(0), full, atol=1e-6)
    # column normalisation: every column of the summed adjacency sums to one
    np.testing.assert_allclose(g.A.sum(0).sum(0), np.ones(g.num_node), atol=1e-6)


def test_spatial_partition_by_hand():
    """Partition order of the original: A[0] the joint itself, A[1] neighbours as far or farther
    from the center, A[2] nearer ones.

    Column w aggregates from rows v. Hop distances to the center are capped at max_hop (further
    joints are at infinity), as in the original, which the published checkpoints depend on.
    """
    g = Graph("openpose", "spatial")
    root, centrifugal, centripetal = g.A
    # r-shoulder (2): neighbours neck (1), itself, r-elbow (3), r-hip (8): 4 in all -> 1/4 each
    assert root[2, 2] == pytest.approx(0.25)
    assert centripetal[1, 2] == pytest.approx(0.25)  # the neck is nearer the center
    assert centrifugal[3, 2] == pytest.approx(0.25) and centrifugal[8, 2] == pytest.approx(0.25)
    # the center (neck) gets itself as root and its three neighbours as farther
    assert root[1, 1] == pytest.approx(0.25) and centripetal[:, 1].sum() == 0
    np.testing.assert_allclose(centrifugal[[0, 2, 5], 1], 0.25)
    # A[0] holds only the joint itself; r-elbow (3) and r-wrist (4) are both beyond max_hop
    # from the center ("equal" distances), which puts the elbow into A[1] for the wrist
    assert root[4, 4] == pytest.approx(0.5) and centrifugal[3, 4] == pytest.approx(0.5)
    np.testing.assert_allclose(root, np.diag(np.diag(root)))


def test_dilation_and_max_hop():
    g = Graph("openpose", "distance", max_hop=2)
    assert g.A.shape[0] == 3
    g2 = Graph("openpose", "distance", max_hop=2, dilation=2)
    assert g2.A.shape[0] == 2  # hops 0 and 2
    assert (g2.A[1] > 0).sum() == (g2.hop_dis == 2).sum()
    assert Graph("openpose", "spatial", max_hop=2).A.shape[0] == 5


def test_custom_layout_from_config():
    cfg = {"name": "stick", "num_node": 4, "edges": [[0, 1], [1, 2], [2, 3]], "center": 1}
    g = Graph(cfg, "spatial")
    assert g.A.shape == (3, 4, 4)
    with pytest.raises(ValueError, match="outside"):
        get_layout({"num_node": 3, "edges": [[0, 5]], "center": 0})
    with pytest.raises(ValueError, match="unknown layout"):
        get_layout("coco-wholebody")
    with pytest.raises(ValueError, match="unknown strategy"):
        Graph("openpose", "random")


def test_every_layout_is_registered():
    assert set(LAYOUTS) == {"openpose", "ntu-rgb+d", "kinect-v1"}
