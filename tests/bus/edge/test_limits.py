"""REST edge limits on raw sockets: header and body read timeouts, an early 413 on a declared length.

A bus-only app (a real broker with one local service) served by `create_runner` on a free port; the
clients are plain TCP sockets, so they can stall half-way through a request as a slow or hostile peer does.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import zmq.asyncio
from aiohttp import web

from ml_processing.bus import codec, mdp
from ml_processing.bus.edge.app import STATS, EdgeStats, create_app, create_runner
from ml_processing.bus.edge.routes import Route

HEADER_TIMEOUT = 0.5
BODY_TIMEOUT = 0.5
MAX_BODY = 1024
BOUND = 5.0  # how long a test waits for the server at most: well under the defaults (15 s, 60 s)


def echo(request: codec.Request) -> Any:
    return {"op": request.op, "args": request.args}


@dataclass
class Edge:
    host: str
    port: int
    stats: EdgeStats

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(self.host, self.port)


@pytest.fixture
async def edge() -> AsyncIterator[Edge]:
    ctx = zmq.asyncio.Context()
    broker = mdp.Broker(ctx, ["inproc://edge-limits"])
    await broker.start()
    broker.attach("echo", echo)
    routes = [Route("POST", "/api/v1/echo", "echo", "echo", "Echo the body"),
              Route("POST", "/api/v1/raw", "echo", "raw", "Raw body", content_type="raw"),
              Route("GET", "/api/v1/ping", "echo", "ping", "Ping")]
    app = create_app(broker, routes, max_body_bytes=MAX_BODY, header_timeout=HEADER_TIMEOUT,
                     body_timeout=BODY_TIMEOUT)
    runner = create_runner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield Edge(host, port, app[STATS])
    finally:
        await runner.cleanup()
        await broker.close()
        ctx.destroy(linger=0)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lowercase names) and body of one HTTP/1.1 response with a Content-Length."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), BOUND)
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip()
               for name, _, value in (line.partition(":") for line in lines if line)}
    body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), BOUND)
    return int(status_line.split()[1]), headers, body


async def closed_after(reader: asyncio.StreamReader) -> float:
    """Seconds until the server closes the connection (it must, within `BOUND`); what it sent is ignored."""
    started = time.monotonic()
    while await asyncio.wait_for(reader.read(65536), BOUND):
        pass
    return time.monotonic() - started


def request_head(path: str, length: int, *extra: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: test", "Content-Type: application/json",
             f"Content-Length: {length}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# -- header timeout ---------------------------------------------------------------------------------------------


async def test_a_partial_request_header_is_cut_off_after_the_header_timeout(edge: Edge) -> None:
    reader, writer = await edge.connect()
    try:
        writer.write(b"POST /api/v1/echo HTTP/1.1\r\nHost: test\r\nContent-Ty")
        await writer.drain()
        waited = await closed_after(reader)
    finally:
        writer.close()

    assert HEADER_TIMEOUT * 0.8 <= waited < BOUND


async def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(edge: Edge) -> None:
    reader, writer = await edge.connect()
    try:
        waited = await closed_after(reader)
    finally:
        writer.close()

    assert HEADER_TIMEOUT * 0.8 <= waited < BOUND


async def test_a_kept_alive_connection_serves_requests_then_closes_when_idle(edge: Edge) -> None:
    reader, writer = await edge.connect()
    try:
        replies = []
        for n in range(2):
            body = json.dumps({"n": n}).encode()
            writer.write(request_head("/api/v1/echo", len(body)) + body)
            await writer.drain()
            replies.append(await read_response(reader))
        waited = await closed_after(reader)
    finally:
        writer.close()

    assert [(status, json.loads(body)) for status, _, body in replies] == [
        (200, {"op": "echo", "args": {"n": 0}}), (200, {"op": "echo", "args": {"n": 1}})]
    assert HEADER_TIMEOUT * 0.8 <= waited < BOUND


# -- body timeout -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/v1/echo", "/api/v1/raw"])
async def test_a_stalled_body_is_answered_408_and_the_connection_closed(edge: Edge, path: str) -> None:
    reader, writer = await edge.connect()
    try:
        started = time.monotonic()
        writer.write(request_head(path, 100) + b'{"n": 1, ')  # 9 of the 100 bytes announced
        await writer.drain()
        status, headers, body = await read_response(reader)
        answered = time.monotonic() - started
    finally:
        writer.close()

    assert status == 408
    assert json.loads(body)["error"] == {"code": "timeout", "field": "body",
                                         "message": f"request body not received within {BODY_TIMEOUT:g} s"}
    assert headers["connection"].lower() == "close"
    assert BODY_TIMEOUT * 0.8 <= answered < BOUND
    assert edge.stats.by_status.get(408) == 1


async def test_a_body_sent_in_pieces_within_the_timeout_is_served(edge: Edge) -> None:
    body = json.dumps({"close": [1.0, 2.0, 3.0]}).encode()
    reader, writer = await edge.connect()
    try:
        writer.write(request_head("/api/v1/echo", len(body)) + body[:10])
        await writer.drain()
        await asyncio.sleep(BODY_TIMEOUT / 5)
        writer.write(body[10:])
        await writer.drain()
        status, _, reply = await read_response(reader)
    finally:
        writer.close()

    assert status == 200
    assert json.loads(reply) == {"op": "echo", "args": {"close": [1.0, 2.0, 3.0]}}


# -- declared length above the limit ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/v1/echo", "/api/v1/raw", "/api/v1/ping", "/api/v1/nowhere"])
async def test_a_declared_length_above_the_limit_gets_413_before_any_body(edge: Edge, path: str) -> None:
    reader, writer = await edge.connect()
    try:
        writer.write(request_head(path, 10**12))  # and not one byte of the body
        await writer.drain()
        status, headers, body = await read_response(reader)  # while the body is still owed
    finally:
        writer.close()

    assert status == 413
    assert json.loads(body)["error"] == {
        "code": "too_large",
        "message": f"request body larger than the limit of {MAX_BODY} bytes (Content-Length: {10**12})"}
    assert headers["connection"].lower() == "close"  # the body owed is never read as a next request
    assert edge.stats.by_status == {413: 1}


async def test_expect_100_continue_above_the_limit_gets_413_instead_of_continue(edge: Edge) -> None:
    reader, writer = await edge.connect()
    try:
        writer.write(request_head("/api/v1/echo", MAX_BODY + 1, "Expect: 100-continue"))
        await writer.drain()
        status, headers, body = await read_response(reader)
    finally:
        writer.close()

    assert status == 413
    assert json.loads(body)["error"]["code"] == "too_large"
    assert headers["connection"].lower() == "close"
    assert edge.stats.by_status == {413: 1} and edge.stats.requests == 1


async def test_expect_100_continue_within_the_limit_continues(edge: Edge) -> None:
    body = b'{"n": 7}'
    reader, writer = await edge.connect()
    try:
        writer.write(request_head("/api/v1/echo", len(body), "Expect: 100-continue"))
        await writer.drain()
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), BOUND)
        writer.write(body)
        await writer.drain()
        status, _, reply = await read_response(reader)
    finally:
        writer.close()

    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert (status, json.loads(reply)) == (200, {"op": "echo", "args": {"n": 7}})


async def test_a_length_at_the_limit_is_read_as_usual(edge: Edge) -> None:
    body = json.dumps({"pad": "x" * (MAX_BODY - 11)}).encode()
    assert len(body) == MAX_BODY
    reader, writer = await edge.connect()
    try:
        writer.write(request_head("/api/v1/echo", len(body)) + body)
        await writer.drain()
        status, _, reply = await read_response(reader)
    finally:
        writer.close()

    assert status == 200 and json.loads(reply)["args"]["pad"] == "x" * (MAX_BODY - 11)


def test_timeouts_must_be_positive() -> None:
    with pytest.raises(ValueError, match="header_timeout and body_timeout"):
        create_app(object(), header_timeout=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="header_timeout and body_timeout"):
        create_app(object(), body_timeout=-1.0)  # type: ignore[arg-type]



async def test_a_body_cut_short_of_its_declared_length_is_not_served_nor_waited_for(edge: Edge) -> None:
    body = json.dumps({"close": [1.0, 2.0, 3.0]}).encode()
    reader, writer = await edge.connect()
    try:
        writer.write(request_head("/api/v1/echo", len(body) + 10) + body)
        await writer.drain()
        writer.write_eof()  # the client sends no more: the body is 10 bytes short
        await closed_after(reader)  # within BOUND
    finally:
        writer.close()

    assert 200 not in edge.stats.by_status  # a short body is never read as a whole one


async def test_a_chunked_body_and_a_compressed_body_are_read_whole(edge: Edge) -> None:
    """Without a declared length (chunked), or with one that counts compressed bytes (gzip), the body is read
    to its end by aiohttp's own reader; a declared length is read exactly."""
    body = json.dumps({"close": [1.0, 2.0, 3.0]}).encode()
    packed = gzip.compress(body)
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:7], body[7:])) + b"0\r\n\r\n"
    heads = [
        b"POST /api/v1/echo HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + chunked,
        request_head("/api/v1/echo", len(packed), "Content-Encoding: gzip") + packed,
        request_head("/api/v1/echo", len(body)) + body,
    ]
    for request in heads:
        reader, writer = await edge.connect()
        try:
            writer.write(request)
            await writer.drain()
            status, _, reply = await read_response(reader)
        finally:
            writer.close()
        assert (status, json.loads(reply)) == (200, {"op": "echo", "args": {"close": [1.0, 2.0, 3.0]}})


async def test_an_empty_body_of_declared_length_zero_is_an_empty_request(edge: Edge) -> None:
    reader, writer = await edge.connect()
    try:
        writer.write(request_head("/api/v1/echo", 0))
        await writer.drain()
        status, _, reply = await read_response(reader)
    finally:
        writer.close()

    assert (status, json.loads(reply)) == (200, {"op": "echo", "args": {}})
