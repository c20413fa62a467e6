"""The CLI's failure sentences (runtime/cli/errors.py, runtime/cli/remote.py): pure rules,
the dispatch over exception types, and the wrapped typer app on usage mistakes."""

from __future__ import annotations

import httpx
import pytest
from confluent_kafka import KafkaError, KafkaException
from pydantic import ValidationError
from redis.exceptions import AuthenticationError, RedisClusterException, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.sentinel import MasterNotFoundError
from typer.testing import CliRunner

from aggregators.query.queries import QueryError
from runtime.cli import app
from runtime.cli.errors import (
    Addresses,
    addresses,
    api_sentence,
    command_secrets,
    debug_requested,
    kafka_reason,
    kafka_sentence,
    one_line,
    redis_reason,
    redis_sentence,
    run,
    scrub,
    sentence,
    settings_sentence,
    store_name,
    store_sentence,
    usage_sentence,
)
from runtime.cli.preflight import KafkaUnreachable
from runtime.cli.remote import ApiError, ApiUnreachable, error_detail, shown_url, transport_reason
from voicemon.settings import Settings
from voicemon.store import StoreError

SERVER = "the ClickHouse server at http://db:8123/voicemon"
EMBEDDED = "the embedded store at /var/ch"


def _settings_error(**values: object) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        Settings(**values)  # type: ignore[arg-type]
    return caught.value


def test_a_bad_setting_names_its_variable_and_value() -> None:
    text = settings_sentence(_settings_error(topic_partitions="abc"))
    assert text.startswith("setting VOICEMON_TOPIC_PARTITIONS='abc' is invalid: input should be")
    assert text.endswith("; fix or unset it")


def test_a_bad_secret_setting_never_shows_its_value() -> None:
    text = settings_sentence(_settings_error(jwt_secret="changeme"))
    assert "VOICEMON_JWT_SECRET" in text and "placeholder" in text and "changeme" not in text
    text = settings_sentence(_settings_error(clickhouse_dsn="tcp://u:pw@host/db"))
    assert "VOICEMON_CLICKHOUSE_DSN is invalid: must start with chdb://" in text
    assert "pw" not in text


def test_several_bad_settings_say_how_many_more() -> None:
    text = settings_sentence(_settings_error(topic_partitions="x", topic_replication="y"))
    assert "(and 1 more)" in text


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused "
         "(after 0ms in state CONNECT)", "Connection refused"),
        ("nohost:9092/bootstrap: Failed to resolve 'nohost:9092': Name or service not known "
         "(after 4ms in state CONNECT)", "Name or service not known"),
        ("Failed to get metadata: Local: Broker transport failure", "Broker transport failure"),
        ("", "no reason given"),
    ],
)  # fmt: skip
def test_kafka_reason(text: str, reason: str) -> None:
    assert kafka_reason(text) == reason


def test_kafka_sentences() -> None:
    down = kafka_sentence("k:9092", "x: Connection refused", KafkaError._TRANSPORT)
    assert down == (
        "cannot reach Kafka at k:9092 (Connection refused); start the broker or fix "
        "VOICEMON_KAFKA_BOOTSTRAP"
    )
    refused = kafka_sentence("k:9092", "SASL authentication error: bad", KafkaError._AUTHENTICATION)
    assert refused.startswith("Kafka at k:9092 refused this client (bad); check the client's")
    other = kafka_sentence("k:9092", "Broker: Unknown topic", KafkaError.UNKNOWN_TOPIC_OR_PART)
    assert other.startswith("Kafka at k:9092 refused the request (Unknown topic)")


def test_redis_sentences() -> None:
    text = "Error 111 connecting to 127.0.0.1:1. Connection refused."
    assert redis_reason(text) == "Connection refused"
    assert redis_reason("Timeout connecting to server") == "Timeout connecting to server"
    assert redis_sentence("redis://h:1/0", text, "connect") == (
        "cannot reach Redis at redis://h:1/0 (Connection refused); start it or fix "
        "VOICEMON_REDIS_URL"
    )
    assert "refused the credentials" in redis_sentence("redis://h:1/0", "", "auth")
    assert "refused a command (OOM" in redis_sentence("redis://h:1/0", "OOM limit", "")


@pytest.mark.parametrize(
    ("where", "embedded", "text", "expected"),
    [
        (SERVER, False, "cannot open the ClickHouse server store: Error HTTPConnectionPool("
         "host='db', port=8123): Max retries exceeded (Caused by NewConnectionError(\"...: "
         "[Errno 111] Connection refused\"))",
         f"cannot reach {SERVER} (Connection refused); start it or fix VOICEMON_CLICKHOUSE_DSN"),
        (SERVER, False, "NameResolutionError(\"Failed to resolve 'db' ([Errno -2] Name or "
         "service not known)\")", f"cannot reach {SERVER} (Name or service not known);"),
        (SERVER, False, "Read timed out. (read timeout=10)", f"cannot reach {SERVER} (timed out)"),
        (EMBEDDED, True, "Code: 81. DB::Exception: Database voicemon does not exist. "
         "(UNKNOWN_DATABASE)", f"{EMBEDDED} has no voicemon schema (Database voicemon does not "
         "exist); run 'voicemon migrate' first"),
        (EMBEDDED, True, "Code: 60. DB::Exception: Unknown table expression identifier "
         "'voicemon.snapshots'. In scope SELECT 1. (UNKNOWN_TABLE)",
         f"{EMBEDDED} has no voicemon schema"),
        (SERVER, False, "HTTPDriver for http://db:8123 received ClickHouse error code 516\n "
         "Code: 516. DB::Exception: voicemon: Authentication failed. (AUTHENTICATION_FAILED)",
         f"{SERVER} refused the user or password; fix VOICEMON_CLICKHOUSE_DSN"),
        (EMBEDDED, True, "Code: 62. DB::Exception: Syntax error: failed at position 1 (SELEC)"
         "\n FORMAT Native. Expected one of: ... (SYNTAX_ERROR)",
         f"{EMBEDDED} refused the query (SYNTAX_ERROR: Syntax error: failed at position 1)"),
        (EMBEDDED, True, "cannot open the embedded chDB store: ... Error initializing "
         "EmbeddedServer: . (BAD_ARGUMENTS) Code: 76. DB::Exception: Cannot lock file "
         "/var/ch/status. Another server instance in same directory is already running.",
         f"{EMBEDDED} is in use by another process"),
        (EMBEDDED, True, "[Errno 13] Permission denied: '/var/ch'",
         f"cannot open {EMBEDDED} (Permission denied); fix VOICEMON_CLICKHOUSE_DSN"),
        (SERVER, False, "cannot open the ClickHouse server store: something odd\nsecond line",
         f"{SERVER} failed (something odd second line); check it and VOICEMON_CLICKHOUSE_DSN"),
    ],
)  # fmt: skip
def test_store_sentences(where: str, embedded: bool, text: str, expected: str) -> None:
    assert store_sentence(where, embedded, text).startswith(expected)


def test_store_names_never_show_a_password() -> None:
    assert store_name("http://u:secret@db:8123/voicemon") == (SERVER, False)
    assert store_name("chdb:///var/ch") == (EMBEDDED, True)


@pytest.mark.parametrize(
    ("status", "words"),
    [(401, "refused the token (HTTP 401: expired); pass a valid one with --token"),
     (403, "does not let this token read that (HTTP 403: expired); use a staff token"),
     (400, "refused the request (HTTP 400: expired); fix the option"),
     (404, "has no such route (HTTP 404: expired); check --api"),
     (503, "could not answer (HTTP 503: expired); retry later"),
     (418, "answered (HTTP 418: expired); check --api")],
)  # fmt: skip
def test_api_sentences(status: int, words: str) -> None:
    assert api_sentence("http://api:8000", status, "expired") == (
        f"the voicemon API at http://api:8000 {words}"
        + {401: " or VOICEMON_TOKEN (voicemon token create)", 403: ", or --org with your "
           "organization's token", 400: " it names"}.get(status, "")
    )  # fmt: skip


def test_api_client_pure_parts() -> None:
    assert error_detail(b'{"error": "token expired"}') == "token expired"
    assert error_detail(b'{"detail": "Not Found"}') == "Not Found"
    assert error_detail(b"<html>\n bad gateway </html>") == "<html> bad gateway </html>"
    assert error_detail(b"") == "no message"
    assert shown_url("https://me:pw@api.example:8443/base?token=x#f") == (
        "https://api.example:8443/base"
    )
    assert transport_reason(httpx.ConnectError("[Errno 111] Connection refused")) == (
        "Connection refused"
    )
    assert transport_reason(httpx.ReadTimeout("")) == "timed out"


def test_usage_one_line_and_scrub() -> None:
    assert usage_sentence("Missing option '--start'.", "voicemon metrics history") == (
        "Missing option '--start'; see 'voicemon metrics history --help'"
    )
    assert "Value error" not in usage_sentence("Value error, 'x' is not one of 'a'.", "v")
    assert one_line("a\n  b\tc ") == "a b c"
    assert one_line("x" * 50, 10) == "x" * 9 + "…"
    assert scrub("http://u:pw@h and pw", ["pw", ""]) == "http://u:***@h and ***"


def test_debug_requested() -> None:
    assert debug_requested(["--debug", "raw-count"], {})
    assert not debug_requested(["raw-count", "--debug"], {})  # a global option only
    assert not debug_requested(["sql", "--debug"], {})
    assert debug_requested(["raw-count"], {"VOICEMON_DEBUG": "1"})
    assert debug_requested([], {"VOICEMON_DEBUG": "True"})
    assert not debug_requested(["raw-count"], {"VOICEMON_DEBUG": "0"})


WHERE = Addresses("k:9092", "redis://r:6379/0", "http://u:pw@db:8123/voicemon", ("pw",))


@pytest.mark.parametrize(
    ("error", "start"),
    [
        (_settings_error(topic_partitions="abc"), "setting VOICEMON_TOPIC_PARTITIONS="),
        (KafkaUnreachable("k:1", "x: Connection refused", KafkaError._TRANSPORT),
         "cannot reach Kafka at k:1 (Connection refused)"),
        (KafkaException(KafkaError(KafkaError._TRANSPORT, "Local: Broker transport failure")),
         "cannot reach Kafka at k:9092 (Broker transport failure)"),
        (RedisConnectionError("Error 111 connecting to r:6379. Connection refused."),
         "cannot reach Redis at redis://r:6379/0 (Connection refused)"),
        (AuthenticationError("invalid username-password pair"), "Redis at redis://r:6379/0 "
         "refused the credentials"),
        (ResponseError("WRONGPASS invalid username-password pair"), "Redis at redis://r:6379/0 "
         "refused the credentials"),
        (StoreError("cannot open the ClickHouse server store: pw [Errno 111] Connection refused"),
         "cannot reach the ClickHouse server at http://db:8123/voicemon (Connection refused)"),
        (ApiUnreachable("http://api:1", "Connection refused"),
         "cannot reach the voicemon API at http://api:1 (Connection refused)"),
        (ApiError("http://api:1", 401, "token expired"), "the voicemon API at http://api:1 "
         "refused the token"),
        (QueryError("range: longer than 7 days; use period=daily"), "range: longer than 7 days"),
        (FileNotFoundError(2, "No such file or directory", "/x.csv"),
         "No such file or directory: /x.csv; check the path"),
        (RuntimeError("boom with pw\nmore"), "unexpected RuntimeError (boom with ***); rerun "
         "with --debug"),
    ],
)  # fmt: skip
def test_sentence_picks_the_rule_and_hides_secrets(error: BaseException, start: str) -> None:
    text = sentence(error, WHERE)
    assert text.startswith(start), text
    assert "pw" not in text.replace("pwd", "") and "\n" not in text


def test_addresses_come_from_the_settings_without_secrets() -> None:
    config = Settings(redis_url="redis://:rpw@r:1/2", clickhouse_dsn="http://u:cpw@db:8123/x",
                      jwt_secret="j" * 40)  # fmt: skip
    where = addresses(config)
    assert where.redis == "redis://r:1/2"
    assert set(where.secrets) == {"rpw", "cpw", "j" * 40}


DUMP = "<redis.asyncio.client.Redis(<redis.asyncio.connection.ConnectionPool(<Connection>)>)>"


@pytest.mark.parametrize(
    ("errors", "expected"),
    [
        (f" : {DUMP} - network:ConnectionError, {DUMP} - network:TimeoutError",
         "cannot reach Redis at the primary 'voicemon' of the Sentinels s1:26379,s2:26379 (no "
         "Sentinel answered: ConnectionError, TimeoutError); start them or fix "
         "VOICEMON_REDIS_SENTINELS"),
        (f" : {DUMP} - auth:AuthenticationError, {DUMP} - network:ConnectionError",
         "looking for the primary 'voicemon' of the Sentinels s1:26379,s2:26379, the Sentinels "
         "refused the credentials; fix VOICEMON_REDIS_SENTINEL_PASSWORD"),
        ("", "no healthy primary 'voicemon' of the Sentinels s1:26379,s2:26379 (they answered); "
         "fix VOICEMON_REDIS_SENTINEL_MASTER or check the Sentinels"),
    ],
)  # fmt: skip
def test_no_primary_from_the_sentinels_says_which_setting_to_fix(
    errors: str, expected: str
) -> None:
    """redis-py's words (``discover_master``): each Sentinel's client dumped, then the kind
    of its error; none when the Sentinels answered but know no such primary."""
    behind = addresses(Settings(redis_sentinels="s1:26379,s2:26379"))
    assert sentence(MasterNotFoundError(f"No master found for 'voicemon'{errors}"), behind) == (
        expected
    )


def test_a_cluster_reaching_no_node_is_an_outage_and_another_cluster_error_a_bug() -> None:
    cluster = addresses(Settings(redis_url="redis://:rpw@n1:7000/0", redis_cluster=True))
    down = RedisClusterException("Redis Cluster cannot be connected. Please provide at least "
                                 "one reachable node: Connection refused.")  # fmt: skip
    text = sentence(down, cluster)
    assert text.startswith("cannot reach Redis at the Redis Cluster node redis://n1:7000/0 ("), text
    assert text.endswith("; start it or fix VOICEMON_REDIS_URL") and "rpw" not in text
    assert sentence(RedisClusterException("No targets were found"), cluster).startswith(
        "unexpected RedisClusterException"
    )


def test_run_turns_a_failure_into_exit_1_and_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    def failing() -> None:
        raise QueryError("start: must not be after end")

    assert run(failing, debug=False) == 1
    assert run(lambda: 3, debug=False) == 3
    assert run(lambda: None, debug=False) == 0
    err = capsys.readouterr().err
    assert err.splitlines() == ["error: start: must not be after end"]


def test_run_with_debug_prints_the_traceback_first(capsys: pytest.CaptureFixture[str]) -> None:
    def failing() -> None:
        raise QueryError("bad")

    assert run(failing, debug=True) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and err.splitlines()[-1] == "error: bad"


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["metrics", "history", "--end", "0"], 2, "Missing option '--start'"),
        (["metrics", "history", "--start", "0", "--end", "1", "--period", "weekly"], 2,
         "Invalid value for '--period'"),
        (["metrics", "orgs", "--start", "0", "--end", "1", "--limit", "0"], 2, "'--limit'"),
        (["frobnicate"], 2, "No such command 'frobnicate'"),
        (["metrics", "realtime", "--api", "http://127.0.0.1:1"], 1, "--api needs a token"),
        (["metrics", "history", "--start", "x", "--end", "1"], 1, "--start: expected an RFC 3339"),
        (["metrics", "history", "--start", "0", "--end", "2026-01-01T00:00:00Z", "--api",
          "http://127.0.0.1:1", "--token", "t"], 1, "range: longer than 7 days"),
    ],
)  # fmt: skip
def test_usage_mistakes_through_the_app(args: list[str], code: int, words: str) -> None:
    result = CliRunner().invoke(app, args)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == code, result.output
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], lines


TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln\n"


def test_the_command_lines_token_is_a_secret_in_every_form() -> None:
    found = command_secrets(["metrics", "realtime", "--token", TOKEN], {})
    assert TOKEN in found and TOKEN.strip() in found and repr(TOKEN)[1:-1] in found
    assert TOKEN.strip() in command_secrets(["x", f"--token={TOKEN}"], {})
    assert TOKEN.strip() in command_secrets(["x"], {"VOICEMON_TOKEN": TOKEN})
    assert command_secrets(["x", "--token"], {"VOICEMON_TOKEN": " "}) == ()
    assert command_secrets(["x", "--token", "1234567"], {}) == ()  # too short to be one
    assert command_secrets(["x", "--token", "12345678"], {}) == ("12345678",)
    text = f"Illegal header value b'Bearer {TOKEN!r}'"
    assert TOKEN.strip() not in sentence(ValueError(text), Addresses(secrets=found))


@pytest.mark.parametrize(
    "token", ["tökén.x.y", "a b", "a\x00b", "abc\ndef", "Bearer abc", "abc\u200b"]
)
def test_a_token_no_bearer_token_can_be_is_one_sentence_without_it(token: str) -> None:
    done = CliRunner().invoke(
        app, ["metrics", "realtime", "--api", "http://127.0.0.1:1", "--token", token]
    )
    text = " ".join(done.output.split())
    assert done.exit_code == 1 and text.startswith("error: "), text
    assert "no bearer token has" in text and token.strip() not in done.output


def test_a_token_with_a_trailing_newline_is_used_without_it() -> None:
    done = CliRunner().invoke(
        app, ["metrics", "realtime", "--api", "http://127.0.0.1:1", "--token", TOKEN]
    )
    text = " ".join(done.output.split())
    assert done.exit_code == 1 and "cannot reach the voicemon API" in text, text
    assert TOKEN.strip() not in done.output
