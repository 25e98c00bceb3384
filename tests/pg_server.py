"""A throwaway PostgreSQL server for tests: Debian's ``postgresql`` binaries, ``initdb`` into a
temp dir, a free loopback port, trust auth for one test role, stopped and removed at the end.

As root (CI runs ``make test`` as root) the server runs as the ``postgres`` user Debian's
package creates: ``initdb`` refuses to run as root."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.mlflow_store import free_port

ROLE = "tunegate"


def server_binaries() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``, or None when PostgreSQL is not installed."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(candidates[-1]).parent if candidates else None


def why_unavailable() -> str | None:
    if server_binaries() is None:
        return (
            "PostgreSQL server binaries (initdb, pg_ctl) not found: install Debian's `postgresql` "
            "(`make system-deps` does as root)"
        )
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without `runuser`: initdb refuses to run as root"
    return None


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a server; yield its URL (``postgresql+psycopg2://tunegate@127.0.0.1:<port>/postgres``)."""
    bindir = server_binaries()
    assert bindir is not None, why_unavailable()
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    workdir = Path(tempfile.mkdtemp(prefix="tunegate-pg-"))
    data, log = workdir / "data", workdir / "server.log"
    if as_root:
        shutil.chown(workdir, "postgres", "postgres")
    port = free_port()
    run = lambda *args: subprocess.run([*prefix, *args], check=True, capture_output=True, text=True)  # noqa: E731
    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", ROLE, "--auth=trust", "-E", "UTF8", "--no-sync")
        run(
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(log),
            "-w",
            "-t",
            "60",
            "start",
            "-o",
            f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1 -c fsync=off",
        )
        try:
            yield f"postgresql+psycopg2://{ROLE}@127.0.0.1:{port}/postgres"
        finally:
            run(str(bindir / "pg_ctl"), "-D", str(data), "-w", "-m", "fast", "stop")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
