"""A real Kafka broker that only speaks SASL_SSL, for tests of voicemon's client security.

Its certificates are made on the spot with ``cryptography`` (a CA, the broker's certificate for
127.0.0.1/localhost, a client certificate with an encrypted key); its one client listener
requires SCRAM-SHA-512 *and* a client certificate signed by that CA (SASL over mutual TLS),
so one broker checks every setting of ``voicemon.kafka_client``. The SCRAM users are created
when the storage is formatted (``kafka-storage format --add-scram``). The controller listens
in plain text on the next port, on loopback only.
"""

from __future__ import annotations

import ipaddress
import secrets
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from string import Template

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from voicemon.devtools.localstack import (
    KAFKA_DIR,
    Endpoint,
    StackError,
    _stop,
    _wait_listening,
    broker_java,
    cluster_id,
)

MECHANISM = "SCRAM-SHA-512"
PEM = serialization.Encoding.PEM
PKCS8 = serialization.PrivateFormat.PKCS8


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files: the CA, the broker's key and certificate (its keystore), a client's."""

    ca: Path
    broker: Path
    client_cert: Path
    client_key: Path  # encrypted with key_password
    key_password: str


def make_tls_files(folder: Path, hosts: Sequence[str] = ("127.0.0.1", "localhost")) -> TlsFiles:
    """A fresh CA, a broker certificate valid for ``hosts`` and a client certificate."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("voicemon test CA", ca_key, None, ca_key)
    broker_key, client_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    broker = _certificate("kafka broker", broker_key, ca, ca_key, hosts)
    client = _certificate("voicemon client", client_key, ca, ca_key)
    password = secrets.token_urlsafe(16)
    files = TlsFiles(folder / "ca.pem", folder / "broker.pem", folder / "client.pem",
                     folder / "client.key", password)  # fmt: skip
    files.ca.write_bytes(ca.public_bytes(PEM))
    unencrypted = serialization.NoEncryption()
    files.broker.write_bytes(  # Kafka's PEM keystore: the key, then the certificate chain
        broker_key.private_bytes(PEM, PKCS8, unencrypted)
        + broker.public_bytes(PEM)
        + ca.public_bytes(PEM)
    )
    files.client_cert.write_bytes(client.public_bytes(PEM))
    encrypted = serialization.BestAvailableEncryption(password.encode())
    files.client_key.write_bytes(client_key.private_bytes(PEM, PKCS8, encrypted))
    for path in (files.broker, files.client_key):
        path.chmod(0o600)
    return files


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    hosts: Sequence[str] = (),
) -> x509.Certificate:
    """A CA certificate (``issuer`` None: self-signed) or a leaf signed by ``issuer``."""
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    is_ca = issuer is None
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name if issuer is None else issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    if is_ca:
        usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
        builder = builder.add_extension(usage, critical=True)
    else:
        purposes = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        builder = builder.add_extension(x509.ExtendedKeyUsage(purposes), critical=False)
    if hosts:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_general_name(host) for host in hosts]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


# Later keys override the local stack's template (java.util.Properties keeps the last one).
SECURE_OVERRIDES = Template("""
# SASL_SSL only: SCRAM-SHA-512 over TLS, client certificates required.
listeners=SASL_SSL://127.0.0.1:${port},CONTROLLER://127.0.0.1:${controller_port}
advertised.listeners=SASL_SSL://127.0.0.1:${port}
listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT
inter.broker.listener.name=SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=\
org.apache.kafka.common.security.scram.ScramLoginModule required \
username="${broker_user}" password="${broker_password}";
ssl.keystore.type=PEM
ssl.keystore.location=${keystore}
ssl.truststore.type=PEM
ssl.truststore.location=${truststore}
listener.name.sasl_ssl.ssl.client.auth=required
auto.create.topics.enable=false
""")


class SecureBroker:
    """One SASL_SSL broker on ``port`` (controller on ``port + 1``), data and log in ``home``."""

    def __init__(self, home: Path, port: int, users: Mapping[str, str], tls: TlsFiles) -> None:
        self.home = home.resolve()
        self.endpoint = Endpoint("127.0.0.1", port)
        self.tls = tls
        self.users = {"broker": secrets.token_urlsafe(16), **users}
        self.log = self.home / "kafka.log"

    @property
    def bootstrap(self) -> str:
        return f"{self.endpoint.host}:{self.endpoint.port}"

    def client_env(self, user: str, password: str) -> dict[str, str]:
        """The ``VOICEMON_KAFKA_*`` settings of a client of this broker."""
        return {
            "VOICEMON_KAFKA_BOOTSTRAP": self.bootstrap,
            "VOICEMON_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "VOICEMON_KAFKA_SASL_MECHANISM": MECHANISM,
            "VOICEMON_KAFKA_SASL_USERNAME": user,
            "VOICEMON_KAFKA_SASL_PASSWORD": password,
            "VOICEMON_KAFKA_SSL_CA_FILE": str(self.tls.ca),
            "VOICEMON_KAFKA_SSL_CERT_FILE": str(self.tls.client_cert),
            "VOICEMON_KAFKA_SSL_KEY_FILE": str(self.tls.client_key),
            "VOICEMON_KAFKA_SSL_KEY_PASSWORD": self.tls.key_password,
        }

    def start(self, timeout_s: float = 60) -> None:
        """Format the storage with the SCRAM users and start the broker; returns once it
        listens (a client's first connection may still wait for the broker to be ready)."""
        self.home.mkdir(parents=True, exist_ok=True)
        config = self.home / "server.properties"
        config.write_text(self._properties())
        java = broker_java("-Xmx512m", self.home)
        scram = [f"--add-scram={MECHANISM}=[name={user},password={password}]"
                 for user, password in self.users.items()]  # fmt: skip
        format_storage = [*java, "kafka.tools.StorageTool", "format", "-t", cluster_id(),
                          "-c", str(config), *scram]  # fmt: skip
        subprocess.run(format_storage, check=True, stdout=subprocess.DEVNULL)
        with self.log.open("ab") as out:
            process = subprocess.Popen(
                [*java, "kafka.Kafka", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        (self.home / "kafka.pid").write_text(str(process.pid))
        try:
            _wait_listening(self.endpoint, "the SASL_SSL Kafka broker", self.log, timeout_s)
        except StackError:
            self.stop()
            raise

    def stop(self) -> bool:
        """Stop the broker; its data is thrown away, so it is not given long to shut down."""
        return _stop(self.home / "kafka.pid", timeout_s=5)

    def _properties(self) -> str:
        base = Template((KAFKA_DIR / "server.properties.template").read_text()).substitute(
            port=self.endpoint.port,
            controller_port=self.endpoint.port + 1,
            data_dir=self.home / "data",
            partitions=4,
        )
        return base + SECURE_OVERRIDES.substitute(
            port=self.endpoint.port,
            controller_port=self.endpoint.port + 1,
            broker_user="broker",
            broker_password=self.users["broker"],
            keystore=self.tls.broker,
            truststore=self.tls.ca,
        )
