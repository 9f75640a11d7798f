"""Secrets are compared in constant time, and a failed login costs the same work whoever it
names.

Structural: every ``==``, ``!=``, ``in`` and ``not in`` in ``gateway/``, ``schema/`` and
``replication/`` whose operands are named like a secret (secret, token, signature, digest,
password, hash, hmac, mac, api key, nonce, csrf) must be on the allow-list below, each with
the reason it is not a secret compared in Python; a new one fails this test until it uses
``hmac.compare_digest`` or is reviewed onto the list.  The secrets themselves are compared
by ``hmac.compare_digest``: password hashes here, JWT signatures (access tokens, session
cookies) inside pyjwt; refresh tokens are looked up by their sha256 in the database.
Behavioural: a cookie or token altered without changing its length is refused, and an
unknown or disabled name runs one scrypt verification like a wrong password does.
"""

from __future__ import annotations

import ast
import hmac
import inspect
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

import gateway.auth
import schema.users
from gateway.auth import make_session_cookie
from gateway.tokens import make_access_token
from schema.tables import users
from schema.users import hash_password, verify_password
from tests.helpers import PASSWORD, basic

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("gateway", "schema", "replication")
SECRET_NAME = re.compile(
    r"secret|token|signature|digest|passw|hash|hmac|(?:^|_)mac(?:$|_)|api_?key|nonce|csrf",
    re.IGNORECASE,
)
SECRET_KEY = "test-secret-key-that-is-long-enough-for-hs256"

PUBLIC_DIGEST = "the md5 of an attachment's content, public integrity data, not a secret"
SQL_LOOKUP = "SQL: a lookup by the sha256 of a 256-bit random token, done by the database"
# (file, comparison as ast.unparse writes it) -> why it is not a timing leak
ALLOWED: dict[tuple[str, str], str] = {
    ("schema/documents.py", "att.digest != stored['digest']"): PUBLIC_DIGEST,
    ("replication/docs.py", "digest != computed"): PUBLIC_DIGEST,
    (
        "schema/reads.py",
        "attachments.c.digest == bindparam('digests', type_=ARRAY(Text)).any_()",
    ): PUBLIC_DIGEST,
    ("gateway/idempotency.py", "row.request_hash != request_hash_"): (
        "the fingerprint of the caller's own earlier request under their own key, not a secret"
    ),
    ("gateway/settings.py", "f.name in SECRET_NAMES"): "names of settings, not their values",
    ("gateway/settings.py", "name in SECRET_NAMES"): "names of settings, not their values",
    ("schema/tokens.py", "refresh_tokens.c.token_hash == digest"): SQL_LOOKUP,
    ("schema/tokens.py", "refresh_tokens.c.token_hash == token_hash(token)"): SQL_LOOKUP,
    ("schema/idempotency.py", "t.c.created_at == token"): (
        "SQL: the timestamp that identifies a claim, not a secret"
    ),
}


def operand_names(node: ast.expr) -> Iterator[str]:
    """The names that say what a compared value is: variables, the last attribute, string
    subscripts and called functions (``users.c.name`` is ``name``, not ``users``)."""
    if isinstance(node, ast.Name):
        yield node.id
    elif isinstance(node, ast.Attribute):
        yield node.attr
    elif isinstance(node, ast.Subscript):
        yield from operand_names(node.value)
        if isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
            yield node.slice.value
    elif isinstance(node, ast.Call):
        yield from operand_names(node.func)
        for arg in node.args:
            yield from operand_names(arg)


def flagged_comparisons(tree: ast.AST) -> Iterator[str]:
    """Each ``==``/``!=``/``in``/``not in`` in ``tree`` with a secret-named operand, as source
    (a chained comparison gives one per operator; ``is`` and orderings compare no secret)."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        for i, op in enumerate(node.ops):
            if not isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn)):
                continue
            left, right = operands[i], operands[i + 1]
            names = [*operand_names(left), *operand_names(right)]
            if any(SECRET_NAME.search(name) for name in names):
                yield ast.unparse(ast.Compare(left, [op], [right]))


def secret_comparisons() -> Counter[tuple[str, str]]:
    """Every flagged comparison in the gateway's packages, by (file, source)."""
    found: Counter[tuple[str, str]] = Counter()
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for text in flagged_comparisons(tree):
                found[(str(path.relative_to(ROOT)), text)] += 1
    return found


def test_no_secret_is_compared_with_an_operator() -> None:
    """Fails on any new ``==``/``!=``/``in`` over a secret-named value until it uses
    ``hmac.compare_digest`` or is reviewed onto ``ALLOWED`` with a reason; an entry whose
    comparison is gone fails too, so the list stays the truth."""
    found = secret_comparisons()
    unreviewed = sorted(set(found) - set(ALLOWED))
    assert not unreviewed, "compare these with hmac.compare_digest, or review them: " + "; ".join(
        f"{path}: {text}" for path, text in unreviewed
    )
    stale = sorted(set(ALLOWED) - set(found))
    assert not stale, f"allow-list entries that no longer exist: {stale}"


def test_the_scan_sees_a_plain_comparison_of_a_secret() -> None:
    """The scanner itself: the comparisons it must catch are caught, and only those."""
    caught = [
        "ok = signature == expected",
        "ok = provided != user.password_hash",
        "ok = request.headers['X-Api-Key'] == settings.api_key",
        "ok = token in valid_tokens",
        "ok = hmac_value == computed",
        "ok = 0 < len(x) and mac == other",
        "ok = a == b == secret",
    ]
    ignored = [
        "ok = name == other",
        "ok = token is None",
        "ok = users.c.name == name",
        "ok = hmac.compare_digest(signature, expected)",
        "ok = len(token) > 10",
    ]
    for source in caught:
        assert list(flagged_comparisons(ast.parse(source))), source
    for source in ignored:
        assert not list(flagged_comparisons(ast.parse(source))), source


def test_jwt_signatures_are_checked_with_compare_digest() -> None:
    """Access tokens and session cookies are HS256 JWTs verified by pyjwt: its HMAC check
    must be ``hmac.compare_digest`` (a pyjwt upgrade that changed it would fail here)."""
    source = inspect.getsource(jwt.algorithms.HMACAlgorithm.verify)
    assert "hmac.compare_digest(" in source


def test_password_hashes_are_compared_with_compare_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    """``verify_password`` decides through ``hmac.compare_digest``, for a right and a wrong
    password alike."""
    calls: list[tuple[bytes, bytes]] = []
    original = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return original(a, b)

    monkeypatch.setattr(schema.users.hmac, "compare_digest", spy)
    stored = hash_password("right")
    assert verify_password("right", stored) is True
    assert verify_password("wrong", stored) is False
    assert len(calls) == 2 and all(len(a) == len(b) == 32 for a, b in calls)


def _flip(text: str, index: int) -> str:
    """``text`` with one base64url character changed (same length, still decodable)."""
    swapped = "A" if text[index] != "A" else "B"
    return text[:index] + swapped + text[index + 1 :]


async def _status(client: Any, headers: dict[str, str]) -> int:
    async with client.get("/_all_dbs", headers=headers) as resp:
        await resp.read()
        return resp.status


async def test_a_session_cookie_altered_at_the_same_length_is_refused(
    client: Any, engine: AsyncEngine
) -> None:
    """One character changed in the signature, or in the claims (another user id), or the
    whole cookie signed with another key: 401, though the genuine cookie works."""
    async with engine.connect() as conn:
        alice = await schema.users.find_user(conn, "alice")
    assert alice is not None
    cookie = make_session_cookie(SECRET_KEY, alice)
    header, claims, signature = cookie.split(".")
    assert await _status(client, {"Cookie": f"AuthSession={cookie}"}) == 200
    altered = [
        f"{header}.{claims}.{_flip(signature, 5)}",
        f"{header}.{claims}.{_flip(signature, len(signature) - 2)}",
        f"{header}.{_flip(claims, 10)}.{signature}",
        make_session_cookie("another-secret-key-that-is-long-enough-for-hs256", alice),
    ]
    for forged in altered:
        assert len(forged) == len(cookie)
        assert await _status(client, {"Cookie": f"AuthSession={forged}"}) == 401, forged


async def test_an_access_token_altered_at_the_same_length_is_refused(
    client: Any, engine: AsyncEngine
) -> None:
    """The same for a Bearer access token."""
    async with engine.connect() as conn:
        alice = await schema.users.find_user(conn, "alice")
    assert alice is not None
    token, _ = make_access_token(SECRET_KEY, alice, 600)
    assert await _status(client, {"Authorization": f"Bearer {token}"}) == 200
    header, claims, signature = token.split(".")
    for forged in (
        f"{header}.{claims}.{_flip(signature, 7)}",
        f"{header}.{_flip(claims, 3)}.{signature}",
    ):
        assert len(forged) == len(token)
        assert await _status(client, {"Authorization": f"Bearer {forged}"}) == 401, forged


@pytest.fixture
def scrypt_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The stored hashes ``gateway.auth`` verifies passwords against, in order."""
    seen: list[str] = []

    def spy(password: str, stored: str) -> bool:
        seen.append(stored)
        return verify_password(password, stored)

    monkeypatch.setattr(gateway.auth, "verify_password", spy)
    return seen


def _scrypt_parameters(stored: str) -> tuple[str, ...]:
    scheme, n, r, p, _salt, _digest = stored.split("$")
    return scheme, n, r, p


async def test_an_unknown_or_disabled_name_costs_one_password_check_like_a_wrong_password(
    client: Any, engine: AsyncEngine, scrypt_calls: list[str]
) -> None:
    """No user-existence oracle in response times: a wrong password, an unknown name and a
    disabled account each run exactly one scrypt verification with the same parameters, on
    every login route."""
    async with engine.begin() as conn:
        await conn.execute(update(users).where(users.c.name == "bob").values(disabled=True))
    attempts = [("alice", "wrong password"), ("nobody", PASSWORD), ("bob", PASSWORD)]
    for name, password in attempts:
        for method, path, kwargs in [
            ("POST", "/api/v1/auth/login", {"json": {"username": name, "password": password}}),
            ("POST", "/_session", {"json": {"name": name, "password": password}}),
            ("GET", "/_all_dbs", {"headers": {"Authorization": basic(name, password)}}),
        ]:
            scrypt_calls.clear()
            async with client.request(method, path, **kwargs) as resp:
                assert resp.status == 401, (name, path)
            assert len(scrypt_calls) == 1, (name, path, scrypt_calls)
            assert _scrypt_parameters(scrypt_calls[0]) == _scrypt_parameters(hash_password("x"))


def test_the_stand_in_hash_of_unknown_names_matches_no_password() -> None:
    """The stand-in is made once from a random secret, never an empty or known password."""
    stand_in = gateway.auth._unknown_user_hash()
    assert stand_in is gateway.auth._unknown_user_hash()
    for guess in ("", PASSWORD, "password", "\x00"):
        assert not verify_password(guess, stand_in)
