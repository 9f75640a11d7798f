"""Requests aiohttp's parser refuses get the same CouchDB-shaped JSON error as any other."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

CASES = [
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", id="bad-length"),
    pytest.param(b"G\x01T / HTTP/1.1\r\nHost: x\r\n\r\n", id="bad-method"),
    pytest.param(
        b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Long: " + b"a" * 70000 + b"\r\n\r\n",
        id="header-too-long",
    ),
    pytest.param(
        b"POST /db/_bulk_docs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        id="bad-chunk",
    ),
    pytest.param(b"GET / HTTP/9.9\r\nHost: x\r\n\r\n", id="bad-version"),
]


async def raw_exchange(client: Any, request: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(request)
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 10)  # the server closes after the error
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


@pytest.mark.parametrize("request_bytes", CASES)
async def test_a_request_the_parser_refuses_is_a_json_4xx(
    client: Any, request_bytes: bytes
) -> None:
    status, headers, body = await raw_exchange(client, request_bytes)
    assert 400 <= status < 500
    assert headers["content-type"].startswith("application/json")
    answer = orjson.loads(body)
    assert answer["error"] == "bad_request" and answer["reason"]


async def test_the_server_still_answers_after_protocol_errors(client: Any) -> None:
    for case in CASES:
        await raw_exchange(client, case.values[0])
    status, _, body = await raw_exchange(
        client, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert status == 200 and orjson.loads(body)["couchdb"] == "Welcome"
