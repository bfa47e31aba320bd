"""The UPR registry's HTTP API over an injected aiohttp session.

The contract is written down in ``docs/upr_api.md``. This module owns every byte that
crosses the wire: timeouts, bounded retries with backoff (honouring ``Retry-After``), size
limits, and typed errors a caller can act on. The API key is sent in the ``Authorization``
header and nowhere else: it never appears in a log line, an exception message or a repr.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import quote

import aiohttp
from yarl import URL

from .errors import UprFacesError

_LOGGER = logging.getLogger(__name__)

DEFAULT_API_URL: Final = "http://localhost:8000/api"
DEFAULT_TIMEOUT: Final = 30.0
DEFAULT_PAGE_LIMIT: Final = 200
MAX_JSON_BYTES: Final = 16 * 1024 * 1024
MAX_PHOTO_BYTES: Final = 10 * 1024 * 1024
_ERROR_SNIPPET: Final = 200
_CHUNK: Final = 64 * 1024
_USER_AGENT: Final = "upr_faces/0.1"
_KEY_OK = re.compile(r"[\x21-\x7e]*")
_HEX = re.compile(r"[0-9a-fA-F]+")


# --- errors -------------------------------------------------------------------------------


class UprAuthError(UprFacesError):
    """The registry refused the API key (HTTP 401 or 403)."""

    key = "invalid_auth"


class UprConnectionError(UprFacesError):
    """The registry cannot be reached now: connection failure, timeout, 5xx or 429 after
    the retries. Transient: try again later, not before ``retry_after`` seconds when set."""

    key = "cannot_connect"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UprResponseError(UprFacesError):
    """The registry answered something this client cannot use: not JSON, the wrong shape,
    an unexpected status or an answer over the size limit."""

    key = "bad_response"


class UprTooLargeError(UprResponseError):
    """An answer larger than the client's limit (JSON page or photo)."""


class UprPagingError(UprResponseError):
    """The registry's paging does not end or makes no progress; ``reason`` says how:
    ``cursor_repeated`` (a ``next_cursor`` came twice in one pass), ``no_progress`` (too
    many pages brought no person not already seen in the pass) or ``too_many_pages``."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class UprNotFoundError(UprFacesError):
    """HTTP 404: the photo, the alert (for a verdict) or the API path does not exist."""

    key = "not_found"


class UprRejectedError(UprFacesError):
    """A 4xx other than 401, 403, 404 and 429: the registry refuses this request for good.
    Sending it again will not help."""

    key = "rejected"

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


# --- answers ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Health:
    """``GET /health``."""

    status: str
    version: str


@dataclass(frozen=True, slots=True)
class PersonsPage:
    """One page of ``GET /persons``. ``persons`` holds the entries as received, unchecked:
    each is read with :func:`parse_person`, so one bad entry never spoils a page."""

    persons: list[Any]
    next_cursor: str
    has_more: bool
    full: bool


@dataclass(frozen=True, slots=True)
class RemotePhoto:
    """One photo of a person: its id, URL (absolute or relative to the base URL) and hash."""

    id: str
    url: str
    sha256: str | None


@dataclass(frozen=True, slots=True)
class RemoteEmbedding:
    """An embedding the registry computed itself, with the name of the model that made it."""

    model: str
    vector: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class RemotePerson:
    """A person as the registry describes it. ``problems`` names the sub-entries (photos,
    embeddings) that were malformed and left out, one reason each."""

    id: str
    reference: str
    display_name: str | None
    status: str
    deleted: bool
    updated_at: str | None
    photos: tuple[RemotePhoto, ...] = ()
    embeddings: tuple[RemoteEmbedding, ...] = ()
    problems: tuple[str, ...] = field(default=())

    @property
    def active(self) -> bool:
        """True when this person should match: open and not deleted."""
        return self.status == "open" and not self.deleted


class InvalidEntryError(ValueError):
    """A person entry that cannot be used at all; ``reason`` is a short stable key."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def parse_person(raw: Any) -> RemotePerson:
    """Read one entry of a persons page, or raise :class:`InvalidEntryError`.

    Person-level faults reject the entry: ``not_an_object``, ``no_id``, ``bad_id`` (one
    that is not valid Unicode: a lone surrogate), ``bad_reference``, ``bad_status``,
    ``bad_photos``. A malformed photo or embedding only drops that item and is named in
    ``problems`` (``bad_photo``, ``bad_embedding``). A lone surrogate in ``reference`` or
    ``display_name`` (valid JSON, but no UTF-8 can hold it) becomes U+FFFD.
    """
    if not isinstance(raw, Mapping):
        raise InvalidEntryError("not_an_object", type(raw).__name__)
    person_id = raw.get("id")
    if not isinstance(person_id, str) or not person_id.strip():
        raise InvalidEntryError("no_id")
    if not _encodable(person_id):
        raise InvalidEntryError("bad_id")
    deleted = raw.get("deleted", False) is True
    reference = raw.get("reference", person_id if deleted else None)
    if not isinstance(reference, str):
        raise InvalidEntryError("bad_reference", person_id)
    reference = _valid_text(reference)
    display_name = raw.get("display_name")
    if display_name is not None:
        display_name = _valid_text(display_name) if isinstance(display_name, str) else None
    status = raw.get("status", "closed" if deleted else None)
    if status not in ("open", "closed"):
        raise InvalidEntryError("bad_status", person_id)
    updated_at = raw.get("updated_at")
    if not isinstance(updated_at, str):
        updated_at = None
    problems: list[str] = []
    raw_photos = raw.get("photos", [])
    if raw_photos is None:
        raw_photos = []
    if not isinstance(raw_photos, list):
        raise InvalidEntryError("bad_photos", person_id)
    photos: list[RemotePhoto] = []
    for index, item in enumerate(raw_photos):
        url = item.get("url") if isinstance(item, Mapping) else None
        if not isinstance(url, str) or not url.strip():
            problems.append("bad_photo")
            continue
        photo_id = item.get("id")
        sha = item.get("sha256")
        photos.append(
            RemotePhoto(
                id=photo_id if isinstance(photo_id, str) and photo_id else f"#{index}",
                url=url,
                # anything but hex (a lone surrogate...) is no hash: the photo is fetched
                sha256=sha.lower() if isinstance(sha, str) and _HEX.fullmatch(sha) else None,
            )
        )
    embeddings: list[RemoteEmbedding] = []
    raw_embeddings = raw.get("embeddings") or []
    if not isinstance(raw_embeddings, list):
        problems.append("bad_embedding")
        raw_embeddings = []
    for item in raw_embeddings:
        embedding = _parse_embedding(item)
        if embedding is None:
            problems.append("bad_embedding")
        else:
            embeddings.append(embedding)
    return RemotePerson(
        id=person_id,
        reference=reference,
        display_name=display_name,
        status=status,
        deleted=deleted,
        updated_at=updated_at,
        photos=tuple(photos),
        embeddings=tuple(embeddings),
        problems=tuple(problems),
    )


def _parse_embedding(item: Any) -> RemoteEmbedding | None:
    if not isinstance(item, Mapping):
        return None
    model, vector = item.get("model"), item.get("vector")
    if not isinstance(model, str) or not isinstance(vector, list) or not vector:
        return None
    values: list[float] = []
    for value in vector:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        try:
            values.append(float(value))
        except OverflowError:  # an integer of 400 digits is valid JSON
            return None
    return RemoteEmbedding(model=model, vector=tuple(values))


# --- the client ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard the client tries before it gives up with :class:`UprConnectionError`.

    ``attempts`` counts the first try. Between tries it waits ``backoff * 2**n`` seconds
    (with jitter, at most ``max_backoff``), or what ``Retry-After`` asks when it is at most
    ``max_retry_after``; a longer ``Retry-After`` ends the tries at once and is passed on
    in the error's ``retry_after``.
    """

    attempts: int = 3
    backoff: float = 0.5
    max_backoff: float = 8.0
    max_retry_after: float = 30.0


class UprClient:
    """Async client of the UPR registry.

    ``session`` is the caller's aiohttp session (Home Assistant's shared one); with
    ``None`` the client makes its own on first use and closes it in :meth:`close`.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession | None,
        base_url: str,
        api_key: str,
        *,
        verify_ssl: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        max_json_bytes: int = MAX_JSON_BYTES,
        max_photo_bytes: int = MAX_PHOTO_BYTES,
    ) -> None:
        if not _KEY_OK.fullmatch(api_key):
            # Never echo the key: it may be someone's real secret pasted with a newline.
            raise ValueError("the API key holds spaces, line breaks or non-ASCII characters")
        base = URL(base_url.strip())
        if base.scheme not in ("http", "https") or not base.host:
            raise ValueError("the UPR API URL must be an http:// or https:// URL")
        # The key is the only credential: a user name, password, query or fragment in the
        # configured URL is dropped.
        base = URL(str(base.with_user(None).with_query(None).with_fragment(None)).rstrip("/"))
        self._base = base
        self._folder = URL(str(base) + "/")
        self._public_base = str(base)
        self._api_key = api_key
        self._session = session
        self._own_session = session is None
        self._ssl: bool = verify_ssl
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=min(timeout, 10.0))
        self._retry = retry or RetryPolicy()
        self._max_json = max_json_bytes
        self._max_photo = max_photo_bytes

    def __repr__(self) -> str:
        return f"UprClient(base_url={self._public_base!r})"

    @property
    def base_url(self) -> str:
        """The base URL (without the user name, password, query or fragment it may have
        been given)."""
        return self._public_base

    async def close(self) -> None:
        """Close the session if this client made it; an injected one is left alone."""
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- the API ------------------------------------------------------------------------

    async def health(self) -> Health:
        """``GET /health``: the registry is reachable and takes the key.

        A 404 here means the URL points at no UPR API: it is raised as
        :class:`UprConnectionError`, like any other wrong address.
        """
        try:
            data = await self._get_json(self._url("health"))
        except UprNotFoundError as err:
            raise UprConnectionError(f"no UPR API at {self._public_base} (HTTP 404)") from err
        if not isinstance(data, Mapping) or not isinstance(data.get("status"), str):
            raise UprResponseError(f"UPR registry at {self._public_base}: bad /health answer")
        version = data.get("version")
        return Health(status=data["status"], version=version if isinstance(version, str) else "")

    async def persons_page(
        self, cursor: str | None = None, limit: int = DEFAULT_PAGE_LIMIT
    ) -> PersonsPage:
        """``GET /persons``: one page, from the start (``cursor=None``) or from a cursor."""
        url = self._url("persons").with_query(
            {"limit": str(limit)} | ({"cursor": cursor} if cursor is not None else {})
        )
        data = await self._get_json(url)
        if not isinstance(data, Mapping):
            raise UprResponseError(self._shape("persons", "not an object"))
        persons, next_cursor = data.get("persons"), data.get("next_cursor")
        has_more, full = data.get("has_more"), data.get("full", cursor is None)
        if not isinstance(persons, list):
            raise UprResponseError(self._shape("persons", "'persons' is not a list"))
        if not isinstance(next_cursor, str) or not _encodable(next_cursor):
            raise UprResponseError(self._shape("persons", "'next_cursor' is not a string"))
        if not isinstance(has_more, bool) or not isinstance(full, bool):
            raise UprResponseError(self._shape("persons", "'has_more'/'full' not booleans"))
        return PersonsPage(persons=persons, next_cursor=next_cursor, has_more=has_more, full=full)

    def photo_url(self, url: str) -> URL:
        """Resolve a photo URL: absolute as is, relative against the base URL as a folder.

        Anything that is not an http(s) URL with a host, or that cannot be parsed (``http://[::1``,
        a port out of range, a host IDNA cannot encode...), is :class:`UprResponseError`.
        """
        bad = UprResponseError(f"UPR registry at {self._public_base}: bad photo URL")
        try:
            resolved = self._folder.join(URL(url.strip()))
            if resolved.scheme not in ("http", "https") or not resolved.host:
                raise bad
            str(resolved).encode("ascii")  # what goes on the wire; a lone surrogate fails
        except (ValueError, TypeError) as err:  # UnicodeError is a ValueError
            raise bad from err
        return resolved

    async def fetch_photo(self, url: str) -> bytes:
        """Download one photo (at most ``max_photo_bytes``).

        The key is sent only to the registry's own origin (scheme, host and port of the
        base URL): a photo on another host is fetched without it, so an entry pointing
        elsewhere can never collect the key, and a 401/403 from there is that photo's
        problem (:class:`UprRejectedError`), not a wrong key.
        """
        resolved = self.photo_url(url)
        same_origin = resolved.origin() == self._base.origin()
        try:
            _, body = await self._request(
                "GET", resolved, max_bytes=self._max_photo, auth=same_origin, accept="image/*"
            )
        except UprAuthError as err:
            if same_origin:
                raise
            raise UprRejectedError(f"GET {self._where(resolved)}: forbidden", status=403) from err
        return body

    def same_origin(self, url: str) -> bool:
        """True when ``url`` (resolved) is on the registry's own scheme, host and port."""
        return self.photo_url(url).origin() == self._base.origin()

    async def post_alert(self, alert: Mapping[str, Any]) -> bool:
        """``POST /alerts``; True when the registry created it (201), False when it had it
        already (200: alerts are idempotent by id)."""
        status, _ = await self._request(
            "POST", self._url("alerts"), json_body=alert, max_bytes=self._max_json
        )
        return status == 201

    async def post_verdict(self, alert_id: str, verdict: Mapping[str, Any]) -> None:
        """``POST /alerts/{id}/verdict``; :class:`UprNotFoundError` for an unknown alert."""
        url = self._url("alerts", alert_id, "verdict")
        await self._request("POST", url, json_body=verdict, max_bytes=self._max_json)

    # --- plumbing -----------------------------------------------------------------------

    def _url(self, *parts: str) -> URL:
        path = "/".join(quote(part, safe="") for part in parts)
        return URL(str(self._base) + "/" + path, encoded=True)

    def _shape(self, what: str, why: str) -> str:
        return f"UPR registry at {self._public_base}: bad /{what} answer: {why}"

    def _redact(self, text: str) -> str:
        text = " ".join(text.split())[:_ERROR_SNIPPET]
        return text.replace(self._api_key, "***") if self._api_key else text

    def _where(self, url: URL) -> str:
        return str(url.with_user(None).with_query(None).with_fragment(None))

    async def _get_json(self, url: URL) -> Any:
        _, body = await self._request("GET", url, max_bytes=self._max_json)
        try:
            return json.loads(body)
        except (ValueError, RecursionError) as err:
            raise UprResponseError(
                f"UPR registry at {self._public_base}: answer from {url.path} is not JSON"
            ) from err

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            if not self._own_session:
                raise UprConnectionError("the injected aiohttp session is closed")
            self._session = aiohttp.ClientSession()
        return self._session

    async def _request(
        self,
        method: str,
        url: URL,
        *,
        max_bytes: int,
        json_body: Mapping[str, Any] | None = None,
        auth: bool = True,
        accept: str = "application/json",
    ) -> tuple[int, bytes]:
        headers = {"Accept": accept, "User-Agent": _USER_AGENT}
        if auth:
            headers["Authorization"] = f"Bearer {self._api_key}"
        where = self._where(url)
        policy = self._retry
        attempt = 0
        while True:
            attempt += 1
            retry_after: float | None = None
            try:
                async with self._session_now().request(
                    method,
                    url,
                    headers=headers,
                    json=json_body,
                    timeout=self._timeout,
                    ssl=self._ssl,
                ) as resp:
                    status = resp.status
                    if 200 <= status < 300:
                        body = await self._read_limited(resp, max_bytes, where)
                        return status, body
                    if status in (401, 403):
                        raise UprAuthError(
                            f"UPR registry at {self._public_base} refused the API key "
                            f"(HTTP {status})"
                        )
                    if status == 404:
                        raise UprNotFoundError(f"{method} {where}: not found (HTTP 404)")
                    if status != 429 and 400 <= status < 500:
                        snippet = self._redact(await self._read_snippet(resp))
                        raise UprRejectedError(
                            f"{method} {where}: rejected (HTTP {status}) {snippet}".rstrip(),
                            status=status,
                        )
                    if status != 429 and status < 500:
                        raise UprResponseError(f"{method} {where}: unexpected HTTP {status}")
                    retry_after = _parse_retry_after(resp.headers.get("Retry-After"))
                    failure = f"HTTP {status}"
            except (aiohttp.ClientError, TimeoutError) as err:
                if isinstance(err, aiohttp.InvalidURL):
                    raise UprResponseError(f"{method}: invalid URL {where}") from err
                failure = self._redact(_describe(err))
                last_error: BaseException | None = err
            else:
                last_error = None
            # A transient failure: wait and try again, or give up.
            if retry_after is not None and retry_after > policy.max_retry_after:
                raise UprConnectionError(
                    f"{method} {where}: {failure}, retry after {retry_after:.0f} s",
                    retry_after=retry_after,
                ) from last_error
            if attempt >= policy.attempts:
                raise UprConnectionError(
                    f"cannot reach UPR registry: {method} {where}: {failure}",
                    retry_after=retry_after,
                ) from last_error
            delay = (
                retry_after
                if retry_after is not None
                else min(policy.max_backoff, policy.backoff * 2 ** (attempt - 1))
                * random.uniform(0.5, 1.0)
            )
            _LOGGER.debug(
                "UPR %s %s: %s; try %d of %d in %.2f s",
                method,
                where,
                failure,
                attempt + 1,
                policy.attempts,
                delay,
            )
            await asyncio.sleep(delay)

    async def _read_limited(self, resp: aiohttp.ClientResponse, limit: int, where: str) -> bytes:
        too_big = UprTooLargeError(f"answer from {where} is larger than {limit} bytes")
        if resp.content_length is not None and resp.content_length > limit:
            raise too_big
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(_CHUNK):
            size += len(chunk)
            if size > limit:
                raise too_big
            chunks.append(chunk)
        return b"".join(chunks)

    async def _read_snippet(self, resp: aiohttp.ClientResponse) -> str:
        try:
            data = await resp.content.read(_ERROR_SNIPPET * 4)
        except (aiohttp.ClientError, TimeoutError):
            return ""
        text = data.decode("utf-8", "replace")
        try:
            parsed = json.loads(text)
        except ValueError:
            return text
        if isinstance(parsed, Mapping):
            for name in ("error", "detail", "message"):
                if isinstance(parsed.get(name), str):
                    return str(parsed[name])
        return text


def _encodable(text: str) -> bool:
    """Whether ``text`` can be sent in a URL (a JSON string may hold a lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _valid_text(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD."""
    if _encodable(text):
        return text
    return "".join("\ufffd" if "\ud800" <= char <= "\udfff" else char for char in text)


def _describe(err: BaseException) -> str:
    if isinstance(err, TimeoutError | aiohttp.ServerTimeoutError):
        return "timed out"
    text = str(err)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - time.time()
    if math.isnan(seconds):
        return None
    return max(0.0, seconds)
