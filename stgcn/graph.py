"""Skeleton graphs and the ST-GCN adjacency partitions.

A :class:`Graph` turns a joint layout (joint count, edges, center joint) into the stacked
adjacency ``A`` of shape ``(K, V, V)`` that the graph convolution multiplies with. The
construction follows the original ST-GCN release so that published checkpoints line up:
hop distances from the edge list, column normalisation ``A @ D^-1`` and the ``uniform``,
``distance`` and ``spatial`` partitioning strategies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np


@dataclass(frozen=True)
class Layout:
    """A skeleton layout: joint names, undirected edges (zero-based) and the center joint."""

    name: str
    joints: tuple[str, ...]
    edges: tuple[tuple[int, int], ...]
    center: int
    dims: int = 2  # coordinate dimensions the layout is captured in (2: x, y + confidence; 3: x, y, z)

    @property
    def num_node(self) -> int:
        return len(self.joints)


OPENPOSE_JOINTS = (
    "nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist",
    "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye", "r_ear", "l_ear",
)
OPENPOSE_EDGES = (
    (4, 3), (3, 2), (7, 6), (6, 5), (13, 12), (12, 11), (10, 9), (9, 8), (11, 5), (8, 2),
    (5, 1), (2, 1), (0, 1), (15, 0), (14, 0), (17, 15), (16, 14),
)

NTU_JOINTS = (
    "spine_base", "spine_mid", "neck", "head", "l_shoulder", "l_elbow", "l_wrist", "l_hand",
    "r_shoulder", "r_elbow", "r_wrist", "r_hand", "l_hip", "l_knee", "l_ankle", "l_foot",
    "r_hip", "r_knee", "r_ankle", "r_foot", "spine_shoulder", "l_hand_tip", "l_thumb",
    "r_hand_tip", "r_thumb",
)
# One-based as published with the original release (the chain the original checkpoints used).
_NTU_EDGES_1BASED = (
    (1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21), (10, 9),
    (11, 10), (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18),
    (20, 19), (22, 23), (23, 8), (24, 25), (25, 12),
)

# Kinect v1 (UTD-MHAD) joint order, as in the dataset's Skeleton_joint_order.txt.
KINECT_V1_JOINTS = (
    "head", "shoulder_center", "spine", "hip_center", "l_shoulder", "l_elbow", "l_wrist",
    "l_hand", "r_shoulder", "r_elbow", "r_wrist", "r_hand", "l_hip", "l_knee", "l_ankle",
    "l_foot", "r_hip", "r_knee", "r_ankle", "r_foot",
)
KINECT_V1_EDGES = (
    (0, 1), (1, 2), (2, 3), (1, 4), (4, 5), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (10, 11),
    (3, 12), (12, 13), (13, 14), (14, 15), (3, 16), (16, 17), (17, 18), (18, 19),
)

LAYOUTS: dict[str, Layout] = {
    "openpose": Layout("openpose", OPENPOSE_JOINTS, OPENPOSE_EDGES, center=1, dims=2),
    "ntu-rgb+d": Layout(
        "ntu-rgb+d", NTU_JOINTS, tuple((i - 1, j - 1) for i, j in _NTU_EDGES_1BASED), center=20, dims=3
    ),
    "kinect-v1": Layout("kinect-v1", KINECT_V1_JOINTS, KINECT_V1_EDGES, center=1, dims=3),
}
LAYOUT_ALIASES = {"ntu": "ntu-rgb+d", "utd-mhad": "kinect-v1", "kinetics": "openpose"}
LAYOUT_BY_JOINTS = {layout.num_node: name for name, layout in LAYOUTS.items()}


def canonical_layout(name: str) -> str:
    """The canonical name of a layout named by its name or an alias; other names (custom
    layouts) are their own canonical name. This is what frames carry and are compared by."""
    return LAYOUT_ALIASES.get(name, name)


def layout_for_joints(joints: int) -> str:
    """The built-in layout with this many joints; ValueError if none has it."""
    if joints not in LAYOUT_BY_JOINTS:
        raise ValueError(f"{joints} joints match no known layout ({', '.join(LAYOUT_BY_JOINTS.values())})")
    return LAYOUT_BY_JOINTS[joints]


def get_layout(layout: str | dict | Layout) -> Layout:
    """Resolve a layout name, alias, :class:`Layout` or custom graph dict to a :class:`Layout`
    whose ``name`` is canonical.

    A custom dict gives ``num_node``, ``edges`` and ``center`` (optional ``joints``, ``dims``)
    and names in ``name`` the joints it connects: a built-in layout or alias (its own edges
    over that layout's joints, fed by that layout's frames) or a new name (frames must carry
    that name). Without ``name`` it is ``custom``.
    """
    if isinstance(layout, Layout):
        return layout
    if isinstance(layout, str):
        key = canonical_layout(layout)
        if key not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; known: {sorted(LAYOUTS)} or a custom dict")
        return LAYOUTS[key]
    if isinstance(layout, dict):
        name = canonical_layout(str(layout.get("name", "custom")))
        base = LAYOUTS.get(name)
        num_node = int(layout["num_node"])
        if base is not None and base.num_node != num_node:
            raise ValueError(f"custom graph over {name!r} joints has num_node={num_node}, not {base.num_node}")
        joints = tuple(layout.get("joints") or (base.joints if base else (f"j{i}" for i in range(num_node))))
        edges = tuple((int(i), int(j)) for i, j in layout["edges"])
        for i, j in edges:
            if not (0 <= i < num_node and 0 <= j < num_node):
                raise ValueError(f"custom layout edge ({i}, {j}) outside 0..{num_node - 1}")
        if len(joints) != num_node:
            raise ValueError(f"custom layout has {len(joints)} joint names for num_node={num_node}")
        return Layout(name, joints, edges, int(layout["center"]), int(layout.get("dims", base.dims if base else 2)))
    raise TypeError(f"layout must be a name, dict or Layout, not {type(layout).__name__}")


def hop_distance(num_node: int, edges: Iterable[tuple[int, int]], max_hop: int = 1) -> np.ndarray:
    """Shortest-path hop count between joints, ``inf`` beyond ``max_hop``."""
    adj = np.zeros((num_node, num_node))
    for i, j in edges:
        adj[i, j] = adj[j, i] = 1
    hop = np.full((num_node, num_node), np.inf)
    reach = [np.linalg.matrix_power(adj, d) for d in range(max_hop + 1)]
    arrive = np.stack(reach) > 0
    for d in range(max_hop, -1, -1):
        hop[arrive[d]] = d
    return hop


def normalize_digraph(a: np.ndarray) -> np.ndarray:
    """Column-normalise an adjacency: ``A @ D^-1`` with D the column sums (zero columns stay zero)."""
    deg = a.sum(axis=0)
    inv = np.zeros_like(deg)
    nz = deg > 0
    inv[nz] = 1.0 / deg[nz]
    return a @ np.diag(inv)


class Graph:
    """The ST-GCN graph of a layout with a partitioning strategy.

    ``A`` is a float32 array ``(K, V, V)``: K = 1 for ``uniform``, the number of kept hops for
    ``distance`` and ``2 * hops - 1`` for ``spatial`` (3 with the default ``max_hop=1``).
    """

    def __init__(self, layout: str | dict | Layout = "openpose", strategy: str = "spatial",
                 max_hop: int = 1, dilation: int = 1) -> None:
        self.layout = get_layout(layout)
        self.strategy = strategy
        self.max_hop = max_hop
        self.dilation = dilation
        self.num_node = self.layout.num_node
        self.center = self.layout.center
        self.edges: Sequence[tuple[int, int]] = self.layout.edges
        self.hop_dis = hop_distance(self.num_node, self.edges, max_hop)
        self.A = self._adjacency(strategy).astype(np.float32)

    def _adjacency(self, strategy: str) -> np.ndarray:
        hops = range(0, self.max_hop + 1, self.dilation)
        v, hop_dis, center = self.num_node, self.hop_dis, self.center
        adjacency = np.zeros((v, v))
        for h in hops:
            adjacency[hop_dis == h] = 1
        norm = normalize_digraph(adjacency)
        if strategy == "uniform":
            return norm[None]
        if strategy == "distance":
            out = np.zeros((len(hops), v, v))
            for k, h in enumerate(hops):
                out[k][hop_dis == h] = norm[hop_dis == h]
            return out
        if strategy == "spatial":
            parts = []
            to_center = hop_dis[:, center]
            for h in hops:
                same = hop_dis == h
                root = np.where(same & (to_center[:, None] == to_center[None, :]), norm, 0.0)
                close = np.where(same & (to_center[:, None] > to_center[None, :]), norm, 0.0)
                further = np.where(same & (to_center[:, None] < to_center[None, :]), norm, 0.0)
                if h == 0:
                    parts.append(root)
                else:
                    parts.append(root + close)
                    parts.append(further)
            return np.stack(parts)
        raise ValueError(f"unknown strategy {strategy!r}; use uniform, distance or spatial")

    def __repr__(self) -> str:
        return (f"Graph(layout={self.layout.name!r}, strategy={self.strategy!r}, "
                f"max_hop={self.max_hop}, dilation={self.dilation}, A={tuple(self.A.shape)})")
