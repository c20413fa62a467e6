"""Runtime configuration: environment variables prefixed ``VOICEMON_``, validated at start-up."""

from __future__ import annotations

import ipaddress
import os
import re
from typing import Annotated, Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import Field, FilePath, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from voicemon_producer.event import DEFAULT_STAGES as DEFAULT_STAGES

MIN_JWT_SECRET_BYTES = 32  # HS256 wants a key at least as long as its 256-bit hash
PLACEHOLDER_SECRETS = frozenset({"replace_me", "changeme", "change-me", "secret", "password",
                                 "jwt-secret", "example", "xxx", "todo"})  # fmt: skip
STORE_SCHEMES = ("chdb://", "http://", "https://")


class Settings(BaseSettings):
    """Every knob of voicemon; defaults fit the embedded local stack."""

    model_config = SettingsConfigDict(env_prefix="VOICEMON_", frozen=True, extra="ignore")

    kafka_bootstrap: str = "127.0.0.1:9092"
    redis_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    # Sentinel: the primary named redis_sentinel_master, found through these Sentinels
    # (host:port, comma-separated); redis_url then gives only password, user, db and TLS.
    redis_sentinels: Annotated[tuple[str, ...], NoDecode] = ()
    redis_sentinel_master: str = "voicemon"
    redis_sentinel_password: SecretStr | None = None  # the Sentinels' own (their requirepass)
    redis_cluster: bool = False  # redis_url names one node of a Redis Cluster
    # A batch's Redis writes are on this many replicas before its offsets commit (WAIT); 0:
    # not waited for (a standalone primary). A batch not replicated in time is retried.
    redis_wait_replicas: int = Field(default=0, ge=0)
    # Below the Redis connections' 10 s socket timeout, which would otherwise cut WAIT first.
    redis_wait_timeout_ms: int = Field(default=2_000, ge=1, le=8_000)
    clickhouse_dsn: SecretStr = Field(
        default_factory=lambda: SecretStr(f"chdb://{os.path.abspath('var/clickhouse')}")
    )
    # A cluster of the server's remote_servers: migrate ON CLUSTER, Replicated + Distributed tables.
    clickhouse_cluster: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+$")

    events_topic: str = "voice.pipeline.events"
    dlq_topic: str = "voice.pipeline.events.dlq"
    snapshots_topic: str = "voice.pipeline.snapshots"
    organizations_topic: str = "voice.organizations"
    topic_partitions: int = Field(default=4, ge=1)
    topic_replication: int = Field(default=1, ge=1)  # for topics that voicemon creates
    consumer_group: str = "voicemon"
    # The consumer group's timing: a crashed worker's partitions move to the others after the
    # session timeout (the broker's group.min.session.timeout.ms, 6 s by default, is the floor).
    kafka_session_timeout_seconds: float = Field(default=30.0, ge=6)
    kafka_heartbeat_interval_seconds: float = Field(default=3.0, gt=0)
    kafka_commit_interval_seconds: float = Field(default=1.0, gt=0)
    # Kafka client security, for every client voicemon opens (voicemon/kafka_client.py).
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_ca_file: FilePath | None = None  # PEM; unset: the system's trusted CAs
    kafka_ssl_cert_file: FilePath | None = None  # PEM client certificate (mutual TLS)
    kafka_ssl_key_file: FilePath | None = None  # PEM private key of that certificate
    kafka_ssl_key_password: SecretStr | None = None  # if that key is encrypted

    stages: Annotated[tuple[str, ...], NoDecode] = DEFAULT_STAGES

    batch_max_messages: int = Field(default=10_000, ge=1)
    batch_max_seconds: float = Field(default=0.25, gt=0)
    # A batch is made durable in runs of at most this many message bytes (~80k events of the
    # benchmark's batches; 4 MiB until issue 16: CPU per event 9.5-10.4 vs 11.4-12.4 us).
    batch_max_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)

    # all: count and store (one process); counters: count only (scale out to N processes);
    # store: write raw rows, close windows, serve the embedded store (one process).
    worker_role: Literal["all", "counters", "store"] = "all"
    closer_enabled: bool = True
    closer_interval_seconds: float = Field(default=5.0, gt=0)
    close_grace_seconds: int = Field(default=1800, ge=0)
    late_debounce_seconds: float = Field(default=5.0, ge=0)

    # API tokens (aggregators/query/auth.py). Keys: VOICEMON_JWT_SECRET (one key, tokens without a
    # kid) and/or VOICEMON_JWT_KEYS, a JSON object {kid: secret}; every key verifies, the kid
    # in a token's header picks one; `token create` signs with VOICEMON_JWT_SIGNING_KEY_ID.
    # Or VOICEMON_JWT_JWKS_URL: verify against an OIDC provider's published keys instead.
    jwt_secret: SecretStr | None = None
    jwt_keys: dict[str, SecretStr] = Field(default_factory=dict)
    jwt_signing_key_id: str | None = None
    jwt_jwks_url: str | None = Field(default=None, pattern=r"^https?://\S+$")
    jwt_issuer: str = Field(default="voicemon", min_length=1)
    jwt_audience: str = Field(default="voicemon-api", min_length=1)
    jwt_max_ttl_staff_seconds: int = Field(default=86_400, ge=60)  # 1 day
    jwt_max_ttl_org_seconds: int = Field(default=30 * 86_400, ge=60)  # 30 days

    api_enabled: bool = False  # also serve the query API from the worker process
    api_bind: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=0, le=65535)
    api_docs_enabled: bool = False  # /docs and /redoc (/openapi.json is always served)
    api_metrics_enabled: bool = True  # /metrics on the API port (workers: their own port)
    api_access_log: bool = False  # one log line per request (uvicorn's access log)

    # Logs of the worker, the API and the CLI (voicemon/logs.py).
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"

    worker_web_bind: str = "127.0.0.1"
    worker_web_port: int = Field(default=6066, ge=1, le=65535)  # Faust refuses 0
    worker_data_dir: str = "./var/faust"

    @field_validator("stages", mode="before")
    @classmethod
    def _split_stages(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("stages")
    @classmethod
    def _stages_not_empty(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("VOICEMON_STAGES must name at least one stage")
        return value

    @field_validator("redis_sentinels", mode="before")
    @classmethod
    def _split_sentinels(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("redis_sentinels")
    @classmethod
    def _sentinels_are_addresses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            sentinel_address(item)
        return value

    @model_validator(mode="after")
    def _one_redis_topology(self) -> Settings:
        if self.redis_sentinels and self.redis_cluster:
            raise ValueError("VOICEMON_REDIS_SENTINELS and VOICEMON_REDIS_CLUSTER exclude each "
                             "other: a Redis Cluster fails over by itself")  # fmt: skip
        if self.redis_cluster and _database_of(self.redis_url.get_secret_value()) != 0:
            raise ValueError("a Redis Cluster has database 0 only: VOICEMON_REDIS_URL must name "
                             "no database or /0 with VOICEMON_REDIS_CLUSTER")  # fmt: skip
        return self

    @field_validator("clickhouse_dsn")
    @classmethod
    def _store_dsn_scheme(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith(STORE_SCHEMES):
            raise ValueError("must start with chdb:// (embedded) or http(s):// (a server)")
        return value

    @field_validator("log_format", "log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("jwt_secret")
    @classmethod
    def _jwt_secret_strong(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            weak_secret_problem(value.get_secret_value(), raising=True)
        return value

    @field_validator("jwt_keys")
    @classmethod
    def _jwt_keys_strong(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for kid, secret in value.items():
            if not kid.strip() or len(kid) > 128:
                raise ValueError("every key id must be 1-128 characters")
            problem = weak_secret_problem(secret.get_secret_value())
            if problem:
                raise ValueError(f"key {kid!r} {problem}")
        return value

    @model_validator(mode="after")
    def _jwt_signing_key_known(self) -> Settings:
        kid = self.jwt_signing_key_id
        if kid is not None and kid not in self.jwt_keys:
            raise ValueError(
                f"VOICEMON_JWT_SIGNING_KEY_ID={kid!r} names no key of VOICEMON_JWT_KEYS"
            )
        return self

    @model_validator(mode="after")
    def _kafka_security_consistent(self) -> Settings:
        problem = kafka_security_problem(self)
        if problem:
            raise ValueError(problem)
        return self

    @property
    def counts(self) -> bool:
        return self.worker_role != "store"

    @property
    def stores(self) -> bool:
        return self.worker_role != "counters"

    @property
    def worker_group(self) -> str:
        """The Faust app id and consumer group: a store worker reads the input on its own."""
        suffix = "-store" if self.worker_role == "store" else ""
        return self.consumer_group + suffix


def weak_secret_problem(secret: str, raising: bool = False) -> str:
    """Why ``secret`` cannot sign tokens ('' if it can): a placeholder or under 32 bytes."""
    problem = ""
    if secret.strip().lower() in PLACEHOLDER_SECRETS or "replace_me" in secret.lower():
        problem = "is a placeholder; set a random secret of at least 32 bytes"
    elif len(secret.encode()) < MIN_JWT_SECRET_BYTES:
        problem = f"must be at least {MIN_JWT_SECRET_BYTES} bytes long"
    if problem and raising:
        raise ValueError(problem)
    return problem


def kafka_security_problem(settings: Settings) -> str:
    """What contradicts in the Kafka security settings, as one sentence ('' if nothing)."""
    protocol = settings.kafka_security_protocol
    sasl = (settings.kafka_sasl_mechanism, settings.kafka_sasl_username,
            settings.kafka_sasl_password)  # fmt: skip
    tls_files = (settings.kafka_ssl_ca_file, settings.kafka_ssl_cert_file,
                 settings.kafka_ssl_key_file, settings.kafka_ssl_key_password)  # fmt: skip
    if protocol.startswith("SASL_"):
        if None in sasl:
            return (f"VOICEMON_KAFKA_SECURITY_PROTOCOL={protocol} needs "
                    "VOICEMON_KAFKA_SASL_MECHANISM, VOICEMON_KAFKA_SASL_USERNAME and "
                    "VOICEMON_KAFKA_SASL_PASSWORD")  # fmt: skip
    elif any(value is not None for value in sasl):
        return (f"VOICEMON_KAFKA_SASL_* is set but VOICEMON_KAFKA_SECURITY_PROTOCOL={protocol} "
                "does not use SASL: set it to SASL_SSL (or SASL_PLAINTEXT)")  # fmt: skip
    if not protocol.endswith("SSL") and any(value is not None for value in tls_files):
        return (f"VOICEMON_KAFKA_SSL_* is set but VOICEMON_KAFKA_SECURITY_PROTOCOL={protocol} "
                "does not use TLS: set it to SSL or SASL_SSL")  # fmt: skip
    if (settings.kafka_ssl_cert_file is None) != (settings.kafka_ssl_key_file is None):
        return ("VOICEMON_KAFKA_SSL_CERT_FILE and VOICEMON_KAFKA_SSL_KEY_FILE go together: "
                "a client certificate needs its private key")  # fmt: skip
    if settings.kafka_ssl_key_password is not None and settings.kafka_ssl_key_file is None:
        return "VOICEMON_KAFKA_SSL_KEY_PASSWORD is set without VOICEMON_KAFKA_SSL_KEY_FILE"
    return ""


def _database_of(url: str) -> int:
    """The database a redis URL names, read as redis-py reads it (``?db=`` first, then the
    path), without importing redis: the producer library loads these settings."""
    parts = urlsplit(url)
    named = parse_qs(parts.query).get("db") or [parts.path.strip("/") or "0"]
    try:
        return int(named[0])
    except ValueError:
        problem = f"the database of VOICEMON_REDIS_URL is not a number: {named[0]!r}"
        raise ValueError(problem) from None


_SENTINEL = re.compile(
    r"(?:\[(?P<ipv6>[^]]+)\]|(?P<host>[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_.])?))"
    r":(?P<port>[0-9]{1,5})"
)


def sentinel_address(item: str) -> tuple[str, int]:
    """``host:port`` or ``[IPv6]:port`` (ASCII, as a URL writes it) -> (host, port)."""
    found = _SENTINEL.fullmatch(item)
    if found is not None and found["ipv6"] is not None:
        try:
            ipaddress.IPv6Address(found["ipv6"])
        except ValueError:
            found = None
    if found is None or not 0 < int(found["port"]) < 65536:
        raise ValueError(f"{item!r} is not host:port (an IPv6 address in brackets: [::1]:26379)")
    return found["ipv6"] or found["host"], int(found["port"])
