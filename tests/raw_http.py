"""Raw HTTP over a plain socket, for what an HTTP client will not do (a pytest plugin
loaded by tests/conftest.py; its `raw_http` fixture reaches the tests)."""

from __future__ import annotations

import json
import re
import select
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from urllib.parse import urlparse

import pytest


@dataclass(frozen=True)
class RawAnswer:
    status: int
    head: bytes
    body: bytes
    sent: int  # bytes of the body sent before the server answered

    def json(self):
        return json.loads(self.body)


class RawHTTP:
    """POST over a plain socket, for what an HTTP client will not do: go on sending a body
    after the server has answered, or announce a size and send nothing."""

    MULTIPART = b"Content-Type: multipart/form-data; boundary=zzz\r\n"

    @staticmethod
    def post(url: str, path: str, headers: bytes, chunks: Iterable[bytes] = ()) -> RawAnswer:
        """Send the head, then `chunks` until the server answers (it may answer and close
        before the body is sent: a client that insists on sending it all would see a
        broken pipe); then read the answer."""
        where = urlparse(url)
        sent = 0
        with socket.create_connection((where.hostname, where.port), timeout=60) as sock:
            request = b"POST %s HTTP/1.1\r\nHost: localhost\r\n%s\r\n" % (path.encode(), headers)
            sock.sendall(request)
            try:
                for chunk in chunks:
                    if select.select([sock], [], [], 0)[0]:
                        break  # the server answered
                    sock.sendall(chunk)
                    sent += len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass  # it answered and closed
            sock.settimeout(30)
            answer = _read_answer(sock)
        head, _, body = answer.partition(b"\r\n\r\n")
        return RawAnswer(int(head.split()[1]), head, body, sent)

    @classmethod
    def stream_upload(
        cls, url: str, path: str, total: int, chunk: bytes, headers: bytes = b""
    ) -> RawAnswer:
        """A multipart upload of a `total`-byte file, chunked (no Content-Length), sent
        `chunk` by chunk for at most 120 s or until the server answers."""
        part = (
            b'--zzz\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n'
            b"Content-Type: audio/wav\r\n\r\n"
        )

        def chunks() -> Iterator[bytes]:
            yield b"%x\r\n%s\r\n" % (len(part), part)
            deadline, sent = time.monotonic() + 120, 0
            while sent < total and time.monotonic() < deadline:
                yield b"%x\r\n%s\r\n" % (len(chunk), chunk)
                sent += len(chunk)

        head = headers + cls.MULTIPART + b"Transfer-Encoding: chunked\r\n"
        return cls.post(url, path, head, chunks())


def _read_answer(sock: socket.socket) -> bytes:
    """The answer's bytes, up to the end of a body of its Content-Length, or until the
    server closes."""
    answer = b""
    try:
        while data := sock.recv(65536):
            answer += data
            head, _, body = answer.partition(b"\r\n\r\n")
            length = re.search(rb"content-length: *(\d+)", head, re.IGNORECASE)
            if length and len(body) >= int(length.group(1)):
                break
    except ConnectionResetError:
        pass
    return answer


@pytest.fixture(scope="session")
def raw_http() -> type[RawHTTP]:
    return RawHTTP
