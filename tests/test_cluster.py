"""``run_pipeline.py --cluster``: the pipeline as Ray actors on a real multi-node Ray cluster.

One local cluster for the module (``ray.cluster_utils.Cluster``: a head and three nodes, each
its own raylet with its own resources, on this host): ``host-a`` (a source host, custom
resource) and two nodes with one (declared) GPU each. ``run_pipeline.py`` runs as users run it,
a separate process that joins the cluster; its workers are real processes under real actors,
sending real recordings over CURVE-encrypted ZeroMQ to the tiny checkpoint of conftest.py on the
CPU. Faults are real: SIGKILL of actor processes, a node removed. Skipped only where Ray is
not installed outside CI (``pip install '.[cluster]'``); in CI (``CI`` set) Ray is required.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import pytest

from tests.test_reliability_streaming import ENV, cleanup, pgrep, rows, unique_config, wait_for, write_walk_recording

if not os.environ.get("CI"):
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install '.[cluster]'")

ROOT = Path(__file__).resolve().parents[1]
FRAMES = 200  # at 20 fps: a 10 s stream, long enough to kill workers mid-way
RAY_ENV = {**ENV, "RAY_USAGE_STATS_ENABLED": "0"}


@pytest.fixture(scope="module")
def cluster():
    """A head (the driver's node: sources without a host run there) and three worker nodes."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    nodes = {"host-a": c.add_node(num_cpus=0, resources={"host-a": 1}),
             "gpu-1": c.add_node(num_cpus=1, num_gpus=1),
             "gpu-2": c.add_node(num_cpus=1, num_gpus=1)}
    c.wait_for_nodes()
    try:
        yield c, {name: node.node_id for name, node in nodes.items()}, nodes
    finally:
        c.shutdown()


@pytest.fixture(scope="module")
def walk(tmp_path_factory) -> Path:
    return write_walk_recording(tmp_path_factory.mktemp("rec") / "walk.skel", FRAMES, 20.0, seed=5)


def start(cluster, tmp_path: Path, tiny_weights: Path, *args: str):
    c = cluster[0]
    config, tag = unique_config(tmp_path)
    out = tmp_path / "r.jsonl"
    argv = [sys.executable, "run_pipeline.py", "--cluster", c.address, "--device", "cpu", "--print-every", "100000",
            "--weights", str(tiny_weights), "--config", config, "--output", str(out), "--stride", "10", *args]
    with open(tmp_path / "stdout", "w") as stdout, open(tmp_path / "stderr", "w") as stderr:
        proc = subprocess.Popen(argv, cwd=ROOT, env=RAY_ENV, stdout=stdout, stderr=stderr)
    return proc, out, tag


def finish(proc, tmp_path: Path, timeout: float = 150) -> tuple[str, str]:
    """Wait for the run; its stdout and stderr."""
    proc.wait(timeout)
    return (tmp_path / "stdout").read_text(), (tmp_path / "stderr").read_text()


def placed(stderr: str) -> dict[str, str]:
    """Worker name -> node id prefix, from the launcher's placement lines."""
    return dict(re.findall(r"pipeline\.cluster: (.+?)(?: -> \S+)? on node ([0-9a-f]{8}) ", stderr))


def actor_of(pattern: str) -> int:
    """The pid of the actor process whose worker child matches ``pattern``."""
    pids = pgrep(pattern)
    assert len(pids) == 1, f"{pattern}: {pids}"
    return int(Path(f"/proc/{pids[0]}/stat").read_text().rsplit(")", 1)[1].split()[1])


def state_seq(pattern: str) -> int:
    """The last frame a running source worker says it delivered (its node-local state file)."""
    pids = pgrep(pattern)
    if len(pids) != 1:
        return -1
    argv = Path(f"/proc/{pids[0]}/cmdline").read_bytes().decode().split("\0")
    try:
        return int(re.search(r'"seq": (\d+)', Path(argv[argv.index("--state-file") + 1]).read_text()).group(1))
    except (OSError, AttributeError, ValueError):
        return -1


def by_stream(results: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    for r in results:
        out[r["stream"]].append(r)
    return out


def test_streams_are_placed_by_resource_and_survive_sigkilled_actors(cluster, tmp_path, tiny_weights, walk):
    _, ids, _ = cluster
    proc, out, tag = start(cluster, tmp_path, tiny_weights, "--replay", f"host-a:{walk}", "--replay", str(walk))
    try:
        # the capture side: the replay on host-a, killed (its actor) once it has sent frame 40
        wait_for(lambda: state_seq(f"workers.replay .*--stream walk .*{tag}") >= 40, 90, "walk past frame 40")
        os.kill(actor_of(f"workers.replay .*--stream walk .*{tag}"), signal.SIGKILL)
        # the inference side: the actor of the worker serving walk-2, once it has answered
        got = wait_for(lambda: [r for r in rows(out) if r["stream"] == "walk-2"], 60, "a result of walk-2")
        victim = got[0]["worker"]
        os.kill(actor_of(f"workers.inference .*--name {victim} .*{tag}"), signal.SIGKILL)
        stdout, stderr = finish(proc, tmp_path)
        assert proc.returncode == 0, stderr[-4000:]
    finally:
        cleanup(proc, tag)
    where = placed(stderr)
    assert where[f"replay host-a:{walk}"] == ids["host-a"][:8], where
    assert {where["inference-0"], where["inference-1"]} == {ids["gpu-1"][:8], ids["gpu-2"][:8]}, where
    assert f"replay host-a:{walk} died" in stderr and f"{victim} died" in stderr
    assert "pipeline finished: walk: " in stdout
    streams = by_stream(rows(out))
    assert set(streams) == {"walk", "walk-2"}
    for stream, rs in streams.items():
        assert len({r["worker"] for r in rs}) == 1, f"{stream} moved between workers"
        seqs = [r["seq"] for r in rs]
        assert seqs[-1] == FRAMES - 1 and seqs == sorted(seqs), f"{stream}: {seqs}"
    # the killed replay resumed after its last sent frame (frames the killed inference worker
    # had taken are gone with its ring buffer: walk-2 restarts its windows, as on one machine)
    seqs = [r["seq"] for r in streams["walk"]]
    assert max(b - a for a, b in zip(seqs, seqs[1:])) <= 30, f"walk resumed where it stopped: {seqs}"
    assert pgrep(tag) == [], "no worker outlives the run"
    assert not list(Path(tempfile.gettempdir()).glob(f"stgcn-cluster-{os.getuid()}-*")), "keys are removed"


@pytest.mark.parametrize("argv,message", [
    (["--camera", "host-x:0"], "no node of the cluster has the resource 'host-x'"),
    (["--inference-workers", "3"], "3 inference workers need one GPU each; the cluster has 2"),
])
def test_what_the_cluster_cannot_run_is_one_line(cluster, argv, message):
    proc = subprocess.run([sys.executable, "run_pipeline.py", "--cluster", cluster[0].address, *argv], cwd=ROOT,
                          env=RAY_ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("argv,message", [
    (["--cluster", "127.0.0.1:9", "--camera", "0"], "--cluster 127.0.0.1:9: no Ray cluster answers there"),
    (["--camera", "host-a:0"], "--camera host-a:0 names a host: that needs --cluster"),
])
def test_bad_cluster_input_is_one_line(argv, message):
    proc = subprocess.run([sys.executable, "run_pipeline.py", *argv], cwd=ROOT, env=RAY_ENV, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr


def test_without_cluster_nothing_imports_ray():
    code = ("import sys, run_pipeline, pipeline.cluster, workers.actor; "
            "run_pipeline.parse_args(['--camera', '0']); print('ray' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "False", proc.stderr[-2000:]


def test_lost_nodes_are_one_line_each_their_sources_stop_their_inference_worker_moves(cluster, tmp_path,
                                                                                    tiny_weights, walk):
    """Last in the module: it takes nodes away. The inference worker's node and host-a (the
    source of walk-2) are removed while both streams run."""
    c, ids, nodes = cluster
    proc, out, tag = start(cluster, tmp_path, tiny_weights, "--replay", str(walk), "--replay", f"host-a:{walk}",
                           "--inference-workers", "1")
    try:
        wait_for(lambda: {r["stream"] for r in rows(out)} == {"walk", "walk-2"}, 90, "results of both streams")
        where = placed((tmp_path / "stderr").read_text())["inference"]
        lost = next(name for name, node in ids.items() if node[:8] == where)
        c.remove_node(nodes["host-a"])
        c.remove_node(nodes[lost])
        stdout, stderr = finish(proc, tmp_path)
        assert proc.returncode == 2, stderr[-4000:]
    finally:
        cleanup(proc, tag)
    said = {name: [line for line in stderr.splitlines() if f"node {ids[name][:8]}" in line and " lost: " in line]
            for name in ("host-a", lost)}
    assert said["host-a"] and said["host-a"][0].endswith("lost: streams walk-2 stop (their sources are there)")
    assert said[lost] and said[lost][0].endswith("inference moves to another node with room (its streams walk "
                                                 "follow it)"), stderr[-4000:]
    assert len(said["host-a"]) == len(said[lost]) == 1
    assert "streams walk re-pointed to it" in stderr
    assert f"failed: replay host-a:{walk}" in stdout
    streams = by_stream(rows(out))
    seqs = [r["seq"] for r in streams["walk"]]
    assert seqs[-1] == FRAMES - 1 and seqs == sorted(seqs), seqs
    assert streams["walk-2"][-1]["seq"] < FRAMES - 1
    assert pgrep(tag) == [], "no worker outlives the run"
    assert not list(Path(tempfile.gettempdir()).glob(f"stgcn-cluster-{os.getuid()}-*")), "keys are removed"
