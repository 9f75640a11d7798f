"""Schema-based fuzzing of the field REST API with Schemathesis, from the gateway's own
``/api/v1/openapi.json``.

Every operation of the document gets generated requests, valid (``positive``) and invalid
(``negative``), as a real admin and as a real inspector (HTTP Basic), sent over a socket to
the application (the aiohttp test server) by Schemathesis's own client, in a worker thread
while the event loop serves.  For every answer:

- never a 5xx, and the status is one the document declares for that operation;
- the ``Content-Type`` and the body conform to the document's schema for that status (so an
  error is the CouchDB-shaped ``{"error", "reason"}``);
- a refused write (a 4xx to a POST, PATCH or DELETE) writes no document: the REST
  databases' seqs are those after the previous write.

Examples are bounded and derandomized (CI is repeatable), and feeds cannot wait longer than
``max_feed_timeout_ms`` (one second here), so nothing can hang the run.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.app import create_app
from tests.helpers import basic

REST_DBS = ("inspections", "templates")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
CALL_TIMEOUT = 30.0  # seconds per request: far above any answer, only there to catch hangs
EXAMPLES = {"admin": 10, "alice": 5}  # per operation and generation mode
MUTATING = {"POST", "PATCH", "PUT", "DELETE"}


@pytest.fixture
async def server(aiohttp_client: Any, settings: Any, engine: Any) -> str:
    """The application on a real socket; waiting feeds end within a second."""
    app = create_app(dataclasses.replace(settings, max_feed_timeout_ms=1000), migrate=False)
    client = await aiohttp_client(app)
    return f"http://127.0.0.1:{client.server.port}"


def rest_seqs(session: requests.Session, url: str) -> dict[str, int]:
    """The ``update_seq`` of each REST database: every document write moves it."""
    auth = {"Authorization": basic("admin")}
    return {
        name: session.get(f"{url}/{name}", headers=auth, timeout=CALL_TIMEOUT).json()["update_seq"]
        for name in REST_DBS
    }


def fuzz_operation(
    operation: Any, mode: GenerationMode, user: str, url: str, session: requests.Session
) -> Callable[[], None]:
    """A Hypothesis test of one operation, as ``user``, with ``mode`` data."""

    @hypothesis_settings(
        max_examples=EXAMPLES[user],
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        headers = {"Authorization": basic(user)}
        response = case.call(base_url=url, session=session, headers=headers, timeout=CALL_TIMEOUT)
        case.validate_response(response, checks=CHECKS)
        if case.method.upper() not in MUTATING:
            return
        seqs = rest_seqs(session, url)
        if 400 <= response.status_code < 500:  # refused: nothing written since the last write
            assert seqs == known, (case.method, case.formatted_path, response.text)
        known.update(seqs)

    known = rest_seqs(session, url)
    return run


def fuzz_all(url: str) -> list[str]:
    """Run every operation in both modes as both users; return the failures, described."""
    failures = []
    with requests.Session() as session:
        document = session.get(f"{url}/api/v1/openapi.json", timeout=CALL_TIMEOUT).json()
        schema = schemathesis.openapi.from_dict(document)
        assert len(document["paths"]) >= 15
        for result in schema.get_all_operations():
            operation = result.ok()
            for user in EXAMPLES:
                for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                    try:
                        fuzz_operation(operation, mode, user, url, session)()
                    except (Exception, BaseExceptionGroup) as exc:  # all run, then reported
                        failures.append(f"{operation.label} as {user} ({mode.value}): {exc}")
    return failures


async def test_every_rest_operation_conforms_to_the_openapi_document(server):
    """Every operation of /api/v1/openapi.json, valid and invalid requests, as an admin and as
    an inspector: no 5xx, only declared statuses, bodies and content types as declared, and
    refused writes write nothing (all operations run; every failure is reported)."""
    failures = await asyncio.to_thread(fuzz_all, server)
    assert not failures, "\n\n".join(failures)
