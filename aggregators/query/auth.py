"""Bearer-token auth of the query surface (CONTRACT §7): JWTs via PyJWT.

Tokens are HS256 under shared keys — ``VOICEMON_JWT_SECRET`` (tokens without a ``kid``) and
``VOICEMON_JWT_KEYS`` ({kid: secret}: every key verifies at once, the token's ``kid`` header
picks one, so a new key is added, then signed with, then the old one dropped: rotation
without downtime) — or, with ``VOICEMON_JWT_JWKS_URL``, signed by an OIDC provider and
checked against its published keys (PyJWT's ``PyJWKClient``, RS256/ES256). Every token must
carry the configured issuer and audience, and no token may live longer than the maximum of
its kind (staff or organization) from now: a token minted for a hundred years is refused
whoever signed it.

Staff read everything; any other token reads only its own organization. PyJWT compares
signatures in constant time; no token or secret ever appears in an error or a log line.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from voicemon.settings import Settings

SHARED_ALGORITHMS = ["HS256"]
OIDC_ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"]
NO_KID = ""  # the key of VOICEMON_JWT_SECRET: tokens without a kid header
DEFAULT_ISSUER = Settings.model_fields["jwt_issuer"].default
DEFAULT_AUDIENCE = Settings.model_fields["jwt_audience"].default


class Unauthorized(Exception):
    """Missing, malformed, forged or expired token (HTTP 401)."""


class Forbidden(Exception):
    """A valid token that may not read what it asked for (HTTP 403)."""


class TokenError(ValueError):
    """A token that ``mint`` refuses to make (its sentence names the setting to change)."""


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    platform_staff: bool
    organization_id: str | None


@dataclass(frozen=True, slots=True)
class TokenRules:
    """What a token must satisfy besides its signature."""

    issuer: str
    audience: str
    max_ttl_staff_s: int
    max_ttl_org_s: int

    @classmethod
    def of(cls, settings: Settings) -> TokenRules:
        staff, org = settings.jwt_max_ttl_staff_seconds, settings.jwt_max_ttl_org_seconds
        return cls(settings.jwt_issuer, settings.jwt_audience, staff, org)

    def max_ttl(self, staff: bool) -> int:
        return self.max_ttl_staff_s if staff else self.max_ttl_org_s


def shared_keys(settings: Settings) -> dict[str, str]:
    """Every shared verification key by kid (``NO_KID`` for VOICEMON_JWT_SECRET)."""
    keys = {kid: secret.get_secret_value() for kid, secret in settings.jwt_keys.items()}
    if settings.jwt_secret is not None:
        keys[NO_KID] = settings.jwt_secret.get_secret_value()
    return keys


class Verifier:
    """Turns an ``Authorization`` header into a ``Principal`` or raises ``Unauthorized``.

    ``keys``: the shared keys by kid; ``jwks``: an OIDC provider's key set (PyJWKClient)
    used instead when given; ``clock``: now in seconds (injected for tests at the edges)."""

    def __init__(
        self,
        rules: TokenRules,
        keys: Mapping[str, str],
        jwks: jwt.PyJWKClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not keys and jwks is None:
            raise ValueError("set VOICEMON_JWT_SECRET, VOICEMON_JWT_KEYS or VOICEMON_JWT_JWKS_URL")
        self.rules, self.keys, self.jwks, self.clock = rules, dict(keys), jwks, clock

    @classmethod
    def of(cls, settings: Settings) -> Verifier:
        url = settings.jwt_jwks_url
        jwks = jwt.PyJWKClient(url, cache_keys=True, lifespan=300) if url else None
        return cls(TokenRules.of(settings), {} if jwks else shared_keys(settings), jwks)

    def principal(self, authorization: str | None) -> Principal:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("missing bearer token: send 'Authorization: Bearer <JWT>'")
        claims, expires = self._claims(token.strip())
        organization_id = claims.get("organization_id")
        if not isinstance(claims["sub"], str) or not isinstance(organization_id, str | None):
            raise Unauthorized("invalid token claims")
        staff = claims.get("platform_staff") is True
        # The lifetime cap holds for the tokens this API's settings mint (they name its
        # issuer); a CONTRACT §7 token of the old form is judged by its expiry alone.
        if "iss" in claims and expires - self.clock() > self.rules.max_ttl(staff):
            raise Unauthorized("token lives longer than this API allows; mint a shorter one")
        return Principal(claims["sub"], staff, organization_id)

    def _claims(self, token: str) -> tuple[dict[str, object], float]:
        """The verified claims and the expiry, on this verifier's clock."""
        try:
            key, algorithms = self._key(token)
            # CONTRACT §7's tokens carry no iss or aud: under shared keys a token without
            # them is still accepted (the old form keeps working); one that carries them must
            # name this API's. A provider's tokens (JWKS) must carry both.
            required = ["exp", "sub", *(["iss", "aud"] if self.jwks is not None else [])]
            claims: dict[str, object] = jwt.decode(
                token, key, algorithms=algorithms,
                options={"require": required, "verify_exp": False, "verify_aud": False,
                         "verify_iat": False, "verify_nbf": False},
            )  # fmt: skip  # the times are checked below, on this verifier's clock
            self._check_issuer_and_audience(claims)
        except (jwt.InvalidTokenError, jwt.PyJWKClientError):
            raise Unauthorized("invalid token") from None
        expires = claims["exp"]
        if not isinstance(expires, int | float) or isinstance(expires, bool):
            raise Unauthorized("invalid token claims")
        if expires <= self.clock():
            raise Unauthorized("token expired")
        not_before = claims.get("nbf", 0)
        if not isinstance(not_before, int | float) or not_before > self.clock():
            raise Unauthorized("token not valid yet")
        return claims, float(expires)

    def _check_issuer_and_audience(self, claims: Mapping[str, object]) -> None:
        if "iss" in claims and claims["iss"] != self.rules.issuer:
            raise jwt.InvalidIssuerError("issuer")
        if "aud" in claims:
            audience = claims["aud"]
            named = audience if isinstance(audience, list) else [audience]
            if self.rules.audience not in named:
                raise jwt.InvalidAudienceError("audience")

    def _key(self, token: str) -> tuple[Any, list[str]]:
        if self.jwks is not None:
            return self.jwks.get_signing_key_from_jwt(token).key, OIDC_ALGORITHMS
        kid = jwt.get_unverified_header(token).get("kid", NO_KID)
        if not isinstance(kid, str) or kid not in self.keys:
            raise jwt.InvalidTokenError("unknown key id")
        return self.keys[kid], SHARED_ALGORITHMS


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


def signing_key(settings: Settings) -> tuple[str, str]:
    """The kid and secret ``voicemon token create`` signs with: VOICEMON_JWT_SIGNING_KEY_ID's
    key, else the only key of VOICEMON_JWT_KEYS, else VOICEMON_JWT_SECRET (no kid)."""
    keys = shared_keys(settings)
    kid = settings.jwt_signing_key_id
    if kid is None and len(settings.jwt_keys) == 1:
        kid = next(iter(settings.jwt_keys))
    if kid is None and settings.jwt_keys and NO_KID not in keys:
        raise TokenError("VOICEMON_JWT_KEYS holds several keys: set VOICEMON_JWT_SIGNING_KEY_ID "
                         "to the one to sign with")  # fmt: skip
    kid = NO_KID if kid is None else kid
    if kid not in keys:
        raise TokenError("set VOICEMON_JWT_SECRET or VOICEMON_JWT_KEYS to mint tokens")
    return kid, keys[kid]


def mint(
    secret: str,
    subject: str,
    *,
    staff: bool,
    organization_id: str | None,
    ttl_s: int,
    kid: str = NO_KID,
    issuer: str = DEFAULT_ISSUER,
    audience: str = DEFAULT_AUDIENCE,
    now: float | None = None,
) -> str:
    """A token signed with ``secret`` (HS256), its ``kid`` header set unless ``NO_KID``."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, object] = {
        "sub": subject,
        "iss": issuer,
        "aud": audience,
        "iat": issued,
        "exp": issued + ttl_s,
        "platform_staff": staff,
    }
    if organization_id is not None:
        claims["organization_id"] = organization_id
    headers = {"kid": kid} if kid != NO_KID else None
    return jwt.encode(claims, secret, algorithm=SHARED_ALGORITHMS[0], headers=headers)


def mint_for(
    settings: Settings, subject: str, *, staff: bool, organization_id: str | None, ttl_s: int
) -> str:
    """A token for operators (``voicemon token create``) under the settings' signing key,
    issuer and audience, refused past the longest lifetime allowed for its kind."""
    rules = TokenRules.of(settings)
    limit = rules.max_ttl(staff)
    if ttl_s > limit:
        kind, name = ("staff", "STAFF") if staff else ("organization", "ORG")
        raise TokenError(f"--ttl {ttl_s}s exceeds the longest lifetime allowed for {kind} "
                         f"tokens ({limit}s); mint a shorter one or raise "
                         f"VOICEMON_JWT_MAX_TTL_{name}_SECONDS")  # fmt: skip
    kid, secret = signing_key(settings)
    return mint(secret, subject, staff=staff, organization_id=organization_id, ttl_s=ttl_s,
                kid=kid, issuer=rules.issuer, audience=rules.audience)  # fmt: skip
