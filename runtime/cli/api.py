"""``voicemon api`` and ``voicemon token create``."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

import typer

from runtime.cli.common import duration_s, fail, open_store, settings
from voicemon.logs import configure_logging

log = logging.getLogger("voicemon.api")
token_app = typer.Typer(no_args_is_help=True, help="API tokens for operators.")


def api(
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="Port.")] = None,
) -> None:
    """Serve the query API (use a ClickHouse server DSN to run it beside workers)."""
    # FastAPI, the JWT library and the Redis client are heavy: imported by this command only
    from aggregators.query.api import create_app
    from aggregators.query.auth import shared_keys
    from aggregators.query.serve import server
    from voicemon import redis_client

    config = settings()
    if not shared_keys(config) and config.jwt_jwks_url is None:
        fail("VOICEMON_JWT_SECRET, VOICEMON_JWT_KEYS or VOICEMON_JWT_JWKS_URL must be set to "
             "serve the query API")  # fmt: skip
    redis = redis_client.open_async(config)
    application = create_app(config, open_store(), redis)
    bind, listen = host or config.api_bind, port or config.api_port
    configure_logging(config)
    log.info("query API on http://%s:%s (OpenAPI at /openapi.json)", bind, listen)
    asyncio.run(server(application, bind, listen, embedded=False, settings=config).serve())


def ttl_seconds(ttl: str) -> int | None:
    """``30m``, ``1h``, ``7d``, ``90s`` or a number of seconds; None if it is none of them."""
    bare = ttl.strip()
    return int(bare) if bare.isascii() and bare.isdigit() else duration_s(ttl)


@token_app.command("create")
def token_create(
    staff: Annotated[bool, typer.Option("--staff", help="A platform staff token.")] = False,
    org: Annotated[str | None, typer.Option("--org", help="Token of one organization.")] = None,
    ttl: Annotated[str, typer.Option(help="Lifetime: 30m, 1h, 7d or seconds.")] = "1h",
    subject: Annotated[str, typer.Option("--sub", help="Who the token is for.")] = "operator",
) -> None:
    """Mint a signed token (HS256 with the signing key of VOICEMON_JWT_KEYS, or
    VOICEMON_JWT_SECRET) and print it; no longer than VOICEMON_JWT_MAX_TTL_*_SECONDS."""
    from aggregators.query.auth import TokenError, mint_for, shared_keys

    config = settings()
    if not shared_keys(config):
        fail("VOICEMON_JWT_SECRET or VOICEMON_JWT_KEYS must be set to mint tokens")
    if staff == (org is not None):
        fail("give exactly one of --staff or --org ID")
    seconds = ttl_seconds(ttl)
    if seconds is None or seconds <= 0:
        fail(f"--ttl {ttl!r}: use a positive lifetime, e.g. 30m, 1h, 7d or a number of seconds")
    try:
        print(mint_for(config, subject, staff=staff, organization_id=org, ttl_s=seconds))
    except TokenError as error:
        fail(str(error))


def register(app: typer.Typer) -> None:
    app.command()(api)
    app.add_typer(token_app, name="token")
