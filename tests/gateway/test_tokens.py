"""Access and refresh tokens (SPEC §3): login, rotation, reuse detection, logout, forgeries."""

from __future__ import annotations

import base64
import time
from typing import Any

import jwt
import orjson
import pytest
from click.testing import CliRunner
from sqlalchemy import update

from gateway.tokens import ALGORITHM, ISSUER
from schema.tables import users
from tests.helpers import PASSWORD

SECRET = "test-secret-key-that-is-long-enough-for-hs256"


async def _post(client: Any, path: str, body: Any, headers: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    resp = await client.post(
        path,
        data=orjson.dumps(body),
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    return resp.status, await resp.json()


async def _login(client: Any, name: str = "alice") -> dict[str, Any]:
    status, body = await _post(
        client, "/api/v1/auth/login", {"username": name, "password": PASSWORD}
    )
    assert status == 200, body
    return body


async def _get(client: Any, path: str, token: str):  # type: ignore[no-untyped-def]
    resp = await client.get(path, headers={"Authorization": f"Bearer {token}"})
    return resp.status, await resp.json()


async def test_login_returns_a_bearer_pair_that_opens_every_route(client: Any, admin: Any) -> None:
    await admin.put("/field?access_mode=shared")
    tokens = await _login(client)
    assert tokens["token_type"] == "bearer" and tokens["expires_in"] == 900
    assert set(tokens) == {"access_token", "refresh_token", "token_type", "expires_in"}
    status, me = await _get(client, "/api/v1/auth/me", tokens["access_token"])
    assert status == 200 and me["username"] == "alice" and me["role"] == "inspector"
    status, info = await _get(client, "/field", tokens["access_token"])
    assert status == 200 and info["db_name"] == "field"
    claims = jwt.decode(tokens["access_token"], SECRET, algorithms=[ALGORITHM], issuer=ISSUER)
    assert {"exp", "iat", "sub", "jti", "role"} <= set(claims)


async def test_wrong_password_and_unknown_user_are_the_same_401(client: Any) -> None:
    bad = await _post(client, "/api/v1/auth/login", {"username": "alice", "password": "nope"})
    unknown = await _post(client, "/api/v1/auth/login", {"username": "zed", "password": "nope"})
    assert bad == unknown and bad[0] == 401
    assert (await _post(client, "/api/v1/auth/login", {"username": 5}))[0] == 400


async def test_refresh_rotates_and_a_reused_token_revokes_the_whole_family(client: Any) -> None:
    first = await _login(client)
    status, second = await _post(
        client, "/api/v1/auth/refresh", {"refresh_token": first["refresh_token"]}
    )
    assert status == 200 and second["refresh_token"] != first["refresh_token"]
    status, third = await _post(
        client, "/api/v1/auth/refresh", {"refresh_token": second["refresh_token"]}
    )
    assert status == 200
    # The first token comes back (stolen and replayed): the family dies, including `third`.
    status, body = await _post(
        client, "/api/v1/auth/refresh", {"refresh_token": first["refresh_token"]}
    )
    assert status == 401 and "reuse" in body["reason"]
    status, _ = await _post(
        client, "/api/v1/auth/refresh", {"refresh_token": third["refresh_token"]}
    )
    assert status == 401
    other = await _login(client)  # a separate login is a separate family, still alive
    status, _ = await _post(
        client, "/api/v1/auth/refresh", {"refresh_token": other["refresh_token"]}
    )
    assert status == 200


async def test_logout_revokes_the_access_token_and_its_refresh_family(client: Any) -> None:
    tokens = await _login(client)
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    status, _ = await _post(
        client, "/api/v1/auth/logout", {"refresh_token": tokens["refresh_token"]}, bearer
    )
    assert status == 200
    status, body = await _get(client, "/api/v1/auth/me", tokens["access_token"])
    assert status == 401 and body["error"] == "unauthorized"
    status, _ = await _post(
        client, "/api/v1/auth/refresh", {"refresh_token": tokens["refresh_token"]}
    )
    assert status == 401


async def test_a_disabled_user_loses_access_on_the_next_request(client: Any, engine: Any) -> None:
    tokens = await _login(client)
    assert (await _get(client, "/api/v1/auth/me", tokens["access_token"]))[0] == 200
    async with engine.begin() as conn:
        await conn.execute(update(users).where(users.c.name == "alice").values(disabled=True))
    assert (await _get(client, "/api/v1/auth/me", tokens["access_token"]))[0] == 401
    status, _ = await _post(
        client, "/api/v1/auth/refresh", {"refresh_token": tokens["refresh_token"]}
    )
    assert status == 401


def _forge(claims: dict[str, Any], key: str = SECRET, algorithm: str = ALGORITHM) -> str:
    return jwt.encode(claims, key, algorithm=algorithm)


USER_IDS = {"admin": 1, "manager": 2, "alice": 3, "bob": 4}  # conftest order


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "sub": "alice",
        "iat": now,
        "exp": now + 60,
        "jti": "j1",
        "typ": "access",
        "iss": ISSUER,
    }
    merged = {**base, **overrides}
    merged.setdefault("uid", USER_IDS.get(merged["sub"], 0))  # the fixtures' user ids
    return merged


def _alg_none(claims: dict[str, Any]) -> str:
    def part(obj: Any) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(obj)).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (lambda: _forge(_claims(exp=int(time.time()) - 5)), "token_expired"),
        (
            lambda: _forge(_claims(), key="another-secret-of-sufficient-length-xx"),
            "Invalid access token.",
        ),
        (lambda: _alg_none(_claims()), "Invalid access token."),
        (lambda: _forge(_claims(), algorithm="HS512"), "Invalid access token."),
        (lambda: _forge(_claims(typ="session")), "Invalid access token."),
        (lambda: _forge(_claims(sub="admin", iss="someone-else")), "Invalid access token."),
        (
            lambda: _forge({k: v for k, v in _claims().items() if k != "jti"}),
            "Invalid access token.",
        ),
        (lambda: _forge(_claims())[:-4] + "AAAA", "Invalid access token."),
        (lambda: "not.a.jwt", "Invalid access token."),
        (lambda: _forge(_claims(sub="ghost")), "Invalid access token."),
    ],
    ids=[
        "expired",
        "wrong-key",
        "alg-none",
        "other-hs-alg",
        "session-typ",
        "foreign-iss",
        "no-jti",
        "tampered",
        "garbage",
        "no-such-user",
    ],
)
async def test_bad_tokens_get_a_401_that_says_why(client: Any, token: Any, reason: str) -> None:
    status, body = await _get(client, "/api/v1/auth/me", token())
    assert status == 401 and body == {"error": "unauthorized", "reason": reason}


async def test_an_rs256_token_signed_with_anything_is_refused(client: Any) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    status, _ = await _get(client, "/api/v1/auth/me", _forge(_claims(), key=pem, algorithm="RS256"))
    assert status == 401


def test_gateway_token_prints_a_working_access_token(tmp_path: Any, monkeypatch: Any) -> None:
    from gateway.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GATEWAY_SECRET_KEY", SECRET)
    runner = CliRunner()
    runner.invoke(main, ["users", "add", "kim", "--role", "manager", "--password", "pw"])
    result = runner.invoke(main, ["token", "kim"])
    assert result.exit_code == 0, result.output
    claims = jwt.decode(result.output.strip(), SECRET, algorithms=[ALGORITHM], issuer=ISSUER)
    assert claims["sub"] == "kim" and claims["role"] == "manager"
    assert runner.invoke(main, ["token", "nobody"]).exit_code != 0


@pytest.mark.parametrize("now", [100.0, 100.05, 100.95, 100.999])
def test_a_token_lives_at_least_its_ttl_whatever_the_fraction_of_a_second(
    monkeypatch: pytest.MonkeyPatch, now: float
) -> None:
    from gateway import tokens
    from schema.users import User

    monkeypatch.setattr(tokens.time, "time", lambda: now)
    user = User(id=1, name="alice", role="inspector", disabled=False, password_hash="")
    token, claims = tokens.make_access_token("s" * 64, user, 1)
    assert now + 1 <= claims.expires_at < now + 2
    decoded = jwt.decode(token, "s" * 64, algorithms=[ALGORITHM], options={"verify_exp": False})
    assert decoded["exp"] == claims.expires_at and decoded["iat"] == int(now)
