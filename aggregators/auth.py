"""Bearer-token auth of the query surface (CONTRACT §7): HS256 JWTs via PyJWT.

Staff read everything; any other token reads only its own organization. PyJWT compares
signatures in constant time; no token or secret ever appears in an error or a log line.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

ALGORITHMS = ["HS256"]


class Unauthorized(Exception):
    """Missing, malformed, forged or expired token (HTTP 401)."""


class Forbidden(Exception):
    """A valid token that may not read what it asked for (HTTP 403)."""


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    platform_staff: bool
    organization_id: str | None


def principal_from_header(authorization: str | None, secret: str) -> Principal:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing bearer token: send 'Authorization: Bearer <JWT>'")
    try:
        claims = jwt.decode(
            token.strip(), secret, algorithms=ALGORITHMS, options={"require": ["exp", "sub"]}
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("token expired") from None
    except jwt.InvalidTokenError:
        raise Unauthorized("invalid token") from None
    organization_id = claims.get("organization_id")
    if not isinstance(claims["sub"], str) or not isinstance(organization_id, str | None):
        raise Unauthorized("invalid token claims")
    return Principal(claims["sub"], claims.get("platform_staff") is True, organization_id)


def authorize(principal: Principal, organization_id: str | None) -> None:
    """Allow staff anything; others only their own organization's scope."""
    if principal.platform_staff:
        return
    if organization_id is None:
        raise Forbidden("platform-wide metrics need a platform staff token")
    if organization_id != principal.organization_id:
        raise Forbidden("this token may read only its own organization")


def require_staff(principal: Principal) -> None:
    if not principal.platform_staff:
        raise Forbidden("the organizations breakdown needs a platform staff token")


def mint(secret: str, subject: str, *, staff: bool, organization_id: str | None, ttl_s: int) -> str:
    """A signed token for operators (``voicemon token create``)."""
    claims: dict[str, object] = {
        "sub": subject,
        "exp": int(time.time()) + ttl_s,
        "platform_staff": staff,
    }
    if organization_id is not None:
        claims["organization_id"] = organization_id
    return jwt.encode(claims, secret, algorithm=ALGORITHMS[0])
