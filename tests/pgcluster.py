"""A throwaway PostgreSQL 15 cluster for tests: initdb in a temp dir, pg_ctl start on a free port, trust auth.

    with PostgresCluster() as pg:
        dsn = pg.create_database("is", sql_file=Path("tests/fixtures/is_schema.sql"))

or as a pytest fixture (`postgres_cluster` below; import it into a test module or conftest).

The server refuses to run as root, so when the tests run as root every server binary runs as the
`postgres` OS user (`runuser -u postgres --`), and the temp dir (under /tmp) is handed to that user.
Binaries: $PG_BIN, else /usr/lib/postgresql/15/bin (Debian package postgresql-15).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_OS_USER = "postgres"
APT_HINT = "install the Debian package postgresql-15 (apt-get install -y postgresql-15)"


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL server binaries (or the postgres OS user) are missing."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresCluster:
    """One PostgreSQL cluster in a temp dir under /tmp; `dsn` for the `postgres` database, superuser `postgres`."""

    def __init__(self, port: int | None = None, bin_dir: Path = PG_BIN, start_timeout_s: int = 60) -> None:
        self.bin_dir = Path(bin_dir)
        self.port = port or _free_port()
        self.host = "127.0.0.1"
        self.start_timeout_s = start_timeout_s
        self.root: Path | None = None
        self.running = False

    # ----------------------------------------------------------------------------------------- helpers
    @property
    def data_dir(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        assert self.root is not None
        return self.root / "server.log"

    def dsn_for(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{dbname}"

    @property
    def dsn(self) -> str:
        return self.dsn_for("postgres")

    def _prefix(self) -> list[str]:
        if os.geteuid() != 0:
            return []  # a non-root user runs the server as itself
        try:
            pwd.getpwnam(PG_OS_USER)
        except KeyError as exc:
            raise PostgresUnavailable(
                f"no '{PG_OS_USER}' OS user to run PostgreSQL as (tests run as root): {APT_HINT}"
            ) from exc
        runuser = shutil.which("runuser")
        if runuser:
            return [runuser, "-u", PG_OS_USER, "--"]
        raise PostgresUnavailable("runuser is missing: cannot run PostgreSQL as the postgres user (util-linux)")

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        cmd = [*self._prefix(), *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=str(self.root))
        if proc.returncode != 0:
            log = self.log_file.read_text(errors="replace")[-2000:] if self.log_file.exists() else ""
            raise RuntimeError(
                f"{' '.join(args[:2])} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}\n{log}".rstrip()
            )
        return proc

    def check_binaries(self) -> None:
        missing = [b for b in ("initdb", "pg_ctl", "postgres") if not (self.bin_dir / b).is_file()]
        if missing:
            raise PostgresUnavailable(
                f"PostgreSQL 15 server binaries not found in {self.bin_dir} (missing: {', '.join(missing)}): {APT_HINT}"
            )

    # --------------------------------------------------------------------------------------- lifecycle
    def start(self) -> PostgresCluster:
        self.check_binaries()
        prefix = self._prefix()
        self.root = Path(tempfile.mkdtemp(prefix="pgcluster-", dir="/tmp"))
        try:
            if prefix:
                pw = pwd.getpwnam(PG_OS_USER)
                os.chown(self.root, pw.pw_uid, pw.pw_gid)
            os.chmod(self.root, 0o700)
            self._run(
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            )
            opts = (
                f"-c port={self.port} -c listen_addresses={self.host} -c unix_socket_directories={self.root} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=16MB "
                "-c max_connections=30 -c timezone=UTC"
            )
            self._run(
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-o",
                opts,
                "-w",
                "-t",
                str(self.start_timeout_s),
                "start",
                timeout=self.start_timeout_s + 10,
            )
            self.running = True
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        root, self.root = self.root, None
        if root is None:
            return
        self.root = root  # for _run's cwd and data_dir
        try:
            if self.running and (root / "data" / "postmaster.pid").exists():
                try:
                    self._run(
                        str(self.bin_dir / "pg_ctl"),
                        "-D",
                        str(self.data_dir),
                        "-m",
                        "immediate",
                        "-w",
                        "-t",
                        "30",
                        "stop",
                        timeout=40,
                    )
                except Exception:  # noqa: BLE001 - still remove the dir
                    pass
        finally:
            self.running = False
            self.root = None
            shutil.rmtree(root, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    # -------------------------------------------------------------------------------------------- data
    def create_database(self, name: str, sql_file: Path | None = None, sql: str | None = None) -> str:
        """CREATE DATABASE name, optionally run a SQL script in it; returns its DSN."""
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
        dsn = self.dsn_for(name)
        script = (sql or "") + ("\n" + sql_file.read_text() if sql_file is not None else "")
        if script.strip():
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(script)  # type: ignore[arg-type]  # simple query protocol: several statements
        return dsn


def wait_until_accepting(dsn: str, timeout_s: float = 10.0) -> None:
    import psycopg

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with psycopg.connect(dsn, connect_timeout=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A session-wide throwaway cluster; fails (not skips) with the apt package to install if PostgreSQL is missing."""
    try:
        cluster = PostgresCluster().start()
    except PostgresUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()
