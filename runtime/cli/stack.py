"""Developer tools: the local stack, the synthetic-load producer and the demo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.progress import Progress

from runtime.cli.common import AsJson, Home, console, fail, settings
from runtime.cli.demo import demo
from runtime.cli.preflight import check_kafka
from voicemon.devtools.loadgen import LoadMix
from voicemon.devtools.loadgen import produce as produce_load
from voicemon.devtools.localstack import LocalStack, StackError
from voicemon.kafka_client import confluent_security
from voicemon.producer import EventProducer

stack_app = typer.Typer(no_args_is_help=True, help="The local stack without Docker.")


@stack_app.command("up")
def stack_up(home: Home = Path("var")) -> None:
    """Start Kafka and Redis (idempotent) and create the topics."""
    try:
        started = LocalStack(settings(), home).up()
    except StackError as error:
        fail(str(error))
    console.print(f"stack up ({', '.join(started) or 'already running'})")


@stack_app.command("down")
def stack_down(home: Home = Path("var")) -> None:
    """Stop what ``stack up`` started."""
    stopped = LocalStack(settings(), home).down()
    console.print(f"stack down ({', '.join(stopped) or 'nothing was running'})")


@stack_app.command("status")
def stack_status(home: Home = Path("var"), as_json: AsJson = False) -> None:
    status = LocalStack(settings(), home).status()
    if as_json:
        print(orjson.dumps(status).decode())
        return
    for part, up in status.items():
        console.print(f"{part}: {'[green]up' if up else '[red]down'}")


def produce(
    rate: Annotated[float, typer.Option(help="Events per second.")] = 1000,
    duration: Annotated[float, typer.Option(help="Seconds to run.")] = 10,
    orgs: Annotated[int, typer.Option(help="Number of organizations.")] = 10,
    seed: int = 1,
    duplicates: Annotated[float, typer.Option(help="Share of events resent.")] = 0.0,
    malformed: Annotated[float, typer.Option(help="Share of malformed messages.")] = 0.0,
    single: Annotated[bool, typer.Option(help="One event per message.")] = False,
) -> None:
    """Publish realistic synthetic pipeline events."""
    config = settings()
    check_kafka(config)  # a producer would buffer for minutes instead
    # A load generator waits for room rather than drop (a service would drop: docs/producer.md).
    producer = EventProducer(config.kafka_bootstrap, config.events_topic, batch=not single,
                             overflow="block", block_timeout_s=120,
                             **confluent_security(config))  # fmt: skip
    mix = LoadMix(seed, orgs, config.stages, duplicates, malformed)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("producing", total=duration)
        sent = produce_load(
            producer,
            mix,
            rate,
            duration,
            lambda elapsed, _: progress.update(task, completed=elapsed),
        )
    console.print(
        f"published {sent.events:,} events ({sent.duplicates:,} of them duplicates) "
        f"and {sent.malformed:,} malformed messages"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(stack_app, name="stack")
    app.command()(produce)
    app.command()(demo)
