"""Checks `up` (and `sql`) make before anything starts: is the data directory usable, is the chDB directory free,
does ClickHouse answer, does Kafka answer. Each check returns a `Probe`: fine, worth waiting for (the service is
not answering yet: `retry`), or wrong in a way waiting cannot mend (`retry` False) -- with one line saying what
was wrong and what to do. Nothing here logs: the caller prints.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

#: ClickHouse error codes that say the request, the credentials or the database are wrong: waiting cannot help.
AUTH_CODES = frozenset({192, 193, 194, 195, 516})  # unknown user, wrong password, password required, ..., auth failed
UNKNOWN_DATABASE = 81


@dataclass(frozen=True)
class Probe:
    ok: bool
    retry: bool = False  # not ok, but it may be by waiting (the service is not up yet)
    message: str = ""


OK = Probe(True)


def chdb_holder(path: str | Path) -> int | None:
    """The PID of the process that holds the chDB directory `path` (0 if held by one whose PID is unknown), or None
    if it is free (or does not exist yet). chDB, like ClickHouse, locks `status` in its directory."""
    status = Path(path) / "status"
    try:
        fd = os.open(status, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return None
            m = re.search(rb"PID:\s*(\d+)", os.pread(fd, 256, 0))
            return int(m.group(1)) if m else 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def check_data_dir(path: Path) -> Probe:
    """The data directory exists, or can be made, and is writable. Nothing is created: a check that finds another
    mistake must leave no trace."""
    if path.exists() and not path.is_dir():
        return Probe(
            False,
            message=f"data directory {path} is a file, not a directory: pass --data-dir to a "
            "directory (e.g. --data-dir ./data; it is created if missing)",
        )
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return Probe(
            False,
            message=f"data directory {path} cannot be created ({existing} is not a directory): pass "
            "--data-dir to a writable place (e.g. --data-dir ./data)",
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        return Probe(
            False,
            message=f"data directory {path} is not writable by this user: pass --data-dir to a "
            "writable place (e.g. --data-dir ./data)",
        )
    return OK


def check_chdb(dsn: str) -> Probe:
    """The chDB directory of `dsn` is not held by another process (chDB allows one process per directory)."""
    path = urlparse(dsn).path
    holder = chdb_holder(path)
    if holder is None:
        return OK
    who = f" (pid {holder})" if holder else ""
    return Probe(
        False,
        message=f"the chDB directory {path} is in use by another process{who}: chDB allows one "
        "process per directory. Stop the other `is-telemetry up` (or worker), or pass "
        "another --data-dir",
    )


def check_clickhouse(dsn: str, timeout_s: float = 3.0) -> Probe:
    """A ClickHouse server answers `SELECT 1` on `dsn`, with its credentials and database; chDB: `check_chdb`."""
    if dsn.startswith("chdb:"):
        return check_chdb(dsn)
    from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

    from core.clickhouse_client import redact

    where = redact(dsn)
    try:
        client = connect_with_timeout(dsn, timeout_s)
        try:
            client.query("SELECT 1")
        finally:
            client.close()
    except OperationalError as exc:
        return Probe(False, retry=True, message=f"ClickHouse at {where} does not answer: {_first_line(exc)}")
    except DatabaseError as exc:
        code = getattr(exc, "code", None)
        if code in AUTH_CODES:
            return Probe(
                False,
                message=f"ClickHouse at {where} refused the credentials: {_first_line(exc)}; fix "
                "the user and password in --clickhouse (http://user:password@host:8123/db)",
            )
        if code == UNKNOWN_DATABASE:
            db = urlparse(dsn).path.strip("/") or "default"
            return Probe(
                False,
                message=f"ClickHouse at {where} has no database {db!r}: create it (CREATE DATABASE "
                f"{db}) or name another in --clickhouse",
            )
        return Probe(False, message=f"ClickHouse at {where} refused the connection: {_first_line(exc)}")
    except OSError as exc:
        return Probe(False, retry=True, message=f"ClickHouse at {where} does not answer: {exc}")
    return OK


def connect_with_timeout(dsn: str, timeout_s: float) -> Any:
    """A client of a ClickHouse server that gives up connecting after `timeout_s` (the driver's default is 10 s)."""
    import clickhouse_connect

    url = urlparse(dsn)
    secure = url.scheme == "https"
    return clickhouse_connect.get_client(
        host=url.hostname or "localhost",
        port=url.port or (8443 if secure else 8123),
        username=url.username or "default",
        password=url.password or "",
        database=url.path.strip("/") or "default",
        secure=secure,
        connect_timeout=timeout_s,
        send_receive_timeout=timeout_s,
    )


def check_kafka(bootstrap_servers: str, timeout_s: float = 2.0) -> Probe:
    """At least one bootstrap server accepts a TCP connection. A name that does not resolve is a mistake (not
    retried); a refused or timed-out connection may be a broker still starting (retried)."""
    errors = []
    unresolved = []
    for item in bootstrap_servers.split(","):
        host, _, port = item.strip().rpartition(":")
        host = host.strip("[]") or item.strip()
        port_n = int(port) if port.isdigit() else 9092
        try:
            infos = socket.getaddrinfo(host, port_n, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            unresolved.append(f"{host}: {exc.strerror}")
            continue
        for family, kind, proto, _name, addr in infos[:2]:
            try:
                with socket.socket(family, kind, proto) as s:
                    s.settimeout(timeout_s)
                    s.connect(addr)
                return OK
            except OSError as exc:
                errors.append(f"{item.strip()}: {exc.strerror or exc}")
    if unresolved and not errors:
        return Probe(
            False,
            message=f"Kafka at {bootstrap_servers}: cannot resolve {'; '.join(unresolved)}; "
            "check --kafka (host:port, e.g. kafka-1:9092)",
        )
    return Probe(
        False, retry=True, message=f"Kafka at {bootstrap_servers} does not answer ({'; '.join(errors + unresolved)})"
    )


def _first_line(exc: BaseException) -> str:
    """The gist of a driver's error: the OS error inside a connection error, else the first line."""
    text = str(exc).strip()
    os_error = re.search(r"\[Errno -?\d+\] [^\"')(]+", text)
    if os_error:
        return os_error.group(0).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
