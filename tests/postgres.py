"""A throw-away PostgreSQL cluster for the tests: initdb in a temporary folder, listening on
127.0.0.1 on a free port (its unix socket inside that folder), stopped and deleted at the end.

Run as root, the server runs as the `postgres` user (initdb refuses root). Each index a test creates
gets a database of its own (`new_database_url`). Debian's binaries live in
/usr/lib/postgresql/<version>/bin; CLAPDEX_PG_BIN names another folder.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

REQUIRE_ENV = "CLAPDEX_REQUIRE_POSTGRES"  # "1": a server that cannot start fails the tests


class PostgresUnavailable(Exception):
    """Why no server could be started here."""


def _bin_dir() -> Path:
    given = os.environ.get("CLAPDEX_PG_BIN")
    if given:
        return Path(given)
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name) if
                   Path(p).parent.parent.name.isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise PostgresUnavailable("PostgreSQL's initdb not found (install Debian's postgresql)")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PostgresServer:
    def __init__(self):
        self.bin = _bin_dir()
        self.folder = Path(tempfile.mkdtemp(prefix="clapdex-pg-"))
        self.data = self.folder / "data"
        self.port = _free_port()
        self._prefix: list[str] = []
        self._count = 0
        if os.geteuid() == 0:
            runuser = shutil.which("runuser")
            if runuser is None:
                raise PostgresUnavailable("running as root without runuser")
            shutil.chown(self.folder, "postgres", "postgres")
            self._prefix = [runuser, "-u", "postgres", "--"]
        try:
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                      "-E", "UTF8", "--no-sync", "--no-instructions")
            options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.folder} "
                       "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                       "-c max_connections=200")
            self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l",
                      str(self.folder / "server.log"), "-w", "-t", "60", "start")
        except BaseException:
            self.stop()
            raise
        import psycopg

        self._admin = psycopg.connect(host="127.0.0.1", port=self.port, user="postgres",
                                      dbname="postgres", autocommit=True)

    def _run(self, program: str, *args: str) -> None:
        result = subprocess.run([*self._prefix, str(self.bin / program), *args],
                                capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            log = self.folder / "server.log"
            tail = log.read_text()[-500:] if log.exists() else ""
            raise PostgresUnavailable(f"{program} failed: {(result.stderr or result.stdout)[-500:]}"
                                      f"{tail}".strip())

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def new_database_url(self) -> str:
        """A URL of a new, empty database."""
        self._count += 1
        name = f"clapdex_test_{self._count}"
        self._admin.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        admin = getattr(self, "_admin", None)
        if admin is not None:
            admin.close()
        if (self.data / "postmaster.pid").exists():
            subprocess.run([*self._prefix, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m",
                            "immediate", "-w", "stop"], capture_output=True, timeout=120)
        shutil.rmtree(self.folder, ignore_errors=True)
