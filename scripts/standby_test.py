"""
A real hot standby for the read router's tests: started, used by tests/test_hot_standby.py, removed.

    python scripts/standby_test.py        # `make standby-test`; CI runs it

1. ``initdb`` a small primary cluster in a temporary directory (``wal_level=replica``)
   and start it on 127.0.0.1:STANDBY_PRIMARY_PORT (default 5433);
2. ``pg_basebackup -R`` a streaming standby of it and start it on STANDBY_PORT
   (default 5434), with ``max_standby_streaming_delay=100ms`` so that a conflicting
   replay cancels a standby read at once;
3. run ``pytest tests/test_hot_standby.py`` with ``DATABASE_URL`` on the primary and
   ``FLOWPILOT_ANALYTICS_DATABASE_URL`` on the standby;
4. stop both clusters and delete the directory, whatever happened (also on
   SIGTERM / SIGINT).

A dedicated primary rather than the shared cluster: a base backup copies the
whole cluster, and the shared one may hold large databases. PostgreSQL refuses
to run as root: as root, the cluster commands run as ``postgres`` (``runuser``).
The binaries are the newest under /usr/lib/postgresql/*/bin unless PG_BINDIR
names them. Extra arguments go to pytest. Standard library only.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
PRIMARY_PORT = int(os.environ.get("STANDBY_PRIMARY_PORT", "5433"))
STANDBY_PORT = int(os.environ.get("STANDBY_PORT", "5434"))
DATABASE = "flowpilot_standby"


class Failed(Exception):
    pass


def bindir():
    if os.environ.get("PG_BINDIR"):
        return Path(os.environ["PG_BINDIR"])
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    if not candidates:
        raise Failed("no PostgreSQL binaries under /usr/lib/postgresql/*/bin: set PG_BINDIR")
    return candidates[-1].parent


def as_postgres():
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def run(command, label):
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        output = result.stderr.strip() or result.stdout.strip()
        raise Failed(f"{label} failed ({result.returncode}): {output}")
    print(f"== {label} ({time.monotonic() - started:.1f} s)", flush=True)


def port_free(port):
    with socket.socket() as probe:
        return probe.connect_ex((HOST, port)) != 0


def wait_ready(bin_dir, port, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = [bin_dir / "pg_isready", "-q", "-h", HOST, "-p", str(port), "-U", "postgres"]
        if subprocess.run(ready).returncode == 0:
            return
        time.sleep(0.2)
    raise Failed(f"PostgreSQL on port {port} did not become ready within {timeout} s")


def configure(data, lines):
    with open(data / "postgresql.auto.conf", "a") as conf:
        conf.write("\n".join(lines) + "\n")


def main(pytest_args):
    for port in (PRIMARY_PORT, STANDBY_PORT):
        if not port_free(port):
            raise Failed(f"port {port} is taken: set STANDBY_PRIMARY_PORT / STANDBY_PORT to free ones")
    bin_dir, sudo = bindir(), as_postgres()
    work = Path(tempfile.mkdtemp(prefix="flowpilot-standby-"))
    primary, standby = work / "primary", work / "standby"
    started = []
    try:
        if sudo:
            shutil.chown(work, user="postgres", group="postgres")
        run([*sudo, bin_dir / "initdb", "-D", primary, "-U", "postgres", "--auth=trust", "--no-sync",
             "-E", "UTF8", "--locale=C"], f"initdb a primary cluster in {primary}")
        configure(primary, [
            f"port = {PRIMARY_PORT}", f"listen_addresses = '{HOST}'", f"unix_socket_directories = '{work}'",
            # fsync off: the cluster lives for a minute; commits stay synchronous, so that
            # pg_current_wal_lsn() after a commit covers it (the tests wait for its replay).
            "wal_level = replica", "max_wal_senders = 4", "fsync = off", "shared_buffers = 32MB",
            "max_connections = 40",
        ])
        run([*sudo, bin_dir / "pg_ctl", "-D", primary, "-l", work / "primary.log", "-w", "start"],
            f"start the primary on {HOST}:{PRIMARY_PORT}")
        started.append(primary)
        run([*sudo, bin_dir / "pg_basebackup", "-h", HOST, "-p", str(PRIMARY_PORT), "-U", "postgres",
             "-D", standby, "-R", "-X", "stream", "-c", "fast", "--no-sync"],
            "pg_basebackup -R: a streaming standby of it")
        configure(standby, [
            f"port = {STANDBY_PORT}", "hot_standby = on",
            # A replay that conflicts with a standby read cancels it at once (the 503 under test).
            "max_standby_streaming_delay = 100ms",
        ])
        run([*sudo, bin_dir / "pg_ctl", "-D", standby, "-l", work / "standby.log", "-w", "start"],
            f"start the standby on {HOST}:{STANDBY_PORT}")
        started.append(standby)
        wait_ready(bin_dir, STANDBY_PORT)
        stop_standby = " ".join(map(str, [*sudo, bin_dir / "pg_ctl", "-D", standby, "-m", "fast", "-w",
                                          "stop"]))
        env = {
            **os.environ,
            "DATABASE_URL": f"postgres://postgres@{HOST}:{PRIMARY_PORT}/{DATABASE}",
            "FLOWPILOT_ANALYTICS_DATABASE_URL": f"postgres://postgres@{HOST}:{STANDBY_PORT}/{DATABASE}",
            "FLOWPILOT_STANDBY_TEST": "1",
            "FLOWPILOT_STANDBY_STOP": stop_standby,
        }
        print("== pytest tests/test_hot_standby.py (primary and standby)", flush=True)
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "tests/test_hot_standby.py", "--create-db",
             "-p", "no:cacheprovider", "-ra", *pytest_args],
            cwd=ROOT, env=env,
        )
        if result.returncode != 0:
            for log in ("primary.log", "standby.log"):
                path = work / log
                if path.exists():
                    print(f"--- {log} (last lines)\n" + "\n".join(path.read_text().splitlines()[-20:]))
        return result.returncode
    finally:
        for data in reversed(started):
            subprocess.run([*sudo, bin_dir / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"],
                           capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
        print(f"== removed both clusters and {work}", flush=True)


def stop_on_signal(signum, frame):
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, stop_on_signal)
    signal.signal(signal.SIGINT, stop_on_signal)
    began = time.monotonic()
    try:
        code = main(sys.argv[1:])
    except Failed as failure:
        print(f"FAIL: {failure}", file=sys.stderr)
        code = 1
    print(f"Standby test {'passed' if code == 0 else 'FAILED'} in {time.monotonic() - began:.0f} s")
    sys.exit(code)
