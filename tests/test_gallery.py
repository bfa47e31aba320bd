"""Gallery search, tiers, closed persons, persistence, the cache and the local folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from upr_faces_engine.analyzer import Analyzer, PhotoEmbedding
from upr_faces_engine.gallery import (
    MAX_PHOTO_PIXELS,
    BuildReport,
    EmbeddingCache,
    Gallery,
    Person,
    Thresholds,
    embed_photo_cached,
    load_folder,
    photo_problem,
    photo_size,
)
from upr_faces_engine.models import find_pack

from .conftest import ROOT, LabelledPhoto
from .upr_server import decompression_bomb


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    v = rng.normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _gallery_with(vectors: dict[str, list[np.ndarray]], closed: set[str] = frozenset()) -> Gallery:
    persons = {
        pid: Person(pid, f"REF-{pid}", status="closed" if pid in closed else "open")
        for pid in vectors
    }
    refs = [(pid, v) for pid, vs in vectors.items() for v in vs]
    dim = next(iter(vectors.values()))[0].shape[0]
    return Gallery(persons, refs, model_id="test", embedding_size=dim)


def _with_similarity(base: np.ndarray, sim: float, rng: np.random.Generator) -> np.ndarray:
    """A unit vector whose cosine with ``base`` is exactly ``sim``."""
    noise = rng.normal(size=base.shape).astype(np.float64)
    noise -= noise @ base * base
    noise /= np.linalg.norm(noise)
    return (sim * base + np.sqrt(1 - sim**2) * noise).astype(np.float32)


def test_tiers_and_top_k() -> None:
    rng = np.random.default_rng(0)
    face = _unit(rng, 1, 64)[0]
    gallery = _gallery_with(
        {
            "alice": [_with_similarity(face, 0.60, rng), _with_similarity(face, 0.20, rng)],
            "bob": [_with_similarity(face, 0.50, rng)],
            "carol": [_with_similarity(face, 0.30, rng)],
            "dave": [_with_similarity(face, 0.10, rng)],
        }
    )
    (found,) = gallery.search(face[None, :], top_k=3)
    assert [c.person_id for c in found] == ["alice", "bob", "carol"]
    assert [c.tier for c in found] == ["match", "probable", "none"]
    assert found[0].similarity == pytest.approx(0.60, abs=1e-5)
    # thresholds are settable
    (strict,) = gallery.search(face[None, :], thresholds=Thresholds(0.7, 0.55), top_k=2)
    assert [c.tier for c in strict] == ["probable", "none"]
    (only,) = gallery.search(face[None, :], include_none=False)
    assert [c.person_id for c in only] == ["alice", "bob"]
    assert Thresholds().tier(0.55) == "match"
    assert Thresholds().tier(0.45) == "probable"
    assert Thresholds().tier(0.4499) == "none"
    with pytest.raises(ValueError, match="probable"):
        Thresholds(match=0.4, probable=0.5)


def test_closed_person_never_matches() -> None:
    rng = np.random.default_rng(1)
    face = _unit(rng, 1, 32)[0]
    gallery = _gallery_with(
        {"closed": [face.copy()], "other": [_with_similarity(face, 0.5, rng)]}, closed={"closed"}
    )
    (found,) = gallery.search(face[None, :], top_k=5)
    assert [c.person_id for c in found] == ["other"]
    assert gallery.matchable_count == 1


def test_search_agrees_with_brute_force() -> None:
    rng = np.random.default_rng(2)
    vectors = {f"p{i}": list(_unit(rng, int(rng.integers(1, 5)), 48)) for i in range(200)}
    gallery = _gallery_with(vectors)
    faces = _unit(rng, 7, 48)
    results = gallery.search(faces, top_k=4)
    for face, found in zip(faces, results, strict=True):
        best = sorted(
            ((max(float(face @ v) for v in vs), pid) for pid, vs in vectors.items()), reverse=True
        )[:4]
        assert [c.person_id for c in found] == [pid for _, pid in best]
        np.testing.assert_allclose([c.similarity for c in found], [s for s, _ in best], atol=1e-5)


def test_wrong_sizes_are_refused() -> None:
    rng = np.random.default_rng(4)
    gallery = _gallery_with({"a": [_unit(rng, 1, 16)[0]]})
    with pytest.raises(ValueError, match="embedding size"):
        gallery.search(_unit(rng, 1, 8))
    with pytest.raises(ValueError, match="size"):
        Gallery({"a": Person("a", "A")}, [("a", np.ones(3))], model_id="m", embedding_size=4)


def test_empty_gallery_finds_nobody() -> None:
    gallery = Gallery.empty("m", 16)
    assert gallery.search(np.ones((2, 16), dtype=np.float32)) == [[], []]
    assert gallery.reference_count == 0


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    gallery = _gallery_with({"a": list(_unit(rng, 2, 16)), "b": [_unit(rng, 1, 16)[0]]}, {"b"})
    gallery.synced_at = 1234.5
    path = tmp_path / "g" / "gallery.npz"
    gallery.save(path)
    loaded = Gallery.load(path)
    assert loaded.persons == gallery.persons
    assert loaded.synced_at == 1234.5
    np.testing.assert_array_equal(loaded.references_of("a"), gallery.references_of("a"))
    assert loaded.matchable_count == 1
    path.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot read gallery"):
        Gallery.load(path)


@pytest.fixture(scope="module")
def analyzer(test_pack: Path) -> Analyzer:
    return Analyzer(find_pack(test_pack), threads=1)


def _make_folder(root: Path, photos: list[LabelledPhoto]) -> Path:
    for photo in photos:
        if not photo.identity.startswith("deepface_"):
            continue
        dest = root / photo.identity
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(photo.path, dest / photo.path.name)
    return root


def test_local_folder_with_cache(
    analyzer: Analyzer, labelled_photos: list[LabelledPhoto], tmp_path: Path, faces_dir: Path
) -> None:
    root = _make_folder(tmp_path / "gallery", labelled_photos)
    (root / "deepface_B" / "person.json").write_text(
        json.dumps({"reference": "UPR-B", "display_name": "Bea", "status": "closed"})
    )
    # bad entries: a photo with no face, a file that is no image, a broken person.json,
    # a person with no usable photo, a group photo (largest face used, with a warning)
    shutil.copy(faces_dir / "noface_darknet_dog.jpg", root / "deepface_A" / "dog.jpg")
    (root / "deepface_C" / "broken.png").write_bytes(b"not a png")
    (root / "broken_meta").mkdir()
    (root / "broken_meta" / "person.json").write_text("{nope")
    (root / "nobody").mkdir()
    shutil.copy(faces_dir / "noface_darknet_eagle.jpg", root / "nobody" / "eagle.jpg")
    (root / "group").mkdir()
    shutil.copy(faces_dir / "multi_deepface_couple.jpg", root / "group" / "couple.jpg")

    cache = EmbeddingCache(tmp_path / "cache" / "embeddings.sqlite3")
    gallery, report = load_folder(root, analyzer, cache)
    assert report.skipped == {
        "no_face": 2,
        "not_an_image": 1,
        "bad_metadata": 1,
        "no_usable_photo": 1,
    }
    assert gallery.persons["deepface_B"].reference == "UPR-B"
    assert gallery.persons["deepface_B"].status == "closed"
    assert gallery.persons["deepface_A"].reference == "deepface_A"
    assert gallery.references_of("deepface_A").shape == (5, 128)
    assert report.references == 16 + 1
    assert report.persons == 6  # A, C, D, E, F and group (B is closed)
    assert any("couple.jpg" in w and "2 faces" in w for w in report.warnings)
    assert report.embedded == 16 + 3  # dog, eagle, couple; broken.png is refused unread
    assert report.cached == 0

    # second load: every photo comes from the cache, the recognizer never runs
    calls = 0
    original = analyzer.embed_photo

    def counting(data: bytes):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        return original(data)

    analyzer.embed_photo = counting  # type: ignore[method-assign]
    try:
        again, report2 = load_folder(root, analyzer, cache)
    finally:
        del analyzer.embed_photo
    assert calls == 0
    assert report2.cached == report.embedded
    assert report2.skipped == report.skipped
    np.testing.assert_array_equal(
        again.references_of("deepface_C"), gallery.references_of("deepface_C")
    )
    cache.close()

    # a matching photo finds its person; the closed one is never proposed
    probe = analyzer.embed_photo((faces_dir / "deepface_C_img13.jpg").read_bytes())
    assert probe.embedding is not None
    (found,) = gallery.search(probe.embedding[None, :])
    assert found[0].person_id == "deepface_C"
    assert found[0].tier == "match"
    probe_b = analyzer.embed_photo((faces_dir / "deepface_B_img3.jpg").read_bytes())
    assert probe_b.embedding is not None
    (found_b,) = gallery.search(probe_b.embedding[None, :], top_k=10)
    assert "deepface_B" not in {c.person_id for c in found_b}


def test_missing_folder(analyzer: Analyzer, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_folder(tmp_path / "absent", analyzer)


# --- photos refused before they are decoded ---------------------------------------------------


def test_the_photo_cache_holds_the_detector_settings(
    analyzer: Analyzer, labelled_photos: list[LabelledPhoto], tmp_path: Path, test_pack: Path
) -> None:
    """A pass with a detector that finds no face (too strict) caches "no face" for its
    settings only: the next load with the usual detector embeds every photo again and all
    persons can match; a third load is all from the cache."""
    root = _make_folder(tmp_path / "gallery", labelled_photos)
    cache = EmbeddingCache(tmp_path / "cache" / "embeddings.sqlite3")
    strict = Analyzer(find_pack(test_pack), threads=1, det_threshold=0.9999)
    assert strict.model_id == analyzer.model_id  # same recognizer: embeddings compare
    assert strict.photo_key != analyzer.photo_key
    _, blind = load_folder(root, strict, cache)
    assert blind.persons == 0
    assert blind.skipped["no_face"] >= 16, blind.skipped
    gallery, seeing = load_folder(root, analyzer, cache)
    assert (seeing.persons, seeing.references, seeing.cached) == (6, 16, 0)
    assert gallery.matchable_count == 6
    _, again = load_folder(root, analyzer, cache)
    assert (again.cached, again.embedded) == (16, 0)
    cache.close()


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """A real PNG of 32000 x 32000 pixels in about 1 MB."""
    data = decompression_bomb()
    assert len(data) < 1_100_000
    return data


def _encoded(ext: str, width: int, height: int, *params: int) -> bytes:
    image = np.full((height, width, 3), 90, dtype=np.uint8)
    ok, buffer = cv2.imencode(ext, image, list(params))
    assert ok
    return buffer.tobytes()


def test_photo_size_from_the_header(bomb: bytes) -> None:
    assert photo_size(_encoded(".png", 321, 123)) == (321, 123)
    assert photo_size(_encoded(".jpg", 321, 123)) == (321, 123)
    progressive = _encoded(".jpg", 64, 48, cv2.IMWRITE_JPEG_PROGRESSIVE, 1)
    assert photo_size(progressive) == (64, 48)
    assert photo_size(_encoded(".webp", 321, 123, cv2.IMWRITE_WEBP_QUALITY, 80)) == (321, 123)
    assert photo_size(_encoded(".webp", 321, 123, cv2.IMWRITE_WEBP_QUALITY, 101)) == (321, 123)
    # an APP segment before the frame header is skipped by its length, as the decoder does
    jpeg = _encoded(".jpg", 50, 40)
    fake_sof = b"\xff\xc0\x00\x11\x08\x7f\xff\x7f\xff"  # inside the segment: not read
    app = b"\xff\xe1" + (len(fake_sof) + 2).to_bytes(2, "big") + fake_sof
    assert photo_size(jpeg[:2] + app + jpeg[2:]) == (50, 40)
    assert cv2.imdecode(np.frombuffer(jpeg[:2] + app + jpeg[2:], np.uint8), 1).shape[:2] == (
        40,
        50,
    )
    vp8x = b"RIFF\x00\x00\x00\x00WEBPVP8X\x0a\x00\x00\x00" + bytes(4)
    assert photo_size(vp8x + (9999).to_bytes(3, "little") + (4999).to_bytes(3, "little")) == (
        10_000,
        5_000,
    )
    assert photo_size(bomb) == (32_000, 32_000)
    assert photo_size(_encoded(".bmp", 10, 10)) is None  # decodable, but not taken
    assert photo_size(jpeg[:20]) is None  # cut before its frame header
    assert photo_size(b"\x89PNG\r\n\x1a\n") is None
    assert photo_size(b"") is None


def test_photo_problems(bomb: bytes) -> None:
    assert photo_problem(_encoded(".jpg", 100, 100)) is None
    side = int(MAX_PHOTO_PIXELS**0.5)
    assert photo_problem(decompression_bomb(side, side)) is None
    assert photo_problem(decompression_bomb(side + 1, side + 1)) == "too_many_pixels"
    assert photo_problem(bomb) == "too_many_pixels"
    assert photo_problem(decompression_bomb(0, 10)) == "not_an_image"
    assert photo_problem(_encoded(".bmp", 10, 10)) == "not_an_image"
    assert photo_problem(b"this is not a JPEG at all") == "not_an_image"


def test_bomb_in_the_folder_is_refused_unread(
    analyzer: Analyzer, faces_dir: Path, tmp_path: Path, bomb: bytes
) -> None:
    root = tmp_path / "gallery"
    (root / "A").mkdir(parents=True)
    shutil.copy(faces_dir / "deepface_A_img2.jpg", root / "A" / "a.jpg")
    (root / "A" / "bomb.png").write_bytes(bomb)
    (root / "B").mkdir()
    (root / "B" / "bomb.png").write_bytes(bomb)
    decoded: list[int] = []
    original = analyzer.embed_photo

    def spy(data: bytes) -> PhotoEmbedding:
        decoded.append(len(data))
        return original(data)

    analyzer.embed_photo = spy  # type: ignore[method-assign]
    try:
        gallery, report = load_folder(root, analyzer, None)
    finally:
        del analyzer.embed_photo
    assert decoded == [(root / "A" / "a.jpg").stat().st_size]  # the bombs never reach it
    assert report.skipped == {"too_many_pixels": 2, "no_usable_photo": 1}
    assert sorted(gallery.persons) == ["A"]
    assert (report.embedded, report.references) == (1, 1)
    assert any("bomb.png: skipped (too_many_pixels)" in w for w in report.warnings)


_PEAK_RSS = """
import json, resource, sys
from pathlib import Path
from upr_faces_engine.analyzer import Analyzer
from upr_faces_engine.gallery import load_folder
from upr_faces_engine.models import find_pack
analyzer = Analyzer(find_pack(Path(sys.argv[1])), threads=1)
load_folder(Path(sys.argv[2]) / "warm", analyzer)  # the sessions' own memory first
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
gallery, report = load_folder(Path(sys.argv[2]) / "gallery", analyzer)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"growth_kib": after - before, "skipped": report.skipped,
                  "references": report.references}))
"""


def test_bomb_leaves_peak_memory_alone(
    test_pack: Path, faces_dir: Path, tmp_path: Path, bomb: bytes
) -> None:
    """Decoded, the bomb would take 3 GB (BGR) and more; refused by its header, nothing."""
    for name in ("warm", "gallery"):
        (tmp_path / name / "A").mkdir(parents=True)
        shutil.copy(faces_dir / "deepface_A_img2.jpg", tmp_path / name / "A" / "a.jpg")
    (tmp_path / "gallery" / "A" / "bomb.png").write_bytes(bomb)
    engine = ROOT / "custom_components" / "upr_faces" / "engine"
    env = os.environ | {"PYTHONPATH": str(engine), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS, str(test_pack), str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["skipped"] == {"too_many_pixels": 1}
    assert result["references"] == 1
    assert result["growth_kib"] < 100 * 1024  # under 100 MiB more at the peak


def test_photo_that_breaks_the_analyzer_is_skipped(
    analyzer: Analyzer, faces_dir: Path, tmp_path: Path
) -> None:
    """A 1 x 5000 PNG makes the detector's resize fail (cv2.error): that photo is skipped,
    the rest of the folder loads."""
    sliver = _encoded(".png", 5000, 1)
    report = BuildReport()
    assert embed_photo_cached(analyzer, None, sliver, report).reason == "embed_failed"
    assert report.embedded == 0
    root = tmp_path / "gallery"
    (root / "A").mkdir(parents=True)
    shutil.copy(faces_dir / "deepface_A_img2.jpg", root / "A" / "a.jpg")
    (root / "A" / "sliver.png").write_bytes(sliver)
    gallery, built = load_folder(root, analyzer, None)
    assert built.skipped == {"embed_failed": 1}
    assert len(gallery.references_of("A")) == 1
