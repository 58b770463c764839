"""``run_pipeline.py --cluster ADDRESS``: the same pipeline with every worker as a Ray actor.

Placement: an inference worker takes one GPU (a cluster without GPUs: ``cluster.inference_cpus``
CPUs); a source named with a host (``--camera host-a:0``, ``--replay host-b:/data/x.skel``)
runs on a node started with that custom resource (``ray start --resources '{"host-a": 1}'``),
any other source on the node where this command runs, as does the results sink. Each worker
is a :class:`workers.actor.WorkerActor` that runs the worker's own command line.

Endpoints go through Ray: each inference actor binds on its node's address and reports its
endpoints; the sources are given their inference worker's (the i-th source is pinned to
worker i mod N, as locally) and the sink all of them. All traffic is CURVE-encrypted with
keys made here for this run and handed to each actor (its own secret only), which writes
them to a folder only its user can read and deletes them at the end.

Restarts are Ray's (``max_restarts``): a killed source resumes after its last sent frame, a
killed inference worker binds the same endpoints again on its node. A lost node is reported
in one line: its sources stop (their camera or file is there); its inference workers start
on another node with room, their endpoints change and their sources are re-pointed to them.
Ray is imported only here, and only with ``--cluster``.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import shutil
import signal
import socket
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.cli import USER_ERROR
from pipeline.settings import ClusterSettings, load_settings
from pipeline.transport import CurveKeyPair, ResultSubscriber, generate_keypair
from workers.actor import run_folder

log = logging.getLogger("pipeline.cluster")
POLL_S = 0.25  # how often actors' states are collected
NODES_S = 1.0  # how often the cluster's nodes are checked
WAIT_S = 2.0  # how long one wait call on an actor blocks


class ClusterError(Exception):
    """Bad input or an unusable cluster: one line for the user, exit status 2."""


def split_host(value: str, local_file: bool = False) -> tuple[str | None, str]:
    """``host-a:0`` -> ``("host-a", "0")``; ``0`` or an existing local file -> ``(None, value)``."""
    host, sep, rest = value.partition(":")
    if local_file or not sep or not host or "/" in host or not rest:
        return None, value
    return host, rest


@dataclass
class Member:
    """One worker of the run: its actor and what the launcher knows about it."""

    name: str
    role: str
    handle: Any
    index: int  # inference: its number; source: the inference worker it is pinned to
    stream: str | None = None
    host: str | None = None
    node: str | None = None
    ip: str | None = None
    endpoints: dict | None = None
    gpus: str | None = None
    former: set = field(default_factory=set)  # nodes it ran on before a move
    pending: Any = None  # the wait call in flight
    probe: Any = None  # an info call after a death: returns once Ray has restarted the actor
    probe_since: float = 0.0
    done: bool = False
    failed: bool = False
    restarts: int = 0


def connect(address: str) -> str:
    """Join the Ray cluster at ``address`` (``local`` starts one on this machine); its driver node id."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise ClusterError("--cluster needs Ray: pip install '.[cluster]'") from None
    target = address.removeprefix("ray://")
    if address not in ("auto", "local") and ":" in target:
        host, _, port = target.rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
        except (OSError, ValueError) as exc:
            raise ClusterError(f"--cluster {address}: no Ray cluster answers there ({exc})") from None
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": True}
    if address == "local":
        kwargs["include_dashboard"] = False
    try:
        ray.init(address=address, **kwargs)
    except ImportError as exc:  # ray:// without the client package
        raise ClusterError(f"--cluster {address}: {exc} (ray:// needs pip install 'ray[client]')") from None
    except Exception as exc:  # Ray's own errors for an address it cannot use: one line, not its traceback
        raise ClusterError(f"--cluster {address}: {(str(exc) or type(exc).__name__).splitlines()[0]}") from None
    return ray.get_runtime_context().get_node_id()


def check_placement(hosts: list[str], n: int, gpus: int, cpus: float, resources: dict[str, float],
                    cfg: ClusterSettings) -> None:
    """Refuse, in one line, what no node of the cluster could ever run (Ray would wait forever)."""
    for host in sorted(set(hosts)):
        if resources.get(host, 0) < cfg.source_share:
            raise ClusterError(f"no node of the cluster has the resource {host!r}: start that machine's node "
                               f"with ray start --address HEAD:6379 --resources '{{\"{host}\": 1}}'")
    if gpus and n > gpus:
        raise ClusterError(f"{n} inference workers need one GPU each; the cluster has {gpus}")
    if not gpus and n * cfg.inference_cpus > cpus:
        raise ClusterError(f"{n} inference workers need {cfg.inference_cpus:g} CPUs each; the cluster has {cpus:g}")


def inference_args(args: argparse.Namespace, name: str, record_dir: Path | None) -> list[str]:
    """The inference worker's flags, endpoints and keys aside (its actor adds those on its node)."""
    argv = ["--name", name] + (["--config", args.config] if args.config else [])
    argv += [flag for flag, on in (("--debug", args.debug), ("--quiet", args.quiet)) if on]
    for flag, value in (("--weights", args.weights), ("--device", args.device), ("--stride", args.stride),
                        ("--form", args.form), ("--record", record_dir)):
        if value is not None:
            argv += [flag, str(value)]
    return argv + (["--future"] if getattr(args, "future", False) else [])


def _without(argv: list[str], flag: str) -> list[str]:
    """``argv`` without every ``flag VALUE`` pair."""
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == flag:
            skip = True
        else:
            out.append(item)
    return out


class ClusterRun:
    """Starts the actors, watches them and the nodes, runs the sink here, stops everything."""

    def __init__(self, args: argparse.Namespace, cfg: ClusterSettings, driver_node: str) -> None:
        self.args, self.cfg, self.driver_node = args, cfg, driver_node
        self.run_id = uuid.uuid4().hex[:12]
        self.server = generate_keypair()
        self.sink_keys = generate_keypair()
        self.members: list[Member] = []
        self.sink = None
        self.alive: dict[str, bool] = {}
        self.lost_nodes: set[str] = set()

    # ---- start -------------------------------------------------------------------------
    def _actor(self, **options: Any):
        import ray

        from workers.actor import WorkerActor

        return ray.remote(WorkerActor).options(max_restarts=self.cfg.max_restarts, max_task_retries=0,
                                               **options)

    def start_inference(self, n: int, gpus: int, client_keys: list[CurveKeyPair], record_dir: Path | None) -> None:
        keys = {"server": self.server.public, "server_secret": self.server.secret,
                "allowed": [k.public for k in client_keys]}
        need = {"num_gpus": 1, "num_cpus": 0} if gpus else {"num_cpus": self.cfg.inference_cpus}
        for i in range(n):
            name = "inference" if n == 1 else f"inference-{i}"
            handle = self._actor(scheduling_strategy="SPREAD", **need).remote(
                name, "inference", "workers.inference", inference_args(self.args, name, record_dir), keys, self.run_id)
            self.members.append(Member(name, "inference", handle, i))
        self._placed([m for m in self.members if m.role == "inference"])

    def start_sources(self, sources: list[tuple[str, list[str], str, str | None]], client_keys: list[CurveKeyPair],
                      n: int) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        inference = [m for m in self.members if m.role == "inference"]
        started = []
        for index, ((name, argv, stream, host), keys) in enumerate(zip(sources, client_keys, strict=True)):
            worker = inference[index % n]
            where = ({"resources": {host: self.cfg.source_share}} if host else
                     {"scheduling_strategy": NodeAffinitySchedulingStrategy(self.driver_node, soft=False)})
            own = {"server": self.server.public, "public": keys.public, "secret": keys.secret}
            module, rest = argv[2], _without(_without(argv[3:], "--connect"), "--state-file")
            handle = self._actor(num_cpus=0, **where).remote(name, "source", module, rest, own, self.run_id,
                                                             worker.endpoints["frames"])
            started.append(Member(name, "source", handle, index % n, stream=stream, host=host))
        self.members += started
        self._placed(started)

    def _placed(self, members: list[Member]) -> None:
        """Wait until Ray has placed ``members``; one line each saying where."""
        import ray

        refs = [m.handle.info.remote() for m in members]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=self.cfg.start_timeout_s)
        for member, ref in zip(members, refs):
            if ref not in ready:
                raise ClusterError(f"{member.name} found no node with room within {self.cfg.start_timeout_s:g} s "
                                   "(cluster.start_timeout_s)")
            try:
                self._learn(member, ray.get(ref))
            except ray.exceptions.RayActorError as exc:
                raise ClusterError(f"{member.name} could not start: {str(exc).splitlines()[0]}") from None
            gpu = f", GPU {member.gpus}" if member.role == "inference" and member.gpus else ""
            pinned = f" -> {self.members[member.index].name}" if member.role == "source" else ""
            log.info("%s%s on node %s (%s%s)", member.name, pinned, member.node[:8], member.ip, gpu)
            member.pending = member.handle.wait.remote(WAIT_S)

    def _learn(self, member: Member, info: dict) -> None:
        if member.node is not None and member.node != info["node"]:
            member.former.add(member.node)
        member.node, member.ip = info["node"], info["ip"]
        member.endpoints, member.gpus = info["endpoints"], info["gpus"]

    # ---- watch -------------------------------------------------------------------------
    def check(self) -> None:
        """Collect finished wait calls and restart probes; decide what each means."""
        import ray

        for m in self.members:
            if m.done:
                continue
            if m.probe is not None:
                self._check_probe(m)
                continue
            ready, _ = ray.wait([m.pending], timeout=0)
            if not ready:
                continue
            try:
                code = ray.get(m.pending)
            except ray.exceptions.RayActorError as exc:
                if m.node in self.lost_nodes and m.role == "source":
                    continue
                m.restarts += 1
                log.warning("%s died (%s); Ray restarts it (restart %d of at most %d)", m.name,
                            type(exc).__name__, m.restarts, self.cfg.max_restarts)
                m.probe, m.probe_since = m.handle.info.remote(), time.time()
                continue
            if code is None:
                m.pending = m.handle.wait.remote(WAIT_S)
            elif code == 0 and m.role == "source":
                m.done = True
                log.info("%s finished", m.name)
            elif code == USER_ERROR:
                m.done = m.failed = True
                log.error("%s stopped with an error (see its log above); not restarted", m.name)
            else:
                m.done = True

    def _check_probe(self, m: Member) -> None:
        import ray

        ready, _ = ray.wait([m.probe], timeout=0)
        if not ready:
            if m.role == "inference" and m.node in self.lost_nodes and \
                    time.time() - m.probe_since > self.cfg.move_timeout_s:
                m.done = m.failed = True
                log.error("%s found no other node within %g s (cluster.move_timeout_s)", m.name,
                          self.cfg.move_timeout_s)
            return
        try:
            info = ray.get(m.probe)
        except ray.exceptions.RayActorError:
            m.done = m.failed = True
            log.error("%s gave up after %d restarts", m.name, self.cfg.max_restarts)
            return
        m.probe = None
        old = m.endpoints
        self._learn(m, info)
        log.info("%s is back on node %s (%s)", m.name, m.node[:8], m.ip)
        if m.role == "inference" and info["endpoints"] != old:
            self._moved(m)
        m.pending = m.handle.wait.remote(WAIT_S)

    def _moved(self, worker: Member) -> None:
        """An inference worker came back with new endpoints: re-point its sources and the sink."""
        moved = [m for m in self.members if m.role == "source" and m.index == worker.index and not m.done]
        for m in moved:
            m.handle.retarget.remote(worker.endpoints["frames"])
        log.warning("%s now listens on %s; streams %s re-pointed to it", worker.name, worker.endpoints["frames"],
                    ", ".join(m.stream for m in moved) or "(none left)")
        self.subscribe()

    def subscribe(self) -> None:
        """(Re)connect the sink to every inference worker's results endpoint."""
        eps = [m.endpoints["results"] for m in self.members if m.role == "inference"]
        if self.sink.sub is not None:
            self.sink.sub.close()
        self.sink.sub = ResultSubscriber(eps, server_public=self.server.public, client_keys=self.sink_keys)

    def check_nodes(self) -> None:
        """One line for each node lost that ran workers of this run; its sources stop."""
        import ray

        lost = []
        for node in ray.nodes():
            nid, alive = node["NodeID"], node["Alive"]
            was = self.alive.get(nid)
            self.alive[nid] = alive
            if not alive and was and nid not in self.lost_nodes:
                self.lost_nodes.add(nid)
                lost.append(node)
        stopped = {}
        for node in lost:  # every lost node's sources first: they follow no moving worker
            stopped[node["NodeID"]] = [m for m in self.members if m.node == node["NodeID"] and m.role == "source"
                                       and not m.done]
            for m in stopped[node["NodeID"]]:
                m.done = m.failed = True
                ray.kill(m.handle, no_restart=True)
        for node in lost:
            nid = node["NodeID"]
            parts = [f"streams {', '.join(m.stream for m in stopped[nid])} stop (their sources are there)"] \
                if stopped[nid] else []
            for m in self.members:
                if m.role == "inference" and (m.node == nid or nid in m.former):
                    streams = [s.stream for s in self.members if s.role == "source" and s.index == m.index
                               and not s.done]
                    parts.append(f"{m.name} moves to another node with room (its streams "
                                 f"{', '.join(streams) or 'none'} follow it)")
            if parts:
                log.error("node %s (%s) lost: %s", nid[:8], node.get("NodeManagerAddress", "?"), "; ".join(parts))

    # ---- the run -----------------------------------------------------------------------
    def run(self, sink, drain_idle_s: float = 30.0) -> int:
        """The local supervisor's loop (pipeline/run_pipeline.py), over actors."""
        import ray

        self.sink = sink
        interrupted = False

        def on_signal(signum, _frame):
            nonlocal interrupted
            interrupted = True

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, on_signal)
        self.alive = {n["NodeID"]: n["Alive"] for n in ray.nodes()}
        last_result = last_check = last_nodes = time.time()
        sources = [m for m in self.members if m.role == "source"]
        while not interrupted:
            record = sink.sub.recv(timeout_ms=100)
            if record is not None:
                sink.handle(record)
                last_result = time.time()
                if time.time() - last_check < POLL_S:
                    continue
            last_check = time.time()
            if time.time() - last_nodes >= NODES_S:
                last_nodes = time.time()
                self.check_nodes()
            self.check()
            if all(m.done for m in sources):
                if all(m.failed for m in sources):
                    break
                expected = {m.stream for m in sources if not m.failed}
                if expected <= sink.ended or time.time() - last_result > drain_idle_s:
                    break
            if any(m.failed for m in self.members if m.role == "inference"):
                break
        self.stop()
        sink.close()
        failed = [m.name for m in self.members if m.failed]
        summary = ", ".join(f"{s}: {n} results" for s, n in sorted(sink.counts.items())) or "no results"
        print(f"pipeline finished: {summary}" + (f"; failed: {', '.join(failed)}" if failed else ""), flush=True)
        if interrupted:
            return 130
        return USER_ERROR if failed else 0

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every worker (SIGTERM through its actor), then the actors."""
        import ray

        live = [m for m in self.members if m.node not in self.lost_nodes]
        refs = [m.handle.stop.remote() for m in live]
        ray.wait(refs, num_returns=len(refs), timeout=timeout)
        for m in self.members:
            ray.kill(m.handle, no_restart=True)
        # what actors of this run left on this machine without stopping (their node was lost)
        shutil.rmtree(run_folder(self.run_id), ignore_errors=True)


def _unique(name: str, taken: set[str]) -> str:
    """``name``, or ``name #2``, ``#3``... when taken (two sources of the same file)."""
    base, n = name, 1
    while name in taken:
        n += 1
        name = f"{base} #{n}"
    taken.add(name)
    return name


def plan_sources(args: argparse.Namespace) -> tuple[argparse.Namespace, list[str | None]]:
    """``args`` with the hosts taken off the sources, and each source's host in
    ``run_pipeline.build_workers``' order (cameras, videos, replays)."""
    plain = copy.copy(args)
    hosts: list[str | None] = []
    plain.camera = []
    for value in args.camera:
        host, index = split_host(str(value))
        if not index.isdigit():
            raise ClusterError(f"--camera {value}: a camera is an index, or HOST:INDEX")
        hosts.append(host)
        plain.camera.append(int(index))
    for flag in ("video", "replay"):
        values = []
        for value in getattr(args, flag):
            host, path = split_host(value, local_file=Path(value).is_file())
            if host is None and not Path(value).is_file():
                raise ClusterError(f"{value}: no such file")
            hosts.append(host)
            values.append(path)
        setattr(plain, flag, values)
    return plain, hosts


def run_cluster(args: argparse.Namespace, record_dir: Path | None, build_workers) -> int:
    """``run_pipeline.py --cluster``; ``build_workers`` is run_pipeline's (the sources' command lines)."""
    from workers.sinks import ResultSink

    for flag, value in (("--devices", args.devices), ("--frames-endpoint", args.frames_endpoint),
                        ("--results-endpoint", args.results_endpoint)):
        if value:
            print(f"error: {flag} does not apply with --cluster: Ray places the inference workers and "
                  "hands out their endpoints", file=sys.stderr)
            return USER_ERROR
    run = None
    try:
        cfg = load_settings(args.config).cluster
        plain, hosts = plan_sources(args)
        driver_node = connect(args.cluster)
        import ray

        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        n = args.inference_workers or max(1, gpus)
        check_placement([h for h in hosts if h], n, gpus, resources.get("CPU", 0), resources, cfg)
        run = ClusterRun(args, cfg, driver_node)
        n_sources = len(hosts) or 1
        client_keys = [generate_keypair() for _ in range(n_sources)]
        run.start_inference(n, gpus, client_keys + [run.sink_keys], record_dir)
        frames = [m.endpoints["frames"] for m in run.members]
        results = [m.endpoints["results"] for m in run.members]
        sources = [(w.name, w.argv, w.stream) for w in build_workers(plain, frames, results, Path("."), record_dir)
                   if w.stream is not None]
        taken: set[str] = set()
        sources = [(_unique(name.replace(" ", f" {host}:", 1) if host else name, taken), argv, stream)
                   for (name, argv, stream), host in zip(sources, hosts or [None], strict=True)]
        sink = ResultSink(results, args.output, args.quiet, print_every=args.print_every,
                          server_public=run.server.public, client_keys=run.sink_keys)
        run.start_sources([(name, argv, stream, host) for (name, argv, stream), host
                           in zip(sources, hosts or [None], strict=True)], client_keys, n)
        return run.run(sink)
    except (ClusterError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        if run is not None:
            run.stop()
        return USER_ERROR
    finally:
        if "ray" in sys.modules:
            sys.modules["ray"].shutdown()
