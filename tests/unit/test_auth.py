"""aggregators/query/auth.py: keys that rotate (a kid picks one of several), issuer and audience
checked, a longest lifetime per kind of token (at the edge and on both sides), and an OIDC
provider's JWKS (served over real HTTP from this process) instead of shared secrets."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from typer.testing import CliRunner

from aggregators.query.auth import (
    NO_KID,
    TokenError,
    TokenRules,
    Unauthorized,
    Verifier,
    mint,
    mint_for,
    shared_keys,
)
from runtime.cli import app
from runtime.cli.common import settings as cli_settings
from voicemon.settings import Settings

OLD = "the-old-key-of-last-month-0123456789abcdef"
NEW = "the-new-key-of-this-month-0123456789abcdef"
LEGACY = "the-single-kid-less-secret-0123456789abcdef"
NOW = 1_800_000_000.0
RULES = TokenRules("voicemon", "voicemon-api", max_ttl_staff_s=3600, max_ttl_org_s=7200)


def verifier(keys: dict[str, str] | None = None) -> Verifier:
    keys = {"2026-11": OLD, "2026-12": NEW} if keys is None else keys
    return Verifier(RULES, keys, clock=lambda: NOW)


def bearer(token: str) -> str:
    return f"Bearer {token}"


def signed(secret: str, kid: str = NO_KID, staff: bool = True, ttl_s: int = 600,
           **claims: Any) -> str:  # fmt: skip
    token = mint(secret, "op", staff=staff, organization_id=None if staff else "org-a",
                 ttl_s=ttl_s, kid=kid, now=NOW)  # fmt: skip
    if not claims:
        return token
    body = jwt.decode(token, options={"verify_signature": False}) | claims
    body = {name: value for name, value in body.items() if value is not None}
    return jwt.encode(body, secret, headers={"kid": kid} if kid else None)


def test_every_configured_key_verifies_and_the_kid_picks_it() -> None:
    both = verifier()
    assert both.principal(bearer(signed(OLD, "2026-11"))).platform_staff
    assert both.principal(bearer(signed(NEW, "2026-12"))).platform_staff
    with pytest.raises(Unauthorized):  # the right key under the wrong kid
        both.principal(bearer(signed(NEW, "2026-11")))
    with pytest.raises(Unauthorized):  # a kid nobody configured
        both.principal(bearer(signed(NEW, "2027-01")))
    with pytest.raises(Unauthorized):  # no kid, and no kid-less key configured
        both.principal(bearer(signed(NEW)))
    rotated = verifier({"2026-12": NEW})  # the old key dropped: its tokens stop working
    with pytest.raises(Unauthorized):
        rotated.principal(bearer(signed(OLD, "2026-11")))
    assert rotated.principal(bearer(signed(NEW, "2026-12")))


def test_a_kid_less_secret_keeps_working_beside_the_keys() -> None:
    mixed = verifier({NO_KID: LEGACY, "2026-12": NEW})
    assert mixed.principal(bearer(signed(LEGACY))).subject == "op"
    assert mixed.principal(bearer(signed(NEW, "2026-12"))).subject == "op"


@pytest.mark.parametrize(
    "claims",
    [{"iss": "someone-else"}, {"aud": "another-api"}, {"aud": ["another-api"]}],
)  # fmt: skip
def test_issuer_and_audience_are_checked(claims: dict[str, Any]) -> None:
    with pytest.raises(Unauthorized):
        verifier().principal(bearer(signed(NEW, "2026-12", **claims)))
    assert verifier().principal(bearer(signed(NEW, "2026-12", aud=["x", "voicemon-api"])))


def test_a_token_of_the_contracts_form_without_issuer_or_audience_still_works() -> None:
    """CONTRACT §7's claims are sub, exp, platform_staff and organization_id: the old form
    keeps working beside the new one (judged by its expiry, not the minting cap)."""
    old_form = signed(NEW, "2026-12", iss=None, aud=None, ttl_s=36500 * 86400)
    assert verifier().principal(bearer(old_form)).subject == "op"


@pytest.mark.parametrize(("staff", "limit"), [(True, 3600), (False, 7200)])
def test_the_longest_lifetime_holds_at_its_edge(staff: bool, limit: int) -> None:
    check = verifier()
    at_edge = signed(NEW, "2026-12", staff=staff, ttl_s=limit)
    assert check.principal(bearer(at_edge)).platform_staff is staff
    for too_long in (limit + 1, 36500 * 86400):
        with pytest.raises(Unauthorized, match="longer"):
            check.principal(bearer(signed(NEW, "2026-12", staff=staff, ttl_s=too_long)))


def test_expiry_at_its_edge() -> None:
    check = verifier()
    assert check.principal(bearer(signed(NEW, "2026-12", exp=int(NOW) + 1)))
    for expired in (int(NOW), int(NOW) - 1):
        with pytest.raises(Unauthorized, match="expired"):
            check.principal(bearer(signed(NEW, "2026-12", exp=expired)))


def keyed(**env: str) -> Settings:
    return Settings(**env)  # type: ignore[arg-type]


def test_token_create_signs_with_the_signing_key_and_refuses_past_the_cap() -> None:
    config = keyed(jwt_keys={"2026-11": OLD, "2026-12": NEW}, jwt_signing_key_id="2026-12",
                   jwt_max_ttl_staff_seconds=3600, jwt_max_ttl_org_seconds=7200)  # fmt: skip
    token = mint_for(config, "op", staff=True, organization_id=None, ttl_s=3600)
    assert jwt.get_unverified_header(token)["kid"] == "2026-12"
    assert Verifier.of(config).principal(bearer(token)).platform_staff
    with pytest.raises(TokenError, match="VOICEMON_JWT_MAX_TTL_STAFF_SECONDS"):
        mint_for(config, "op", staff=True, organization_id=None, ttl_s=3601)
    assert mint_for(config, "op", staff=False, organization_id="a", ttl_s=7200)
    with pytest.raises(TokenError, match="VOICEMON_JWT_MAX_TTL_ORG_SECONDS"):
        mint_for(config, "op", staff=False, organization_id="a", ttl_s=7201)
    two = keyed(jwt_keys={"2026-11": OLD, "2026-12": NEW})
    with pytest.raises(TokenError, match="VOICEMON_JWT_SIGNING_KEY_ID"):
        mint_for(two, "op", staff=True, organization_id=None, ttl_s=60)
    with pytest.raises(ValueError, match="names no key"):
        keyed(jwt_keys={"2026-12": NEW}, jwt_signing_key_id="2026-13")
    with pytest.raises(ValueError, match="at least 32 bytes"):
        keyed(jwt_keys={"short": "too-short"})
    assert shared_keys(keyed(jwt_secret=LEGACY)) == {NO_KID: LEGACY}


def test_token_create_on_the_command_line_refuses_a_hundred_years(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VOICEMON_JWT_SECRET", LEGACY)
    cli_settings.cache_clear()
    try:
        done = CliRunner().invoke(app, ["token", "create", "--staff", "--ttl", "36500d"])
        assert done.exit_code == 1
        assert "VOICEMON_JWT_MAX_TTL_STAFF_SECONDS" in done.output
        assert LEGACY not in done.output
        done = CliRunner().invoke(app, ["token", "create", "--staff", "--ttl", "1d"])
        assert done.exit_code == 0, done.output
        assert Verifier.of(Settings()).principal(bearer(done.output.strip()))
    finally:
        cli_settings.cache_clear()


@pytest.fixture
def jwks_url() -> Iterator[tuple[str, rsa.RSAPrivateKey]]:
    """An OIDC provider's key set served over HTTP on a free port of this machine."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    body = json.dumps({"keys": [public | {"kid": "idp-1", "use": "sig", "alg": "RS256"}]})

    class Keys(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Keys)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/jwks.json", key
    server.shutdown()


def test_an_oidc_providers_jwks_verifies_instead_of_shared_keys(
    jwks_url: tuple[str, rsa.RSAPrivateKey],
) -> None:
    url, key = jwks_url
    config = keyed(jwt_jwks_url=url, jwt_issuer="https://idp.example", jwt_audience="voicemon")
    check = Verifier.of(config)
    claims = {"sub": "alice", "iss": "https://idp.example", "aud": "voicemon",
              "exp": int(time.time()) + 300,
              "platform_staff": True}  # fmt: skip
    token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "idp-1"})
    assert check.principal(bearer(token)).subject == "alice"
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for forged in (
        jwt.encode(claims, other, algorithm="RS256", headers={"kid": "idp-1"}),
        jwt.encode(claims, key, algorithm="RS256", headers={"kid": "idp-2"}),
        jwt.encode(claims, NEW, algorithm="HS256", headers={"kid": "idp-1"}),
    ):
        with pytest.raises(Unauthorized):
            check.principal(bearer(forged))
