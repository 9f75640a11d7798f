"""Every route in one table: method, path, handler.  Specific paths come before generic ones."""

from __future__ import annotations

from aiohttp import web

from gateway.handlers import (
    all_docs,
    api_auth,
    attachments,
    bulk,
    changes,
    checkpoints,
    conflicts,
    dashboard,
    db,
    docs,
    inspections,
    local,
    photos,
    server,
    templates,
    updates,
)
from gateway.openapi import openapi_handler

DB = "/{db:[^/_][^/]*}"

ROUTES: list[tuple[str, str, object]] = [
    ("GET", "/", server.welcome),
    ("GET", "/healthz", server.healthz),
    ("GET", "/readyz", server.readyz),
    ("GET", "/metrics", server.metrics),
    ("GET", "/_all_dbs", server.all_dbs),
    ("GET", "/_uuids", server.uuids),
    ("GET", "/_db_updates", updates.db_updates_handler),
    ("GET", "/_session", server.get_session),
    ("POST", "/_session", server.post_session),
    ("DELETE", "/_session", server.delete_session),
    # before the database routes: GET /dashboard[/...] is the dashboard, not a database
    ("GET", "/dashboard", dashboard.index),
    ("GET", "/dashboard/{path:.*}", dashboard.asset),
    ("POST", "/api/v1/auth/login", api_auth.login),
    ("POST", "/api/v1/auth/refresh", api_auth.refresh),
    ("POST", "/api/v1/auth/logout", api_auth.logout),
    ("GET", "/api/v1/auth/me", api_auth.me),
    ("GET", "/api/v1/checkpoints", checkpoints.list_handler),
    ("DELETE", "/api/v1/checkpoints", checkpoints.reset_handler),
    ("GET", "/api/v1/openapi.json", openapi_handler),
    ("GET", "/api/v1/activity", updates.activity_handler),
    ("GET", "/api/v1/activity/stats", dashboard.stats_handler),
    ("GET", "/api/v1/inspections", inspections.list_handler),
    ("POST", "/api/v1/inspections", inspections.create_handler),
    ("GET", "/api/v1/inspections/{inspection_id}", inspections.get_handler),
    ("PATCH", "/api/v1/inspections/{inspection_id}", inspections.patch_handler),
    ("DELETE", "/api/v1/inspections/{inspection_id}", inspections.delete_handler),
    ("GET", "/api/v1/inspections/{inspection_id}/photos", photos.list_handler),
    ("POST", "/api/v1/photos/upload-params", photos.upload_params_handler),
    ("POST", "/api/v1/photos/confirm", photos.confirm_handler),
    ("POST", "/api/v1/sync/batch", inspections.batch_handler),
    ("GET", "/api/v1/sync/changes", inspections.changes_handler),
    ("GET", "/api/v1/templates", templates.list_handler),
    ("POST", "/api/v1/templates", templates.create_handler),
    ("GET", "/api/v1/templates/{template_id}", templates.get_handler),
    ("PATCH", "/api/v1/templates/{template_id}", templates.patch_handler),
    ("DELETE", "/api/v1/templates/{template_id}", templates.delete_handler),
    ("GET", "/api/v1/conflicts", conflicts.list_handler),
    ("GET", "/api/v1/conflicts/{conflict_id}", conflicts.get_handler),
    ("POST", "/api/v1/conflicts/{conflict_id}/resolve", conflicts.resolve_handler),
    ("PUT", DB, db.put_db),
    ("GET", DB, db.get_db),
    ("DELETE", DB, db.delete_db),
    ("POST", DB, docs.post_doc),
    # what a replicator asks for on every batch first: each route is found by trying the
    # patterns in this order (every database route shares the "/" prefix)
    ("GET", DB + "/_local/{localid}", local.get_local_doc),
    ("PUT", DB + "/_local/{localid}", local.put_local_doc),
    ("DELETE", DB + "/_local/{localid}", local.delete_local_doc),
    ("POST", DB + "/_revs_diff", bulk.revs_diff_handler),
    ("POST", DB + "/_bulk_docs", bulk.bulk_docs),
    ("GET", DB + "/_changes", changes.changes),
    ("POST", DB + "/_changes", changes.changes),
    ("POST", DB + "/_bulk_get", bulk.bulk_get),
    ("GET", DB + "/_all_docs", all_docs.all_docs),
    ("POST", DB + "/_all_docs", all_docs.all_docs),
    ("POST", DB + "/_ensure_full_commit", db.ensure_full_commit),
    ("GET", DB + "/_revs_limit", db.get_revs_limit),
    ("PUT", DB + "/_revs_limit", db.put_revs_limit),
    ("POST", DB + "/_compact", db.compact),
    ("GET", DB + "/_conflict_policy", db.get_conflict_policy),
    ("PUT", DB + "/_conflict_policy", db.put_conflict_policy),
    ("GET", DB + "/_security", db.get_security),
    ("GET", DB + "/_design/{ddoc}", docs.get_doc),
    ("PUT", DB + "/_design/{ddoc}", docs.put_doc),
    ("DELETE", DB + "/_design/{ddoc}", docs.delete_doc),
    ("GET", DB + "/_design/{ddoc}/{attname:.+}", attachments.get_attachment),
    ("PUT", DB + "/_design/{ddoc}/{attname:.+}", attachments.put_attachment),
    ("DELETE", DB + "/_design/{ddoc}/{attname:.+}", attachments.delete_attachment),
    ("GET", DB + "/{docid}", docs.get_doc),
    ("PUT", DB + "/{docid}", docs.put_doc),
    ("DELETE", DB + "/{docid}", docs.delete_doc),
    ("GET", DB + "/{docid}/{attname:.+}", attachments.get_attachment),
    ("PUT", DB + "/{docid}/{attname:.+}", attachments.put_attachment),
    ("DELETE", DB + "/{docid}/{attname:.+}", attachments.delete_attachment),
]


def setup_routes(app: web.Application) -> None:
    """Register every route (HEAD is served wherever GET is)."""
    for method, path, handler in ROUTES:
        _add(app, method, path, handler)
    for method, path, handler in ROUTES:  # PouchDB addresses a database as "/{db}/"
        if path == DB:
            _add(app, method, path + "/", handler)


def _add(app: web.Application, method: str, path: str, handler: object) -> None:
    # consecutive routes of one path share one resource: one pattern to try, not one per method
    if method == "GET":  # add_get also registers HEAD
        app.router.add_get(path, handler)  # type: ignore[arg-type]
    else:
        app.router.add_route(method, path, handler)  # type: ignore[arg-type]
