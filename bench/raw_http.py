"""A lean HTTP/1.1 load client for the benchmarks: keep-alive connections on asyncio streams.

Why not httpx here: an `httpx.AsyncClient` spends its CPU in httpcore's connection-pool
bookkeeping (`_assign_requests_to_connections` walks every connection for every queued
request), so as soon as the server falls a little behind, the queued requests make the
client slower still, and on a shared 2-core machine the load generator, not the server,
becomes the limit (a py-spy of bench/webhooks.py at 300/s: the client at 100% of a core,
two thirds of it in that pool). Here each connection is a task that sends one pre-encoded
request and reads its answer (status line, headers, a Content-Length body), so the client's
cost per request is a few microseconds whatever the queue.

Only what the benchmarks' servers answer is understood: HTTP/1.1 with Content-Length or
no body. Anything else raises `ProtocolError` (the bench fails loudly, it does not guess).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 1024 * 1024


class ProtocolError(RuntimeError):
    """The server's answer is not HTTP/1.1 with a Content-Length (or is too large)."""


def encode(
    method: str, path: str, host: str, headers: Mapping[str, str] | None = None, body: bytes = b""
) -> bytes:
    """One request, ready to write: keep-alive, Content-Length always given."""
    lines = [f"{method} {path} HTTP/1.1", f"host: {host}", f"content-length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def _answer(reader: asyncio.StreamReader) -> int:
    """Read one response; its status code. The body is read and dropped."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError as exc:
        raise ProtocolError(f"a response head over {MAX_HEAD_BYTES} bytes") from exc
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise ProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    status = int(parts[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        lowered = name.strip().lower()
        if lowered == b"content-length":
            length = int(value.strip())
        elif lowered == b"transfer-encoding":
            raise ProtocolError("chunked answers are not supported by this client")
    if length > MAX_BODY_BYTES:
        raise ProtocolError(f"a response body of {length} bytes")
    if length:
        await reader.readexactly(length)
    return status


@dataclass
class Tally:
    """Latencies (seconds) of answered requests and the count of answers that were not 200."""

    latencies: list[float] = field(default_factory=list)
    not_ok: int = 0


async def _connection(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(
        asyncio.open_connection(host, port, limit=MAX_HEAD_BYTES), timeout=10
    )


async def open_loop(
    host: str, port: int, requests: list[bytes], rate: float, connections: int = 64
) -> tuple[Tally, float]:
    """Request i is due at start + i/rate and its latency counts from then (a server that
    stalls cannot hide its queue). `connections` keep-alive connections take due requests
    in turn. Returns the tally and the seconds from the first due time to the last answer."""
    queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
    tally = Tally()

    async def worker() -> None:
        reader, writer = await _connection(host, port)
        try:
            while (job := await queue.get()) is not None:
                index, due = job
                writer.write(requests[index])
                status = await asyncio.wait_for(_answer(reader), timeout=60)
                tally.latencies.append(time.perf_counter() - due)
                tally.not_ok += status != 200
        finally:
            writer.close()

    workers = [asyncio.create_task(worker()) for _ in range(connections)]
    start = time.perf_counter() + 0.2
    for index in range(len(requests)):
        due = start + index / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        queue.put_nowait((index, due))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    return tally, time.perf_counter() - start


async def closed_loop(
    host: str, port: int, requests: Callable[[], Iterator[bytes]], seconds: float, clients: int
) -> tuple[Tally, float]:
    """`clients` connections, each sending its next request as soon as the last is answered,
    for `seconds`. `requests()` gives the shared stream of requests. Latency counts from the
    send. Returns the tally and the elapsed seconds."""
    tally = Tally()
    stream = requests()
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        reader, writer = await _connection(host, port)
        try:
            while time.perf_counter() < deadline:
                sent = time.perf_counter()
                writer.write(next(stream))
                status = await asyncio.wait_for(_answer(reader), timeout=60)
                tally.latencies.append(time.perf_counter() - sent)
                tally.not_ok += status != 200
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return tally, time.perf_counter() - start
