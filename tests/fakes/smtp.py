"""A real SMTP server on 127.0.0.1 (aiosmtpd) that demands STARTTLS and login.

    with FakeSMTP(tmp_path, username="alerts", password="s3cret") as smtp:
        smtp.port, smtp.ca_file     # SSL_CERT_FILE=ca_file makes clients trust it
        smtp.messages               # every accepted email.message.Message, in order

Its certificate is self-signed for 127.0.0.1 and generated per test with
`cryptography`, so the client verifies it for real (no verification switched off).
"""

from __future__ import annotations

import datetime
import email
import email.policy
import ipaddress
import socket
import ssl
import threading
from email.message import Message
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for IP 127.0.0.1 and its key, written as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.messages.append(
                email.message_from_bytes(envelope.content, policy=email.policy.default)
            )
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class FakeSMTP:
    def __init__(self, directory: Path, *, username: str, password: str, tls: bool = True) -> None:
        """`tls=False`: a plain server (no STARTTLS offered) that takes login in the clear."""
        self.ca_file, key_file = self_signed_certificate(directory)
        context: ssl.SSLContext | None = None
        if tls:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.ca_file, key_file)
        self.logins: list[str] = []
        self._inbox = _Inbox()
        self.port = _free_port()

        def authenticate(
            server: Any, session: Any, envelope: Any, mechanism: str, data: Any
        ) -> AuthResult:
            ok = (
                isinstance(data, LoginPassword)
                and data.login.decode() == username
                and data.password.decode() == password
            )
            if ok:
                self.logins.append(username)
            return AuthResult(success=ok, handled=False)

        self._controller = Controller(
            self._inbox,
            hostname="127.0.0.1",
            port=self.port,
            tls_context=context,
            require_starttls=tls,
            auth_required=True,
            auth_require_tls=tls,
            authenticator=authenticate,
        )

    @property
    def messages(self) -> list[Message]:
        with self._inbox.lock:
            return list(self._inbox.messages)

    def __enter__(self) -> FakeSMTP:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()
