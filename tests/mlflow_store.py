"""Test helpers for MLflow: an empty, migrated SQLite store to copy (creating one runs ~60
database migrations, ~10 s on 2 busy cores), and a real ``mlflow server`` process on a free
loopback port, stoppable and restartable on the same port and database."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

MLFLOW = Path(sys.executable).parent / "mlflow"
STARTUP_TIMEOUT_S = 180


def free_port() -> int:
    """A loopback port nothing listens on now (for a test server: MLflow, PostgreSQL, Dagster's UI)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def migrated_db(path: Path) -> Path:
    """An empty MLflow SQLite database with every migration applied."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    path.parent.mkdir(parents=True, exist_ok=True)
    store = SqlAlchemyStore(f"sqlite:///{path}", str(path.parent / "artifacts"))
    store.engine.dispose()
    return path


def seed(template: Path, db: Path) -> str:
    """Copy the migrated template to ``db``; its ``sqlite:///`` URI."""
    db.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, db)
    return f"sqlite:///{db}"


class MlflowServer:
    """``mlflow server`` (one worker) on 127.0.0.1, its own database and artifact folder."""

    def __init__(self, folder: Path, template: Path, port: int | None = None):
        self.folder = folder
        self.backend = seed(template, folder / "server.db")
        self.artifacts = folder / "server-artifacts"
        self.port = port or free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.log = folder / "server.log"
        self.proc: subprocess.Popen | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> MlflowServer:
        if self.running:
            return self
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        with self.log.open("a") as log:
            self.proc = subprocess.Popen(
                [
                    str(MLFLOW),
                    "server",
                    "--backend-store-uri",
                    self.backend,
                    "--artifacts-destination",
                    str(self.artifacts),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--workers",
                    "1",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=5):
                    return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"mlflow server not ready after {STARTUP_TIMEOUT_S} s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        """Stop the server's process group (the one this helper started) and wait for it."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
