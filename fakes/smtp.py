"""A fake SMTP server on 127.0.0.1 that keeps every message it is given (for the e-mail alarms).

Just the commands a mail client needs to deliver one message; no TLS, no authentication.
"""

from __future__ import annotations

import socketserver
import threading
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message

from .server import HOST


@dataclass(frozen=True)
class Mail:
    sender: str
    recipients: list[str]
    message: Message


class _Session(socketserver.StreamRequestHandler):
    server: FakeSmtp

    def handle(self) -> None:
        sender, recipients = "", list[str]()
        self._reply("220 fake-smtp ready")
        while line := self.rfile.readline():
            command = line.decode("utf-8", "replace").strip()
            verb = command.split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                self._reply("250 fake-smtp")
            elif verb == "MAIL":
                sender, recipients = command.split(":", 1)[1].strip().strip("<>"), []
                self._reply("250 OK")
            elif verb == "RCPT":
                recipients.append(command.split(":", 1)[1].strip().strip("<>"))
                self._reply("250 OK")
            elif verb == "DATA":
                self._reply("354 end with <CRLF>.<CRLF>")
                self.server.mails.append(Mail(sender, recipients, message_from_bytes(self._data())))
                self._reply("250 OK: queued")
            elif verb == "QUIT":
                self._reply("221 bye")
                return
            else:
                self._reply("250 OK")  # RSET, NOOP, ...

    def _data(self) -> bytes:
        lines = []
        while (line := self.rfile.readline()) not in (b".\r\n", b".\n", b""):
            lines.append(line[1:] if line.startswith(b"..") else line)  # undo dot-stuffing
        return b"".join(lines)

    def _reply(self, text: str) -> None:
        self.wfile.write(f"{text}\r\n".encode())


class FakeSmtp(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int = 0):
        super().__init__((HOST, port), _Session)
        self.mails: list[Mail] = []

    @property
    def port(self) -> int:
        return self.server_address[1]

    def start(self) -> FakeSmtp:
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
