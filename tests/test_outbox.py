"""The alert outbox against a real registry on 127.0.0.1: nothing lost, nothing twice."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pathlib
import shutil
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from upr_faces_engine.outbox import GLOBAL_FAILURES, Outbox, OutboxFullError
from upr_faces_engine.upr_client import (
    RetryPolicy,
    UprAuthError,
    UprClient,
    UprConnectionError,
)

from .upr_server import UprServer

KEY = "outbox-key-77"
FAST = RetryPolicy(attempts=2, backoff=0.01, max_backoff=0.02, max_retry_after=0.5)


def alert(n: int = 0, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "person_id": f"p{n}",
        "camera": "camera.gate",
        "tier": "match",
        "similarity": 0.6 + n / 1000,
        "detected_at": "2025-05-01T10:00:00Z",
        "snapshot_jpeg_b64": "/9j/4AAQ",
    }
    return body | changes


def verdict(kind: str = "confirmed") -> dict[str, Any]:
    return {"verdict": kind, "by": "agent", "comment": None, "at": "2025-05-01T10:01:00Z"}


@pytest.fixture
async def server(socket_enabled: None) -> AsyncIterator[UprServer]:
    async with UprServer(KEY) as srv:
        yield srv


@pytest.fixture
async def client(server: UprServer) -> AsyncIterator[UprClient]:
    async with aiohttp.ClientSession() as session:
        yield UprClient(session, server.url, KEY, retry=FAST, timeout=2)


def posts(server: UprServer) -> list[tuple[str, str, int]]:
    return [(p["kind"], p["id"], p["status"]) for p in server.received()["posts"]]


def assert_verdicts_follow_alerts(server: UprServer) -> None:
    created: set[str] = set()
    for kind, alert_id, status in posts(server):
        if kind == "alert":
            created.add(alert_id)
        else:
            assert alert_id in created, "a verdict went before its alert"
            assert status == 200


# --- delivery -----------------------------------------------------------------------------


async def test_registry_down_restart_then_back(tmp_path: Path, server: UprServer) -> None:
    """20 alerts while the registry is down, the process restarts, the registry comes
    back: exactly 20 received, in order, none twice; verdicts after their alerts."""
    await server.stop()
    async with aiohttp.ClientSession() as session:
        client = UprClient(session, server.url, KEY, retry=FAST, timeout=2)
        box = await Outbox.async_open(tmp_path / "outbox")
        alerts = [alert(n) for n in range(20)]
        for n, body in enumerate(alerts):
            await box.async_enqueue_alert(body)
            if n % 5 == 0:
                await box.async_enqueue_verdict(body["id"], verdict())
        assert box.pending == 24
        result = await box.flush(client)
        assert isinstance(result.error, UprConnectionError)
        assert (result.sent, result.remaining) == (0, 24)
        del box  # the process is gone

        box = await Outbox.async_open(tmp_path / "outbox")
        assert box.pending == 24
        await server.start()
        result = await box.flush(client)
    assert (result.sent, result.rejected, result.remaining, result.error) == (24, 0, 0, None)
    received = server.received()
    assert [a["id"] for a in received["alerts"]] == [a["id"] for a in alerts]
    assert received["alerts"] == alerts
    assert [p for p in posts(server) if p[0] == "alert"] == [
        ("alert", a["id"], 201) for a in alerts
    ]
    assert len(received["verdicts"]) == 4
    assert_verdicts_follow_alerts(server)
    assert list((tmp_path / "outbox").glob("*.json")) == []


async def test_verdict_waits_for_its_alert(
    tmp_path: Path, server: UprServer, client: UprClient
) -> None:
    box = Outbox(tmp_path, retry_initial=0)
    first = alert(1)
    box.enqueue_alert(first)
    box.enqueue_verdict(first["id"], verdict())
    server.fail(503, times=FAST.attempts, path="/alerts", method="POST")
    result = await box.flush(client)
    assert isinstance(result.item_error, UprConnectionError)
    assert (result.remaining, result.deferred, box.stuck) == (2, 2, 1)
    assert server.count(f"/alerts/{first['id']}/verdict", "POST") == 0
    result = await box.flush(client)
    assert result.sent == 2
    assert posts(server) == [("alert", first["id"], 201), ("verdict", first["id"], 200)]


async def test_verdict_for_an_unknown_alert_stays_then_goes(
    tmp_path: Path, server: UprServer, client: UprClient
) -> None:
    """A verdict answered 404 is kept (later items still go) until the registry knows the
    alert, and given up only after the grace period."""
    box = Outbox(tmp_path, verdict_grace=60, retry_initial=0)
    elsewhere = alert(9)  # sent by another instance, not yet at the registry
    box.enqueue_verdict(elsewhere["id"], verdict())
    box.enqueue_verdict(elsewhere["id"], verdict("rejected"))
    other = alert(2)
    box.enqueue_alert(other)
    result = await box.flush(client)
    assert (result.sent, result.deferred, result.remaining) == (1, 2, 2)
    assert box.stuck == 0  # waiting for an alert sent elsewhere is not being stuck
    assert (box.status()["stuck"], box.status()["stuck_since"]) == (0, None)
    # the second verdict of that alert was held behind the first, not sent
    assert server.count(f"/alerts/{elsewhere['id']}/verdict", "POST") == 1
    server.registry.receive_alert(elsewhere)
    result = await box.flush(client)
    assert (result.sent, result.remaining) == (2, 0)
    assert [v["verdict"] for v in server.received()["verdicts"]] == ["confirmed", "rejected"]


async def test_verdict_given_up_after_grace(
    tmp_path: Path, server: UprServer, client: UprClient
) -> None:
    box = Outbox(tmp_path, verdict_grace=0.0)
    box.enqueue_verdict(str(uuid.uuid4()), verdict())
    result = await box.flush(client)
    assert (result.rejected, result.remaining) == (1, 0)
    (dead,) = (tmp_path / "rejected").glob("*.json")
    assert "does not know this alert" in json.loads(dead.read_text())["reason"]


async def test_permanent_rejection_goes_to_dead_letters(
    tmp_path: Path, server: UprServer, client: UprClient, caplog: pytest.LogCaptureFixture
) -> None:
    box = Outbox(tmp_path, verdict_grace=3600)
    bad = alert(1, tier="certain")
    good = alert(2)
    box.enqueue_alert(bad)
    box.enqueue_verdict(bad["id"], verdict())
    box.enqueue_alert(good)
    result = await box.flush(client)
    assert (result.sent, result.rejected, result.remaining) == (1, 2, 0)
    assert box.rejected == 2
    assert server.received()["alerts"] == [good]
    dead = sorted((tmp_path / "rejected").glob("*.json"))
    records = [json.loads(path.read_text()) for path in dead]
    assert records[0]["status"] == 400
    assert "tier" in records[0]["reason"]
    assert records[0]["item"]["payload"] == bad
    assert records[1]["item"]["kind"] == "verdict"  # its alert was rejected: no use waiting
    assert "refused" in caplog.text
    # numbering goes on past the dead letters after a restart
    again = Outbox(tmp_path)
    assert again.rejected == 2
    seq = again.enqueue_alert(alert(3))
    assert seq > max(int(path.name[:12]) for path in dead)
    # they hold face crops: gone after the retention, not before
    old = time.time() - 31 * 86_400
    os.utime(dead[0], (old, old))
    assert again.prune_rejected(time.time() - 30 * 86_400) == 1
    assert sorted((tmp_path / "rejected").glob("*.json")) == dead[1:]
    assert again.rejected == 1


async def test_auth_failure_keeps_everything(
    tmp_path: Path, server: UprServer, client: UprClient
) -> None:
    box = Outbox(tmp_path, retry_initial=0)
    box.enqueue_alert(alert())
    server.fail(401, path="/alerts")
    result = await box.flush(client)
    assert isinstance(result.item_error, UprAuthError)
    assert result.remaining == 1
    assert (await box.flush(client)).sent == 1


async def test_alert_ids_unsafe_in_file_names(
    tmp_path: Path, server: UprServer, client: UprClient
) -> None:
    box = Outbox(tmp_path)
    box.enqueue_verdict("../../etc/passwd", verdict())
    names = [path.name for path in tmp_path.glob("*.json")]
    assert len(names) == 1
    assert "/" not in names[0]
    assert ".." not in names[0]
    with pytest.raises(ValueError, match="id"):
        box.enqueue_alert({"person_id": "p1"})
    with pytest.raises(ValueError, match="JSON"):
        box.enqueue_alert(alert(similarity=float("nan")))
    assert box.pending == 1


# --- bounds and listeners ------------------------------------------------------------------


async def test_full_outbox(
    tmp_path: Path, server: UprServer, client: UprClient, caplog: pytest.LogCaptureFixture
) -> None:
    box = Outbox(tmp_path, max_items=3)
    counts: list[int] = []
    remove = box.add_listener(counts.append)
    for n in range(3):
        box.enqueue_alert(alert(n))
    assert [box.full, box.pending] == [True, 3]
    for n in range(2):
        with pytest.raises(OutboxFullError) as info:
            box.enqueue_alert(alert(10 + n))
    assert info.value.key == "outbox_full"
    assert caplog.text.count("is full") == 1
    assert box.pending == 3
    await box.flush(client)
    assert [box.full, box.pending] == [False, 0]
    assert "has room again" in caplog.text
    assert counts == [1, 2, 3, 2, 1, 0]
    remove()
    box.enqueue_alert(alert(5))
    assert counts == [1, 2, 3, 2, 1, 0]


async def test_run_loop(tmp_path: Path, server: UprServer, client: UprClient) -> None:
    box = Outbox(tmp_path)
    stop = asyncio.Event()
    task = asyncio.create_task(box.run(client, stop, retry_initial=0.05, retry_max=0.2))
    try:
        first = alert(1)
        await box.async_enqueue_alert(first)
        await _until(lambda: box.pending == 0)
        assert server.received()["alerts"] == [first]

        await server.stop()  # down: the loop retries with a growing delay
        await box.async_enqueue_alert(alert(2))
        await asyncio.sleep(0.3)
        assert box.pending == 1
        await server.start()
        box.wake()
        await _until(lambda: box.pending == 0)
        assert len(server.received()["alerts"]) == 2
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def _until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110 - polling state owned by the outbox
            await asyncio.sleep(0.01)


# --- a process killed at any point ---------------------------------------------------------


class Killed(BaseException):
    """The process dies here."""


@contextmanager
def killed_at(step: int, folder: Path) -> Iterator[list[str]]:
    """Count the outbox's durable steps (fsync, rename, delete) and die at step ``step``."""
    seen: list[str] = []
    real_fsync, real_replace, real_unlink = os.fsync, os.replace, pathlib.Path.unlink

    def tick(name: str) -> None:
        seen.append(name)
        if len(seen) == step:
            raise Killed(name)

    def fsync(fd: int) -> None:
        tick("fsync")
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        tick("replace")
        real_replace(src, dst)

    def unlink(self: Path, missing_ok: bool = False) -> None:
        if folder in self.parents:
            tick("unlink")
        real_unlink(self, missing_ok=missing_ok)

    patch = pytest.MonkeyPatch()
    patch.setattr(os, "fsync", fsync)
    patch.setattr(os, "replace", replace)
    patch.setattr(pathlib.Path, "unlink", unlink)
    try:
        yield seen
    finally:
        patch.undo()


async def test_killed_at_any_point(tmp_path: Path, server: UprServer, client: UprClient) -> None:
    """Die at each durable step of enqueueing and flushing; reopen; flush: every alert
    whose enqueue returned reaches the registry, verdicts after their alerts."""
    rejected_body = alert(99, tier="certain")

    async def scenario(box: Outbox, taken: list[str]) -> None:
        bodies = [alert(n) for n in range(3)]
        for body in bodies:
            await box.async_enqueue_alert(body)
            taken.append(body["id"])
        await box.async_enqueue_verdict(bodies[0]["id"], verdict())
        await box.async_enqueue_alert(rejected_body)
        await box.flush(client)

    with killed_at(0, tmp_path) as steps:  # a clean run, to count the steps
        await scenario(Outbox(tmp_path / "count"), [])
    total = len(steps)
    assert total > 20, total
    for step in range(1, total + 1):
        server.registry.alerts.clear()
        server.registry.verdicts.clear()
        server.registry.posts.clear()
        folder = tmp_path / f"run{step}"
        taken: list[str] = []
        with killed_at(step, folder), pytest.raises(Killed):
            await scenario(Outbox(folder), taken)
        reopened = Outbox(folder)
        result = await reopened.flush(client)
        assert result.error is None, step
        assert result.remaining == 0, step
        received = set(server.registry.alerts)
        assert set(taken) <= received, f"lost an alert when killed at step {step}"
        assert_verdicts_follow_alerts(server)
        assert list(folder.glob(".*.tmp")) == []
        rejected = [json.loads(p.read_text()) for p in (folder / "rejected").glob("*.json")]
        assert all(r["item"]["alert_id"] == rejected_body["id"] for r in rejected)


async def test_torn_and_whole_temporary_files(
    tmp_path: Path, server: UprServer, client: UprClient
) -> None:
    box = Outbox(tmp_path)
    body = alert(1)
    box.enqueue_alert(body)
    (good,) = tmp_path.glob("*.json")
    # a write torn by a crash: half a record under the temporary name
    torn = tmp_path / ".000000000007.alert.abc.json.tmp"
    torn.write_bytes(good.read_bytes()[:40])
    # a whole record that was synced but not yet renamed
    whole_body = alert(2)
    whole = tmp_path / f".000000000008.alert.{whole_body['id']}.json.tmp"
    whole.write_text(
        json.dumps({"kind": "alert", "alert_id": whole_body["id"], "payload": whole_body})
    )
    (tmp_path / ".junk.tmp").write_text("x")
    # a final file damaged on disk
    (tmp_path / "000000000009.alert.zzz.json").write_bytes(b"\0\0\0")
    (tmp_path / "notes.txt").write_text("not ours")

    reopened = Outbox(tmp_path)
    assert reopened.pending == 3
    assert not torn.exists()
    assert not whole.exists()
    result = await reopened.flush(client)
    assert (result.sent, result.rejected, result.remaining) == (2, 1, 0)
    assert [a["id"] for a in server.received()["alerts"]] == [body["id"], whole_body["id"]]
    (dead,) = (tmp_path / "rejected").glob("*.json")
    assert "unreadable" in json.loads(dead.read_text())["reason"]
    assert (tmp_path / "notes.txt").exists()
    assert reopened.enqueue_alert(alert(3)) == 10


async def test_sent_but_not_deleted_is_sent_again_harmlessly(
    tmp_path: Path, server: UprServer, client: UprClient
) -> None:
    box = Outbox(tmp_path / "a")
    body = alert(1)
    box.enqueue_alert(body)
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # the disk as it was before the delete
    assert (await box.flush(client)).sent == 1
    again = Outbox(tmp_path / "b")
    assert (await again.flush(client)).sent == 1
    assert server.received()["alerts"] == [body]
    assert posts(server) == [("alert", body["id"], 201), ("alert", body["id"], 200)]


async def test_listener_failure_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    box = Outbox(tmp_path)

    def broken(_: int) -> None:
        raise RuntimeError("boom")

    box.add_listener(broken)
    with caplog.at_level(logging.ERROR):
        box.enqueue_alert(alert())
    assert box.pending == 1
    assert "listener failed" in caplog.text


async def test_no_alerts_endpoint_keeps_everything(
    tmp_path: Path, server: UprServer, client: UprClient
) -> None:
    """A 404 on /alerts is a wrong URL, not a bad alert: nothing is set aside."""
    box = Outbox(tmp_path, retry_initial=0)
    box.enqueue_alert(alert())
    server.fail(404, path="/alerts", method="POST")
    result = await box.flush(client)
    assert result.item_error is not None
    assert (result.rejected, result.remaining) == (0, 1)
    assert not result.delivered_all
    assert (await box.flush(client)).delivered_all


async def test_run_loop_honours_a_long_retry_after(
    tmp_path: Path, server: UprServer, client: UprClient
) -> None:
    box = Outbox(tmp_path)
    box.enqueue_alert(alert())
    server.fail(429, retry_after="3600", path="/alerts")
    stop = asyncio.Event()
    task = asyncio.create_task(box.run(client, stop, retry_initial=0.01, retry_max=0.3))
    try:
        await asyncio.sleep(0.15)
        assert box.pending == 1  # waiting (at most retry_max), not hammering
        assert server.count("/alerts", "POST") == 1
        await _until(lambda: box.pending == 0)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    with pytest.raises(ValueError, match="alert's id"):
        box.enqueue_verdict("", verdict())


async def test_async_enqueue_tells_listeners_on_the_loop(tmp_path: Path) -> None:
    box = await Outbox.async_open(tmp_path)
    threads: list[int] = []
    box.add_listener(lambda _: threads.append(threading.get_ident()))
    body = alert()
    await box.async_enqueue_alert(body)
    await box.async_enqueue_verdict(body["id"], verdict())
    assert threads == [threading.get_ident()] * 2
    assert box.pending == 2


# --- one item the registry never takes ----------------------------------------------------


@pytest.mark.parametrize("status", [500, 429, 404, 401])
async def test_an_alert_the_registry_never_takes_holds_up_nothing(
    tmp_path: Path,
    server: UprServer,
    client: UprClient,
    status: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Ten alerts, three of which the registry answers ``status`` forever (two of them one
    after the other): the seven others are delivered in order, the three wait on their own
    backoff, counted as stuck since their enqueue, logged once each; their verdicts stay
    behind them. Once the registry takes them, everything arrives, each verdict after its
    alert, and nothing is stuck."""
    box = Outbox(tmp_path)
    alerts = [alert(n) for n in range(10)]
    stuck_ids = {alerts[n]["id"] for n in (1, 2, 6)}
    for body in alerts:
        if body["id"] in stuck_ids:
            server.registry.refused[body["id"]] = status
    before = time.time()
    for body in alerts:
        await box.async_enqueue_alert(body)
    await box.async_enqueue_verdict(alerts[2]["id"], verdict())
    stop = asyncio.Event()
    task = asyncio.create_task(box.run(client, stop, retry_initial=0.05, retry_max=0.2))
    try:
        await _until(lambda: len(server.received()["alerts"]) == 7)
        await asyncio.sleep(0.5)  # several backoff rounds of the stuck ones
        delivered = [a["id"] for a in server.received()["alerts"]]
        assert delivered == [a["id"] for a in alerts if a["id"] not in stuck_ids]
        assert server.received()["verdicts"] == []
        state = box.status()
        assert (state["pending"], state["stuck"]) == (4, 3)
        assert before <= state["stuck_since"] <= time.time()
        assert str(status) in state["stuck_error"]
        tries = [p for p in posts(server) if p[1] in stuck_ids]
        assert len(tries) >= 3 * 2  # tried again, not given up
        assert caplog.text.count("is retried on its own") == 3

        server.registry.refused.clear()
        await _until(lambda: box.pending == 0)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    assert sorted(a["id"] for a in server.received()["alerts"]) == sorted(a["id"] for a in alerts)
    assert_verdicts_follow_alerts(server)
    assert box.status()["stuck"] == 0
    assert "no item is stuck any more" in caplog.text


async def test_a_registry_failing_everything_stops_the_flush(
    tmp_path: Path, server: UprServer, client: UprClient
) -> None:
    """When items of different alerts fail one after the other, it is the registry, not
    an item: the flush stops after a few, the rest is not tried in vain."""
    box = Outbox(tmp_path)
    for n in range(10):
        box.enqueue_alert(alert(n))
    server.fail(503, times=1000, path="/alerts", method="POST")
    result = await box.flush(client)
    assert isinstance(result.error, UprConnectionError)
    assert server.count("/alerts", "POST") == GLOBAL_FAILURES * FAST.attempts
    assert (result.remaining, result.sent) == (10, 0)
