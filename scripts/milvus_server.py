"""Run the standalone Milvus server of the ``milvus`` package (extra ``milvus-server``) for tests.

    python scripts/milvus_server.py run  [--base-dir DIR] [--port 19530]
    python scripts/milvus_server.py wait [--port 19530] [--timeout 120]

``run`` writes its own pid to ``DIR/launcher.pid`` (and the server's to ``DIR/server.pid``),
starts ``milvus.default_server`` with its data under ``DIR/data`` and its gRPC port fixed at
``--port`` (it fails at once when the port is taken, instead of the package's default of
moving to the next free port), then blocks until SIGTERM or SIGINT and stops the server:
SIGTERM to the server process, up to 30 s for it to exit, then SIGKILL. It exits non-zero
when the server process dies on its own. ``wait`` returns 0 as soon as a Milvus server
answers on the port (a pymilvus ``list_collections`` call), 1 after ``--timeout`` seconds,
2 as soon as the process ``--launcher-pid`` has exited.

scripts/_milvus.sh drives both; the tests read ``TRACEMARK_TEST_MILVUS_URL``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

STOP_GRACE_S = 30.0


def _answers(port: int, timeout: float = 2.0) -> bool:
    """True when a Milvus server answers a ``list_collections`` call on 127.0.0.1:``port``."""
    from pymilvus import MilvusClient

    try:
        client = MilvusClient(uri=f"http://127.0.0.1:{port}", timeout=timeout)
    except Exception:  # noqa: BLE001 -- any failure to connect means "not yet"
        return False
    try:
        client.list_collections(timeout=timeout)
        return True
    except Exception:  # noqa: BLE001
        return False
    finally:
        client.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # an exited child of the calling shell stays a zombie until it is reaped
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def wait(port: int, timeout: float, launcher_pid: int | None = None) -> int:
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)  # each failed try logs an ERROR
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _answers(port):
            return 0
        if launcher_pid is not None and not _alive(launcher_pid):
            return 2
        time.sleep(0.5)
    return 1


def _try_bind_port(port: int) -> socket.socket | None:
    """The ``milvus`` package's port probe, with SO_REUSEADDR: a port whose last server has
    just stopped (connections in TIME_WAIT for a minute) is free for the next server, which
    binds with SO_REUSEADDR too; a port another process listens on still fails."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        return sock
    except OSError:
        sock.close()
        return None


def run(base_dir: Path, port: int) -> int:
    from milvus import default_server

    base_dir.mkdir(parents=True, exist_ok=True)
    launcher_pid = base_dir / "launcher.pid"
    server_pid = base_dir / "server.pid"
    launcher_pid.write_text(f"{os.getpid()}\n")
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    default_server.set_base_dir(str(base_dir / "data"))
    # in ``configs`` (not via listen_port) the port is bound exactly or the start fails
    default_server.config.update(proxy_port=port)
    default_server.config.try_bind_port = _try_bind_port
    default_server.wait_for_started = False
    try:
        default_server.start()
    except RuntimeError as exc:
        print(f"milvus_server: cannot start on port {port}: {exc}", file=sys.stderr)
        launcher_pid.unlink(missing_ok=True)
        return 1
    proc: subprocess.Popen = default_server.server_proc
    server_pid.write_text(f"{proc.pid}\n")
    code = 0
    try:
        while not stopping:
            if proc.poll() is not None:
                print(f"milvus_server: the server exited by itself (status {proc.returncode}); "
                      f"logs in {base_dir / 'data' / 'logs'}", file=sys.stderr)
                code = 1
                break
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        default_server.server_proc = None  # stopped here; keep the package's stop() a no-op
        for fd in default_server.proc_fds.values():
            fd.close()
        default_server.proc_fds.clear()
        server_pid.unlink(missing_ok=True)
        launcher_pid.unlink(missing_ok=True)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["run", "wait"])
    parser.add_argument("--base-dir", type=Path,
                        default=Path(f"/tmp/tracemark-milvus-{os.getuid()}"))
    parser.add_argument("--port", type=int, default=19530)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--launcher-pid", type=int, default=None,
                        help="wait: give up as soon as this process has exited")
    args = parser.parse_args(argv)
    if args.action == "wait":
        return wait(args.port, args.timeout, args.launcher_pid)
    return run(args.base_dir, args.port)


if __name__ == "__main__":
    sys.exit(main())
