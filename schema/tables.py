"""Every table, declared once on one ``MetaData`` with a naming convention.

    databases 1--* documents 1--* revisions        (bodies per revision)
        |              '-- rev_tree, leaves, winning_rev, seq   (one row per document)
        |--* attachments  (content-addressed by digest, per database)
        '--* local_docs   (checkpoints, private to (database, user))
    users

``databases.update_seq`` is the per-database counter: every writing transaction locks that
row first, so commits happen in seq order and a changes reader can never be given a seq
lower than one it already saw (SPEC §4 "Changes feed sequence").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    func,
    text,
)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

# Document ids sort byte-wise, as CouchDB's _all_docs raw collation does.
DocId = Text().with_variant(Text(collation="C"), "postgresql")

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("password_hash", Text, nullable=False),
    Column("role", String(16), nullable=False),
    Column("disabled", Boolean, nullable=False, server_default=false()),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

databases = Table(
    "databases",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(238), nullable=False, unique=True),
    Column("access_mode", String(16), nullable=False, server_default="owned"),
    Column("conflict_policy", String(16), nullable=False, server_default="manual"),
    Column("revs_limit", Integer, nullable=False, server_default="1000"),
    Column("update_seq", BigInteger, nullable=False, server_default="0"),
    Column("doc_count", BigInteger, nullable=False, server_default="0"),
    Column("doc_del_count", BigInteger, nullable=False, server_default="0"),
    Column("instance_start_time", String(32), nullable=False),
    # The newest seq of a purged tombstone: a replica whose checkpoint is older may have
    # missed deletions and must reset (``_changes`` says so).
    Column("purge_seq", BigInteger, nullable=False, server_default="0"),
    # Server-wide order of database changes (``_db_updates``): taken by every write.
    Column("change_seq", BigInteger, nullable=False, server_default="0", index=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

documents = Table(
    "documents",
    metadata,
    Column("db_id", Integer, primary_key=True),
    Column("doc_id", DocId, primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("winning_rev", Text, nullable=False),
    Column("deleted", Boolean, nullable=False),
    # [[rev, deleted], ...], winner first: what _changes style=all_docs and _conflicts need.
    Column("leaves", LargeBinary, nullable=False),
    # {rev: [parent, deleted]}: the whole revision tree (replication.revtree).
    Column("rev_tree", LargeBinary, nullable=False),
    Column("owner_id", Integer, nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_by", Integer, nullable=True),  # who wrote the latest change (activity)
    # On PostgreSQL these two references (and revisions -> documents) are enforced by
    # statement-level triggers, one set-based check per write instead of one per row
    # (migration 0007); SQLite keeps them as foreign keys.
    ForeignKeyConstraint(["db_id"], ["databases.id"], ondelete="CASCADE").ddl_if(dialect="sqlite"),
    ForeignKeyConstraint(["owner_id"], ["users.id"], ondelete="SET NULL").ddl_if(dialect="sqlite"),
    UniqueConstraint("db_id", "seq", name="uq_documents_db_id_seq"),
    Index("ix_documents_db_id_owner_id_seq", "db_id", "owner_id", "seq"),
)

revisions = Table(
    "revisions",
    metadata,
    Column("db_id", Integer, primary_key=True),
    Column("doc_id", DocId, primary_key=True),
    Column("rev", Text, primary_key=True),
    Column("deleted", Boolean, nullable=False),
    # The JSON body without underscore members, exactly as stored (orjson bytes).
    Column("body", LargeBinary, nullable=False),
    # {name: {content_type, digest, length, revpos}} or NULL.
    Column("attachments", LargeBinary, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    ForeignKeyConstraint(  # a trigger on PostgreSQL: see documents
        ["db_id", "doc_id"], ["documents.db_id", "documents.doc_id"], ondelete="CASCADE"
    ).ddl_if(dialect="sqlite"),
)

attachments = Table(
    "attachments",
    metadata,
    Column("db_id", Integer, ForeignKey("databases.id", ondelete="CASCADE"), primary_key=True),
    Column("digest", String(64), primary_key=True),
    Column("length", BigInteger, nullable=False),
    Column("data", LargeBinary, nullable=False),
)

local_docs = Table(
    "local_docs",
    metadata,
    Column("db_id", Integer, ForeignKey("databases.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("doc_id", DocId, primary_key=True),
    Column("rev", Integer, nullable=False),
    Column("body", LargeBinary, nullable=False),
    # The sequence a replication checkpoint records (parsed from last_seq), for reporting.
    Column("checkpoint_seq", BigInteger, nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    # Every token a login starts and its rotations share a family: reuse revokes it whole.
    Column("family", String(64), nullable=False, index=True),
    Column("token_hash", String(64), nullable=False, unique=True),  # sha256 hex, never the token
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("used_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

revoked_tokens = Table(
    "revoked_tokens",
    metadata,
    # Access tokens (by jti) revoked by logout before they expire.
    Column("jti", String(64), primary_key=True),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

conflicts = Table(
    "conflicts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("db_id", Integer, nullable=False),
    Column("doc_id", DocId, nullable=False),
    Column("owner_id", Integer, nullable=True),  # the document's owner (access filtering)
    # the losing leaf the record follows (None for a refused REST update: not in the tree)
    Column("leaf_rev", String(200), nullable=True),
    # "mine": the revision that arrived; None when a refused REST update exists only here
    Column("mine_rev", String(200), nullable=True),
    Column("mine_body", LargeBinary, nullable=True),
    Column("theirs_rev", String(200), nullable=False),  # the server's revision
    Column("theirs_body", LargeBinary, nullable=True),
    Column("ancestor_rev", String(200), nullable=True),
    Column("ancestor_body", LargeBinary, nullable=True),
    Column("pushed_by", Integer, ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
    Column("device", String(200), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("status", String(16), nullable=False),  # open | resolved | auto_resolved
    Column("strategy", String(16), nullable=True),
    Column("resolved_by", Integer, ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
    Column("resolved_rev", String(200), nullable=True),
    Column("resolved_at", DateTime(timezone=True), nullable=True),
    ForeignKeyConstraint(
        ["db_id", "doc_id"], ["documents.db_id", "documents.doc_id"], ondelete="CASCADE"
    ),
    # one open record per (document, losing leaf): a replayed push never duplicates one
    Index(
        "uq_conflicts_open_leaf",
        "db_id",
        "doc_id",
        "leaf_rev",
        unique=True,
        postgresql_where=text("status = 'open'"),
        sqlite_where=text("status = 'open'"),
    ),
    Index(None, "db_id", "doc_id", "status"),
    Index(None, "status", "db_id", "id"),
)

photos = Table(
    "photos",
    metadata,
    # A photo uploaded straight to Cloudinary and confirmed there; no bytes pass through here.
    Column("id", String(36), primary_key=True),
    Column("inspection_id", DocId, nullable=False, index=True),
    Column("public_id", String(255), nullable=False, unique=True),
    Column("version", BigInteger, nullable=False),
    Column("format", String(16), nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("width", Integer, nullable=True),
    Column("height", Integer, nullable=True),
    Column("secure_url", Text, nullable=False),
    Column("uploader_id", Integer, ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    # One stored answer per (user, Idempotency-Key); status NULL while the first request runs.
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("status", Integer, nullable=True),
    Column("content_type", String(100), nullable=True),
    Column("body", LargeBinary, nullable=True),
    # The answer's replayed headers ({"ETag": ..., "Location": ...}, JSON) or NULL.
    Column("headers", LargeBinary, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
)

inspection_index = Table(
    "inspection_index",
    metadata,
    # The fields the REST API filters inspections on, kept from each document's winning
    # revision by every write to the ``inspections`` database (``schema.rules``).
    Column("db_id", Integer, primary_key=True),
    Column("doc_id", DocId, primary_key=True),
    Column("owner_id", Integer, nullable=True),
    Column("status", String(32), nullable=True),
    Column("template_id", String(200), nullable=True),
    Column("inspector", String(128), nullable=True),
    Column("deleted", Boolean, nullable=False),
    Column("seq", BigInteger, nullable=False),
    ForeignKeyConstraint(
        ["db_id", "doc_id"], ["documents.db_id", "documents.doc_id"], ondelete="CASCADE"
    ),
    Index("ix_inspection_index_owner", "db_id", "owner_id", "deleted", "doc_id"),
    Index("ix_inspection_index_status", "db_id", "status", "deleted", "doc_id"),
    Index("ix_inspection_index_template", "db_id", "template_id", "deleted", "doc_id"),
)


def declared_for(dialect: str) -> Callable[..., bool]:
    """An alembic ``include_object`` that leaves out what is declared for another dialect
    only (the foreign keys PostgreSQL enforces with triggers instead, migration 0007), so
    autogenerate compares each database with what it should hold."""

    def include(obj: Any, _name: str | None, kind: str, _reflected: bool, _other: Any) -> bool:
        only = getattr(obj, "_ddl_if", None) if kind == "foreign_key_constraint" else None
        return only is None or only.dialect is None or only.dialect == dialect

    return include
