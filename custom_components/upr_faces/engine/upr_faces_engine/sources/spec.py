"""Camera source strings: parsing, validation, and masking the credentials they carry.

Credentials never appear in logs, reprs, reasons or errors: every text that may hold a
source goes through :func:`mask_url` or :func:`mask_text`.

Users type passwords as they are, ``#``, ``/``, ``?`` and ``@`` included, which a URL
parser would read as a fragment, a path or a query. So the credentials are taken out
first (:func:`split_credentials`: the userinfo ends at the first ``@`` followed by a host
and an optional port), and a source is stored with them percent-encoded
(:func:`canonical_source`); masking works on both forms.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Final
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from ..errors import UprFacesError

# the highest /dev/videoN a source may name (USB scans probe fewer)
MAX_USB_INDEX: Final = 63

_SECRET_QUERY_KEYS: Final = frozenset(
    {
        "password",
        "passwd",
        "pass",
        "pwd",
        "psw",
        "token",
        "access_token",
        "auth",
        "key",
        "apikey",
        "api_key",
        "secret",
        "sig",
        "signature",
    }
)
_MASK: Final = "***"
_URL_SCHEMES: Final = ("rtsp", "rtsps", "http", "https")
_SCHEME_RE: Final = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# a host (name, IPv4 or [IPv6]) and an optional port, then the end, a path, query or fragment
_HOSTPORT_RE: Final = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~%-]+)(:\d*)?(?=$|[/?#])")
_CONTROL_RE: Final = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Credentials:
    """A network source split around its userinfo, as typed (nothing decoded)."""

    scheme: str
    user: str
    password: str | None
    rest: str  # host[:port][/path][?query][#fragment]

    def joined(self, password: str | None) -> str:
        """The source with its user and ``password``, both percent-encoded."""
        userinfo = quote(unquote(self.user), safe="")
        if password is not None:
            userinfo += ":" + (password if password == _MASK else quote(unquote(password), safe=""))
        return f"{self.scheme}://{userinfo}@{self.rest}"


def split_credentials(text: str) -> Credentials | None:
    """``scheme://user[:password]@host...`` taken apart, whatever the password holds; None
    for a source without credentials (or that is not an rtsp/http address)."""
    found = _SCHEME_RE.match(text)
    if found is None or found.group(1).lower() not in _URL_SCHEMES:
        return None
    body = text[found.end() :]
    start = 0
    while (at := body.find("@", start)) >= 0:
        start = at + 1
        userinfo, rest = body[:at], body[at + 1 :]
        user, colon, password = userinfo.partition(":")
        if any(mark in user for mark in "/?#") or not (user or colon):
            continue  # an '@' in the path of a source without credentials
        if _HOSTPORT_RE.match(rest) is None:
            continue  # an '@' inside the password
        return Credentials(found.group(1), user, password if colon else None, rest)
    return None


def canonical_source(text: str) -> str:
    """The source with its credentials percent-encoded (what is stored and opened)."""
    credentials = split_credentials(text)
    return text if credentials is None else credentials.joined(credentials.password)


class SourceError(UprFacesError):
    """A camera source string is not valid."""

    key = "invalid_source"


class InvalidSourceError(SourceError, ValueError):
    """Raised by :func:`parse_source`; also a ``ValueError``."""


class SourceKind(StrEnum):
    """What kind of camera a source string names."""

    USB = "usb"
    RTSP = "rtsp"
    HTTP = "http"
    FILE = "file"


# --------------------------------------------------------------------------- masking


def mask_url(url: str) -> str:
    """``url`` with its password (and secret-looking query values) replaced by ``***``.

    ``rtsp://admin:s3cret@cam/stream?token=x`` becomes
    ``rtsp://admin:***@cam/stream?token=***``. Strings that are not URLs come back as they
    are.
    """
    credentials = split_credentials(url)
    if credentials is not None:
        url = credentials.joined(None if credentials.password is None else _MASK)
    try:
        parts = urlsplit(url)
    except ValueError:
        return _MASK if "@" in url else url
    if not parts.scheme or not parts.netloc:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, has_password, _password = userinfo.partition(":")
        netloc = f"{user}:{_MASK}@{hostport}" if has_password else f"{user}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(key.lower() in _SECRET_QUERY_KEYS for key, _ in pairs):
            query = urlencode(
                [(k, _MASK if k.lower() in _SECRET_QUERY_KEYS else v) for k, v in pairs],
                safe="*",
            )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _secrets(url: str) -> list[str]:
    """Every form in which ``url``'s secrets could show up in a message."""
    found: list[str] = []
    credentials = split_credentials(url)
    if credentials is not None and credentials.password:
        typed = credentials.password
        found += [typed, unquote(typed), quote(unquote(typed), safe="")]
        url = credentials.joined(typed)
    with contextlib.suppress(ValueError):
        parts = urlsplit(url)
        if parts.password:
            found += [parts.password, unquote(parts.password)]
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key.lower() in _SECRET_QUERY_KEYS and value:
                found += [value, quote(value, safe="")]
    return sorted({s for s in found if s}, key=len, reverse=True)


def mask_text(text: str, url: str) -> str:
    """``text`` (an error message, say) with ``url`` and its secrets masked."""
    masked = text.replace(url, mask_url(url))
    for secret in _secrets(url):
        masked = masked.replace(secret, _MASK)
    return masked


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """A parsed, valid camera source. Its ``repr`` never shows credentials."""

    kind: SourceKind
    url: str
    device: int | str | None = None
    path: Path | None = None

    @property
    def masked(self) -> str:
        """The source string, safe to show and log."""
        return mask_url(self.url)

    def __repr__(self) -> str:
        return f"SourceSpec({self.kind.value}, {self.masked!r})"

    def __str__(self) -> str:
        return self.masked


_USB_RE: Final = re.compile(r"usb:(\d+)", re.IGNORECASE)
_DEV_VIDEO_RE: Final = re.compile(r"/dev/video(\d+)")
_SCHEMES: Final = "usb:N, /dev/videoN, rtsp://, rtsps://, http://, https:// or file://PATH"


def parse_source(text: str) -> SourceSpec:
    """Validate a camera source string; raise :class:`InvalidSourceError` with a clear
    (credential-free) message when it is not one."""
    raw = text.strip()
    if not raw:
        raise InvalidSourceError("empty camera source")
    if _CONTROL_RE.search(raw):
        raise InvalidSourceError("a camera source holds no control characters (newlines, NUL)")
    lowered = raw.lower()
    if lowered.startswith("usb:"):
        match = _USB_RE.fullmatch(raw)
        if match is None or int(match.group(1)) > MAX_USB_INDEX:
            raise InvalidSourceError(
                f"bad USB camera index in {raw!r}: expected usb:N with N from 0 to {MAX_USB_INDEX}"
            )
        return SourceSpec(SourceKind.USB, raw, device=int(match.group(1)))
    if raw.startswith("/dev/"):
        match = _DEV_VIDEO_RE.fullmatch(raw)
        if match is not None:
            return SourceSpec(SourceKind.USB, raw, device=int(match.group(1)))
        if raw.startswith("/dev/video"):
            raise InvalidSourceError(f"bad video device {raw!r}: expected /dev/videoN")
        if not raw.startswith("/dev/v4l/") or "/../" in raw or raw.endswith("/.."):
            raise InvalidSourceError(
                f"{raw!r} is not a video device: expected /dev/videoN or a /dev/v4l/ link"
            )
        return SourceSpec(SourceKind.USB, raw, device=raw)
    if lowered.startswith("file://"):
        path = raw[len("file://") :]
        if not path:
            raise InvalidSourceError("file:// needs a path, as in file:///clips/door.mp4")
        return SourceSpec(SourceKind.FILE, raw, path=Path(unquote(path)))
    raw = canonical_source(raw)
    try:
        parts = urlsplit(raw)
        port = parts.port  # validates the port
    except ValueError as err:
        raise InvalidSourceError(
            f"bad camera address {mask_url(raw)!r}: {mask_text(str(err), raw)}"
        ) from None
    scheme = parts.scheme.lower()
    if scheme in {"rtsp", "rtsps", "http", "https"}:
        if not parts.hostname:
            raise InvalidSourceError(f"no host in camera address {mask_url(raw)!r}")
        if port == 0:
            raise InvalidSourceError(f"bad port in camera address {mask_url(raw)!r}")
        kind = SourceKind.RTSP if scheme.startswith("rtsp") else SourceKind.HTTP
        return SourceSpec(kind, raw)
    shown = f"{scheme}://" if scheme else mask_url(raw)
    raise InvalidSourceError(f"unknown camera source {shown!r}: expected {_SCHEMES}")


# --------------------------------------------------------------------------- editing


def unmask_source(submitted: str, stored: str) -> str:
    """The source to keep when an admin edits one shown masked (``user:***@host``).

    ``submitted`` equal to ``mask_url(stored)`` gives ``stored`` back exactly; otherwise each
    ``***`` (the password, a secret query value) is replaced by the stored value it hides,
    but only while the scheme, host and port stay the same: a stored secret never goes to
    another camera. A ``***`` that hides nothing is left, and :func:`parse_source` callers
    refuse it.
    """
    if _MASK not in submitted:
        return submitted
    if submitted == mask_url(stored):
        return stored
    try:
        new, old = urlsplit(canonical_source(submitted)), urlsplit(canonical_source(stored))
        same_camera = (new.scheme.lower(), new.hostname, new.port) == (
            old.scheme.lower(),
            old.hostname,
            old.port,
        )
    except ValueError:
        return submitted
    if not same_camera:
        return submitted
    netloc = new.netloc
    if new.password == _MASK and old.password is not None:
        userinfo, _, hostport = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:{old.password}@{hostport}"
    query = new.query
    if _MASK in query:
        old_values = dict(parse_qsl(old.query, keep_blank_values=True))
        pairs = [
            (key, old_values.get(key, value) if value == _MASK else value)
            for key, value in parse_qsl(query, keep_blank_values=True)
        ]
        query = urlencode(pairs)
    return urlunsplit((new.scheme, netloc, new.path, query, new.fragment))


def source_key(spec: SourceSpec) -> str:
    """What makes two sources the same camera: the masked source (``usb:N`` for a
    ``/dev/videoN``), never holding a secret."""
    if spec.kind is SourceKind.USB and isinstance(spec.device, int):
        return f"usb:{spec.device}"
    return spec.masked


def default_name(spec: SourceSpec) -> str:
    """A camera name when the admin gives none: the host, or the clip's name."""
    if spec.kind in (SourceKind.RTSP, SourceKind.HTTP):
        return urlsplit(spec.url).hostname or spec.masked
    if spec.path is not None:
        return spec.path.stem or spec.masked
    return spec.masked
