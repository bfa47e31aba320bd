"""The reference gallery: many embeddings per person in one matrix, searched in one product.

Also the on-disk embedding cache (content hash + model identity -> vector) and the local
gallery folder (``<dir>/<person_id>/*.jpg|*.png`` with an optional ``person.json``).

Reference photos come from outside (the registry, a folder), so nothing is decoded before
its header is read: only JPEG, PNG and WebP are taken, and one of more than
:data:`MAX_PHOTO_PIXELS` pixels is refused unread (a 1 MB PNG can hold a billion pixels).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import sqlite3
import tempfile
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import numpy as np
import numpy.typing as npt

from .images import MAX_IMAGE_PIXELS, photo_size

if TYPE_CHECKING:
    from .analyzer import Analyzer, PhotoEmbedding

_LOGGER = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
Tier = Literal["match", "probable", "none"]
Status = Literal["open", "closed"]

PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
GALLERY_FILE = "gallery.npz"
CACHE_FILE = "embeddings.sqlite3"
DEFAULT_MATCH = 0.55
DEFAULT_PROBABLE = 0.45
MAX_PHOTO_PIXELS: Final = MAX_IMAGE_PIXELS
"""Most pixels (width x height, read from the header) a reference photo may have: the
analyzer's own limit, checked before a byte is decoded."""


@dataclass(frozen=True, slots=True)
class Person:
    """A person of the registry. Closed persons never match."""

    person_id: str
    reference: str
    display_name: str | None = None
    status: Status = "open"
    notes: str | None = None
    photo_url: str | None = None

    @property
    def is_open(self) -> bool:
        """Whether this person may match."""
        return self.status == "open"


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Similarity tiers: ``match`` alerts at once, ``probable`` is a discreet notice."""

    match: float = DEFAULT_MATCH
    probable: float = DEFAULT_PROBABLE

    def __post_init__(self) -> None:
        if not -1.0 <= self.probable <= self.match <= 1.0:
            raise ValueError(
                f"thresholds must satisfy -1 <= probable <= match <= 1, "
                f"got probable={self.probable} match={self.match}"
            )

    def tier(self, similarity: float) -> Tier:
        """The tier a similarity falls in."""
        if similarity >= self.match:
            return "match"
        if similarity >= self.probable:
            return "probable"
        return "none"


@dataclass(frozen=True, slots=True)
class Candidate:
    """One person a face resembles, with the best similarity over their references."""

    person_id: str
    similarity: float
    tier: Tier


class Gallery:
    """Reference embeddings of many persons, rows grouped by person.

    ``search`` computes every face against every reference in one matrix product, takes each
    person's best reference and returns the ``top_k`` persons per face. Immutable once built:
    a new sync builds a new gallery and swaps it in.
    """

    def __init__(
        self,
        persons: Mapping[str, Person],
        references: Iterable[tuple[str, FloatArray]],
        *,
        model_id: str,
        embedding_size: int,
        synced_at: float | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        self.model_id = model_id
        self.embedding_size = embedding_size
        self.synced_at = synced_at
        self.meta: dict[str, Any] = dict(meta or {})
        grouped: dict[str, list[FloatArray]] = {}
        for person_id, vector in references:
            if person_id not in persons:
                raise KeyError(f"reference for unknown person {person_id!r}")
            vec = np.asarray(vector, dtype=np.float32).reshape(-1)
            if vec.shape[0] != embedding_size:
                raise ValueError(
                    f"reference of {person_id!r} has size {vec.shape[0]}, expected {embedding_size}"
                )
            grouped.setdefault(person_id, []).append(vec)
        self.persons: dict[str, Person] = dict(persons)
        self._ids: list[str] = sorted(grouped)
        counts = [len(grouped[pid]) for pid in self._ids]
        self._counts = np.asarray(counts, dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(self._counts)[:-1]]).astype(np.int64)
        if self._ids:
            matrix = np.vstack([v for pid in self._ids for v in grouped[pid]])
            norms = np.linalg.norm(matrix, axis=1, keepdims=True)
            norms[norms == 0] = 1.0
            self._matrix: FloatArray = np.ascontiguousarray(matrix / norms, dtype=np.float32)
        else:
            self._matrix = np.zeros((0, embedding_size), dtype=np.float32)
        self._open = np.asarray([self.persons[pid].is_open for pid in self._ids], dtype=bool)

    @classmethod
    def empty(cls, model_id: str, embedding_size: int) -> Gallery:
        """A gallery with nobody in it."""
        return cls({}, [], model_id=model_id, embedding_size=embedding_size)

    @property
    def reference_count(self) -> int:
        """Number of reference embeddings."""
        return int(self._matrix.shape[0])

    @property
    def matchable_count(self) -> int:
        """Number of open persons with at least one reference: those who can match now."""
        return int(self._open.sum())

    def references_of(self, person_id: str) -> FloatArray:
        """The reference embeddings of one person (empty when none)."""
        try:
            idx = self._ids.index(person_id)
        except ValueError:
            return np.zeros((0, self.embedding_size), dtype=np.float32)
        start = int(self._starts[idx])
        return self._matrix[start : start + int(self._counts[idx])]

    def references(self) -> Iterable[tuple[str, FloatArray]]:
        """Every ``(person_id, embedding)`` pair."""
        for idx, pid in enumerate(self._ids):
            start = int(self._starts[idx])
            for row in self._matrix[start : start + int(self._counts[idx])]:
                yield pid, row

    def similarities(self, embeddings: FloatArray) -> FloatArray:
        """Best similarity of each face (rows) to each person (columns, in ``person order``)."""
        faces = np.asarray(embeddings, dtype=np.float32)
        if faces.ndim == 1:
            faces = faces[None, :]
        if faces.shape[1] != self.embedding_size:
            raise ValueError(
                f"embedding size {faces.shape[1]} does not match"
                f" the gallery's {self.embedding_size}"
            )
        if not self._ids:
            return np.zeros((faces.shape[0], 0), dtype=np.float32)
        sims = faces @ self._matrix.T
        per_person: FloatArray = np.maximum.reduceat(sims, self._starts, axis=1)
        per_person[:, ~self._open] = -np.inf
        return per_person

    def search(
        self,
        embeddings: FloatArray,
        *,
        top_k: int = 3,
        thresholds: Thresholds | None = None,
        include_none: bool = True,
    ) -> list[list[Candidate]]:
        """The ``top_k`` best persons for each face, best first, with their tier.

        Closed persons never appear. With ``include_none=False`` only candidates at
        ``probable`` or above are returned.
        """
        limits = thresholds or Thresholds()
        per_person = self.similarities(embeddings)
        results: list[list[Candidate]] = []
        count = per_person.shape[1]
        k = min(top_k, count)
        for row in per_person:
            if k == 0:
                results.append([])
                continue
            idx = np.argpartition(-row, k - 1)[:k] if k < count else np.arange(count)
            idx = idx[np.argsort(-row[idx], kind="stable")]
            found: list[Candidate] = []
            for i in idx:
                sim = float(row[i])
                if not math.isfinite(sim):
                    continue
                tier = limits.tier(sim)
                if tier == "none" and not include_none:
                    continue
                found.append(Candidate(self._ids[int(i)], sim, tier))
            results.append(found)
        return results

    def save(self, path: Path) -> None:
        """Write the gallery to one file, atomically (blocking)."""
        persons = [asdict(p) for p in self.persons.values()]
        header = {
            "model_id": self.model_id,
            "embedding_size": self.embedding_size,
            "synced_at": self.synced_at,
            "meta": self.meta,
            "persons": persons,
            "ids": self._ids,
            "counts": self._counts.tolist(),
        }
        buffer = io.BytesIO()
        np.savez(
            buffer,
            header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
            matrix=self._matrix,
        )
        atomic_write(path, buffer.getvalue())

    @classmethod
    def load(cls, path: Path) -> Gallery:
        """Read a gallery written by :meth:`save` (blocking). Raises ``ValueError`` if bad."""
        try:
            with np.load(path, allow_pickle=False) as data:
                header = json.loads(bytes(data["header"]).decode())
                matrix = np.asarray(data["matrix"], dtype=np.float32)
            persons = {p["person_id"]: Person(**p) for p in header["persons"]}
            refs: list[tuple[str, FloatArray]] = []
            row = 0
            for pid, count in zip(header["ids"], header["counts"], strict=True):
                refs.extend((pid, matrix[row + i]) for i in range(count))
                row += count
            return cls(
                persons,
                refs,
                model_id=header["model_id"],
                embedding_size=int(header["embedding_size"]),
                synced_at=header.get("synced_at"),
                meta=header.get("meta") or {},
            )
        except (OSError, KeyError, TypeError, ValueError) as err:
            raise ValueError(f"cannot read gallery {path}: {err}") from err


def atomic_write(path: Path, data: bytes) -> None:
    """Write bytes to ``path`` through a synced temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class EmbeddingCache:
    """Embeddings of reference photos keyed by (photo sha256, model identity), in SQLite.

    A photo is embedded once per model; results without a face are remembered too, so a
    restart with a large gallery does not run the recognizer again.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS embeddings ("
            " sha256 TEXT NOT NULL, model TEXT NOT NULL, reason TEXT, faces INTEGER NOT NULL,"
            " vector BLOB, PRIMARY KEY (sha256, model))"
        )

    def get(self, sha256: str, model_id: str) -> PhotoEmbedding | None:
        """The cached result for a photo and model, or ``None``."""
        from .analyzer import PhotoEmbedding

        with self._lock:
            row = self._db.execute(
                "SELECT reason, faces, vector FROM embeddings WHERE sha256=? AND model=?",
                (sha256, model_id),
            ).fetchone()
        if row is None:
            return None
        reason, faces, blob = row
        vector = None if blob is None else np.frombuffer(blob, dtype=np.float32).copy()
        return PhotoEmbedding(vector, reason, int(faces))

    def put(self, sha256: str, model_id: str, result: PhotoEmbedding) -> None:
        """Remember the result of embedding a photo."""
        blob = None if result.embedding is None else result.embedding.astype(np.float32).tobytes()
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?, ?)",
                (sha256, model_id, result.reason, result.faces, blob),
            )

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()


@dataclass(slots=True)
class BuildReport:
    """What building a gallery did: counts, skipped entries by reason, warnings."""

    persons: int = 0
    references: int = 0
    embedded: int = 0
    cached: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "persons": self.persons,
            "references": self.references,
            "embedded": self.embedded,
            "cached": self.cached,
            "skipped": dict(sorted(self.skipped.items())),
        }


def photo_problem(data: bytes) -> str | None:
    """Why a reference photo is refused before it is decoded (``not_an_image``: not JPEG,
    PNG or WebP, or no readable size; ``too_many_pixels``: over :data:`MAX_PHOTO_PIXELS`),
    or None."""
    size = photo_size(data)
    if size is None or 0 in size:
        return "not_an_image"
    if size[0] * size[1] > MAX_PHOTO_PIXELS:
        return "too_many_pixels"
    return None


def embed_photo_cached(
    analyzer: Analyzer, cache: EmbeddingCache | None, data: bytes, report: BuildReport
) -> PhotoEmbedding:
    """Embed a photo's main face, through the cache when there is one (blocking).

    The header is read first (:func:`photo_problem`): a photo refused there is never
    decoded. One that makes the analyzer fail (``embed_failed``) is skipped like any bad
    photo: nothing in one photo may stop a gallery from loading. Neither is cached.
    """
    from .analyzer import PhotoEmbedding

    problem = photo_problem(data)
    if problem is not None:
        return PhotoEmbedding(None, problem, 0)
    digest = hashlib.sha256(data).hexdigest()
    if cache is not None:
        hit = cache.get(digest, analyzer.photo_key)
        if hit is not None:
            report.cached += 1
            return hit
    try:
        result = analyzer.embed_photo(data)
    except Exception:  # cv2.error, onnxruntime's: this photo only
        _LOGGER.debug("Photo %s could not be embedded", digest[:16], exc_info=True)
        return PhotoEmbedding(None, "embed_failed", 0)
    report.embedded += 1
    if cache is not None:
        cache.put(digest, analyzer.photo_key, result)
    return result


def _read_person_json(folder: Path, person_id: str) -> Person:
    meta_path = folder / "person.json"
    if not meta_path.exists():
        return Person(person_id, reference=person_id)
    raw = json.loads(meta_path.read_text(encoding="utf-8"))
    if not isinstance(raw, dict):
        raise ValueError("person.json is not an object")
    status = raw.get("status", "open")
    if status not in ("open", "closed"):
        raise ValueError(f"status must be open or closed, got {status!r}")
    for key in ("reference", "display_name", "notes"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            raise ValueError(f"{key} must be a string")
    return Person(
        person_id,
        reference=raw.get("reference") or person_id,
        display_name=raw.get("display_name"),
        status=status,
        notes=raw.get("notes"),
    )


def person_photos(folder: Path) -> list[Path]:
    """The reference photos of a person folder, in a stable order."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)


def load_folder(
    folder: Path, analyzer: Analyzer, cache: EmbeddingCache | None = None
) -> tuple[Gallery, BuildReport]:
    """Build a gallery from ``<folder>/<person_id>/*.jpg|*.png`` (blocking).

    Bad entries are skipped and counted by reason; a photo with several faces uses the
    largest one and adds a warning naming the file.
    """
    report = BuildReport()
    persons: dict[str, Person] = {}
    refs: list[tuple[str, FloatArray]] = []
    if not folder.is_dir():
        raise FileNotFoundError(f"gallery folder {folder} does not exist")
    for person_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        person_id = person_dir.name
        if person_id.startswith("."):
            continue
        try:
            person = _read_person_json(person_dir, person_id)
        except (OSError, ValueError) as err:
            report.skipped["bad_metadata"] += 1
            report.warnings.append(f"{person_dir / 'person.json'}: {err}")
            continue
        vectors: list[FloatArray] = []
        for photo in person_photos(person_dir):
            try:
                data = photo.read_bytes()
            except OSError as err:
                report.skipped["unreadable"] += 1
                report.warnings.append(f"{photo}: {err.strerror or err}")
                continue
            result = embed_photo_cached(analyzer, cache, data, report)
            if result.embedding is None:
                reason = result.reason or "no_face"
                report.skipped[reason] += 1
                report.warnings.append(f"{photo}: skipped ({reason})")
                continue
            if result.faces > 1:
                report.warnings.append(f"{photo}: {result.faces} faces, the largest one is used")
                _LOGGER.warning("%s holds %d faces; the largest one is used", photo, result.faces)
            vectors.append(result.embedding)
        if not vectors:
            report.skipped["no_usable_photo"] += 1
            continue
        persons[person_id] = person
        refs.extend((person_id, v) for v in vectors)
    gallery = Gallery(
        persons, refs, model_id=analyzer.model_id, embedding_size=analyzer.embedding_size
    )
    report.persons = gallery.matchable_count
    report.references = gallery.reference_count
    return gallery, report
