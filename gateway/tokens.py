"""Access tokens: short-lived JWTs signed with pyjwt, algorithm pinned to HS256.

    {"sub": "alice", "uid": 3, "role": "inspector", "iat": ..., "exp": ..., "jti": "...",
     "typ": "access", "iss": "replication-gateway"}

The role claim is informational: every request re-reads the user, so a role change or a
disabled account takes effect on the next request, not at expiry.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt

from replication import Unauthorized
from schema.users import User

ALGORITHM = "HS256"
ISSUER = "replication-gateway"
EXPIRED_REASON = "token_expired"


@dataclass(frozen=True, slots=True)
class AccessClaims:
    name: str
    jti: str
    expires_at: int
    uid: int  # the account the token was issued to (a re-created name is another account)


def make_access_token(secret: str, user: User, ttl_seconds: int) -> tuple[str, AccessClaims]:
    """Return a signed access token for ``user`` and its claims."""
    now = time.time()
    claims: dict[str, Any] = {
        "sub": user.name,
        "uid": user.id,
        "role": user.role,
        "iat": int(now),
        # JWT times are whole seconds: round the expiry up, so that a token is valid for at
        # least its TTL (rounding down would cut up to a second off, all of a 1 s TTL)
        "exp": math.ceil(now + ttl_seconds),
        "jti": uuid.uuid4().hex,
        "typ": "access",
        "iss": ISSUER,
    }
    token = jwt.encode(claims, secret, algorithm=ALGORITHM)
    return token, AccessClaims(user.name, claims["jti"], claims["exp"], user.id)


def read_access_token(secret: str, token: str) -> AccessClaims:
    """Verify an access token; ``Unauthorized`` (reason ``token_expired`` when it expired)."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sub", "jti", "iss", "uid"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise Unauthorized(EXPIRED_REASON) from exc
    except jwt.InvalidTokenError as exc:
        raise Unauthorized("Invalid access token.") from exc
    if claims.get("typ") != "access" or not isinstance(claims.get("sub"), str):
        raise Unauthorized("Invalid access token.")
    if not isinstance(claims.get("jti"), str) or "\x00" in claims["sub"]:
        raise Unauthorized("Invalid access token.")
    uid = claims.get("uid")
    if not isinstance(uid, int) or isinstance(uid, bool):
        raise Unauthorized("Invalid access token.")
    return AccessClaims(claims["sub"], claims["jti"], int(claims["exp"]), uid)
