"""A local SMTP server (aiosmtpd) that keeps what it receives and checks a login."""

from __future__ import annotations

from email import message_from_bytes
from email.message import Message
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from workers.dev.embedded_redis import free_port

USER = "mailer"
PASSWORD = "mail-secret"


class _Handler:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content)
        message["X-Test-Rcpt"] = ",".join(envelope.rcpt_tos)
        message["X-Test-Login"] = (session.authenticated and USER) or ""
        self.messages.append(message)
        return "250 OK"


def _authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
        USER.encode(),
        PASSWORD.encode(),
    )
    return AuthResult(success=ok)


class FakeSMTP:
    def __init__(self) -> None:
        self.port = free_port()
        self.handler = _Handler()
        self.controller = Controller(
            self.handler, hostname="127.0.0.1", port=self.port,
            authenticator=_authenticate, auth_require_tls=False,
        )  # fmt: skip

    @property
    def messages(self) -> list[Message]:
        return self.handler.messages

    def env(self) -> dict[str, str]:
        return {
            "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(self.port), "SMTP_USER": USER,
            "SMTP_PASSWORD": PASSWORD, "SMTP_STARTTLS": "false", "SMTP_FROM": "claw@test.local",
        }  # fmt: skip

    def start(self) -> FakeSMTP:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()
