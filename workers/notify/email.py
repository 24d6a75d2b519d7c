"""Email delivery over SMTP, with STARTTLS and credentials from the settings."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from typing import Any

from workers.core.settings import Settings
from workers.runtime.base import PermanentError, TransientError


def send_email(
    settings: Settings, to: str, subject: str, text: str, *, message_id: str | None = None
) -> dict[str, Any]:
    """Send one plain-text mail. 4xx replies and connection faults are transient."""
    if not settings.smtp_host:
        raise PermanentError("email is not configured (set SMTP_HOST)")
    message = _message(settings, to, subject, text, message_id)
    try:
        refused = _deliver(settings, settings.smtp_host, message)
    except smtplib.SMTPAuthenticationError as exc:
        raise PermanentError(f"SMTP login refused ({exc.smtp_code}); check SMTP_USER") from exc
    except smtplib.SMTPNotSupportedError as exc:
        raise PermanentError(f"SMTP server lacks a required feature: {exc}") from exc
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        if all(400 <= code < 500 for code in codes):
            raise TransientError(f"SMTP deferred the recipient: {codes}") from exc
        raise PermanentError(f"SMTP refused the recipient {to}: {codes}") from exc
    except smtplib.SMTPResponseException as exc:
        if 400 <= exc.smtp_code < 500:
            raise TransientError(f"SMTP answered {exc.smtp_code}: {exc.smtp_error!r}") from exc
        raise PermanentError(f"SMTP answered {exc.smtp_code}: {exc.smtp_error!r}") from exc
    except (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError, OSError) as exc:
        raise TransientError(f"SMTP server unreachable: {exc}") from exc
    return {"refused": sorted(refused)}


def _message(
    settings: Settings, to: str, subject: str, text: str, message_id: str | None
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = settings.smtp_from
    message["To"] = to
    message["Subject"] = subject
    if message_id:
        message["X-Claw-Notification"] = message_id
    message.set_content(text)
    return message


def _deliver(settings: Settings, host: str, message: EmailMessage) -> dict[str, tuple[int, bytes]]:
    """One SMTP session: STARTTLS and login when configured; the recipients refused."""
    with smtplib.SMTP(host, settings.smtp_port, timeout=settings.smtp_timeout) as smtp:
        smtp.ehlo()
        if settings.smtp_starttls:
            smtp.starttls(context=ssl.create_default_context())
            smtp.ehlo()
        if settings.smtp_user:
            password = settings.smtp_password.get_secret_value() if settings.smtp_password else ""
            smtp.login(settings.smtp_user, password)
        return smtp.send_message(message)
