"""The UPR client against a real registry on 127.0.0.1 (tests/upr_server.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from upr_faces_dev.devserver import (
    DevRegistry,
    FolderSource,
    create_app,
)
from upr_faces_dev.devserver import (
    main as devserver_main,
)
from upr_faces_engine.errors import UprFacesError
from upr_faces_engine.upr_client import (
    InvalidEntryError,
    RetryPolicy,
    UprAuthError,
    UprClient,
    UprConnectionError,
    UprNotFoundError,
    UprRejectedError,
    UprResponseError,
    UprTooLargeError,
    _parse_retry_after,
    parse_person,
)

from .upr_server import UprServer

KEY = "s3cr3t-Key-0451-do-not-leak"
FAST = RetryPolicy(attempts=3, backoff=0.01, max_backoff=0.05, max_retry_after=1.0)


def alert(**changes: Any) -> dict[str, Any]:
    """A valid alert body."""
    body: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "person_id": "p1",
        "camera": "camera.front",
        "tier": "match",
        "similarity": 0.71,
        "detected_at": "2025-05-01T10:00:00Z",
        "snapshot_jpeg_b64": None,
    }
    return body | changes


VERDICT = {"verdict": "confirmed", "by": "agent 12", "comment": None, "at": "2025-05-01T10:05:00Z"}


@pytest.fixture(autouse=True)
def no_key_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every test runs with DEBUG logs, and the key must appear in none of them."""
    caplog.set_level(logging.DEBUG)
    yield
    assert KEY not in caplog.text
    assert "WRONG-" not in caplog.text


@pytest.fixture
async def server(socket_enabled: None) -> AsyncIterator[UprServer]:
    async with UprServer(KEY) as srv:
        yield srv


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


@pytest.fixture
def client(server: UprServer, session: aiohttp.ClientSession) -> UprClient:
    return UprClient(session, server.url, KEY, retry=FAST, timeout=5)


async def test_host_names_resolve(server: UprServer, session: aiohttp.ClientSession) -> None:
    """A registry addressed by name (``localhost``, as in the documented default URL) is
    reached through aiohttp's default resolver, which is aiodns's here: its version and
    pycares' must agree (aiodns 3.2 with pycares 5 resolves nothing)."""
    import aiohttp.resolver

    assert aiohttp.resolver.DefaultResolver is aiohttp.resolver.AsyncResolver
    url = server.url.replace("127.0.0.1", "localhost")
    assert url.startswith("http://localhost:")
    health = await UprClient(session, url, KEY, retry=FAST, timeout=5).health()
    assert health.status == "ok"
    assert server.count("/health") == 1


def assert_clean(err: BaseException) -> None:
    """No key in the message, the repr, or the causes' messages."""
    while err is not None:
        assert KEY not in str(err)
        assert KEY not in repr(err)
        assert "WRONG-" not in str(err)
        err = err.__cause__  # type: ignore[assignment]


# --- the basics ---------------------------------------------------------------------------


async def test_health(client: UprClient, server: UprServer) -> None:
    health = await client.health()
    assert health.status == "ok"
    assert health.version
    assert server.authorizations == [f"Bearer {KEY}"]
    assert KEY not in repr(client)


async def test_wrong_key_is_invalid_auth(server: UprServer, session: aiohttp.ClientSession) -> None:
    client = UprClient(session, server.url, "WRONG-" + KEY, retry=FAST)
    with pytest.raises(UprAuthError) as info:
        await client.health()
    assert info.value.key == "invalid_auth"
    assert isinstance(info.value, UprFacesError)
    assert "401" in str(info.value)
    assert_clean(info.value)
    assert server.count("/health") == 1  # not retried


async def test_forbidden_is_invalid_auth(client: UprClient, server: UprServer) -> None:
    server.fail(403, path="/persons")
    with pytest.raises(UprAuthError):
        await client.persons_page()


async def test_key_with_line_break_is_refused_without_echo() -> None:
    with pytest.raises(ValueError, match="API key") as info:
        UprClient(None, "http://127.0.0.1:1/api", KEY + "\r\nX-Evil: 1")
    assert KEY not in str(info.value)
    with pytest.raises(ValueError, match="http"):
        UprClient(None, "ftp://example.org/api", KEY)


async def test_url_with_credentials_is_not_shown(session: aiohttp.ClientSession) -> None:
    client = UprClient(session, "http://user:pa55word@127.0.0.1:1/api/?x=1", KEY, retry=FAST)
    assert "pa55word" not in repr(client)
    assert client.base_url == "http://127.0.0.1:1/api"


async def test_health_on_a_wrong_path_cannot_connect(
    server: UprServer, session: aiohttp.ClientSession
) -> None:
    client = UprClient(session, server.origin + "/nothing-here", KEY, retry=FAST)
    with pytest.raises(UprConnectionError, match="no UPR API"):
        await client.health()


async def test_own_session_is_closed_injected_one_is_not(
    server: UprServer, session: aiohttp.ClientSession
) -> None:
    async with UprClient(None, server.url, KEY) as own:
        assert (await own.health()).status == "ok"
        made = own._session
        assert made is not None
    assert made.closed
    injected = UprClient(session, server.url, KEY)
    await injected.health()
    await injected.close()
    assert not session.closed


# --- pagination and cursors ---------------------------------------------------------------


async def test_pages_and_cursors(client: UprClient, server: UprServer) -> None:
    for n in range(5):
        server.registry.put_person(f"p{n}", f"UPR-{n}")
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await client.persons_page(cursor, limit=2)
        pages += 1
        assert page.full
        seen += [p["id"] for p in page.persons]
        cursor = page.next_cursor
        if not page.has_more:
            break
    assert pages == 3
    assert seen == ["p0", "p1", "p2", "p3", "p4"]
    assert all("limit=2" in path for _, path in server.requests)

    nothing = await client.persons_page(cursor, limit=2)
    assert (nothing.persons, nothing.full, nothing.has_more) == ([], False, False)

    server.registry.set_status("p1", "closed")
    server.registry.delete("p3")
    changed = await client.persons_page(cursor, limit=10)
    assert not changed.full
    assert [(p["id"], p.get("status"), p.get("deleted", False)) for p in changed.persons] == [
        ("p1", "closed", False),
        ("p3", "closed", True),
    ]

    server.registry.invalidate_cursors()
    again = await client.persons_page(changed.next_cursor, limit=10)
    assert again.full
    assert sorted(p["id"] for p in again.persons) == ["p0", "p1", "p2", "p4"]


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"<html>502 Bad Gateway</html>", "not JSON"),
        (b'{"persons": [], "next_cursor": "x", "has_', "not JSON"),
        (b"[1, 2, 3]", "not an object"),
        (b'{"persons": {}, "next_cursor": "x", "has_more": false}', "'persons'"),
        (b'{"persons": [], "next_cursor": 7, "has_more": false}', "'next_cursor'"),
        # a lone surrogate is valid JSON but can never be sent back in a query
        (b'{"persons": [], "next_cursor": "\\ud800", "has_more": true}', "'next_cursor'"),
        (b'{"persons": [], "next_cursor": "x"}', "'has_more'"),
        (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
    ],
)
async def test_garbage_pages(client: UprClient, server: UprServer, body: bytes, why: str) -> None:
    server.serve(body, path="/persons")
    with pytest.raises(UprResponseError, match=why) as info:
        await client.persons_page()
    assert info.value.key == "bad_response"
    assert server.count("/persons") == 1  # a bad answer is not retried


@pytest.mark.parametrize("chunked", [False, True])
async def test_oversized_page(
    server: UprServer, session: aiohttp.ClientSession, chunked: bool
) -> None:
    client = UprClient(session, server.url, KEY, retry=FAST, max_json_bytes=100_000)
    body = json.dumps({"persons": ["x" * 1000] * 300, "next_cursor": "", "has_more": False})
    server.serve(body.encode(), path="/persons", chunked=chunked)
    with pytest.raises(UprTooLargeError, match="larger than 100000"):
        await client.persons_page()


# --- transient failures -------------------------------------------------------------------


async def test_500_then_success(client: UprClient, server: UprServer) -> None:
    server.fail(500, times=2, path="/health")
    assert (await client.health()).status == "ok"
    assert server.count("/health") == 3


async def test_5xx_exhausted_is_cannot_connect(client: UprClient, server: UprServer) -> None:
    server.fail(503, times=10)
    with pytest.raises(UprConnectionError, match="HTTP 503") as info:
        await client.health()
    assert info.value.key == "cannot_connect"
    assert server.count("/health") == FAST.attempts
    assert_clean(info.value)


async def test_429_honours_retry_after(client: UprClient, server: UprServer) -> None:
    server.fail(429, retry_after="0.3", path="/persons")
    started = time.monotonic()
    page = await client.persons_page()
    assert page.persons == []
    assert time.monotonic() - started >= 0.3
    assert server.count("/persons") == 2


async def test_429_beyond_the_cap_gives_up_at_once(client: UprClient, server: UprServer) -> None:
    server.fail(429, retry_after="120", path="/persons")
    started = time.monotonic()
    with pytest.raises(UprConnectionError) as info:
        await client.persons_page()
    assert time.monotonic() - started < 1.0
    assert info.value.retry_after == 120
    assert server.count("/persons") == 1


async def test_429_exhausted(client: UprClient, server: UprServer) -> None:
    server.fail(429, times=5, retry_after="0")
    with pytest.raises(UprConnectionError, match="429"):
        await client.health()
    assert server.count("/health") == 3


def test_retry_after_forms() -> None:
    assert _parse_retry_after("3") == 3.0
    assert _parse_retry_after(" 0.5 ") == 0.5
    assert _parse_retry_after("-4") == 0.0
    assert _parse_retry_after("soon") is None
    assert _parse_retry_after(None) is None
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= (_parse_retry_after(later) or 0) <= 31


async def test_timeout(server: UprServer, session: aiohttp.ClientSession) -> None:
    client = UprClient(
        session, server.url, KEY, timeout=0.3, retry=RetryPolicy(attempts=2, backoff=0.01)
    )
    server.delay(5.0, times=2, path="/health")
    started = time.monotonic()
    with pytest.raises(UprConnectionError, match="timed out") as info:
        await client.health()
    assert time.monotonic() - started < 2.0
    assert server.count("/health") == 2
    assert_clean(info.value)


async def test_registry_down(session: aiohttp.ClientSession, socket_enabled: None) -> None:
    server = await UprServer(KEY).start()
    url = server.url
    await server.stop()
    client = UprClient(session, url, KEY, retry=FAST)
    with pytest.raises(UprConnectionError, match="cannot reach") as info:
        await client.health()
    assert_clean(info.value)


# --- photos ---------------------------------------------------------------------------------


def test_photo_urls() -> None:
    client = UprClient(None, "https://upr.example/api/v2/", KEY)
    assert str(client.photo_url("photos/1.jpg")) == "https://upr.example/api/v2/photos/1.jpg"
    assert str(client.photo_url("/media/1.jpg")) == "https://upr.example/media/1.jpg"
    assert str(client.photo_url("https://cdn.example/x.png")) == "https://cdn.example/x.png"
    assert client.same_origin("photos/1.jpg")
    assert not client.same_origin("https://cdn.example/x.png")
    with pytest.raises(UprResponseError):
        client.photo_url("file:///etc/passwd")


@pytest.mark.parametrize(
    "url",
    [
        "http://[::1",  # yarl: ValueError "Invalid IPv6 URL"
        "http://[::1]:99999/x.jpg",
        "http://x:abc/x.jpg",
        "http://:80/x.jpg",
        "http://[zz]/x.jpg",
        "http://a\ud800.example/x.jpg",  # IDNA cannot encode it
        "/x\ud800.jpg",  # resolves, but cannot go on the wire
    ],
)
def test_unparsable_photo_urls_are_bad_responses(url: str) -> None:
    """Whatever a registry puts in a photo URL is this client's error, never a ValueError."""
    client = UprClient(None, "https://upr.example/api", KEY)
    with pytest.raises(UprResponseError, match="bad photo URL") as info:
        client.photo_url(url)
    assert info.value.key == "bad_response"
    with pytest.raises(UprResponseError):
        client.same_origin(url)


async def test_unparsable_photo_url_is_never_fetched(client: UprClient, server: UprServer) -> None:
    with pytest.raises(UprResponseError, match="bad photo URL"):
        await client.fetch_photo("http://[::1")
    assert server.requests == []


async def test_fetch_photo(client: UprClient, server: UprServer) -> None:
    entry = server.registry.add_photo("a.jpg", b"\xff\xd8jpeg-bytes")
    assert await client.fetch_photo(entry["url"]) == b"\xff\xd8jpeg-bytes"
    assert await client.fetch_photo(server.url + "/" + entry["url"]) == b"\xff\xd8jpeg-bytes"
    assert server.authorizations[-1] == f"Bearer {KEY}"
    with pytest.raises(UprNotFoundError):
        await client.fetch_photo("photos/999.jpg")


async def test_oversized_photo(server: UprServer, session: aiohttp.ClientSession) -> None:
    client = UprClient(session, server.url, KEY, retry=FAST, max_photo_bytes=10_000)
    entry = server.registry.add_photo("big.jpg", b"\0" * 50_000)
    with pytest.raises(UprTooLargeError):
        await client.fetch_photo(entry["url"])


async def test_photo_elsewhere_gets_no_key(client: UprClient, socket_enabled: None) -> None:
    async with UprServer("other-key") as other:
        entry = other.registry.add_photo("a.png", b"png")
        # The other host wants its own key: without ours it refuses, and that is the
        # photo's problem, not a wrong key.
        with pytest.raises(UprRejectedError):
            await client.fetch_photo(other.url + "/" + entry["url"])
        assert other.authorizations == [None]


# --- alerts and verdicts --------------------------------------------------------------------


async def test_alert_is_idempotent(client: UprClient, server: UprServer) -> None:
    body = alert()
    assert await client.post_alert(body) is True
    assert await client.post_alert(body) is False
    assert server.received()["alerts"] == [body]
    assert [p["status"] for p in server.received()["posts"]] == [201, 200]


async def test_bad_alert_is_rejected(client: UprClient, server: UprServer) -> None:
    with pytest.raises(UprRejectedError, match="tier") as info:
        await client.post_alert(alert(tier="maybe"))
    assert info.value.status == 400
    assert info.value.key == "rejected"
    assert server.count("/alerts", "POST") == 1


async def test_verdicts(client: UprClient, server: UprServer) -> None:
    body = alert()
    with pytest.raises(UprNotFoundError):
        await client.post_verdict(body["id"], VERDICT)
    await client.post_alert(body)
    await client.post_verdict(body["id"], VERDICT)
    assert server.received()["verdicts"] == [{"alert_id": body["id"], **VERDICT}]
    with pytest.raises(UprRejectedError):
        await client.post_verdict(body["id"], VERDICT | {"verdict": "perhaps"})


async def test_error_text_from_the_registry_is_redacted(
    client: UprClient, server: UprServer
) -> None:
    server.fail(422, path="/alerts", body=json.dumps({"error": f"bad key {KEY}"}).encode())
    with pytest.raises(UprRejectedError) as info:
        await client.post_alert(alert())
    assert "bad key ***" in str(info.value)
    assert_clean(info.value)


# --- person entries -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("p1", "not_an_object"),
        (None, "not_an_object"),
        ({"reference": "R"}, "no_id"),
        ({"id": "  ", "reference": "R"}, "no_id"),
        ({"id": "p\ud800", "reference": "R", "status": "open"}, "bad_id"),
        ({"id": "p1", "status": "open"}, "bad_reference"),
        ({"id": "p1", "reference": "R", "status": "wanted"}, "bad_status"),
        ({"id": "p1", "reference": "R", "status": "open", "photos": "a.jpg"}, "bad_photos"),
    ],
)
def test_unusable_entries(raw: Any, reason: str) -> None:
    with pytest.raises(InvalidEntryError) as info:
        parse_person(raw)
    assert info.value.reason == reason


def test_entry_with_bad_parts() -> None:
    person = parse_person(
        {
            "id": "p1",
            "reference": "UPR-1",
            "display_name": 12,
            "status": "open",
            "updated_at": "2025-05-01T10:00:00Z",
            "photos": [
                {"id": "a", "url": "photos/1.jpg", "sha256": "AB"},
                {"id": "b"},
                3,
                {"id": "c", "url": "photos/2.jpg", "sha256": "\ud800ab"},
            ],
            "embeddings": [
                {"model": "w600k_r50", "vector": [0.1, 0.2]},
                {"model": "w600k_r50", "vector": ["x"]},
                {"vector": [1.0]},
                {"model": "w600k_r50", "vector": [10**400]},  # float() overflows
            ],
        }
    )
    assert person.active
    assert person.display_name is None
    assert [photo.url for photo in person.photos] == ["photos/1.jpg", "photos/2.jpg"]
    assert [photo.sha256 for photo in person.photos] == ["ab", None]
    odd = parse_person(
        {"id": "p3", "reference": "R\ud800", "display_name": "\udfff", "status": "open"}
    )
    assert (odd.reference, odd.display_name) == ("R\ufffd", "\ufffd")
    assert [e.vector for e in person.embeddings] == [(0.1, 0.2)]
    assert sorted(person.problems) == ["bad_embedding"] * 3 + ["bad_photo"] * 2
    tombstone = parse_person({"id": "p2", "deleted": True})
    assert tombstone.deleted
    assert not tombstone.active


# --- the development server -----------------------------------------------------------------


async def test_dev_server_serves_a_folder(
    tmp_path: Path, session: aiohttp.ClientSession, socket_enabled: None
) -> None:
    gallery = tmp_path / "gallery"
    (gallery / "p1").mkdir(parents=True)
    (gallery / "p1" / "a.jpg").write_bytes(b"\xff\xd8one")
    (gallery / "p2").mkdir()
    (gallery / "p2" / "b.png").write_bytes(b"\x89PNGtwo")
    (gallery / "p2" / "person.json").write_text(
        json.dumps({"reference": "UPR-2", "display_name": "Bo", "status": "closed", "notes": "n"})
    )
    log = tmp_path / "received.jsonl"
    registry = DevRegistry()
    app = create_app(registry, KEY, source=FolderSource(gallery, registry), log_path=log)
    runner = aiohttp.web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/api"
        client = UprClient(session, url, KEY, retry=FAST)
        page = await client.persons_page(limit=1)
        assert page.full
        assert page.has_more
        last = await client.persons_page(page.next_cursor, limit=1)
        assert not last.has_more
        p1, p2 = page.persons[0], last.persons[0]
        assert (p1["reference"], p1["status"]) == ("p1", "open")
        assert (p2["reference"], p2["display_name"], p2["status"]) == ("UPR-2", "Bo", "closed")
        assert p2["notes"] == "n"
        assert await client.fetch_photo(p1["photos"][0]["url"]) == b"\xff\xd8one"

        (gallery / "p1" / "c.jpg").write_bytes(b"\xff\xd8three")
        for child in (gallery / "p2").iterdir():
            child.unlink()
        (gallery / "p2").rmdir()
        changed = await client.persons_page(last.next_cursor)
        assert not changed.full
        by_id = {p["id"]: p for p in changed.persons}
        assert len(by_id["p1"]["photos"]) == 2
        assert by_id["p2"]["deleted"] is True

        body = alert()
        assert await client.post_alert(body)
        await client.post_verdict(body["id"], VERDICT)
        async with session.get(url + "/_received", headers={"Authorization": f"Bearer {KEY}"}) as r:
            received = await r.json()
        assert received["alerts"] == [body]
        lines = [json.loads(line) for line in log.read_text().splitlines()]
        assert [(line["kind"], line["status"]) for line in lines] == [
            ("alert", 201),
            ("verdict", 200),
        ]
    finally:
        await runner.cleanup()


def test_dev_server_needs_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UPR_API_KEY", raising=False)
    with pytest.raises(SystemExit) as info:
        devserver_main(["--port", "0"])
    assert info.value.code == 2


async def test_odd_answers(client: UprClient, server: UprServer) -> None:
    server.serve(b'{"version": "1"}', path="/health")
    with pytest.raises(UprResponseError, match="health"):
        await client.health()
    server.serve(b"", path="/health", status=300)
    with pytest.raises(UprResponseError, match="unexpected HTTP 300"):
        await client.health()
    with pytest.raises(UprRejectedError, match="limit"):
        await client.persons_page(limit=0)


async def test_closed_injected_session(server: UprServer) -> None:
    async with aiohttp.ClientSession() as session:
        client = UprClient(session, server.url, KEY)
    with pytest.raises(UprConnectionError, match="closed"):
        await client.health()


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"id": "not-a-uuid"}, "UUID"),
        ({"camera": ""}, "camera"),
        ({"similarity": True}, "similarity"),
        ({"similarity": "0.7"}, "similarity"),
        ({"detected_at": "2025-05-01 10:00:00"}, "detected_at"),
        ({"detected_at": "2025-05-01T10:00:00"}, "detected_at"),
        ({"snapshot_jpeg_b64": "***"}, "base64"),
        ({"snapshot_jpeg_b64": 12}, "snapshot"),
    ],
)
async def test_dev_server_checks_alerts(
    client: UprClient, changes: dict[str, Any], why: str
) -> None:
    with pytest.raises(UprRejectedError, match=why):
        await client.post_alert(alert(**changes))


@pytest.mark.parametrize(
    ("changes", "why"),
    [({"by": None}, "by"), ({"comment": 3}, "comment"), ({"at": "yesterday"}, "at")],
)
async def test_dev_server_checks_verdicts(
    client: UprClient, server: UprServer, changes: dict[str, Any], why: str
) -> None:
    body = alert()
    await client.post_alert(body)
    with pytest.raises(UprRejectedError, match=why):
        await client.post_verdict(body["id"], VERDICT | changes)


async def test_dev_server_refuses_non_objects(server: UprServer) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        for path in ("/alerts", "/alerts/x/verdict"):
            async with session.post(server.url + path, data=b"[1]") as resp:
                assert resp.status == 400
            async with session.post(server.url + path, data=b"{not json") as resp:
                assert resp.status == 400
        async with session.get(server.url + "/persons?limit=x") as resp:
            assert resp.status == 400
        async with session.get(server.url + "/persons?cursor=%%%") as resp:
            assert (await resp.json())["full"] is True


async def test_dev_server_script(tmp_path: Path, socket_enabled: None) -> None:
    """scripts/upr_dev_server runs the module with the project's Python."""
    script = Path(__file__).resolve().parent.parent / "scripts" / "upr_dev_server"
    python = script.parent.parent / ".venv" / "bin" / "python"
    if not python.exists():
        pytest.skip("the project's .venv is absent: the script runs .venv/bin/python")
    (tmp_path / "g" / "p1").mkdir(parents=True)
    (tmp_path / "g" / "p1" / "a.jpg").write_bytes(b"\xff\xd8x")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = os.environ | {"UPR_API_KEY": KEY}
    args = [str(script), "--dir", str(tmp_path / "g"), "--port", str(port)]
    process = await asyncio.create_subprocess_exec(
        *args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        async with aiohttp.ClientSession() as session:
            client = UprClient(session, f"http://127.0.0.1:{port}/api", KEY, retry=FAST)
            for _ in range(100):
                try:
                    page = await client.persons_page()
                    break
                except UprConnectionError:
                    await asyncio.sleep(0.1)
            else:
                pytest.fail("the development server did not start")
        assert [p["id"] for p in page.persons] == ["p1"]
    finally:
        process.terminate()
        output, _ = await asyncio.wait_for(process.communicate(), 10)
    assert b"1 persons" in output
    assert KEY.encode() not in output
