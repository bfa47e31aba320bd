"""The alert outbox: alerts and verdicts for the UPR registry, kept on disk until it took them.

Layout: one JSON file per item in ``folder``, named ``<seq>.<kind>.<alert key>.json`` where
``seq`` is a 12-digit sequence number that only grows. Why files and not a journal: each
item is written once (to ``.<name>.tmp``, fsync, atomic rename, fsync of the folder) and
deleted once acknowledged; there is nothing to compact and no torn tail to repair, a
half-written temporary file is recognisable by its name, and the folder listing alone
rebuilds the queue (the kind and the alert are in the name), so a restart reads no
snapshot. 10 000 small files are nothing for a file system.

Rules:

* An item is on disk before :meth:`Outbox.enqueue_alert` / :meth:`Outbox.enqueue_verdict`
  return, so before any attempt to send it. A process killed at any point loses nothing:
  a temporary file that holds a whole item is kept on reopening, a torn one is deleted
  (its enqueue never returned). Sending twice is harmless: alerts carry their own id.
* Items go in sequence order, and the items of one alert (the alert, then its verdicts)
  in their order. An item the registry fails on (5xx, 429, 401/403, a 404 on ``/alerts``
  after the retries) waits with a backoff of its own (doubling from ``retry_initial`` to
  ``retry_max``, ``Retry-After`` honoured) while later items of other alerts go on: one
  alert the registry never takes does not hold up the others. It counts as *stuck* (see
  :meth:`Outbox.status`) until it is delivered. When the registry cannot be reached at all
  (no connection, timeouts), or fails on :data:`GLOBAL_FAILURES` items in a row, the flush
  stops: what follows waits for the next try.
* An item leaves only when the registry acknowledged it (200/201), or when the registry
  refused it for good (a 4xx other than 401/403/404/429): then it moves to ``rejected/``
  with the reason. Nothing is dropped silently; ``rejected/`` is pruned after the
  retention (:meth:`Outbox.prune_rejected`).
* A verdict is never sent while its alert is still in the outbox. A verdict answered 404
  (the registry does not know the alert) stays, and later items of the same alert wait
  behind it; it moves to ``rejected/`` once its alert was itself rejected, or after
  ``verdict_grace`` seconds of 404s.
* At most ``max_items`` pending items; past that, enqueueing raises
  :class:`OutboxFullError` (logged once until there is room again).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

from .errors import UprFacesError
from .upr_client import UprClient, UprConnectionError, UprNotFoundError, UprRejectedError

_LOGGER = logging.getLogger(__name__)

DEFAULT_MAX_ITEMS: Final = 10_000
DEFAULT_VERDICT_GRACE: Final = 3600.0
DEFAULT_RETRY_INITIAL: Final = 5.0
DEFAULT_RETRY_MAX: Final = 300.0
GLOBAL_FAILURES: Final = 3
"""Items of different alerts failing in a row that stop a flush (the registry, not an item)."""
REJECTED_FOLDER: Final = "rejected"
_FORMAT: Final = 1
_NAME = re.compile(r"(?P<seq>\d{12})\.(?P<kind>alert|verdict)\.(?P<key>[A-Za-z0-9_-]{1,64})\.json")
_SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")

type Kind = Literal["alert", "verdict"]


class OutboxFullError(UprFacesError):
    """The outbox holds ``max_items`` items already: this one was not taken."""

    key = "outbox_full"


@dataclass(frozen=True, slots=True)
class FlushResult:
    """What one :meth:`Outbox.flush` did. ``error`` is the failure that stopped it (the
    registry as a whole); ``item_error`` the last failure of a single item; ``retry_in``
    the seconds until the first item waiting on its own backoff may be tried again."""

    sent: int = 0
    rejected: int = 0
    deferred: int = 0
    remaining: int = 0
    error: UprFacesError | None = None
    item_error: UprFacesError | None = None
    retry_in: float | None = None

    @property
    def delivered_all(self) -> bool:
        """True when the outbox is empty."""
        return self.remaining == 0


@dataclass(frozen=True, slots=True)
class _Item:
    seq: int
    kind: Kind
    alert_key: str
    enqueued: float = 0.0  # wall clock (the file's time after a restart)

    @property
    def name(self) -> str:
        return f"{self.seq:012d}.{self.kind}.{self.alert_key}.json"


@dataclass(slots=True)
class _Failure:
    """An item the registry failed on: how often, the last error, when to try it again."""

    attempts: int
    next_try: float  # monotonic
    error: str
    stuck: bool  # False: a verdict whose alert the registry does not know yet


def _alert_key(alert_id: str) -> str:
    """The alert's id when it is safe in a file name, else a hash of it."""
    if _SAFE_ID.fullmatch(alert_id):
        return alert_id
    return "h" + hashlib.sha256(alert_id.encode()).hexdigest()[:40]


def _alert_id(payload: Mapping[str, Any]) -> str:
    alert_id = payload.get("id")
    if not isinstance(alert_id, str) or not alert_id:
        raise ValueError("an alert needs a string 'id'")
    return alert_id


def _verdict_of(alert_id: Any) -> str:
    if not isinstance(alert_id, str) or not alert_id:
        raise ValueError("a verdict needs the alert's id")
    return alert_id


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform can open a folder
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all (temporary file, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_folder(path.parent)


def _is_record(data: Any) -> bool:
    return (
        isinstance(data, dict)
        and data.get("kind") in ("alert", "verdict")
        and isinstance(data.get("alert_id"), str)
        and isinstance(data.get("payload"), dict)
    )


class Outbox:
    """The persistent outbox. Construct it in a thread (it lists its folder) or with
    :meth:`async_open`. Enqueueing is thread-safe; flushing belongs to one event loop."""

    def __init__(
        self,
        folder: Path,
        *,
        max_items: int = DEFAULT_MAX_ITEMS,
        verdict_grace: float = DEFAULT_VERDICT_GRACE,
        retry_initial: float = DEFAULT_RETRY_INITIAL,
        retry_max: float = DEFAULT_RETRY_MAX,
    ) -> None:
        self.folder = Path(folder)
        self.rejected_folder = self.folder / REJECTED_FOLDER
        self.max_items = max_items
        self.verdict_grace = verdict_grace
        self._lock = threading.Lock()
        self._items: dict[int, _Item] = {}
        self._seqs: list[int] = []
        self._pending_alerts: Counter[str] = Counter()
        self._rejected_alerts: set[str] = set()
        self._rejected_count = 0
        self._reserved = 0
        self._next_seq = 1
        self._full_logged = False
        self._not_found_since: dict[int, float] = {}
        self._failures: dict[int, _Failure] = {}
        self._was_stuck = False
        self.retry_initial = retry_initial  # an item's own backoff (run() sets them too)
        self.retry_max = retry_max
        self._listeners: list[Callable[[int], None]] = []
        self._flush_lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._new_item: asyncio.Event | None = None
        self._kick: asyncio.Event | None = None
        self._load()

    @classmethod
    async def async_open(cls, folder: Path, **kwargs: Any) -> Outbox:
        """Open (or create) the outbox in a thread."""
        return await asyncio.to_thread(lambda: cls(folder, **kwargs))

    # --- state --------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Items waiting for the registry."""
        return len(self._items)

    @property
    def full(self) -> bool:
        """True when no further item would be taken."""
        return len(self._items) + self._reserved >= self.max_items

    @property
    def rejected(self) -> int:
        """Items in ``rejected/`` (the registry refused them for good)."""
        return self._rejected_count

    @property
    def stuck(self) -> int:
        """Pending items the registry failed on at least once."""
        return sum(1 for failure in list(self._failures.values()) if failure.stuck)

    def status(self) -> dict[str, Any]:
        """Pending, rejected and stuck counts, and since when the oldest stuck item waits
        (its enqueue time, Unix seconds) with its last error."""
        with self._lock:
            stuck = [
                (self._items[seq], failure)
                for seq, failure in self._failures.items()
                if failure.stuck and seq in self._items
            ]
        oldest = min(stuck, key=lambda pair: pair[0].enqueued, default=None)
        return {
            "pending": self.pending,
            "rejected": self.rejected,
            "stuck": len(stuck),
            "stuck_since": oldest[0].enqueued if oldest else None,
            "stuck_error": oldest[1].error if oldest else None,
        }

    def add_listener(self, callback: Callable[[int], None]) -> Callable[[], None]:
        """Call ``callback(pending)`` whenever the pending count changes; returns the
        function that removes it. Called in the thread that made the change: the event
        loop's for flushes and the ``async_enqueue_*`` methods, the caller's for the
        blocking ``enqueue_*`` ones."""
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback)

    # --- enqueue ------------------------------------------------------------------------

    def enqueue_alert(self, payload: Mapping[str, Any]) -> int:
        """Store an alert (``payload`` is the body of ``POST /alerts``, with its ``id``)
        durably; returns its sequence number. Blocking: call it from a thread."""
        return self._enqueued(self._store("alert", _alert_id(payload), payload))

    def enqueue_verdict(self, alert_id: str, payload: Mapping[str, Any]) -> int:
        """Store a verdict on an alert durably; it is sent after the alert. Blocking."""
        return self._enqueued(self._store("verdict", _verdict_of(alert_id), payload))

    async def async_enqueue_alert(self, payload: Mapping[str, Any]) -> int:
        """:meth:`enqueue_alert`, the disk work in a thread, listeners called here."""
        alert_id = _alert_id(payload)
        return self._enqueued(await asyncio.to_thread(self._store, "alert", alert_id, payload))

    async def async_enqueue_verdict(self, alert_id: str, payload: Mapping[str, Any]) -> int:
        """:meth:`enqueue_verdict`, the disk work in a thread, listeners called here."""
        alert_id = _verdict_of(alert_id)
        stored = await asyncio.to_thread(self._store, "verdict", alert_id, payload)
        return self._enqueued(stored)

    def _enqueued(self, stored: tuple[int, int]) -> int:
        seq, pending = stored
        self._notify(pending)
        self._signal(new=True)
        return seq

    def _store(self, kind: Kind, alert_id: str, payload: Mapping[str, Any]) -> tuple[int, int]:
        """Write one item durably; its sequence number and the pending count after it."""
        record = {
            "format": _FORMAT,
            "kind": kind,
            "alert_id": alert_id,
            "enqueued_at": _now(),
            "payload": dict(payload),
        }
        data = json.dumps(record, allow_nan=False, separators=(",", ":")).encode()
        with self._lock:
            if len(self._items) + self._reserved >= self.max_items:
                if not self._full_logged:
                    self._full_logged = True
                    _LOGGER.warning(
                        "UPR outbox %s is full (%d items): new alerts and verdicts are "
                        "refused until the registry takes some",
                        self.folder,
                        self.max_items,
                    )
                raise OutboxFullError(f"the UPR outbox is full ({self.max_items} items)")
            item = _Item(self._next_seq, kind, _alert_key(alert_id), time.time())
            self._next_seq += 1
            self._reserved += 1
        try:
            _write_atomic(self.folder / item.name, data)
        except BaseException:
            with self._lock:
                self._reserved -= 1
            raise
        with self._lock:
            self._reserved -= 1
            self._add(item)
            return item.seq, len(self._items)

    # --- delivery -----------------------------------------------------------------------

    async def flush(self, client: UprClient) -> FlushResult:
        """Send what is pending, in order, skipping items that wait on their own backoff,
        until done or until the registry as a whole fails."""
        async with self._flush_lock:
            sent = rejected = deferred = 0
            error: UprFacesError | None = None
            item_error: UprFacesError | None = None
            held: set[str] = set()  # alerts whose later items must wait for an earlier one
            in_a_row = 0  # items of different alerts failed one after the other
            last = 0
            while (item := self._next_after(last)) is not None:
                last = item.seq
                failure = self._failures.get(item.seq)
                if (
                    item.alert_key in held
                    or (item.kind == "verdict" and self._alert_pending_before(item))
                    or (failure is not None and failure.next_try > time.monotonic())
                ):
                    held.add(item.alert_key)
                    deferred += 1
                    continue
                try:
                    record = await asyncio.to_thread(self._read, item)
                except (OSError, ValueError) as err:
                    await self._reject(item, f"unreadable item: {err}")
                    rejected += 1
                    continue
                try:
                    if item.kind == "alert":
                        await client.post_alert(record["payload"])
                    else:
                        await client.post_verdict(record["alert_id"], record["payload"])
                except UprRejectedError as err:
                    await self._reject(item, str(err), status=err.status)
                    rejected += 1
                    continue
                except UprNotFoundError as err:
                    if item.kind == "verdict" and self._verdict_given_up(item):
                        await self._reject(
                            item, f"the registry does not know this alert: {err}", status=404
                        )
                        rejected += 1
                        continue
                    if item.kind == "verdict":  # its alert may come from elsewhere later
                        self._failed(item, err, stuck=False)
                        held.add(item.alert_key)
                        deferred += 1
                        continue
                    item_error = err  # no /alerts, or not for this alert: see below
                except UprConnectionError as err:
                    # raised from the transport's error when nothing answered at all
                    if err.__cause__ is not None:  # the registry is down, not this item
                        error = err
                        break
                    item_error = err  # 5xx or 429 after the retries
                except UprFacesError as err:
                    item_error = err
                else:
                    await asyncio.to_thread(self._unlink, item)
                    self._forget(item)
                    sent += 1
                    in_a_row = 0
                    continue
                self._failed(item, item_error)
                held.add(item.alert_key)
                deferred += 1
                in_a_row += 1
                if in_a_row >= GLOBAL_FAILURES:  # not one item: the registry
                    error = item_error
                    break
            return FlushResult(
                sent, rejected, deferred, len(self._items), error, item_error, self._retry_in()
            )

    def _failed(self, item: _Item, err: UprFacesError, *, stuck: bool = True) -> None:
        """Note a failure of ``item``: its next try after a backoff of its own."""
        failure = self._failures.get(item.seq)
        if failure is None:
            if stuck:
                _LOGGER.warning(
                    "UPR outbox: the registry did not take %s %s (%s); it is retried on its "
                    "own while later items go on",
                    item.kind,
                    item.seq,
                    err,
                )
            failure = self._failures[item.seq] = _Failure(0, 0.0, "", stuck)
        failure.attempts += 1
        failure.error = str(err)
        wait = min(self.retry_initial * 2 ** (failure.attempts - 1), self.retry_max)
        if isinstance(err, UprConnectionError) and err.retry_after:
            wait = max(wait, min(err.retry_after, self.retry_max))
        failure.next_try = time.monotonic() + wait

    def _retry_in(self) -> float | None:
        if not self._failures:
            return None
        first = min(failure.next_try for failure in self._failures.values())
        return max(0.0, first - time.monotonic())

    async def run(
        self,
        client: UprClient,
        stop: asyncio.Event,
        *,
        retry_initial: float = DEFAULT_RETRY_INITIAL,
        retry_max: float = DEFAULT_RETRY_MAX,
    ) -> None:
        """Deliver until ``stop`` is set: at once when something is enqueued (also while an
        item waits on its own backoff), each stuck item again when its backoff ends, and
        with a growing delay (``Retry-After`` honoured, at most ``retry_max``) while the
        registry as a whole fails; new items do not cut that delay short, :meth:`wake`
        does (after a reauth, say)."""
        self._loop = asyncio.get_running_loop()
        self._new_item, self._kick = asyncio.Event(), asyncio.Event()
        self.retry_initial, self.retry_max = retry_initial, retry_max
        delay = retry_initial
        failing = False
        try:
            while not stop.is_set():
                self._new_item.clear()
                self._kick.clear()
                try:
                    result = await self.flush(client)
                except OSError as err:  # the disk failed us: log, wait, try again
                    _LOGGER.error("UPR outbox %s: %s", self.folder, err)
                    await _wait_first(delay, stop, self._kick)
                    delay = min(delay * 2, retry_max)
                    continue
                if result.error is None:
                    if failing:
                        _LOGGER.info("UPR outbox: the registry takes alerts again")
                    failing, delay = False, retry_initial
                    if self._was_stuck and not self.stuck:
                        _LOGGER.info("UPR outbox: no item is stuck any more")
                    self._was_stuck = self.stuck > 0
                    # new items go at once; stuck ones when their own backoff ends
                    await _wait_first(result.retry_in, stop, self._new_item, self._kick)
                    continue
                wait = delay
                if isinstance(result.error, UprConnectionError) and result.error.retry_after:
                    wait = max(wait, min(result.error.retry_after, retry_max))
                if not failing:
                    _LOGGER.warning(
                        "UPR outbox: %d item(s) wait for the registry (%s); retrying",
                        result.remaining,
                        result.error,
                    )
                    failing = True
                delay = min(delay * 2, retry_max)
                await _wait_first(wait, stop, self._kick)
        finally:
            self._loop = self._new_item = self._kick = None

    def prune_rejected(self, before: float) -> int:
        """Delete the items in ``rejected/`` set aside before ``before`` (Unix seconds):
        they hold face crops, kept no longer than the retention. Blocking."""
        removed = 0
        for path in self.rejected_folder.glob("*.json"):
            try:
                if path.stat().st_mtime < before:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        with self._lock:
            self._rejected_count = max(0, self._rejected_count - removed)
        return removed

    def wake(self) -> None:
        """Try again now (thread-safe), cutting short a wait after a failure."""
        self._signal(new=False)

    # --- internals ----------------------------------------------------------------------

    def _signal(self, *, new: bool) -> None:
        loop, event = self._loop, self._new_item if new else self._kick
        if loop is None or event is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(event.set)

    def _notify(self, pending: int) -> None:
        for callback in list(self._listeners):
            try:
                callback(pending)
            except Exception:
                _LOGGER.exception("UPR outbox listener failed")

    def _add(self, item: _Item) -> None:
        self._items[item.seq] = item
        bisect.insort(self._seqs, item.seq)
        if item.kind == "alert":
            self._pending_alerts[item.alert_key] += 1

    def _forget(self, item: _Item) -> None:
        with self._lock:
            if self._items.pop(item.seq, None) is None:
                return
            del self._seqs[bisect.bisect_left(self._seqs, item.seq)]
            if item.kind == "alert":
                self._pending_alerts[item.alert_key] -= 1
                if self._pending_alerts[item.alert_key] <= 0:
                    del self._pending_alerts[item.alert_key]
            self._not_found_since.pop(item.seq, None)
            self._failures.pop(item.seq, None)
            pending = len(self._items)
            if self._full_logged and pending + self._reserved < self.max_items:
                self._full_logged = False
                _LOGGER.warning("UPR outbox %s has room again", self.folder)
        self._notify(pending)

    def _next_after(self, seq: int) -> _Item | None:
        with self._lock:
            index = bisect.bisect_right(self._seqs, seq)
            return self._items[self._seqs[index]] if index < len(self._seqs) else None

    def _alert_pending_before(self, item: _Item) -> bool:
        # Alerts are enqueued before their verdicts, so a pending alert is an earlier one.
        with self._lock:
            return self._pending_alerts.get(item.alert_key, 0) > 0

    def _verdict_given_up(self, item: _Item) -> bool:
        if item.alert_key in self._rejected_alerts:
            return True
        first = self._not_found_since.setdefault(item.seq, time.monotonic())
        return time.monotonic() - first >= self.verdict_grace

    def _read(self, item: _Item) -> dict[str, Any]:
        record = json.loads((self.folder / item.name).read_bytes())
        if not _is_record(record):
            raise ValueError("not an outbox item")
        return dict(record)

    def _unlink(self, item: _Item) -> None:
        (self.folder / item.name).unlink(missing_ok=True)

    async def _reject(self, item: _Item, reason: str, *, status: int | None = None) -> None:
        _LOGGER.warning("UPR outbox: the registry refused %s %s: %s", item.kind, item.seq, reason)
        await asyncio.to_thread(self._move_to_rejected, item, reason, status)
        if item.kind == "alert":
            self._rejected_alerts.add(item.alert_key)
        self._rejected_count += 1
        self._forget(item)

    def _move_to_rejected(self, item: _Item, reason: str, status: int | None) -> None:
        source = self.folder / item.name
        try:
            raw = source.read_bytes()
        except FileNotFoundError:
            return
        entry: dict[str, Any] = {"reason": reason, "status": status, "rejected_at": _now()}
        try:
            entry["item"] = json.loads(raw)
        except ValueError:
            entry["raw"] = raw.decode("utf-8", "replace")
        _write_atomic(self.rejected_folder / item.name, json.dumps(entry).encode())
        source.unlink(missing_ok=True)

    def _load(self) -> None:
        """Rebuild the queue from the folder; finish or remove interrupted writes."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.rejected_folder.mkdir(exist_ok=True)
        highest = 0
        for name in os.listdir(self.rejected_folder):
            if name.startswith(".") and name.endswith(".tmp"):
                (self.rejected_folder / name).unlink(missing_ok=True)
            elif match := _NAME.fullmatch(name):
                highest = max(highest, int(match["seq"]))
                self._rejected_count += 1
                if match["kind"] == "alert":
                    self._rejected_alerts.add(match["key"])
        names = set(os.listdir(self.folder))
        for name in sorted(names):
            if name.startswith(".") and name.endswith(".tmp"):
                final = name[1:-4]
                if _NAME.fullmatch(final) and final not in names and self._whole(name):
                    os.replace(self.folder / name, self.folder / final)
                    _fsync_folder(self.folder)
                    names.add(final)
                    _LOGGER.info("UPR outbox: kept %s, written whole before a stop", final)
                else:
                    (self.folder / name).unlink(missing_ok=True)
        for name in names:
            if match := _NAME.fullmatch(name):
                seq = int(match["seq"])
                highest = max(highest, seq)
                kind: Kind = "alert" if match["kind"] == "alert" else "verdict"
                try:
                    enqueued = (self.folder / name).stat().st_mtime
                except OSError:
                    enqueued = time.time()
                self._add(_Item(seq, kind, match["key"], enqueued))
        self._next_seq = highest + 1
        if self._items:
            _LOGGER.debug("UPR outbox %s: %d item(s) pending", self.folder, len(self._items))

    def _whole(self, name: str) -> bool:
        try:
            return _is_record(json.loads((self.folder / name).read_bytes()))
        except (OSError, ValueError):
            return False


async def _wait_first(seconds: float | None, *events: asyncio.Event) -> None:
    """Wait until one of ``events`` is set, or ``seconds`` (None: no limit)."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
