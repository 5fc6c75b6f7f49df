"""SASL_SSL for the local broker: a private CA, a broker certificate and a SCRAM user.

Everything lives under the broker's data directory (``tls/`` and ``credentials/``, mode
0700) and is made once, on the first secure start: ``openssl`` makes the CA and the
broker's certificate (PEM, which Kafka reads directly), and the SCRAM-SHA-512 user is
written into the KRaft metadata when the storage is formatted. The same user may also
log in with PLAIN (over TLS only). ``client.toml`` beside them is a config file whose
``[kafka]`` section lets every agentwatch command connect.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from agentwatch.kafka import KafkaSecurity

SASL_SSL: Final = "SASL_SSL"
PLAINTEXT: Final = "PLAINTEXT"
SECURITY_MODES: Final = (PLAINTEXT.lower(), SASL_SSL.lower())
USER: Final = "agentwatch"
MECHANISM: Final = "SCRAM-SHA-512"
TLS_DIR: Final = "tls"
CREDENTIALS_DIR: Final = "credentials"
CLIENT_CONFIG: Final = "client.toml"
CERT_DAYS: Final = "825"


class TlsSetupError(RuntimeError):
    """The CA, the certificates or the credentials could not be made."""


@dataclass(frozen=True)
class BrokerSecurity:
    """Files of a SASL_SSL broker: where its certificates and its user's password are."""

    data_dir: Path

    @property
    def ca_file(self) -> Path:
        return self.data_dir / TLS_DIR / "ca.pem"

    @property
    def keystore(self) -> Path:
        """The broker's private key followed by its certificate chain, one PEM file."""
        return self.data_dir / TLS_DIR / "broker-keystore.pem"

    @property
    def password_file(self) -> Path:
        return self.data_dir / CREDENTIALS_DIR / f"{USER}.password"

    @property
    def client_config(self) -> Path:
        return self.data_dir / CLIENT_CONFIG

    def password(self) -> str:
        return self.password_file.read_text(encoding="utf-8").strip()

    def client_security(self) -> KafkaSecurity:
        return KafkaSecurity(
            protocol=SASL_SSL,
            ca_file=str(self.ca_file),
            sasl_mechanism=MECHANISM,
            username=USER,
            password_file=str(self.password_file),
        )

    def ready(self) -> bool:
        return self.ca_file.is_file() and self.keystore.is_file() and self.password_file.is_file()

    def make(self) -> None:
        """Create the CA, the broker certificate, the password and client.toml (once)."""
        if self.ready():
            return
        for sub in (TLS_DIR, CREDENTIALS_DIR):
            (self.data_dir / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        if not self.password_file.is_file():
            write_private(self.password_file, secrets.token_urlsafe(24) + "\n")
        _make_certificates(self.data_dir / TLS_DIR)
        self.client_config.write_text(
            "# Written by `agentwatch broker start --security sasl_ssl`: pass it as --config.\n"
            "[kafka]\n"
            f'security_protocol = "{SASL_SSL}"\n'
            f'ssl_ca_file = "{self.ca_file}"\n'
            f'sasl_mechanism = "{MECHANISM}"\n'
            f'sasl_username = "{USER}"\n'
            f'sasl_password_file = "{self.password_file}"\n'
        )

    def server_properties(self, host: str, port: int, controller_port: int) -> dict[str, str]:
        """The listener settings replacing the PLAINTEXT client listener."""
        password = self.password()
        scram = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{USER}" password="{password}";'
        )
        plain = (
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'username="{USER}" password="{password}" user_{USER}="{password}";'
        )
        return {
            "listeners": f"{SASL_SSL}://{host}:{port},CONTROLLER://{host}:{controller_port}",
            "advertised.listeners": f"{SASL_SSL}://{host}:{port}",
            "inter.broker.listener.name": SASL_SSL,
            "listener.security.protocol.map": f"CONTROLLER:PLAINTEXT,{SASL_SSL}:{SASL_SSL}",
            "sasl.enabled.mechanisms": f"{MECHANISM},PLAIN",
            "sasl.mechanism.inter.broker.protocol": MECHANISM,
            f"listener.name.sasl_ssl.{MECHANISM.lower()}.sasl.jaas.config": scram,
            "listener.name.sasl_ssl.plain.sasl.jaas.config": plain,
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(self.keystore),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.ca_file),
        }

    def format_arguments(self) -> list[str]:
        """``kafka-storage format`` arguments that create the SCRAM user."""
        return ["--add-scram", f"{MECHANISM}=[name={USER},password={self.password()}]"]


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to a file only its owner can read, from its creation on."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


def _openssl(args: list[str], cwd: Path) -> None:
    tool = shutil.which("openssl")
    if tool is None:
        raise TlsSetupError("openssl is required for --security sasl_ssl and is not on PATH")
    result = subprocess.run(
        [tool, *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=60
    )
    if result.returncode != 0:
        raise TlsSetupError(f"openssl {args[0]} failed: {result.stderr.strip()}")


def _make_certificates(tls: Path) -> None:
    """A CA valid for CERT_DAYS and a broker certificate for 127.0.0.1 and localhost."""
    _openssl(
        [
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", CERT_DAYS,
            "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=agentwatch local CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        ],
        tls,
    )  # fmt: skip
    _openssl(
        [
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key",
            "-out", "broker.csr", "-subj", "/CN=127.0.0.1",
        ],
        tls,
    )  # fmt: skip
    (tls / "broker.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n"
    )
    _openssl(
        [
            "x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", CERT_DAYS, "-out", "broker.pem",
            "-extfile", "broker.ext",
        ],
        tls,
    )  # fmt: skip
    key = (tls / "broker.key").read_text()
    chain = (tls / "broker.pem").read_text() + (tls / "ca.pem").read_text()
    write_private(tls / "broker-keystore.pem", key + chain)
    for leftover in ("broker.csr", "broker.ext", "ca.srl"):
        (tls / leftover).unlink(missing_ok=True)
    for secret in ("ca.key", "broker.key"):
        (tls / secret).chmod(0o600)
