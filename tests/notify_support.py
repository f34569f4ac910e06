"""Local notification receivers for the ladder tests: a JSON webhook (what apprise's `json://`
posts to) and an SMTP server (aiosmtpd), both on 127.0.0.1, recording what they were sent."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class JsonReceiver:
    """A webhook: `mode` is "ok" (200), "fail" (500) or "hang" (holds the request until
    `release` is set). `posts` holds each JSON body received, with its path."""

    mode: str = "ok"
    posts: list[dict[str, Any]] = field(default_factory=list)
    attempts: int = 0
    release: threading.Event = field(default_factory=threading.Event)
    port: int = 0

    def url(self, path: str = "hook", secret: str = "") -> str:
        """The apprise URL for this receiver; `secret` goes in as the password."""
        auth = f"reaper:{secret}@" if secret else ""
        return f"json://{auth}127.0.0.1:{self.port}/{path}"

    def wait_for(self, count: int, timeout_s: float = 15.0) -> list[dict[str, Any]]:
        wait_until(lambda: len(self.posts) >= count, timeout_s)
        return self.posts


@contextmanager
def json_receiver(mode: str = "ok") -> Iterator[JsonReceiver]:
    receiver = JsonReceiver(mode)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            receiver.attempts += 1
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if receiver.mode == "hang":
                receiver.release.wait(60)
                return
            if receiver.mode == "fail":
                self.send_response(500)
                self.end_headers()
                return
            receiver.posts.append({"path": self.path, **json.loads(body)})
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.release.set()
        server.shutdown()
        server.server_close()


@dataclass
class SmtpReceiver:
    port: int
    messages: list[Message] = field(default_factory=list)

    def url(self, to: str = "ops@example.com") -> str:
        return f"mailto://127.0.0.1:{self.port}?mode=insecure&from=reaper@example.com&to={to}"

    def wait_for(self, count: int, timeout_s: float = 15.0) -> list[Message]:
        wait_until(lambda: len(self.messages) >= count, timeout_s)
        return self.messages


@contextmanager
def smtp_receiver() -> Iterator[SmtpReceiver]:
    from aiosmtpd.controller import Controller

    receiver = SmtpReceiver(0)

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            receiver.messages.append(message_from_bytes(envelope.original_content))
            return "250 OK"

    receiver.port = free_port()  # aiosmtpd's start-up check connects to the port it was given
    controller = Controller(Handler(), hostname="127.0.0.1", port=receiver.port)
    controller.start()
    try:
        yield receiver
    finally:
        controller.stop()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def body_text(message: Message) -> str:
    """The text of an email, whatever its MIME structure."""
    parts = message.walk() if message.is_multipart() else [message]
    texts = []
    for part in parts:
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            texts.append(payload.decode(part.get_content_charset() or "utf-8", "replace"))
    return "\n".join(texts)


def wait_until(predicate: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()
