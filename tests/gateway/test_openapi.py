"""``/api/v1/openapi.json`` describes every ``/api/v1/`` route, and only those."""

from __future__ import annotations

from typing import Any

from gateway.routes import ROUTES


def _api_routes() -> set[tuple[str, str]]:
    return {(m.lower(), p) for m, p, _ in ROUTES if p.startswith("/api/v1/")}


async def test_every_api_route_is_described_and_nothing_else(anon: Any) -> None:
    doc = await anon.get("/api/v1/openapi.json")
    assert doc["openapi"].startswith("3.")
    described = {(method, path) for path, ops in doc["paths"].items() for method in ops}
    assert described == _api_routes()


async def test_operations_are_complete_and_references_resolve(anon: Any) -> None:
    doc = await anon.get("/api/v1/openapi.json")
    schemas = doc["components"]["schemas"]

    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            found = [node["$ref"]] if "$ref" in node else []
            return found + [r for v in node.values() for r in refs(v)]
        if isinstance(node, list):
            return [r for v in node for r in refs(v)]
        return []

    for ref in refs(doc):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas
    for path, ops in doc["paths"].items():
        placeholders = {p[1:-1] for p in path.split("/") if p.startswith("{")}
        for method, op in ops.items():
            assert op["summary"] and op["responses"], (method, path)
            declared = {p["name"] for p in op["parameters"] if p["in"] == "path"}
            assert declared == placeholders, (method, path)
            if method in ("post", "put", "patch") and path != "/api/v1/auth/logout":
                assert "requestBody" in op, (method, path)
