"""Every failure of a ``voicemon`` command as one sentence: what failed, where, what to do.

``OneSentenceGroup`` is the class of the typer app: its ``main`` runs click outside click's
standalone mode and turns whatever escapes a command into one line on stderr — ``error:``
and a sentence naming the failing part with its address (never a password) and what to do.
A usage mistake exits 2, as click does; anything else exits 1. ``--debug`` (or
``VOICEMON_DEBUG=1``) prints the traceback and the client libraries' log lines as well.

``sentence`` picks the rule for an exception; the ``*_sentence`` functions are the rules,
pure, and unit-tested without any service.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from pydantic import ValidationError
from pydantic_settings import SettingsError
from rich.console import Console
from rich.markup import escape
from typer import Abort, TyperException
from typer.core import TyperGroup

from aggregators.directory.organizations import DirectoryError
from aggregators.query.queries import QueryError
from runtime.cli.remote import ApiError, ApiUnreachable, shown_url
from voicemon.kafka_access import KafkaAccessError, KafkaUnreachable
from voicemon.logs import LIBRDKAFKA_LOGGER, configure_logging, escaped_forms, secrets_of
from voicemon.settings import Settings
from voicemon.store import StoreError
from voicemon.topics import TopicRulesBroken, TopicsError

MAX_SENTENCE = 400
MIN_TOKEN_CHARS = 8  # shorter is no bearer token (a JWT is far longer): not masked in words
TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
# Client libraries that log a failure on their own before raising it (shown with --debug).
NOISY_LOGGERS = ("clickhouse_connect", LIBRDKAFKA_LOGGER)
SECRET_SETTINGS = frozenset(
    name for name, field in Settings.model_fields.items() if "SecretStr" in str(field.annotation)
)
KAFKA_AUTH_CODES = frozenset({KafkaError._AUTHENTICATION, KafkaError._SSL,
                              KafkaError.SASL_AUTHENTICATION_FAILED,
                              KafkaError.TOPIC_AUTHORIZATION_FAILED,
                              KafkaError.CLUSTER_AUTHORIZATION_FAILED})  # fmt: skip
STORE_AUTH_NAMES = frozenset({"AUTHENTICATION_FAILED", "REQUIRED_PASSWORD", "ACCESS_DENIED"})
STORE_SCHEMA_NAMES = frozenset({"UNKNOWN_DATABASE", "UNKNOWN_TABLE"})

_stderr = Console(stderr=True, soft_wrap=True, highlight=False)


class _NeverRaised(Exception):
    """Stands in for the errors of a client library this run never imported."""


class ClientErrors:
    """The exception classes of the Redis and ClickHouse clients, as far as this run imported
    them: an error cannot come from a library that was never imported, and importing one
    only to say so would add its import to every command that fails without it."""

    def __init__(self) -> None:
        def loaded(module: str, name: str) -> type[BaseException]:
            found = getattr(sys.modules.get(module), name, None)
            return found if isinstance(found, type) else _NeverRaised

        self.store = loaded("clickhouse_connect.driver.exceptions", "ClickHouseError")
        self.redis = loaded("redis.exceptions", "RedisError")
        self.redis_auth = loaded("redis.exceptions", "AuthenticationError")
        self.redis_connection = loaded("redis.exceptions", "ConnectionError")
        self.redis_timeout = loaded("redis.exceptions", "TimeoutError")
        self.redis_cluster = loaded("redis.exceptions", "RedisClusterException")
        self.no_primary = loaded("redis.sentinel", "MasterNotFoundError")


# --- the rules (pure) ---------------------------------------------------------------------


def one_line(text: str, limit: int = MAX_SENTENCE) -> str:
    """``text`` with every run of whitespace (newlines too) made one space, at most ``limit``
    characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def scrub(text: str, secrets: Sequence[str]) -> str:
    """``text`` with every secret replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def settings_sentence(error: ValidationError) -> str:
    """A bad ``VOICEMON_*`` value: which variable, the value unless it is a secret, why."""
    problems = error.errors(include_url=False)
    first = problems[0]
    field = str(first["loc"][0]) if first["loc"] else ""
    name = f"VOICEMON_{field.upper()}"
    shown = ""
    if field not in SECRET_SETTINGS and isinstance(first.get("input"), str | int | float):
        shown = f"={one_line(str(first['input']), 60)!r}"
    why = str(first["msg"]).removeprefix("Value error, ")
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    if not field:  # a rule across settings (voicemon/settings.py): its message names them
        return f"{why}{more}"
    return f"setting {name}{shown} is invalid: {why[:1].lower()}{why[1:]}{more}; fix or unset it"


def kafka_reason(text: str) -> str:
    """librdkafka's words for a failure, without broker prefix and state suffix."""
    text = re.sub(r"\s*\(after \d+ms in state \w+\)\s*$", "", one_line(text))
    return text.rsplit(": ", 1)[-1] or "no reason given"


def kafka_sentence(bootstrap: str, reason: str, code: int | None) -> str:
    why = kafka_reason(reason)
    if code in KAFKA_AUTH_CODES:
        return (
            f"Kafka at {bootstrap} refused this client ({why}); check the client's "
            "credentials, certificates and ACLs"
        )
    if code is None or code < 0:  # librdkafka's local errors: the broker was not reached
        return f"cannot reach Kafka at {bootstrap} ({why}); start the broker or fix " + (
            "VOICEMON_KAFKA_BOOTSTRAP"
        )
    return f"Kafka at {bootstrap} refused the request ({why}); check the broker and its topics"


def redis_reason(text: str) -> str:
    """redis-py's words for a failure, without the address it repeats."""
    text = one_line(text)
    found = re.search(r"connecting to \S+?\.\s+(.+?)\.?$", text)
    return (found.group(1) if found else text.rstrip(".")) or "no reason given"


def redis_sentence(address: str, text: str, kind: str, setting: str = "VOICEMON_REDIS_URL") -> str:
    """``kind``: ``auth``, ``connect`` or anything else (a command Redis refused);
    ``setting``: the variable that says where Redis is."""
    if kind == "auth":
        return f"Redis at {address} refused the credentials; fix the password in VOICEMON_REDIS_URL"
    if kind == "connect":
        return f"cannot reach Redis at {address} ({redis_reason(text)}); start it or fix {setting}"
    return f"Redis at {address} refused a command ({redis_reason(text)}); check the server"


def sentinel_sentence(address: str, text: str) -> str:
    """No primary from the Sentinels: redis-py's words list, after a dump of each Sentinel's
    client, the kind of error each one raised (``auth:AuthenticationError``); none if the
    Sentinels answered but know no such primary."""
    found = re.findall(r" - \w+:(\w+)", text)
    if "AuthenticationError" in found:
        return (f"looking for {address}, the Sentinels refused the credentials; fix "
                "VOICEMON_REDIS_SENTINEL_PASSWORD")  # fmt: skip
    if not found:
        return (f"no healthy {address.removeprefix('the ')} (they answered); fix "
                "VOICEMON_REDIS_SENTINEL_MASTER or check the Sentinels")  # fmt: skip
    kinds = ", ".join(sorted(set(found)))
    return (
        f"cannot reach Redis at {address} (no Sentinel answered: {kinds}); start them or fix "
        "VOICEMON_REDIS_SENTINELS"
    )


def store_sentence(where: str, embedded: bool, text: str) -> str:
    """A store failure; ``where`` names the store ("the ClickHouse server at http://h:8123/db"
    or "the embedded store at /path")."""
    flat = one_line(text, 10_000)
    if "Cannot lock file" in flat or "Another server instance" in flat:
        return (
            f"{where} is in use by another process (one process owns an embedded store: "
            "a running worker?); stop that process, or point VOICEMON_CLICKHOUSE_DSN at a "
            "ClickHouse server"
        )
    names = re.findall(r"\(([A-Z][A-Z0-9_]{2,})\)", flat)  # the engine's error name comes last
    name = names[-1] if names else None
    exception = re.search(r"DB::Exception: (.+?)(?:\. \(|\(|$)", one_line(text.split("\n")[0]))
    message = exception.group(1).rstrip(". ") if exception else ""
    if name in STORE_SCHEMA_NAMES:
        return f"{where} has no voicemon schema ({message}); run 'voicemon migrate' first"
    if name in STORE_AUTH_NAMES:
        return f"{where} refused the user or password; fix VOICEMON_CLICKHOUSE_DSN"
    if exception:
        return (
            f"{where} refused the query ({name or 'error'}: {message}); fix the query or the schema"
        )
    errno = re.search(r"\[Errno -?\d+\] ([^\"')\]]+)", flat)
    reason = errno.group(1).strip(" :") if errno else ("timed out" if "timed out" in flat else "")
    if reason:
        verb = "cannot open" if embedded else "cannot reach"
        what_to_do = "fix" if embedded else "start it or fix"
        return f"{verb} {where} ({reason}); {what_to_do} VOICEMON_CLICKHOUSE_DSN"
    short = one_line(re.sub(r"^cannot open the [\w ]+ store:\s*", "", flat), 200)
    return f"{where} failed ({short}); check it and VOICEMON_CLICKHOUSE_DSN"


def store_name(dsn: str) -> tuple[str, bool]:
    """How a sentence names the store of ``dsn``, and whether it is embedded."""
    if dsn.startswith("chdb:"):
        return f"the embedded store at {dsn.removeprefix('chdb:').removeprefix('//')}", True
    return f"the ClickHouse server at {shown_url(dsn)}", False


def api_sentence(url: str, status: int, detail: str) -> str:
    """A voicemon API that answered ``status`` instead of the numbers."""
    said = f"(HTTP {status}: {detail})"
    if status == 401:
        return (
            f"the voicemon API at {url} refused the token {said}; pass a valid one with "
            "--token or VOICEMON_TOKEN (voicemon token create)"
        )
    if status == 403:
        return (
            f"the voicemon API at {url} does not let this token read that {said}; use a "
            "staff token, or --org with your organization's token"
        )
    if status in (400, 422):
        return f"the voicemon API at {url} refused the request {said}; fix the option it names"
    if status == 404:
        return f"the voicemon API at {url} has no such route {said}; check --api"
    if status >= 500:
        return f"the voicemon API at {url} could not answer {said}; retry later"
    return f"the voicemon API at {url} answered {said}; check --api"


def api_unreachable_sentence(url: str, reason: str) -> str:
    return f"cannot reach the voicemon API at {url} ({reason}); start it or fix --api"


def usage_sentence(message: str, command_path: str) -> str:
    message = one_line(message).replace("Value error, ", "").rstrip(".")
    return f"{message}; see '{command_path} --help'"


def unexpected_sentence(error: BaseException) -> str:
    text = one_line(str(error).split("\n")[0], 200) or "no message"
    return (
        f"unexpected {type(error).__name__} ({text}); rerun with --debug for the traceback "
        "and report it"
    )


# --- picking the rule ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Addresses:
    """Where the configured dependencies are, as sentences may show them, and the secrets
    no sentence may show."""

    kafka: str = "the configured bootstrap servers"
    redis: str = "the configured URL"
    store_dsn: str = ""
    secrets: tuple[str, ...] = ()
    redis_setting: str = "VOICEMON_REDIS_URL"  # the variable that says where Redis is


def addresses(config: Settings) -> Addresses:
    dsn = config.clickhouse_dsn.get_secret_value()
    redis, setting = shown_url(config.redis_url.get_secret_value()), "VOICEMON_REDIS_URL"
    if config.redis_sentinels:
        sentinels = ",".join(config.redis_sentinels)
        redis = f"the primary {config.redis_sentinel_master!r} of the Sentinels {sentinels}"
        setting = "VOICEMON_REDIS_SENTINELS"
    elif config.redis_cluster:
        redis = f"the Redis Cluster node {redis}"
    return Addresses(config.kafka_bootstrap, redis, dsn, secrets_of(config), setting)


def command_secrets(args: Sequence[str], environ: Mapping[str, str]) -> tuple[str, ...]:
    """The secrets a command line carries outside the settings: the bearer token of
    ``--token`` or ``VOICEMON_TOKEN``, in every form it may show up in (pure)."""
    tokens = [environ.get("VOICEMON_TOKEN", "")]
    for arg, following in zip(args, [*args[1:], ""], strict=True):
        if arg == "--token":
            tokens.append(following)
        elif arg.startswith("--token="):
            tokens.append(arg.removeprefix("--token="))
    forms = escaped_forms(form for token in tokens for form in (token, token.strip()))
    kept = {form for form in forms if len(form.strip()) >= MIN_TOKEN_CHARS}
    return tuple(sorted(kept, key=len, reverse=True))


def _configured(extra_secrets: Sequence[str] = ()) -> Addresses:
    try:
        where = addresses(Settings())
    except Exception:  # the settings themselves are what failed: no address to show
        where = Addresses()
    secrets = sorted({*where.secrets, *extra_secrets}, key=len, reverse=True)
    return replace(where, secrets=tuple(secrets))


def sentence(error: BaseException, where: Addresses) -> str:
    """The one sentence for ``error``."""
    client = ClientErrors()
    match error:
        case ValidationError() if error.title == Settings.__name__:
            text = settings_sentence(error)
        case SettingsError():
            text = f"the VOICEMON_ settings could not be read ({error}); fix the variable it names"
        case KafkaAccessError():  # names the settings to fix (voicemon/kafka_access.py)
            text = str(error)
        case KafkaUnreachable():
            text = kafka_sentence(error.bootstrap, error.reason, error.code)
        case KafkaException():
            kafka = error.args[0] if error.args and isinstance(error.args[0], KafkaError) else None
            reason = kafka.str() if kafka is not None else str(error)
            text = kafka_sentence(where.kafka, reason, kafka.code() if kafka is not None else None)
        case TopicsError():
            text = f"{error}; check the broker and this client's ACLs"
        case client.no_primary():
            text = sentinel_sentence(where.redis, str(error))
        case client.redis_cluster() if "cannot be connected" in str(error):  # no node reached
            text = redis_sentence(where.redis, str(error), "connect", where.redis_setting)
        case client.redis():
            kind = "auth" if isinstance(error, client.redis_auth) else (
                "connect" if isinstance(error, client.redis_connection | client.redis_timeout)
                else ""
            )  # fmt: skip
            if kind != "auth" and re.search(r"NOAUTH|WRONGPASS|invalid password", str(error)):
                kind = "auth"
            text = redis_sentence(where.redis, str(error), kind, where.redis_setting)
        case StoreError() | client.store():
            text = store_sentence(*store_name(where.store_dsn), str(error))
        case ApiUnreachable():
            text = api_unreachable_sentence(error.url, error.reason)
        case ApiError():
            text = api_sentence(error.url, error.status, error.detail)
        case QueryError() | DirectoryError() | TopicRulesBroken():
            text = str(error)
        case TyperException():  # typer's own click: a usage mistake
            path = getattr(getattr(error, "ctx", None), "command_path", "voicemon")
            text = usage_sentence(error.format_message(), path)
        case OSError() if error.strerror:
            text = f"{error.strerror}: {error.filename or ''}; check the path and its permissions"
        case _:
            text = unexpected_sentence(error)
    return one_line(scrub(text, where.secrets))


def debug_requested(args: Sequence[str], environ: Mapping[str, str]) -> bool:
    """``--debug`` among the options before the command, or ``VOICEMON_DEBUG`` true."""
    if environ.get("VOICEMON_DEBUG", "").strip().lower() in TRUE:
        return True
    for arg in args:
        if not arg.startswith("-"):
            return False
        if arg == "--debug":
            return True
    return False


@contextlib.contextmanager
def native_stderr() -> Iterator[list[str]]:
    """Hold back what native code (chDB's engine) writes straight to file descriptor 2 while
    the block runs — its reason for a failure, e.g. a store locked by another process — and
    append it, as one string, to the yielded list when the block ends."""
    sys.stderr.flush()
    saved = os.dup(2)
    held: list[str] = []
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield held
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            held.append(sink.read().decode("utf-8", "replace"))


def say(message: str) -> None:
    """Print ``error: <message>`` on stderr as one line."""
    _stderr.print(f"[bold red]error:[/bold red] {escape(one_line(message))}")


def run(command: Callable[[], Any], debug: bool, secrets: Sequence[str] = ()) -> int:
    """Run ``command`` (click outside its standalone mode); its exit code, a failure said in
    one sentence. Log lines follow VOICEMON_LOG_FORMAT and VOICEMON_LOG_LEVEL (when the
    settings are valid: otherwise the command fails on them in one sentence); a command's
    output is its own, so unless VOICEMON_LOG_LEVEL is set only warnings and worse are logged
    (the long-running commands, worker and api, log at the settings' level)."""
    with contextlib.suppress(ValidationError, SettingsError):
        config = Settings()
        if "log_level" not in config.model_fields_set:
            config = config.model_copy(update={"log_level": "warning"})
        configure_logging(config)
    if not debug:
        for name in NOISY_LOGGERS:
            logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        code = command()
    except Abort:
        say("aborted")
        return 1
    except Exception as error:
        if type(error).__name__ == "NoArgsIsHelpError":  # the help is printed already
            return 2
        if debug:
            traceback.print_exc()
        say(sentence(error, _configured(secrets)))
        return error.exit_code if isinstance(error, TyperException) else 1
    return code if isinstance(code, int) else 0


class OneSentenceGroup(TyperGroup):
    """The ``voicemon`` group: a failure of any command is one sentence (see the module)."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        arguments = list(sys.argv[1:] if args is None else args)
        command = partial(
            super().main, arguments, prog_name, complete_var, False, windows_expand_args, **extra
        )
        secrets = command_secrets(arguments, os.environ)
        sys.exit(run(command, debug_requested(arguments, os.environ), secrets))
