"""One pipeline worker as a Ray actor: the actor runs the worker's own command line as a child
process on its node and shares its fate.

``run_pipeline.py --cluster`` (``pipeline/cluster.py``) makes one :class:`WorkerActor` per
worker. The worker itself is unchanged (``python -m workers.inference``, ``workers.replay``,
``workers.capture``): the actor only adds what depends on the node it landed on (the inference
worker's endpoints on this node's address, a node-local state file, CURVE certificate files)
and ties the two lives together, so that Ray's actor restarts are the worker's restarts:

- the actor dies, for any reason (SIGKILL, its node lost): the child gets SIGKILL from the
  kernel (``PR_SET_PDEATHSIG``); Ray starts the actor again and its constructor starts the
  worker again with the same command line (a source resumes after its last sent frame from
  its state file, an inference worker binds the same ports again);
- the worker crashes (any exit but 0 and the user-error status 2): the actor exits, so Ray
  restarts both, counted against the actor's ``max_restarts``.

This module imports nothing of Ray: the launcher wraps the class with ``ray.remote``.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from pipeline.cli import USER_ERROR

ROOT = Path(__file__).resolve().parents[1]
PR_SET_PDEATHSIG = 1
log = logging.getLogger("workers.actor")


def _libc_prctl():
    """libc's ``prctl``, looked up before any fork (the child must not load libraries)."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: children are not tied to the actor
        return None


_PRCTL = _libc_prctl()


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the thread that started it (the actor's main thread) dies."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL)


def write_certificate(path: Path, public: bytes, secret: bytes | None = None) -> Path:
    """A ZeroMQ certificate file (the format ``zmq.auth.load_certificate`` reads), mode 0600."""
    lines = ["metadata", "curve", f'    public-key = "{public.decode()}"']
    if secret is not None:
        lines.append(f'    secret-key = "{secret.decode()}"')
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("\n".join(lines) + "\n")
    return path


def run_folder(run_id: str) -> Path:
    """A run's private folder on a node: certificates, state files, endpoints to bind again."""
    return Path(tempfile.gettempdir()) / f"stgcn-cluster-{os.getuid()}-{run_id}"


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class WorkerActor:
    """Runs ``python -m MODULE ARGS`` on this node until it ends, is stopped or crashes.

    ``role`` is ``inference`` (binds its frames and results endpoints on this node's address,
    admits the ``allowed`` client keys) or ``source`` (a capture or replay worker: connects to
    the frames endpoint ``connect`` with its own key pair, trusting the server key ``server``). ``keys`` holds Z85 keys:
    ``server``, ``server_secret``, ``allowed`` (inference) or ``server``, ``public``, ``secret``
    (source). ``run_id`` names this run's private folder on the node (mode 0700: certificates,
    state files, the endpoints to bind again after a restart).
    """

    def __init__(self, name: str, role: str, module: str, args: list[str], keys: dict, run_id: str,
                 connect: str | None = None) -> None:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        self.name, self.role, self.connect = name, role, connect
        self.folder = run_folder(run_id)
        self.folder.mkdir(mode=0o700, exist_ok=True)
        self.folder.chmod(0o700)
        self.ip, self.node = self._node()
        self.module, self.args = module, list(args) + self._node_args(keys)
        self.stopping = self.replacing = False
        self.proc: subprocess.Popen | None = None
        self._start()

    @staticmethod
    def _node() -> tuple[str, str]:
        """This node's address and Ray node id."""
        import ray

        return ray.util.get_node_ip_address(), ray.get_runtime_context().get_node_id()

    def _node_args(self, keys: dict) -> list[str]:
        """Flags that depend on this node: certificates, endpoints or the state file (given last:
        a repeated option's last value wins)."""
        tag = hashlib.blake2b(self.name.encode(), digest_size=4).hexdigest()  # distinct names, distinct folders
        self.own = own = self.folder / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', self.name)[:60]}-{tag}"
        own.mkdir(mode=0o700, exist_ok=True)
        if self.role == "inference":
            allowed = own / "allowed"
            allowed.mkdir(mode=0o700, exist_ok=True)
            for i, public in enumerate(keys["allowed"]):
                write_certificate(allowed / f"client{i}.key", public)
            secret = write_certificate(own / "server.key_secret", keys["server"], keys["server_secret"])
            self.endpoints = self._endpoints(own / "endpoints.json")
            return ["--listen", self.endpoints["frames"], "--publish", self.endpoints["results"],
                    "--server-key", str(secret), "--allowed-clients", str(allowed)]
        secret = write_certificate(own / "client.key_secret", keys["public"], keys["secret"])
        server = write_certificate(own / "server.key", keys["server"])
        self.endpoints = {}
        self.connect_file = own / "connect.json"
        if self.connect_file.is_file():  # re-pointed to a moved inference worker before a restart
            self.connect = json.loads(self.connect_file.read_text())["connect"]
        return ["--client-key", str(secret), "--server-public", str(server), "--state-file", str(own / "state.json")]

    def _endpoints(self, path: Path) -> dict[str, str]:
        """This node's frames and results endpoints: the ones of a previous start on this node
        (a restart keeps them, so its senders and the sink need not change), else free ports."""
        if path.is_file():
            saved = json.loads(path.read_text())
            if saved.get("node") == self.node:
                return saved["endpoints"]
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        eps = {kind: f"tcp://{host}:{_free_port(self.ip)}" for kind in ("frames", "results")}
        path.write_text(json.dumps({"node": self.node, "endpoints": eps}))
        return eps

    def _start(self) -> None:
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        connect = ["--connect", self.connect] if self.connect else []
        self.proc = subprocess.Popen([sys.executable, "-m", self.module, *self.args, *connect], cwd=ROOT,
                                     env={**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"},
                                     preexec_fn=_die_with_parent)
        proc = self.proc
        threading.Thread(target=self._watch, args=(proc,), daemon=True, name=f"watch {self.name}").start()

    def _watch(self, proc: subprocess.Popen) -> None:
        """A crash of the worker is a crash of the actor: Ray restarts it (``max_restarts``)."""
        code = proc.wait()
        if code in (0, USER_ERROR) or self.stopping or proc is not self.proc or self.replacing:
            return
        log.warning("%s exited with status %s; the actor exits so that Ray restarts it", self.name, code)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)

    # ---- called by the launcher ----------------------------------------------------------
    def info(self) -> dict:
        """Where this worker runs: node id, address, the actor's and the worker's pids, endpoints."""
        return {"node": self.node, "ip": self.ip, "pid": os.getpid(),
                "child": self.proc.pid if self.proc else None, "endpoints": self.endpoints,
                "gpus": os.environ.get("CUDA_VISIBLE_DEVICES")}

    def wait(self, timeout: float) -> int | None:
        """The worker's exit status once it has ended, or None if it still runs after ``timeout`` s."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def retarget(self, connect: str) -> None:
        """Send this source's stream to another frames endpoint (its inference worker moved to
        another node): the worker is replaced by one connected there, which resumes after its
        last sent frame (its state file stays: the old one is killed, not stopped)."""
        self.connect_file.write_text(json.dumps({"connect": connect}))
        self.connect = connect
        self.replacing = True
        self.proc.kill()
        self.proc.wait()
        self.replacing = False
        self._start()

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout`` s; removes this worker's folder (its keys);
        the worker's exit status."""
        self.stopping = True
        code = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    log.warning("%s did not stop in %.0f s; killing it", self.name, timeout)
                    self.proc.kill()
            code = self.proc.wait()
        shutil.rmtree(self.own, ignore_errors=True)
        try:
            self.folder.rmdir()  # the run's folder on this node, once its last worker is gone
        except OSError:
            pass
        return code
