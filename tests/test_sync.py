"""Gallery sync against a real registry on 127.0.0.1, with real photos and the test pack."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import cv2
import numpy as np
import pytest
from aiohttp import web

from upr_faces_engine.analyzer import Analyzer, PhotoEmbedding
from upr_faces_engine.errors import ImageError
from upr_faces_engine.gallery import (
    CACHE_FILE,
    EmbeddingCache,
    FloatArray,
    Gallery,
)
from upr_faces_engine.models import find_pack
from upr_faces_engine.sync import MAX_IDLE_PAGES, GallerySync, model_matches, sync_gallery_cli
from upr_faces_engine.upr_client import (
    RetryPolicy,
    UprAuthError,
    UprClient,
    UprConnectionError,
    UprPagingError,
    UprResponseError,
)

from .upr_server import UprServer, decompression_bomb

KEY = "sync-key-31"
FAST = RetryPolicy(attempts=2, backoff=0.01, max_backoff=0.02, max_retry_after=0.5)


@pytest.fixture(scope="module")
def analyzer(test_pack: Path) -> Analyzer:
    return Analyzer(find_pack(test_pack), threads=1)


@pytest.fixture(scope="module")
def photos(faces_dir: Path) -> dict[str, bytes]:
    names = ["A_img2", "A_img5", "A_img6", "B_img3", "B_img12", "C_img13", "D_img16"]
    found = {name: (faces_dir / f"deepface_{name}.jpg").read_bytes() for name in names}
    found["dog"] = (faces_dir / "noface_darknet_dog.jpg").read_bytes()
    return found


@pytest.fixture(scope="module")
def vectors(analyzer: Analyzer, photos: dict[str, bytes]) -> dict[str, FloatArray]:
    """Embeddings of the probe photos (not in the gallery) and of D's photo."""
    out: dict[str, FloatArray] = {}
    for name in ("A_img6", "B_img12", "D_img16"):
        embedding = analyzer.embed_photo(photos[name]).embedding
        assert embedding is not None
        out[name] = embedding
    return out


@pytest.fixture
async def server(socket_enabled: None) -> AsyncIterator[UprServer]:
    async with UprServer(KEY) as srv:
        yield srv


@pytest.fixture
async def client(server: UprServer) -> AsyncIterator[UprClient]:
    async with aiohttp.ClientSession() as session:
        yield UprClient(session, server.url, KEY, retry=FAST, timeout=5)


@pytest.fixture
def cache(tmp_path: Path) -> Any:
    db = EmbeddingCache(tmp_path / "cache" / CACHE_FILE)
    yield db
    db.close()


def photo(server: UprServer, photos: dict[str, bytes], name: str) -> dict[str, Any]:
    return server.registry.add_photo(f"{name}.jpg", photos[name])


def fill(server: UprServer, photos: dict[str, bytes], analyzer: Analyzer, d: FloatArray) -> None:
    """A registry with good persons and every kind of bad entry."""
    reg = server.registry
    reg.put_person("A", "UPR-A", display_name="Alice", photos=[photo(server, photos, "A_img2")])
    a = reg.person("A")
    a["photos"].append(photo(server, photos, "A_img5"))
    reg.put_raw("A", a)
    reg.put_person("B", "UPR-B", photos=[photo(server, photos, "B_img3")])
    reg.put_person("C", "UPR-C", status="closed", photos=[photo(server, photos, "C_img13")])
    # D: the registry's own embedding for our recognizer, no photo to download
    reg.put_person("D", "UPR-D", embeddings=[{"model": analyzer.model_id, "vector": d.tolist()}])
    # E: an embedding of another model is ignored; the photo is used
    reg.put_person(
        "E",
        "UPR-E",
        photos=[photo(server, photos, "A_img5")],
        embeddings=[{"model": "someone_elses_model", "vector": [0.5] * 512}],
    )
    reg.put_raw("junk1", "just a string")
    reg.put_raw("junk2", {"reference": "no id here", "status": "open"})
    reg.put_person("G", "UPR-G", photos=[{"id": "gone", "url": "photos/404.jpg", "sha256": None}])
    reg.put_person(
        "H",
        "UPR-H",
        photos=[reg.add_photo("h.jpg", b"this is not a JPEG at all"), photo(server, photos, "dog")],
    )
    reg.put_person("I", "UPR-I", embeddings=[{"model": analyzer.model_id, "vector": [0.1] * 7}])
    nan = [float("nan")] * analyzer.embedding_size
    reg.put_person("J", "UPR-J", embeddings=[{"model": analyzer.model_id, "vector": nan}])
    reg.put_person("K", "UPR-K", status="wanted", photos=[photo(server, photos, "B_img3")])


EXPECTED_SKIPS = {
    "not_an_object": 1,
    "no_id": 1,
    "photo_not_found": 1,
    "not_an_image": 1,
    "no_face": 1,
    "wrong_vector_size": 1,
    "bad_vector": 1,
    "bad_status": 1,
    "no_usable_photo": 4,  # G, H, I, J
}


def best(gallery: Gallery, vector: FloatArray) -> str | None:
    found = gallery.search(vector[None, :], top_k=1, include_none=False)[0]
    return found[0].person_id if found else None


async def test_full_then_incremental(
    tmp_path: Path,
    server: UprServer,
    client: UprClient,
    analyzer: Analyzer,
    photos: dict[str, bytes],
    vectors: dict[str, FloatArray],
    cache: EmbeddingCache,
) -> None:
    fill(server, photos, analyzer, vectors["D_img16"])
    progress: list[str] = []
    syncer = GallerySync(
        client, analyzer, tmp_path / "sync", cache=cache, page_limit=4, progress=progress.append
    )
    assert syncer.is_stale(3600)
    report = await syncer.sync()
    assert report.full
    assert report.pages == 3  # 12 entries, 4 a page
    assert dict(report.skipped) == EXPECTED_SKIPS
    assert (report.persons, report.references, report.closed) == (4, 5, 1)  # A B D E; C closed
    assert report.remote_embeddings == 1
    gallery = syncer.gallery
    assert gallery is not None
    assert sorted(gallery.persons) == ["A", "B", "C", "D", "E"]
    assert gallery.persons["A"].display_name == "Alice"
    assert gallery.persons["A"].photo_url == server.url + "/photos/1.jpg"
    assert best(gallery, vectors["A_img6"]) in ("A", "E")  # E holds a photo of A
    assert best(gallery, vectors["B_img12"]) == "B"
    assert best(gallery, vectors["D_img16"]) == "D"
    assert not syncer.is_stale(3600)
    assert progress[-1].startswith("synced: 4 persons can match")

    # the registry changes: A closed, B deleted, L added; nothing else is downloaded again
    photo_requests = sum(1 for _, path in server.requests if "/photos/" in path)
    server.registry.set_status("A", "closed")
    server.registry.delete("B")
    server.registry.put_person("L", "UPR-L", photos=[photo(server, photos, "B_img12")])
    report = await syncer.sync()
    assert not report.full
    assert (report.pages, report.updated, report.removed) == (1, 2, 1)
    assert dict(report.skipped) == {}
    gallery = syncer.gallery
    assert gallery is not None
    assert "B" not in gallery.persons
    assert gallery.persons["A"].status == "closed"
    assert best(gallery, vectors["A_img6"]) == "E"  # A never matches again
    assert best(gallery, vectors["B_img12"]) == "L"
    assert sum(1 for _, path in server.requests if "/photos/" in path) == photo_requests + 1

    # a restart with the registry down still matches, from disk
    await server.stop()
    again = GallerySync(client, analyzer, tmp_path / "sync", cache=cache)
    loaded = await again.async_load()
    assert loaded is not None
    assert again.cursor == syncer.cursor
    assert again.synced_at == gallery.synced_at
    assert sorted(loaded.persons) == sorted(gallery.persons)
    assert best(loaded, vectors["B_img12"]) == "L"
    with pytest.raises(UprConnectionError):
        await again.sync()
    assert again.gallery is loaded
    assert again.is_stale(10, now=time.time() + 60)


async def test_full_true_forgets_what_was_had(
    tmp_path: Path,
    server: UprServer,
    client: UprClient,
    analyzer: Analyzer,
    vectors: dict[str, FloatArray],
) -> None:
    reg = server.registry
    for name in ("A_img6", "B_img12"):
        model = analyzer.model_id
        reg.put_person(name, embeddings=[{"model": model, "vector": vectors[name].tolist()}])
    syncer = GallerySync(client, analyzer, tmp_path)
    await syncer.sync()
    assert syncer.gallery is not None
    assert sorted(syncer.gallery.persons) == ["A_img6", "B_img12"]
    del reg.entries["A_img6"]  # gone without a tombstone: only a full list can tell
    reg.invalidate_cursors()
    report = await syncer.sync()
    assert report.full
    assert sorted(syncer.gallery.persons) == ["B_img12"]


async def test_failure_half_way_changes_nothing(
    tmp_path: Path,
    server: UprServer,
    client: UprClient,
    analyzer: Analyzer,
    vectors: dict[str, FloatArray],
) -> None:
    reg = server.registry
    model = analyzer.model_id
    reg.put_person("P1", embeddings=[{"model": model, "vector": vectors["A_img6"].tolist()}])
    syncer = GallerySync(client, analyzer, tmp_path, page_limit=1)
    await syncer.sync()
    before_cursor, before = syncer.cursor, syncer.gallery
    reg.put_person("P2", embeddings=[{"model": model, "vector": vectors["B_img12"].tolist()}])
    reg.put_person("P3", embeddings=[{"model": model, "vector": vectors["D_img16"].tolist()}])
    server.fail(503, times=FAST.attempts, path="/persons", after=1)  # the second page fails
    with pytest.raises(UprConnectionError):
        await syncer.sync()
    assert syncer.gallery is before
    assert syncer.cursor == before_cursor
    on_disk = Gallery.load(tmp_path / "gallery.npz")
    assert sorted(on_disk.persons) == ["P1"]
    await syncer.sync()
    assert syncer.gallery is not None
    assert sorted(syncer.gallery.persons) == ["P1", "P2", "P3"]


async def test_unknown_cursor_falls_back_to_full(
    tmp_path: Path, server: UprServer, client: UprClient, analyzer: Analyzer
) -> None:
    syncer = GallerySync(client, analyzer, tmp_path)
    await syncer.sync()
    server.fail(410, path="/persons")
    report = await syncer.sync()
    assert report.full
    assert server.count("/persons") == 3


async def test_endless_paging_is_a_bad_response(
    tmp_path: Path, server: UprServer, client: UprClient, analyzer: Analyzer
) -> None:
    body = json.dumps({"persons": [], "next_cursor": "same", "has_more": True, "full": True})
    server.serve(body.encode(), path="/persons", times=5)
    with pytest.raises(UprResponseError, match="paging") as info:
        await GallerySync(client, analyzer, tmp_path).sync()
    assert isinstance(info.value, UprPagingError)
    assert info.value.reason == "cursor_repeated"
    assert server.count("/persons") == 2


async def test_cache_spares_downloads_and_embedding(
    tmp_path: Path,
    server: UprServer,
    client: UprClient,
    analyzer: Analyzer,
    photos: dict[str, bytes],
    cache: EmbeddingCache,
) -> None:
    server.registry.put_person("A", photos=[photo(server, photos, "A_img2")])
    bare = photo(server, photos, "B_img3") | {"sha256": None}
    server.registry.put_person("B", photos=[bare])
    syncer = GallerySync(client, analyzer, tmp_path, cache=cache)
    first = await syncer.sync()
    assert (first.embedded, first.cached, first.downloaded) == (2, 0, 2)
    again = await syncer.sync(full=True)
    # A's photo has a sha256: found in the cache without downloading; B's is downloaded
    assert (again.embedded, again.cached, again.downloaded) == (0, 2, 1)
    assert again.references == 2


async def test_saved_gallery_of_another_model_is_ignored(
    tmp_path: Path, client: UprClient, analyzer: Analyzer
) -> None:
    Gallery.empty("other:model:512", 512).save(tmp_path / "gallery.npz")
    syncer = GallerySync(client, analyzer, tmp_path)
    assert await syncer.async_load() is None
    (tmp_path / "gallery.npz").write_bytes(b"garbage")
    assert await syncer.async_load() is None
    assert syncer.cursor is None


def test_model_names(analyzer: Analyzer) -> None:
    assert model_matches(analyzer.model_id, analyzer)
    assert model_matches(analyzer.model_id.rsplit(":", 1)[0].upper(), analyzer)
    assert model_matches(analyzer.pack.recognizer.stem, analyzer)
    assert not model_matches("w600k_r50", analyzer)


async def test_cli_sync(
    tmp_path: Path,
    server: UprServer,
    test_pack: Path,
    photos: dict[str, bytes],
) -> None:
    server.registry.put_person("A", photos=[photo(server, photos, "A_img2")])
    server.registry.put_raw("bad", 42)
    messages: list[str] = []
    result = await sync_gallery_cli(server.url, test_pack, tmp_path, KEY, messages.append)
    assert (result["persons"], result["references"]) == (1, 1)
    assert result["skipped"] == {"not_an_object": 1}
    assert (tmp_path / "gallery.npz").is_file()
    assert any(m.startswith("warning: entry skipped") for m in messages)
    result = await sync_gallery_cli(server.url, test_pack, tmp_path, KEY, messages.append)
    assert (result["full"], result["persons"]) == (False, 1)
    assert KEY not in "\n".join(messages)

    with pytest.raises(UprAuthError) as info:
        await sync_gallery_cli(server.url, test_pack, tmp_path, "wrong", messages.append)
    assert "\n" not in str(info.value)
    await server.stop()
    with pytest.raises(UprConnectionError) as down:
        await sync_gallery_cli(server.url, test_pack, tmp_path, KEY, messages.append)
    assert "\n" not in str(down.value)


async def test_photo_troubles(
    tmp_path: Path,
    server: UprServer,
    analyzer: Analyzer,
    photos: dict[str, bytes],
    faces_dir: Path,
    socket_enabled: None,
) -> None:
    """Each bad photo is skipped and counted; a person left without a usable photo keeps
    the references an earlier sync gave them."""
    reg = server.registry
    couple = reg.add_photo("couple.jpg", (faces_dir / "multi_deepface_couple.jpg").read_bytes())
    reg.put_person("P", photos=[photo(server, photos, "A_img2")])
    async with aiohttp.ClientSession() as session, UprServer("cdn-key") as cdn:
        client = UprClient(session, server.url, KEY, retry=FAST, max_photo_bytes=1_000_000)
        syncer = GallerySync(client, analyzer, tmp_path)
        await syncer.sync()
        gone = await UprServer().start()
        await gone.stop()
        big = reg.add_photo("big.jpg", b"\xff\xd8" + b"\0" * 1_200_000)
        lying = photo(server, photos, "B_img3") | {"sha256": "0" * 64}
        reg.put_person(
            "P",
            photos=[
                {"id": "cdn", "url": cdn.url + "/photos/1.jpg"},  # 401 there: refused
                {"id": "gone", "url": gone.url + "/photos/1.jpg"},
                {"id": "ftp", "url": "ftp://upr.example/1.jpg"},
                big,
            ],
        )
        reg.put_person("Q", photos=[lying, couple])
        report = await syncer.sync()
        cdn_photo = cdn.url + "/photos/1.jpg"
    assert dict(report.skipped) == {
        "photo_refused": 1,
        "photo_unreachable": 1,
        "bad_photo_url": 1,
        "photo_too_large": 1,
        "no_usable_photo": 1,
    }
    assert any("previous references kept" in w for w in report.warnings)
    assert any("sha256 differs" in w for w in report.warnings)
    assert any("2 faces" in w for w in report.warnings)
    assert syncer.gallery is not None
    assert syncer.gallery.persons["P"].photo_url == cdn_photo
    assert len(syncer.gallery.references_of("P")) == 1
    assert len(syncer.gallery.references_of("Q")) == 2


async def test_registry_failing_on_a_photo_stops_the_sync(
    tmp_path: Path,
    server: UprServer,
    client: UprClient,
    analyzer: Analyzer,
    photos: dict[str, bytes],
) -> None:
    for n in range(4):
        server.registry.put_person(f"P{n}", photos=[photo(server, photos, "A_img2")])
    server.fail(503, times=1000, path="/photos/")
    syncer = GallerySync(client, analyzer, tmp_path, concurrency=2)
    with pytest.raises(UprConnectionError):
        await syncer.sync()
    assert syncer.gallery is None
    assert not (tmp_path / "gallery.npz").exists()


async def test_saved_gallery_of_another_registry_is_ignored(
    tmp_path: Path, server: UprServer, client: UprClient, analyzer: Analyzer
) -> None:
    await GallerySync(client, analyzer, tmp_path).sync()
    async with aiohttp.ClientSession() as session:
        elsewhere = UprClient(session, server.origin + "/other", KEY)
        assert await GallerySync(elsewhere, analyzer, tmp_path).async_load() is None
    assert await GallerySync(client, analyzer, tmp_path).async_load() is not None


# --- what a registry may send: each bad entry skipped, never a sync stopped ----------------


def embedding_of(analyzer: Analyzer, vector: FloatArray) -> list[dict[str, Any]]:
    return [{"model": analyzer.model_id, "vector": vector.tolist()}]


async def test_nothing_in_one_entry_stops_the_sync(
    tmp_path: Path,
    server: UprServer,
    client: UprClient,
    analyzer: Analyzer,
    photos: dict[str, bytes],
    vectors: dict[str, FloatArray],
    cache: EmbeddingCache,
) -> None:
    """Unparsable photo URLs (``http://[::1``: yarl's ValueError), a photo the analyzer
    breaks on (cv2.error), a number too big for a float, a sha256 SQLite cannot take: each
    is skipped and counted (or ignored), the other persons load, and the sync does not
    raise."""
    reg = server.registry
    reg.put_person("A", photos=[photo(server, photos, "A_img2")])
    syncer = GallerySync(client, analyzer, tmp_path, cache=cache, page_limit=3)
    await syncer.sync()
    assert syncer.gallery is not None  # a cached gallery exists from now on

    bad_urls = ["http://[::1", "http://[::1]:99999/p.jpg", "http://x:abc/p.jpg", "/x\ud800"]
    for n, url in enumerate(bad_urls):
        reg.put_person(f"U{n}", photos=[{"id": f"u{n}", "url": url}])
    # a bad URL next to a good photo: the good one is used
    reg.put_person(
        "V", photos=[{"id": "v6", "url": "http://[::1"}, photo(server, photos, "B_img3")]
    )
    ok, sliver = cv2.imencode(".png", np.full((1, 5000, 3), 128, dtype=np.uint8))
    assert ok
    reg.put_person("W", photos=[reg.add_photo("sliver.png", sliver.tobytes())])
    reg.put_raw(
        "X",
        {
            "id": "X",
            "reference": "R",
            "status": "open",
            "embeddings": [{"model": analyzer.model_id, "vector": [10**400] * 128}],
        },
    )
    reg.put_person("D", embeddings=embedding_of(analyzer, vectors["D_img16"]))
    reg.put_person("E", photos=[photo(server, photos, "A_img5") | {"sha256": "\ud800"}])
    report = await syncer.sync()
    assert dict(report.skipped) == {
        "bad_photo_url": len(bad_urls) + 1,
        "embed_failed": 1,
        "bad_embedding": 1,
        "no_usable_photo": len(bad_urls) + 2,  # U0-U3, W, X
    }
    gallery = syncer.gallery
    assert gallery is not None
    assert sorted(gallery.persons) == ["A", "D", "E", "V"]
    assert gallery.persons["V"].photo_url is None  # its first photo's URL is unusable
    assert best(gallery, vectors["B_img12"]) == "V"
    assert best(gallery, vectors["D_img16"]) == "D"
    assert not any("/x" in path for _, path in server.requests)


async def test_an_analyzer_failing_on_every_photo_keeps_the_gallery(
    tmp_path: Path,
    server: UprServer,
    client: UprClient,
    analyzer: Analyzer,
    photos: dict[str, bytes],
    cache: EmbeddingCache,
) -> None:
    """One photo the analyzer breaks on is skipped; when it breaks on every photo of a
    sync (three or more, none embedded), the analyzer is at fault, not the photos: the
    sync stops and the gallery that works stays."""
    reg = server.registry
    reg.put_person("A", photos=[photo(server, photos, "A_img2")])
    syncer = GallerySync(client, analyzer, tmp_path, cache=cache, page_limit=3)
    await syncer.sync()
    for n, width in enumerate((5000, 6000, 7000)):
        ok, sliver = cv2.imencode(".png", np.full((1, width, 3), 128, dtype=np.uint8))
        assert ok
        reg.put_person(f"S{n}", photos=[reg.add_photo(f"sliver{n}.png", sliver.tobytes())])
    with pytest.raises(ImageError, match="all 3 photos"):
        await syncer.sync()
    gallery = syncer.gallery
    assert gallery is not None
    assert sorted(gallery.persons) == ["A"]
    assert len(gallery.references_of("A")) == 1


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return decompression_bomb()  # 32000 x 32000 pixels in about 1 MB


async def test_bomb_photo_is_refused_before_decoding(
    tmp_path: Path,
    server: UprServer,
    client: UprClient,
    analyzer: Analyzer,
    photos: dict[str, bytes],
    bomb: bytes,
) -> None:
    reg = server.registry
    reg.put_person("A", photos=[reg.add_photo("bomb.png", bomb), photo(server, photos, "A_img2")])
    reg.put_person("B", photos=[reg.add_photo("bomb2.png", bomb)])
    decoded: list[int] = []
    original = analyzer.embed_photo

    def spy(data: bytes) -> PhotoEmbedding:
        decoded.append(len(data))
        return original(data)

    analyzer.embed_photo = spy  # type: ignore[method-assign]
    try:
        report = await GallerySync(client, analyzer, tmp_path).sync()
    finally:
        del analyzer.embed_photo
    assert decoded == [len(photos["A_img2"])]  # the bombs are downloaded, never decoded
    assert report.downloaded == 3
    assert dict(report.skipped) == {"too_many_pixels": 2, "no_usable_photo": 1}
    assert (report.persons, report.references) == (1, 1)
    assert any("bomb.png: skipped (too_many_pixels)" in w for w in report.warnings)


async def test_duplicate_ids_the_last_entry_wins(
    tmp_path: Path,
    server: UprServer,
    client: UprClient,
    analyzer: Analyzer,
    vectors: dict[str, FloatArray],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A twice in the first page, and again on the second one; B twice on the second."""
    reg = server.registry

    def entry(pid: str, name: str, vector: str) -> dict[str, Any]:
        return {
            "id": pid,
            "reference": f"UPR-{pid}",
            "display_name": name,
            "status": "open",
            "embeddings": embedding_of(analyzer, vectors[vector]),
        }

    reg.put_raw("a1", entry("A", "first", "A_img6"))
    reg.put_raw("a2", entry("A", "second", "B_img12"))
    reg.put_raw("c", entry("C", "C", "D_img16"))
    reg.put_raw("a3", entry("A", "third", "D_img16"))
    reg.put_raw("b1", entry("B", "B one", "A_img6"))
    reg.put_raw("b2", {"id": "B", "deleted": True})
    syncer = GallerySync(client, analyzer, tmp_path, page_limit=3)
    with caplog.at_level(logging.INFO, logger="upr_faces_engine.sync"):
        report = await syncer.sync()
        again = await syncer.sync(full=True)
    assert report.pages == 2
    assert report.duplicates == 3  # a1, a2 for a3; b1 for b2
    assert report.skipped["duplicate_id"] == 3
    assert report.as_dict()["duplicates"] == 3
    gallery = syncer.gallery
    assert gallery is not None
    assert sorted(gallery.persons) == ["A", "C"]  # B's last entry deletes it
    assert gallery.persons["A"].display_name == "third"
    np.testing.assert_allclose(gallery.references_of("A"), vectors["D_img16"][None, :], atol=1e-5)
    assert any("A: sent more than once" in w for w in report.warnings)
    told = [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING and "more than once" in r.getMessage()
    ]
    assert len(told) == 1  # once, not at every sync
    assert "person A " in told[0].getMessage()
    assert again.duplicates == 3

    for key in ("a1", "a2", "b1", "b2"):
        del reg.entries[key]
    with caplog.at_level(logging.INFO, logger="upr_faces_engine.sync"):
        clean = await syncer.sync(full=True)
    assert clean.duplicates == 0
    assert "duplicate_id" not in clean.skipped
    assert any("each person once again" in r.getMessage() for r in caplog.records)


def endless(persons: list[Any]) -> Any:
    """A page maker: these persons every time, a cursor never seen before, more to come."""

    def make(request: web.Request) -> bytes:
        page = {
            "persons": persons,
            "next_cursor": uuid.uuid4().hex,
            "has_more": True,
            "full": "cursor" not in request.query,
        }
        return json.dumps(page).encode()

    return make


@pytest.mark.parametrize("what", ["the same person", "nothing", "junk"])
async def test_paging_without_progress_stops(
    tmp_path: Path,
    server: UprServer,
    client: UprClient,
    analyzer: Analyzer,
    vectors: dict[str, FloatArray],
    what: str,
) -> None:
    """Fresh cursors on pages that bring nothing new: the sync stops after a few pages,
    not 100 000, and the cached gallery and cursor stay."""
    reg = server.registry
    reg.put_person("P1", embeddings=embedding_of(analyzer, vectors["A_img6"]))
    syncer = GallerySync(client, analyzer, tmp_path)
    await syncer.sync()
    before, cursor = syncer.gallery, syncer.cursor
    persons: list[Any] = {"the same person": [reg.person("P1")], "nothing": [], "junk": [7]}[what]
    server.answer(endless(persons), times=1000, path="/persons")
    asked = server.count("/persons")
    with pytest.raises(UprPagingError, match="no progress") as info:
        await syncer.sync()
    assert info.value.reason == "no_progress"
    assert info.value.key == "bad_response"
    pages = server.count("/persons") - asked
    # the first page may bring P1 (progress), then MAX_IDLE_PAGES + 1 pages bring nothing
    assert pages <= MAX_IDLE_PAGES + 2
    assert syncer.gallery is before
    assert syncer.cursor == cursor
    assert sorted(Gallery.load(tmp_path / "gallery.npz").persons) == ["P1"]


async def test_slow_but_progressing_paging_goes_on(
    tmp_path: Path,
    server: UprServer,
    client: UprClient,
    analyzer: Analyzer,
    vectors: dict[str, FloatArray],
) -> None:
    """Pages of one person (the registry ignores ``limit``) and a few empty pages: fine."""
    reg = server.registry
    model = analyzer.model_id
    for n in range(30):
        reg.put_person(f"P{n}", embeddings=[{"model": model, "vector": vectors["A_img6"].tolist()}])
    syncer = GallerySync(client, analyzer, tmp_path, page_limit=1)
    report = await syncer.sync()
    assert (report.pages, report.persons) == (30, 30)
    # a registry that answers MAX_IDLE_PAGES empty pages first (fresh cursors) still ends
    server.answer(endless([]), times=MAX_IDLE_PAGES, path="/persons")
    report = await syncer.sync(full=True)
    assert report.pages == 30 + MAX_IDLE_PAGES
    assert report.persons == 30
