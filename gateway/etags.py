"""Entity tags: does a request's ``If-None-Match`` name what the server would send?"""

from __future__ import annotations

import re

from aiohttp import web

_ENTITY_TAG = re.compile(r'(?:W/)?"([^"]*)"')


def none_match(request: web.Request, etag: str) -> bool:
    """Whether ``If-None-Match`` matches ``etag``: ``*``, or any listed entity-tag by the
    weak comparison of RFC 9110 §8.8.3.2 (``W/"x"`` matches ``"x"``)."""
    values = request.headers.getall("If-None-Match", [])
    opaque = etag.removeprefix("W/")
    for value in values:
        if value.strip() == "*":
            return True
        if any(f'"{tag}"' == opaque for tag in _ENTITY_TAG.findall(value)):
            return True
    return False
