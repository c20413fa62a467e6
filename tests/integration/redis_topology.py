"""Redis topologies started by the tests themselves, on free ports, always reaped: a primary
with a replica and three Sentinels (Debian's ``redis-server`` and ``redis-sentinel``), and a
Redis Cluster of three primaries (``redis-server --cluster-enabled yes``)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from redis import Redis
from redis.exceptions import RedisError

from tests.ports import free_port

MASTER = "voicemon"
APPENDFSYNC = ("always", "everysec", "no")


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:  # install.sh installs both; a machine without them cannot run these
        pytest.fail(f"{name} is not installed (deploy/local/install.sh installs it)")
    return found


@dataclass
class Node:
    """One redis-server (or Sentinel) process on its own port and directory."""

    port: int
    directory: Path
    arguments: list[str]
    process: subprocess.Popen[bytes] | None = None
    password: str | None = None

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        log = (self.directory / "server.log").open("ab")
        self.process = subprocess.Popen(self.arguments, cwd=self.directory, stdout=log,
                                        stderr=log)  # fmt: skip
        deadline = time.monotonic() + 20
        while True:
            with suppress(RedisError), self.client(timeout_s=1) as client:
                if client.ping():
                    return
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"redis on port {self.port} did not start: see {log.name}")
            time.sleep(0.05)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: what it had not written to disk (or sent to a replica) is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def client(self, timeout_s: float = 5) -> Redis:
        return Redis(port=self.port, socket_timeout=timeout_s, password=self.password)


def _server(port: int, directory: Path, *extra: str) -> Node:
    arguments = [_binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1",
                 "--save", "", "--dir", str(directory), *extra]  # fmt: skip
    return Node(port, directory, arguments)


@dataclass
class SentinelGroup:
    primary: Node
    replica: Node
    sentinels: list[Node] = field(default_factory=list)

    @property
    def addresses(self) -> str:
        return ",".join(f"127.0.0.1:{node.port}" for node in self.sentinels)

    def primary_port(self) -> int:
        """The primary's port as the Sentinels see it now."""
        for node in self.sentinels:
            with suppress(RedisError), node.client() as client:
                _, port = client.execute_command("SENTINEL", "get-master-addr-by-name", MASTER)
                return int(port)
        raise AssertionError("no Sentinel answered")

    def settled(self, old: Node) -> bool:
        """Every Sentinel names the same primary, and ``old`` serves as its replica, in sync
        (until then a client may still be sent to ``old`` and read what it alone holds)."""
        ports = set()
        for node in self.sentinels:
            with suppress(RedisError), node.client() as client:
                ports.add(int(client.execute_command(
                    "SENTINEL", "get-master-addr-by-name", MASTER)[1]))  # fmt: skip
        if len(ports) != 1 or old.port in ports:
            return False
        with suppress(RedisError), old.client() as client:
            info = client.info("replication")
            return bool(info["role"] == "slave" and info.get("master_link_status") == "up")
        return False

    def wait_settled(self, old: Node, timeout_s: float = 180) -> None:
        """Until ``settled``: Sentinels on a loaded machine may first sit out a TILT period
        (30 s without acting) before they reconfigure the returning primary, hence the
        generous wait; on a timeout, what each side said."""
        try:
            _until(lambda: self.settled(old), "the old primary to serve as a replica", timeout_s)
        except AssertionError as error:
            raise AssertionError(f"{error}: {self._views(old)}") from None

    def _views(self, old: Node) -> dict[str, object]:
        """What every Sentinel says of the primary, and ``old``'s replication state."""
        views: dict[str, object] = {}
        for node in self.sentinels:
            try:
                with node.client() as client:
                    found = client.execute_command("SENTINEL", "master", MASTER)
                    views[f"sentinel {node.port}"] = found
            except RedisError as error:
                views[f"sentinel {node.port}"] = repr(error)
        try:
            with old.client() as client:
                views[f"old {old.port}"] = client.info("replication")
        except RedisError as error:
            views[f"old {old.port}"] = repr(error)
        return views

    def node_on(self, port: int) -> Node:
        return self.primary if self.primary.port == port else self.replica


@contextmanager
def sentinel_group(workdir: Path, sentinel_password: str | None = None) -> Iterator[SentinelGroup]:
    """A primary, its replica and three Sentinels (quorum 2, down after 1 s), which require
    ``sentinel_password`` if given."""
    primary_port, replica_port = free_port(), free_port()
    group = SentinelGroup(
        _server(primary_port, workdir / "primary"),
        _server(replica_port, workdir / "replica", "--replicaof", "127.0.0.1", str(primary_port)),
    )
    try:
        group.primary.start()
        group.replica.start()
        for n in range(3):
            port = free_port()
            directory = workdir / f"sentinel-{n}"
            directory.mkdir(parents=True)
            config = directory / "sentinel.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\n"
                f"sentinel monitor {MASTER} 127.0.0.1 {primary_port} 2\n"
                f"sentinel down-after-milliseconds {MASTER} 1000\n"
                f"sentinel failover-timeout {MASTER} 10000\n"
                + ("" if sentinel_password is None else f"requirepass {sentinel_password}\n")
            )
            arguments = [_binary("redis-sentinel"), str(config)]
            node = Node(port, directory, arguments, password=sentinel_password)
            node.start()
            group.sentinels.append(node)
        _until(lambda: _replicas_seen(group) >= 1, "the Sentinels to see the replica")
        yield group
    finally:
        for node in [*group.sentinels, group.primary, group.replica]:
            node.kill()


def _replicas_seen(group: SentinelGroup) -> int:
    seen = []
    for node in group.sentinels:
        with suppress(RedisError), node.client() as client:
            seen.append(len(client.execute_command("SENTINEL", "replicas", MASTER)))
    return min(seen) if len(seen) == len(group.sentinels) else 0


@dataclass
class Cluster:
    nodes: list[Node]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def healthy(self) -> bool:
        """Every running node says the cluster is ok (a killed one is failed over)."""
        for node in self.nodes:
            if not node.running:
                continue
            try:
                with node.client() as client:
                    info = client.execute_command("CLUSTER", "INFO")
            except RedisError:
                return False
            text = info.decode() if isinstance(info, bytes) else str(info)
            if "cluster_state:ok" not in text:
                return False
        return True

    def wait_healthy(self, timeout_s: float = 60) -> None:
        _until(self.healthy, "the cluster to be healthy", timeout_s)


def aof_arguments(appendfsync: str | None) -> list[str]:
    """redis-server's AOF options: ``appendfsync`` (always, everysec, no), or None for no AOF
    (RDB snapshots stay off either way: ``--save ""``)."""
    if appendfsync is None:
        return ["--appendonly", "no"]
    if appendfsync not in APPENDFSYNC:
        raise ValueError(f"appendfsync must be one of {APPENDFSYNC} or None, not {appendfsync!r}")
    return ["--appendonly", "yes", "--appendfsync", appendfsync]


@contextmanager
def redis_cluster(
    workdir: Path, *, appendfsync: str | None = "always", replicas: int = 0
) -> Iterator[Cluster]:
    """Three primaries, each with ``replicas`` replicas (none by default). By default each
    writes every command to its AOF before answering, so that a node killed and restarted
    comes back with every acknowledged write; the benchmarks pass the AOF policy of the single
    primary they compare it with (``aof_arguments``)."""
    nodes = []
    for n in range(3 * (1 + replicas)):
        port = free_port()
        directory = workdir / f"node-{n}"
        nodes.append(_server(port, directory, "--cluster-enabled", "yes",
                             "--cluster-port", str(free_port()),
                             "--cluster-config-file", "nodes.conf",
                             "--cluster-node-timeout", "2000",
                             *aof_arguments(appendfsync)))  # fmt: skip
    cluster = Cluster(nodes)
    try:
        for node in nodes:
            node.start()
        created = subprocess.run(
            [_binary("redis-cli"), "--cluster", "create",
             *(f"127.0.0.1:{node.port}" for node in nodes),
             "--cluster-replicas", str(replicas), "--cluster-yes"],
            capture_output=True, timeout=60,
        )  # fmt: skip
        assert created.returncode == 0, created.stdout.decode() + created.stderr.decode()
        cluster.wait_healthy()
        yield cluster
    finally:
        for node in nodes:
            node.kill()


def _until(condition: object, what: str, timeout_s: float = 60) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
