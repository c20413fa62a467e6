"""The query API as the CLI's source of numbers (``voicemon metrics ... --api URL``).

Staff read through the API's bearer-token authorization and need no Redis or ClickHouse
credentials. Anything but a 200 with JSON is an ``ApiError`` (status and the API's own
message) or ``ApiUnreachable``; ``runtime.cli.errors`` says each in one sentence.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson

CONNECT_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 30.0
MAX_DETAIL = 300


class ApiUnreachable(Exception):
    """No answer from the API at ``url``."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.url, self.reason = url, reason


class ApiError(Exception):
    """The API at ``url`` answered ``status`` (not 200) with ``detail``, its message."""

    def __init__(self, url: str, status: int, detail: str) -> None:
        super().__init__(f"{url}: {status} {detail}")
        self.url, self.status, self.detail = url, status, detail


def shown_url(url: str) -> str:
    """``url`` as it may be shown: no user, password, query or fragment (pure)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(an unparsable URL)"
    host = f"[{host}]" if ":" in host else host
    return urlunsplit((parts.scheme, host + port, parts.path, "", ""))


def error_detail(body: bytes) -> str:
    """The API's message in an error body (``{"error": "..."}``), else the body's start (pure)."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
        text = parsed["error"]
    elif isinstance(parsed, dict) and "detail" in parsed:
        text = str(parsed["detail"])
    else:
        text = body.decode("utf-8", "replace")
    return " ".join(text.split())[:MAX_DETAIL] or "no message"


def transport_reason(error: Exception) -> str:
    """Why a request got no answer, in a few words (pure)."""
    import httpx  # the HTTP client is imported by the commands that go --api only

    text = re.sub(r"^\[Errno -?\d+\]\s*", "", " ".join(str(error).split()))
    if isinstance(error, httpx.TimeoutException):
        return "timed out"
    return text or type(error).__name__


class Api:
    """GET requests to a voicemon API with a bearer token."""

    def __init__(self, url: str, token: str) -> None:
        self.base = url.rstrip("/")
        self.shown = shown_url(url)
        self.token = token

    def get(self, path: str, params: Mapping[str, str | int | None]) -> Any:
        """The JSON body of a 200 answer to ``GET path?params`` (None values left out)."""
        import httpx

        query = {name: value for name, value in params.items() if value is not None}
        try:
            response = httpx.get(
                self.base + path,
                params=query,
                headers={"Authorization": f"Bearer {self.token}"},
                timeout=httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
            )
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as error:
            raise ApiUnreachable(self.shown, f"not an http(s) URL: {error}") from error
        except httpx.TransportError as error:
            raise ApiUnreachable(self.shown, transport_reason(error)) from error
        if response.status_code != httpx.codes.OK:
            raise ApiError(self.shown, response.status_code, error_detail(response.content))
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError as error:
            raise ApiError(self.shown, response.status_code, "an answer not in JSON") from error
