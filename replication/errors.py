"""Domain errors, named in CouchDB's words.

Each class carries the CouchDB ``error`` name and a human ``reason``; the HTTP status is
decided in one place only (``gateway/errors.py``), the way ``chttpd:error_info/1`` does it.
"""

from __future__ import annotations

from collections.abc import Iterable


class GatewayError(Exception):
    """Base class: an error a client caused or must be told about."""

    error: str = "unknown_error"
    default_reason: str = ""

    def __init__(self, reason: str | None = None) -> None:
        self.reason = reason if reason is not None else self.default_reason
        super().__init__(self.reason)

    def to_json(self) -> dict[str, str]:
        """Return the CouchDB-shaped error body."""
        return {"error": self.error, "reason": self.reason}


class BadRequest(GatewayError):
    error = "bad_request"
    default_reason = "Bad request."


class Unauthorized(GatewayError):
    error = "unauthorized"
    default_reason = "Name or password is incorrect."


class Forbidden(GatewayError):
    error = "forbidden"
    default_reason = "You are not allowed to access this resource."


class NotFound(GatewayError):
    error = "not_found"
    default_reason = "missing"


class MethodNotAllowed(GatewayError):
    error = "method_not_allowed"
    default_reason = "Method not allowed."


class Conflict(GatewayError):
    error = "conflict"
    default_reason = "Document update conflict."


class MergeConflict(Conflict):
    """A three-way merge found fields both sides changed differently (409, ``conflict``).

    ``paths`` are the JSON-pointer paths of those fields, sorted (see ``replication.merge``).
    """

    default_reason = "Both sides changed the same fields differently."

    def __init__(self, paths: Iterable[str] = (), reason: str | None = None) -> None:
        self.paths: tuple[str, ...] = tuple(paths)
        if reason is None and self.paths:
            listed = ", ".join(self.paths[:10])
            if len(self.paths) > 10:
                listed += f" and {len(self.paths) - 10} more"
            reason = f"Both sides changed the same fields differently: {listed}."
        super().__init__(reason)


class FileExists(GatewayError):
    error = "file_exists"
    default_reason = "The database could not be created, the file already exists."


class PreconditionFailed(GatewayError):
    error = "precondition_failed"
    default_reason = "Precondition failed."


class MissingStub(GatewayError):
    error = "missing_stub"
    default_reason = "Attachment stub refers to an attachment that is not stored."


class TooLarge(GatewayError):
    error = "too_large"
    default_reason = "The request entity is too large."


class DocumentTooLarge(TooLarge):
    """A document body above ``GATEWAY_MAX_DOCUMENT_BYTES`` (413, as CouchDB names it)."""

    error = "document_too_large"
    default_reason = "The document is too large."


class UnsupportedMediaType(GatewayError):
    error = "bad_content_type"
    default_reason = "Content-Type must be application/json."


class NotAcceptable(GatewayError):
    error = "not_acceptable"
    default_reason = "The requested representation is not available."


class TooManyRequests(GatewayError):
    """Refused for now (429); ``retry_after`` seconds, when known, become ``Retry-After``."""

    error = "too_many_requests"
    default_reason = "Rate limit exceeded."

    def __init__(self, reason: str | None = None, retry_after: int | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(reason)


class ServiceUnavailable(GatewayError):
    error = "service_unavailable"
    default_reason = "The service is temporarily unavailable."


class ResetRequired(GatewayError):
    """The replica's checkpoint predates purged tombstones: it may still hold documents
    deleted since, so it must start over instead of resuming (410, ``reset_required``)."""

    error = "reset_required"
    default_reason = "Tombstones this replica has not seen were purged; reset it."
