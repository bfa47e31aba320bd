"""A blocking MJPEG / snapshot HTTP client whose socket another thread can shut down.

It keeps the JPEG bytes as they come (no decode for frames nobody looks at), speaks Basic
and Digest authentication, tolerates the wrong or missing boundaries and lengths that cheap
cameras send, and owns its socket, so every read has a timeout and a stop from another
thread wakes the reader at once.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Final
from urllib.parse import unquote, urlsplit, urlunsplit

from .stream import SessionEnd, Stopped

MAX_JPEG_BYTES: Final = 32 * 1024 * 1024
_MAX_LINE: Final = 8192

# --------------------------------------------------------------------------- MJPEG


class MjpegConnection:
    """A blocking MJPEG/snapshot HTTP client whose socket another thread can shut down."""

    def __init__(self, url: str, timeout: float, verify_ssl: bool) -> None:
        parts = urlsplit(url)
        self._url = url
        self._https = parts.scheme.lower() == "https"
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if self._https else 80)
        self._target = urlunsplit(("", "", parts.path or "/", parts.query, ""))
        self._user = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else ""
        self._timeout = timeout
        self._verify_ssl = verify_ssl
        self._lock = threading.Lock()
        self._closed = False
        self._conn: http.client.HTTPConnection | None = None
        self._buffer = b""
        self._response: http.client.HTTPResponse | None = None
        self.content_type = ""
        self.boundary: bytes | None = None
        self._last_part = time.monotonic()

    # connection ------------------------------------------------------------
    def _connect(self, authorization: str | None) -> http.client.HTTPResponse:
        conn: http.client.HTTPConnection
        if self._https:
            context = ssl.create_default_context()
            if not self._verify_ssl:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            conn = http.client.HTTPSConnection(
                self._host, self._port, timeout=self._timeout, context=context
            )
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        with self._lock:
            if self._closed:
                raise Stopped
            self._conn = conn
        conn.connect()
        if self._is_closed():  # stop() came during connect(): the socket was not there yet
            conn.close()
            raise Stopped
        headers = {"User-Agent": "upr_faces", "Accept": "*/*"}
        if authorization:
            headers["Authorization"] = authorization
        conn.request("GET", self._target, headers=headers)
        return conn.getresponse()

    def open(self) -> None:
        """Connect and read the response head; raise ``SessionEnd`` on HTTP errors."""
        authorization = None
        if self._user is not None:
            token = base64.b64encode(f"{self._user}:{self._password}".encode()).decode()
            authorization = f"Basic {token}"
        response = self._connect(authorization)
        challenge = response.getheader("WWW-Authenticate", "")
        if response.status == 401 and self._user is not None and "digest" in challenge.lower():
            response.close()
            self._close_conn()
            response = self._connect(self._digest(challenge))
        if response.status != 200:
            reason = "unauthorized" if response.status in {401, 403} else "HTTP error"
            raise SessionEnd(f"{reason}: HTTP {response.status} {response.reason}")
        self._response = response
        self.content_type = response.getheader("Content-Type", "").lower()
        match = re.search(r'boundary="?([^";,]+)"?', self.content_type, re.IGNORECASE)
        if match:
            boundary = response.getheader("Content-Type", "")[match.start(1) : match.end(1)]
            self.boundary = boundary.strip().removeprefix("--").encode("latin-1")

    def _digest(self, challenge: str) -> str:
        fields = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge.split(" ", 1)[-1]))
        realm, nonce = fields.get("realm", ""), fields.get("nonce", "")
        algorithm = fields.get("algorithm", "MD5")
        qop = "auth" if "auth" in fields.get("qop", "").split(",") else None

        def digest(text: str) -> str:
            if algorithm.upper().startswith("SHA-256"):
                return hashlib.sha256(text.encode()).hexdigest()
            return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()

        ha1 = digest(f"{self._user}:{realm}:{self._password}")
        ha2 = digest(f"GET:{self._target}")
        cnonce = os.urandom(8).hex()
        if qop:
            response = digest(f"{ha1}:{nonce}:00000001:{cnonce}:{qop}:{ha2}")
        else:
            response = digest(f"{ha1}:{nonce}:{ha2}")
        parts = [
            f'username="{self._user}"',
            f'realm="{realm}"',
            f'nonce="{nonce}"',
            f'uri="{self._target}"',
            f'response="{response}"',
            f"algorithm={algorithm}",
        ]
        if "opaque" in fields:
            parts.append(f'opaque="{fields["opaque"]}"')
        if qop:
            parts += [f"qop={qop}", "nc=00000001", f'cnonce="{cnonce}"']
        return "Digest " + ", ".join(parts)

    def _is_closed(self) -> bool:
        with self._lock:
            return self._closed

    def _close_conn(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def close(self) -> None:
        """Safe from any thread: wakes a reader blocked on the socket at once."""
        with self._lock:
            self._closed = True
            conn = self._conn
        if conn is not None and conn.sock is not None:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)

    def release(self) -> None:
        """Close everything (reader thread)."""
        if self._response is not None:
            with contextlib.suppress(OSError, http.client.HTTPException):
                self._response.close()
        self._close_conn()

    # reading ---------------------------------------------------------------
    def _fill(self) -> None:
        assert self._response is not None
        if time.monotonic() - self._last_part > self._timeout:
            raise SessionEnd(f"no frame for {self._timeout:g} s", stalled=True)
        try:
            chunk = self._response.read1(65536)
        except http.client.IncompleteRead:  # hung up inside a chunk: cameras do not say bye
            raise SessionEnd("stream ended") from None
        if not chunk:
            raise SessionEnd("stream ended")
        self._buffer += chunk

    def _readline(self) -> bytes:
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line, self._buffer = self._buffer[: end + 1], self._buffer[end + 1 :]
                return line
            if len(self._buffer) > _MAX_LINE:
                raise SessionEnd("malformed MJPEG stream (line too long)")
            self._fill()

    def _read_exact(self, size: int) -> bytes:
        while len(self._buffer) < size:
            self._fill()
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def _read_until(self, marker: bytes) -> bytes:
        start = 0
        while True:
            found = self._buffer.find(marker, start)
            if found >= 0:
                data, self._buffer = self._buffer[:found], self._buffer[found:]
                return data
            if len(self._buffer) > MAX_JPEG_BYTES:
                raise SessionEnd("malformed MJPEG stream (part too large)")
            start = max(0, len(self._buffer) - len(marker))
            self._fill()

    def single_image(self) -> bytes:
        """The whole body of a snapshot response."""
        assert self._response is not None
        data = self._response.read(MAX_JPEG_BYTES + 1)
        if len(data) > MAX_JPEG_BYTES:
            raise SessionEnd("snapshot too large")
        return data

    def parts(self) -> Iterator[bytes]:
        """JPEG images of a multipart stream, tolerant of sloppy servers."""
        while True:
            line = self._readline()
            stripped = line.strip()
            if not stripped:
                continue
            if stripped.startswith(b"--"):
                if self.boundary is not None and stripped == b"--" + self.boundary + b"--":
                    raise SessionEnd("stream ended")
                # Trust the stream over the header: some cameras declare one boundary
                # and send another.
                self.boundary = stripped[2:]
                headers: dict[str, str] = {}
            else:
                # A server that skips the boundary: this line is already a header.
                headers = self._header(stripped, {})
            while True:
                line = self._readline().strip()
                if not line:
                    break
                headers = self._header(line, headers)
            length = headers.get("content-length", "").strip()
            if length.isdigit() and 0 < int(length) <= MAX_JPEG_BYTES:
                data = self._read_exact(int(length))
            elif self.boundary:
                data = self._read_until(b"--" + self.boundary).rstrip(b"\r\n")
            else:
                data = self._read_until(b"\xff\xd9") + self._read_exact(2)
            self._last_part = time.monotonic()
            yield data

    @staticmethod
    def _header(line: bytes, headers: dict[str, str]) -> dict[str, str]:
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
        return headers
