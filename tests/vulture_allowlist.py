# type: ignore
"""Names vulture cannot see used: fields read by frameworks (pydantic, FastAPI, dataclass
columns), handlers and commands registered by decorator. Regenerate with
``vulture --make-whitelist voicemon consumers aggregators runtime`` after removing real dead code."""

# ruff: noqa
failure_rate  # unused variable (aggregators/query/api.py:61)
avg_duration_ms  # unused variable (aggregators/query/api.py:62)
window_end  # unused variable (aggregators/query/api.py:68)
as_of  # unused variable (aggregators/query/api.py:69)
artifacts_received  # unused variable (aggregators/query/api.py:70)
artifacts_completed  # unused variable (aggregators/query/api.py:71)
artifacts_failed  # unused variable (aggregators/query/api.py:72)
failure_rate  # unused variable (aggregators/query/api.py:73)
avg_latency_ms  # unused variable (aggregators/query/api.py:74)
bad_parameters  # unused function (aggregators/query/api.py:148)
bad_query  # unused function (aggregators/query/api.py:156)
unauthorized  # unused function (aggregators/query/api.py:160)
forbidden  # unused function (aggregators/query/api.py:166)
redis_down  # unused function (aggregators/query/api.py:170)
realtime  # unused function (aggregators/query/api.py:190)
_.capture_signals  # unused method (aggregators/query/serve.py:20)
artifacts_received  # unused variable (aggregators/snapshot_rows.py:34)
artifacts_completed  # unused variable (aggregators/snapshot_rows.py:35)
artifacts_failed  # unused variable (aggregators/snapshot_rows.py:36)
failure_rate  # unused variable (aggregators/snapshot_rows.py:37)
latency_samples  # unused variable (aggregators/snapshot_rows.py:38)
avg_latency_ms  # unused variable (aggregators/snapshot_rows.py:39)
p50_latency_ms  # unused variable (aggregators/snapshot_rows.py:40)
p95_latency_ms  # unused variable (aggregators/snapshot_rows.py:41)
p99_latency_ms  # unused variable (aggregators/snapshot_rows.py:42)
latency_sketch  # unused variable (aggregators/snapshot_rows.py:44)
failure_rate  # unused variable (aggregators/snapshot_rows.py:54)
duration_samples  # unused variable (aggregators/snapshot_rows.py:55)
avg_duration_ms  # unused variable (aggregators/snapshot_rows.py:56)
p95_duration_ms  # unused variable (aggregators/snapshot_rows.py:57)
duration_sketch  # unused variable (aggregators/snapshot_rows.py:58)
period_end  # unused variable (aggregators/snapshot_rows.py:69)
computed_at  # unused variable (aggregators/snapshot_rows.py:71)
period_start_ms  # unused variable (aggregators/snapshot_rows.py:102)
counted  # unused variable (consumers/ingest.py:47)
token_create  # unused function (runtime/cli/api.py:44)
metrics_history  # unused function (runtime/cli/metrics.py:71)
metrics_stages  # unused function (runtime/cli/metrics.py:89)
metrics_orgs  # unused function (runtime/cli/metrics.py:107)
orgs_import  # unused function (runtime/cli/orgs.py:17)
stack_up  # unused function (runtime/cli/stack.py:27)
stack_down  # unused function (runtime/cli/stack.py:37)
stack_status  # unused function (runtime/cli/stack.py:44)
retention_run  # unused function (runtime/cli/store.py:56)
model_config  # unused variable (voicemon/event.py:87)
model_config  # unused variable (voicemon/settings.py:17)
_._split_stages  # unused method (voicemon/settings.py:63)
_._stages_not_empty  # unused method (voicemon/settings.py:70)
unstorable  # unused variable (consumers/ingest.py:63)
_.collect  # unused method (voicemon/telemetry.py:80): prometheus_client calls it
_._jwt_secret_strong  # unused method (voicemon/settings.py:80): a pydantic validator
_._lower  # pydantic validator (voicemon/settings.py): log format and level any case
_._jwt_keys_strong  # pydantic validator (voicemon/settings.py)
_._jwt_signing_key_known  # pydantic model validator (voicemon/settings.py)
topics_ensure  # unused function (runtime/cli/topics.py:15): a typer command
_kafka_security_consistent  # pydantic model validator (voicemon/settings.py)
_._split_sentinels  # pydantic validators of the Redis settings (voicemon/settings.py)
_._sentinels_are_addresses
_._one_redis_topology
make_tls_files  # used by tests (voicemon/devtools/secure_broker.py)
SecureBroker  # used by tests (voicemon/devtools/secure_broker.py)
_.client_env  # used by tests (voicemon/devtools/secure_broker.py)
# The producer library's public API (voicemon_producer/, voicemon/producer.py, producer_async.py):
# called by pipeline services, the README example and tests/integration/test_producer.py.
_.artifact_received
_.artifact_completed
_.artifact_failed
_.stage_started
_.stage_completed
_.stage_failed
_.from_settings
AsyncEventProducer
_.aclose  # AsyncEventProducer.aclose (voicemon_producer/async_producer.py): public API
dlq_tail  # unused function (runtime/cli/dlq.py): a typer command
dlq_inspect  # unused function (runtime/cli/dlq.py): a typer command
dlq_replay  # unused function (runtime/cli/dlq.py): a typer command
options  # unused function (runtime/cli/__init__.py): the typer callback that declares --debug
show_version  # unused variable (runtime/cli/__init__.py): the eager --version option, handled by its callback
_._store_dsn_scheme  # unused method (voicemon/settings.py): a pydantic field validator
_.on_message_in  # unused method (consumers/app.py): a Faust sensor hook, Faust calls it
_.on_stream_event_in  # unused method (consumers/app.py): a Faust sensor hook
_.on_stream_event_out  # unused method (consumers/app.py): a Faust sensor hook
_.on_message_out  # unused method (consumers/app.py): a Faust sensor hook
