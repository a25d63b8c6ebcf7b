"""A real SMTP server (aiosmtpd) in a thread of the calling process: the mail sink of the test
suite and of the split chaos run (the notifications service sends to it over SMTP)."""

from __future__ import annotations

import socket
import threading


class SmtpInbox:
    """A real SMTP server (aiosmtpd) in a thread of this process, on a free port of 127.0.0.1,
    keeping every message it accepts; ``refuse = True`` makes it answer 451 (try again later)."""

    def __init__(self):
        from aiosmtpd.controller import Controller

        self.messages: list = []
        self.refuse = False
        self._lock = threading.Lock()
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd's hook
        import email
        from email import policy

        if self.refuse:
            return "451 Requested action aborted: try again later"
        message = email.message_from_bytes(envelope.content, policy=policy.default)
        with self._lock:
            self.messages.append((tuple(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list:
        with self._lock:
            return [message for rcpt, message in self.messages if address in rcpt]

    def received(self) -> list:
        """(recipients, message) of every message accepted so far."""
        with self._lock:
            return list(self.messages)

    def __enter__(self):
        self.controller.start()
        return self

    def __exit__(self, *exc):
        self.controller.stop()
