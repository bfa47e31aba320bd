"""Gallery sync: the UPR registry's persons turned into a local :class:`Gallery`.

The first sync reads the whole list; later ones pass the cursor kept from the last one and
get only what changed (``full: true`` in an answer starts again from nothing). Photos are
downloaded and embedded here, through the embedding cache (photo sha256 + model identity),
so an unchanged photo is never embedded twice, and never downloaded again when the
registry gives its sha256. Embeddings the registry computed itself are used instead of the
photos when their ``model`` names the local recognizer and their size matches.

A sync is all or nothing: it works on a copy and, at the end, writes the gallery and the
cursor together in one file (``<folder>/gallery.npz``, cursor in its ``meta``), then swaps
the new gallery in. If the registry fails half-way, the previous gallery and cursor stay.
A restart with the registry down still matches, from that file; ``synced_at`` says how old
it is.

Closed persons are kept without references (their photos are not fetched) and deleted ones
are removed: both stop matching as soon as the sync ends. Every malformed entry and every bad
photo (an unparsable URL, a failed download, bytes that are no image, too many pixels, no
face...) is skipped and counted by reason in :attr:`SyncReport.skipped`; one bad entry never
stops a sync. Only the registry itself failing (unreachable, 5xx, a refused key, an answer
that is not a page) stops it, with one of the client's errors.

A person id that comes twice in one sync (in one page or in two) is counted in
:attr:`SyncReport.duplicates`: the **last** entry wins (in answer order, the newest state of
a registry that pages by change), the earlier ones are dropped. Paging must progress: a
``next_cursor`` seen before in the pass, more than :data:`MAX_IDLE_PAGES` pages that bring
no person not already seen in the pass, or :data:`MAX_PAGES` pages stop the sync
(:class:`UprPagingError`); the previous gallery stays in use.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from .analyzer import Analyzer, PhotoEmbedding
from .errors import ImageError
from .gallery import (
    CACHE_FILE,
    GALLERY_FILE,
    BuildReport,
    EmbeddingCache,
    FloatArray,
    Gallery,
    Person,
    embed_photo_cached,
)
from .upr_client import (
    DEFAULT_PAGE_LIMIT,
    InvalidEntryError,
    RemotePerson,
    RemotePhoto,
    UprClient,
    UprConnectionError,
    UprNotFoundError,
    UprPagingError,
    UprRejectedError,
    UprResponseError,
    UprTooLargeError,
    parse_person,
)

_LOGGER = logging.getLogger(__name__)

MAX_PAGES: Final = 100_000
MAX_IDLE_PAGES: Final = 10
"""Pages with ``has_more: true`` that bring no person not already seen in the pass (empty,
junk only, repeats only) a sync accepts before it stops: paging that makes no progress."""
SOURCE: Final = "upr"
BROKEN_ANALYZER_FAILURES: Final = 3
"""Photos the analyzer failed on, with none embedded, that stop a sync: the analyzer is
broken, not the photos (the previous gallery stays in use)."""

type Progress = Callable[[str], None]


@dataclass(slots=True)
class SyncReport(BuildReport):
    """What a sync did. ``persons`` counts the persons who can match now, ``references``
    their embeddings, ``skipped`` every malformed entry and bad photo by reason;
    ``duplicates`` the entries dropped because a later one of the sync had the same id
    (also in ``skipped`` as ``duplicate_id``, which is what the engine passes on)."""

    full: bool = False
    pages: int = 0
    updated: int = 0
    removed: int = 0
    closed: int = 0
    downloaded: int = 0
    remote_embeddings: int = 0
    duplicates: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            **BuildReport.as_dict(self),
            "full": self.full,
            "pages": self.pages,
            "updated": self.updated,
            "removed": self.removed,
            "closed": self.closed,
            "downloaded": self.downloaded,
            "remote_embeddings": self.remote_embeddings,
            "duplicates": self.duplicates,
        }


class GallerySync:
    """Keeps a gallery in step with the registry; one instance per config entry.

    ``folder`` holds ``gallery.npz`` (gallery, cursor, last sync time). ``cache`` is the
    embedding cache; the caller opens and closes it.
    """

    def __init__(
        self,
        client: UprClient,
        analyzer: Analyzer,
        folder: Path,
        *,
        cache: EmbeddingCache | None = None,
        page_limit: int = DEFAULT_PAGE_LIMIT,
        concurrency: int = 4,
        progress: Progress | None = None,
    ) -> None:
        self.client = client
        self.analyzer = analyzer
        self.folder = Path(folder)
        self.cache = cache
        self.page_limit = page_limit
        self._concurrency = max(1, concurrency)
        self._progress = progress
        self._gallery: Gallery | None = None
        self._lock = asyncio.Lock()
        self._embed_lock = asyncio.Lock()
        self._duplicates_told = False

    @property
    def path(self) -> Path:
        """The gallery file."""
        return self.folder / GALLERY_FILE

    @property
    def gallery(self) -> Gallery | None:
        """The current gallery: the last synced one, or the one loaded from disk."""
        return self._gallery

    @property
    def cursor(self) -> str | None:
        """The registry's cursor after the last sync (None: the next sync is a full one)."""
        cursor = self._gallery.meta.get("cursor") if self._gallery is not None else None
        return cursor if isinstance(cursor, str) else None

    @property
    def synced_at(self) -> float | None:
        """When the gallery was last synced (seconds since the epoch), or None."""
        return self._gallery.synced_at if self._gallery is not None else None

    def is_stale(self, max_age: float, now: float | None = None) -> bool:
        """True when never synced, or synced more than ``max_age`` seconds ago."""
        synced = self.synced_at
        return synced is None or (now if now is not None else time.time()) - synced > max_age

    async def async_load(self) -> Gallery | None:
        """Read the gallery of the last sync from disk (in a thread).

        A file that is missing, unreadable, made with another recognizer or for another
        registry is ignored (the next sync is then a full one).
        """
        gallery = await asyncio.to_thread(self._read_saved)
        if gallery is not None:
            self._gallery = gallery
        return gallery

    def _read_saved(self) -> Gallery | None:
        if not self.path.is_file():
            return None
        try:
            gallery = Gallery.load(self.path)
        except ValueError as err:
            _LOGGER.warning("Synced gallery ignored: %s", err)
            return None
        if gallery.model_id != self.analyzer.model_id:
            _LOGGER.info("Synced gallery made with %s: a full sync follows", gallery.model_id)
            return None
        if gallery.meta.get("photo_key", self.analyzer.photo_key) != self.analyzer.photo_key:
            # its embeddings still compare (same recognizer): matching goes on with them
            # while a full sync embeds every photo again with this detector
            _LOGGER.info("Synced gallery made with other detector settings: a full sync follows")
            gallery.meta["cursor"] = None
        if gallery.meta.get("source") != SOURCE or gallery.meta.get("api_url") != (
            self.client.base_url
        ):
            _LOGGER.info("Synced gallery is from another registry: a full sync follows")
            return None
        return gallery

    async def sync(self, *, full: bool = False) -> SyncReport:
        """Sync with the registry and swap the new gallery in; returns what it did.

        Raises the client's errors (:class:`UprAuthError`, :class:`UprConnectionError`,
        :class:`UprResponseError`, its :class:`UprPagingError`) when the registry cannot be
        read: the previous gallery and cursor are kept then. What is wrong in one entry or
        one photo is never raised: it is skipped and counted.
        """
        async with self._lock:
            start_cursor = None if full else self.cursor
            try:
                gallery, report = await self._sync(start_cursor)
            except UprRejectedError:
                if start_cursor is None:
                    raise
                # An expired or unknown cursor: start again from the whole list.
                _LOGGER.info("The registry refused the sync cursor: full sync")
                gallery, report = await self._sync(None)
            await asyncio.to_thread(gallery.save, self.path)
            self._gallery = gallery
            self._say(
                f"synced: {report.persons} persons can match, {report.references} references"
                + (f", skipped {dict(sorted(report.skipped.items()))}" if report.skipped else "")
            )
            return report

    async def _sync(self, cursor: str | None) -> tuple[Gallery, SyncReport]:
        report = SyncReport(full=cursor is None)
        previous = self._gallery if cursor is not None else None
        persons: dict[str, Person] = dict(previous.persons) if previous is not None else {}
        refs: dict[str, list[FloatArray]] = {}
        if previous is not None:
            for person_id, vector in previous.references():
                refs.setdefault(person_id, []).append(vector)
        seen_cursors: set[str] = set()
        seen_ids: set[str] = set()  # the persons of this pass, for duplicates and progress
        idle_pages = 0
        next_cursor = cursor
        while True:
            page = await self.client.persons_page(next_cursor, self.page_limit)
            report.pages += 1
            if page.full and not report.full:  # "forget what you had, this is all"
                persons.clear()
                refs.clear()
                seen_ids.clear()
                report.full = True
            self._say(f"page {report.pages}: {len(page.persons)} entries")
            remotes = self._read_page(page.persons, report)
            new_ids = {remote.id for remote in remotes} - seen_ids
            for remote in remotes:
                if remote.id in seen_ids:  # came on an earlier page: this one wins
                    self._duplicate(remote.id, report)
            seen_ids |= new_ids
            results = await self._gather(remotes, report)
            for remote, vectors in results:
                self._apply(remote, vectors, persons, refs, report)
            if not page.has_more:
                next_cursor = page.next_cursor
                break
            if not new_ids:  # empty, junk or repeats only
                idle_pages += 1
            self._check_paging(page.next_cursor, seen_cursors, idle_pages, report)
            seen_cursors.add(page.next_cursor)
            next_cursor = page.next_cursor
        if not report.duplicates and self._duplicates_told:
            self._duplicates_told = False
            _LOGGER.info("UPR registry at %s sends each person once again", self.client.base_url)
        failed = report.skipped.get("embed_failed", 0)
        if failed >= BROKEN_ANALYZER_FAILURES and report.embedded == 0:
            # not the photos: the analyzer here; keep the gallery that works
            raise ImageError(f"the face analyzer failed on all {failed} photos of this sync")
        gallery = Gallery(
            persons,
            [(pid, vector) for pid, vectors in refs.items() for vector in vectors],
            model_id=self.analyzer.model_id,
            embedding_size=self.analyzer.embedding_size,
            synced_at=time.time(),
            meta={
                "source": SOURCE,
                "api_url": self.client.base_url,
                "cursor": next_cursor,
                "photo_key": self.analyzer.photo_key,
            },
        )
        report.persons = gallery.matchable_count
        report.references = gallery.reference_count
        gallery.meta["report"] = report.as_dict()
        return gallery, report

    def _check_paging(
        self, cursor: str, seen_cursors: set[str], idle_pages: int, report: SyncReport
    ) -> None:
        """Raise :class:`UprPagingError` when the paging, with more to come, goes nowhere."""
        where = f"UPR registry at {self.client.base_url}"
        if cursor in seen_cursors:
            raise UprPagingError(
                f"{where}: paging does not end (a next_cursor came twice, page {report.pages})",
                reason="cursor_repeated",
            )
        if idle_pages > MAX_IDLE_PAGES:
            raise UprPagingError(
                f"{where}: paging makes no progress ({idle_pages} of {report.pages} pages "
                "brought no person not already seen)",
                reason="no_progress",
            )
        if report.pages >= MAX_PAGES:
            raise UprPagingError(
                f"{where}: paging does not end ({MAX_PAGES} pages)", reason="too_many_pages"
            )

    def _read_page(self, entries: list[Any], report: SyncReport) -> list[RemotePerson]:
        """The usable entries of a page, the last of each id only (bad ones counted)."""
        remotes: dict[str, RemotePerson] = {}
        for raw in entries:
            try:
                remote = parse_person(raw)
            except InvalidEntryError as err:
                report.skipped[err.reason] += 1
                report.warnings.append(f"entry skipped: {err}")
                continue
            report.skipped.update(remote.problems)
            if remotes.pop(remote.id, None) is not None:
                self._duplicate(remote.id, report)
            remotes[remote.id] = remote  # at the end: the page's order is kept
        return list(remotes.values())

    def _duplicate(self, person_id: str, report: SyncReport) -> None:
        """Count an entry dropped for a later one with the same id; log it once."""
        report.duplicates += 1
        report.skipped["duplicate_id"] += 1
        report.warnings.append(f"{person_id}: sent more than once, the last entry is used")
        if not self._duplicates_told:  # once, until a whole sync comes without any
            self._duplicates_told = True
            _LOGGER.warning(
                "UPR registry at %s sends person %s (and maybe others) more than once in one"
                " sync; the last entry of each is used",
                self.client.base_url,
                person_id,
            )

    async def _gather(
        self, remotes: list[RemotePerson], report: SyncReport
    ) -> list[tuple[RemotePerson, list[FloatArray] | None]]:
        """Fetch and embed the photos of a page's persons, a few at a time."""
        semaphore = asyncio.Semaphore(self._concurrency)

        async def one(remote: RemotePerson) -> tuple[RemotePerson, list[FloatArray] | None]:
            if not remote.active:
                return remote, None
            async with semaphore:
                return remote, await self._references(remote, report)

        tasks = [asyncio.create_task(one(remote)) for remote in remotes]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:  # one failed for good: the others stop too
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    def _apply(
        self,
        remote: RemotePerson,
        vectors: list[FloatArray] | None,
        persons: dict[str, Person],
        refs: dict[str, list[FloatArray]],
        report: SyncReport,
    ) -> None:
        """Put one person's new state in the working copy."""
        pid = remote.id
        if remote.deleted:
            report.removed += int(persons.pop(pid, None) is not None)
            refs.pop(pid, None)
            return
        report.updated += 1
        person = Person(
            pid,
            reference=remote.reference,
            display_name=remote.display_name,
            status="open" if remote.status == "open" else "closed",
            photo_url=self._absolute(remote.photos[0].url) if remote.photos else None,
        )
        if vectors is None:  # closed: kept, without references, never matches
            report.closed += 1
            persons[pid] = person
            refs.pop(pid, None)
            return
        if vectors:
            persons[pid] = person
            refs[pid] = vectors
            return
        report.skipped["no_usable_photo"] += 1
        if refs.get(pid):
            persons[pid] = person
            report.warnings.append(f"{pid}: no usable new photo, previous references kept")
        else:
            persons.pop(pid, None)
            refs.pop(pid, None)
            report.warnings.append(f"{pid}: no usable photo, cannot match")

    async def _references(self, remote: RemotePerson, report: SyncReport) -> list[FloatArray]:
        """The person's reference embeddings: the registry's own when usable, else the
        photos', each bad one skipped and counted."""
        vectors = self._remote_vectors(remote, report)
        if vectors:
            report.remote_embeddings += len(vectors)
            return vectors
        for photo in remote.photos:
            result = await self._embed_photo(remote.id, photo, report)
            if result is None:
                continue
            if result.embedding is None:
                reason = result.reason or "no_face"
                report.skipped[reason] += 1
                report.warnings.append(f"{remote.id} photo {photo.id}: skipped ({reason})")
                continue
            if result.faces > 1:
                report.warnings.append(
                    f"{remote.id} photo {photo.id}: {result.faces} faces, the largest is used"
                )
            vectors.append(np.asarray(result.embedding, dtype=np.float32))
        return vectors

    def _remote_vectors(self, remote: RemotePerson, report: SyncReport) -> list[FloatArray]:
        vectors: list[FloatArray] = []
        for embedding in remote.embeddings:
            if not model_matches(embedding.model, self.analyzer):
                continue
            vector = np.asarray(embedding.vector, dtype=np.float32)
            if vector.shape[0] != self.analyzer.embedding_size:
                report.skipped["wrong_vector_size"] += 1
                continue
            norm = float(np.linalg.norm(vector))
            if not np.isfinite(vector).all() or not math.isfinite(norm) or norm == 0.0:
                report.skipped["bad_vector"] += 1
                continue
            vectors.append(vector / norm)
        return vectors

    async def _embed_photo(
        self, person_id: str, photo: RemotePhoto, report: SyncReport
    ) -> PhotoEmbedding | None:
        """Download (unless cached by its sha256) and embed one photo; None when skipped."""
        photo_key = self.analyzer.photo_key
        if photo.sha256 is not None and self.cache is not None:
            cache = self.cache
            hit = await asyncio.to_thread(cache.get, photo.sha256, photo_key)
            if hit is not None:
                report.cached += 1
                return hit
        data = await self._download(person_id, photo, report)
        if data is None:
            return None
        report.downloaded += 1
        if photo.sha256 is not None and hashlib.sha256(data).hexdigest() != photo.sha256:
            report.warnings.append(f"{person_id} photo {photo.id}: sha256 differs")
        async with self._embed_lock:
            return await asyncio.to_thread(
                embed_photo_cached, self.analyzer, self.cache, data, report
            )

    async def _download(
        self, person_id: str, photo: RemotePhoto, report: SyncReport
    ) -> bytes | None:
        """The photo's bytes, or None (skipped, counted). A failure of the registry itself
        (unreachable, 5xx, refused key) is raised: the sync stops and nothing changes."""
        try:
            cross_origin = not self.client.same_origin(photo.url)
            return await self.client.fetch_photo(photo.url)
        except UprNotFoundError:
            reason = "photo_not_found"
        except UprTooLargeError:
            reason = "photo_too_large"
        except UprRejectedError:
            reason = "photo_refused"
        except UprResponseError:
            reason = "bad_photo_url"
        except UprConnectionError:
            if not cross_origin:
                raise
            reason = "photo_unreachable"
        report.skipped[reason] += 1
        report.warnings.append(f"{person_id} photo {photo.id}: skipped ({reason})")
        return None

    def _absolute(self, url: str) -> str | None:
        try:
            return str(self.client.photo_url(url))
        except UprResponseError:
            return None

    def _say(self, message: str) -> None:
        _LOGGER.debug("UPR sync: %s", message)
        if self._progress is not None:
            self._progress(message)


def model_matches(name: str, analyzer: Analyzer) -> bool:
    """Whether an embedding's ``model`` names the local recognizer: its full identity
    (``<file stem>:<sha256 prefix>:<size>``), that identity without the size, or the
    recognizer's file stem (``w600k_r50``), case aside."""
    model_id = analyzer.model_id
    wanted = name.strip().lower()
    return wanted in {
        model_id.lower(),
        model_id.rsplit(":", 1)[0].lower(),
        analyzer.pack.recognizer.stem.lower(),
    }


async def sync_gallery_cli(
    api_url: str,
    models_dir: Path,
    cache_dir: Path,
    api_key: str,
    progress: Progress,
) -> dict[str, Any]:
    """``upr-faces gallery sync``: sync ``cache_dir/gallery.npz`` with the registry.

    Incremental when an earlier sync left its cursor there. Returns the report
    (``persons``, ``references``, ``skipped`` by reason, and more). Raises
    :class:`ModelPackError` for the pack and the client's typed errors for the registry.
    """
    from .models import find_pack

    pack = await asyncio.to_thread(find_pack, Path(models_dir))
    analyzer = await asyncio.to_thread(Analyzer, pack)
    cache = await asyncio.to_thread(EmbeddingCache, Path(cache_dir) / CACHE_FILE)
    try:
        async with UprClient(None, api_url, api_key) as client:
            syncer = GallerySync(client, analyzer, Path(cache_dir), cache=cache, progress=progress)
            await syncer.async_load()
            report = await syncer.sync()
    finally:
        await asyncio.to_thread(cache.close)
    for warning in report.warnings:
        progress(f"warning: {warning}")
    return report.as_dict()
