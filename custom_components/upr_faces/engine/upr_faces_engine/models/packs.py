"""Model packs: official packs, finding a pack's detector and recognizer by graph, checks.

A pack is a folder of ONNX files laid out like InsightFace's ``buffalo_l``, ``buffalo_m``,
``buffalo_s`` and ``buffalo_sc``. The face detector and the face recognizer are recognised
by their graphs, never by their file names:

* detector: one 4-D input ``[1, 3, H, W]`` and 9 outputs (SCRFD with 5 keypoints); a
  6-output SCRFD (no keypoints) is recognised and refused with a clear message;
* recognizer: one input ``[N, 3, 112, 112]`` and one 2-D output ``[N, D]``, where ``D`` is
  the embedding size (read from the model, never assumed).

The graphs also say how to feed them: a detector exported with a fixed input size gets
exactly that size, and a recognizer whose first nodes normalise its input (MXNet-style
``Sub`` and ``Mul``) gets raw pixels.

Other models of the official packs (landmarks 2d106 and 1k3d68, gender/age) are ignored.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from ..errors import ModelPackError
from .graph import (
    KEYPOINT_OUTPUTS,
    PLAIN_OUTPUTS,
    ModelInfo,
    TensorInfo,
    file_sha256,
    inspect_model,
)

_LOGGER = logging.getLogger(__name__)

RELEASE_URL: Final = "https://github.com/deepinsight/insightface/releases/download/v0.7"

NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def safe_url(url: str) -> str:
    """The URL without credentials, query or fragment: fit for logs and messages."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        if parts.port is not None:
            host = f"{host}:{parts.port}"
    except ValueError:
        return "<invalid URL>"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def is_url(text: str) -> bool:
    """Whether a pack is given by its download address rather than its name."""
    return text.startswith(("http://", "https://"))


def name_from_url(url: str) -> str:
    """The pack name of ``.../<name>.zip``."""
    last = PurePosixPath(urlsplit(url).path).name
    name = last.removesuffix(".zip")
    if not NAME_RE.fullmatch(name) or name.endswith("."):
        raise ModelPackError(f"cannot tell the pack name from {safe_url(url)}: give the pack name")
    return name


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


class ModelPackMissingError(ModelPackError):
    """A pack folder lacks a usable detector or recognizer (or does not exist).

    ``missing`` names the files to add (official packs) or the roles that were not found,
    ``url`` is where the official pack can be downloaded (None for other packs), and
    ``problems`` are the reasons without the folder prefix.
    """

    def __init__(
        self,
        message: str,
        *,
        folder: Path,
        missing: tuple[str, ...] = (),
        url: str | None = None,
        problems: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.folder = folder
        self.missing = missing
        self.url = url
        self.problems = problems


class ModelPackChecksumError(ModelPackError):
    """A file of an official pack is not the published one (its sha256 differs): damaged,
    truncated or replaced. Its pack is not used."""

    def __init__(self, message: str, *, folder: Path, file: str, url: str) -> None:
        super().__init__(message)
        self.folder = folder
        self.file = file
        self.url = url


class ModelPackDownloadError(ModelPackError):
    """A pack could not be downloaded, or its archive is corrupt or not a pack.

    ``url`` is the download address with any credentials and query string removed;
    ``status`` the HTTP status when the server answered with an error.
    """

    def __init__(self, message: str, *, url: str, status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


# --------------------------------------------------------------------------------------
# Official packs
# --------------------------------------------------------------------------------------

_EXTRAS: Final = ("1k3d68.onnx", "2d106det.onnx", "genderage.onnx")

PINNED_SHA256: Final[Mapping[str, str]] = MappingProxyType(
    {
        # the files of InsightFace's v0.7 release zips, as independent public projects
        # pin them (det_500m.onnx is also the shared test pack's detector, byte for byte)
        "det_10g.onnx": "5838f7fe053675b1c7a08b633df49e7af5495cee0493c7dcf6697200b85b5b91",
        "w600k_r50.onnx": "4c06341c33c2ca1f86781dab0e829f88ad5b64be9fba56e56bc9ebdefc619e43",
        "det_500m.onnx": "5e4447f50245bbd7966bd6c0fa52938c61474a04ec7def48753668a9d8b4ea3a",
        "w600k_mbf.onnx": "9cc6e4a75f0e2bf0b1aed94578f144d15175f357bdc05e815e5c4a02b319eb4f",
        # det_2.5g.onnx (buffalo_m's detector): no published hash found; checked by its
        # graph only
    }
)
"""sha256 of the official packs' files this project uses: an official pack whose file
has another content is refused before use (:class:`ModelPackChecksumError`)."""


@dataclass(frozen=True, slots=True)
class OfficialPack:
    """One of InsightFace's published packs: its detector, recognizer and other files."""

    name: str
    detector: str
    recognizer: str
    extras: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        """Download address of the pack's zip."""
        return f"{RELEASE_URL}/{self.name}.zip"

    @property
    def files(self) -> tuple[str, ...]:
        """Every file of the official zip, sorted."""
        return tuple(sorted((self.detector, self.recognizer, *self.extras)))

    @property
    def required(self) -> tuple[str, str]:
        """The two files this project uses."""
        return (self.detector, self.recognizer)

    @property
    def pinned(self) -> dict[str, str]:
        """The sha256 of the files this project uses, where one is published."""
        return {name: PINNED_SHA256[name] for name in self.required if name in PINNED_SHA256}


OFFICIAL_PACKS: Final[Mapping[str, OfficialPack]] = MappingProxyType(
    {
        "buffalo_l": OfficialPack("buffalo_l", "det_10g.onnx", "w600k_r50.onnx", _EXTRAS),
        "buffalo_m": OfficialPack("buffalo_m", "det_2.5g.onnx", "w600k_r50.onnx", _EXTRAS),
        "buffalo_s": OfficialPack("buffalo_s", "det_500m.onnx", "w600k_mbf.onnx", _EXTRAS),
        "buffalo_sc": OfficialPack("buffalo_sc", "det_500m.onnx", "w600k_mbf.onnx"),
    }
)
_OFFICIAL_DETECTORS: Final = frozenset(p.detector for p in OFFICIAL_PACKS.values())
_OFFICIAL_RECOGNIZERS: Final = frozenset(p.recognizer for p in OFFICIAL_PACKS.values())


def official_pack(name: str) -> OfficialPack | None:
    """The official pack of that name, or None."""
    return OFFICIAL_PACKS.get(name)


# --------------------------------------------------------------------------------------
# Packs
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModelPack:
    """A usable pack: the folder, the detector and the recognizer it holds.

    The other facts are read from the models on demand (cached per process):
    ``embedding_size``, ``recognizer_sha256`` and ``identity``.
    """

    folder: Path
    detector: Path
    recognizer: Path

    @property
    def name(self) -> str:
        """The pack's folder name (``buffalo_l`` for an official pack)."""
        return self.folder.name

    @property
    def detector_info(self) -> ModelInfo:
        """The detector's graph."""
        return inspect_model(self.detector)

    @property
    def recognizer_info(self) -> ModelInfo:
        """The recognizer's graph."""
        return inspect_model(self.recognizer)

    @property
    def detector_input_name(self) -> str:
        """Name of the detector's input (``input.1`` in InsightFace's SCRFD)."""
        return self.detector_info.inputs[0].name

    @property
    def detector_input_size(self) -> tuple[int, int] | None:
        """(width, height) when the detector's graph fixes it; None when dynamic."""
        return self.detector_info.input_size

    @property
    def recognizer_normalises_input(self) -> bool:
        """Whether the recognizer's graph normalises its input itself (raw pixels in)."""
        return self.recognizer_info.normalises_input

    @property
    def embedding_size(self) -> int:
        """Width of the recognizer's embeddings, read from the model."""
        size = self.recognizer_info.embedding_size
        if size is None:
            raise ModelPackError(
                f"model pack {self.folder}: {self.recognizer.name} is not a recognizer"
            )
        return size

    @property
    def recognizer_sha256(self) -> str:
        """Hex sha256 of the recognizer file (computed once per process, then cached)."""
        return file_sha256(self.recognizer)

    @property
    def identity(self) -> str:
        """``<recognizer stem>:<sha256[:16]>:<embedding size>``: the embedding cache key.

        Embeddings made with one identity must never be compared with another's.
        """
        return f"{self.recognizer.stem}:{self.recognizer_sha256[:16]}:{self.embedding_size}"


def model_identity(pack: ModelPack) -> str:
    """Same as ``pack.identity``."""
    return pack.identity


@dataclass(frozen=True, slots=True)
class _Scan:
    folder: Path
    official: OfficialPack | None
    models: tuple[ModelInfo, ...]
    unreadable: tuple[tuple[Path, str], ...]


def _onnx_files(folder: Path) -> list[Path]:
    return sorted(
        entry
        for entry in folder.iterdir()
        if entry.suffix.lower() == ".onnx" and not entry.name.startswith(".") and entry.is_file()
    )


def _models_folder(folder: Path) -> Path:
    """``folder``, or its single subfolder when the models were unzipped one level deeper."""
    if _onnx_files(folder):
        return folder
    subfolders = [
        entry
        for entry in folder.iterdir()
        if entry.is_dir() and not entry.name.startswith((".", "__MACOSX"))
    ]
    if len(subfolders) == 1 and _onnx_files(subfolders[0]):
        return subfolders[0]
    return folder


def _hint(folder: Path, official: OfficialPack | None) -> str:
    if official is not None:
        return (
            f"put {official.detector} and {official.recognizer} in {folder} "
            f"(they are in {official.url})"
        )
    return (
        f"put an SCRFD face detector with keypoints (such as det_10g.onnx) and a 112x112 "
        f"face recognizer (such as w600k_r50.onnx) in {folder}"
    )


def _missing_error(
    folder: Path, official: OfficialPack | None, problem: str
) -> ModelPackMissingError:
    missing = official.required if official is not None else ("face detector", "face recognizer")
    return ModelPackMissingError(
        f"model pack {folder}: {problem}; {_hint(folder, official)}",
        folder=folder,
        missing=missing,
        url=official.url if official is not None else None,
        problems=(problem,),
    )


def _scan(folder: Path) -> _Scan:
    official = OFFICIAL_PACKS.get(folder.name)
    if not folder.is_dir():
        raise _missing_error(folder, official, "folder not found")
    models_folder = _models_folder(folder)
    files = _onnx_files(models_folder)
    if not files:
        raise _missing_error(folder, official, "no .onnx files")
    models: list[ModelInfo] = []
    unreadable: list[tuple[Path, str]] = []
    for path in files:
        try:
            models.append(inspect_model(path))
        except ModelPackError as err:
            unreadable.append((path, str(err)))
    return _Scan(models_folder, official, tuple(models), tuple(unreadable))


def _ranked(
    models: list[ModelInfo], preferred: str | None, official: frozenset[str]
) -> list[ModelInfo]:
    def rank(info: ModelInfo) -> tuple[int, str]:
        name = info.path.name
        return (0 if name == preferred else 1 if name in official else 2, name)

    return sorted(models, key=rank)


def _choose(scan: _Scan) -> ModelPack:
    folder, official = scan.folder, scan.official
    detectors = _ranked(
        [m for m in scan.models if m.kind == "detector"],
        official.detector if official else None,
        _OFFICIAL_DETECTORS,
    )
    recognizers = _ranked(
        [m for m in scan.models if m.kind == "recognizer"],
        official.recognizer if official else None,
        _OFFICIAL_RECOGNIZERS,
    )
    problems: list[str] = []
    missing: list[str] = []
    if not detectors:
        plain = [m.path.name for m in scan.models if m.kind == "detector_no_keypoints"]
        if plain:
            problems.append(
                f"detector {plain[0]} has no keypoint outputs ({PLAIN_OUTPUTS} outputs, "
                f"{KEYPOINT_OUTPUTS} needed): use an SCRFD detector with keypoints such as "
                "det_10g.onnx or det_500m.onnx"
            )
        else:
            expected = official.detector if official else "an SCRFD detector with keypoints"
            problems.append(f"no face detector found (expected {expected})")
        missing.append(official.detector if official else "face detector")
    if not recognizers:
        expected = official.recognizer if official else "a 112x112 face recognizer"
        problems.append(f"no face recognizer found (expected {expected})")
        missing.append(official.recognizer if official else "face recognizer")
    if problems:
        message = f"model pack {folder}: " + "; ".join(problems)
        if scan.unreadable:
            message += "; unreadable: " + ", ".join(p.name for p, _ in scan.unreadable)
        if official is not None:
            message += f" (download {official.url} if the files are lost)"
        raise ModelPackMissingError(
            message,
            folder=folder,
            missing=tuple(missing),
            url=official.url if official else None,
            problems=tuple(problems),
        )
    detector, recognizer = detectors[0], recognizers[0]
    if len(detectors) > 1 or len(recognizers) > 1:
        _LOGGER.debug(
            "model pack %s: using %s and %s among %d detectors and %d recognizers",
            folder,
            detector.path.name,
            recognizer.path.name,
            len(detectors),
            len(recognizers),
        )
    pack = ModelPack(folder, detector.path, recognizer.path)
    if official is not None:
        verify_pinned(pack, official)
    return pack


def verify_pinned(pack: ModelPack, official: OfficialPack) -> None:
    """Raise ModelPackChecksumError when a file of the official pack that this project
    uses, and whose sha256 is published, has another content (read once per file
    version: cached by size, mtime and inode)."""
    for path in (pack.detector, pack.recognizer):
        expected = official.pinned.get(path.name)
        if expected is None:
            continue
        actual = file_sha256(path)
        if actual != expected:
            raise ModelPackChecksumError(
                f"model pack {pack.folder}: {path.name} is not the official file (sha256 "
                f"{actual}, expected {expected}); it is not used: delete it and download "
                f"{official.url} again",
                folder=pack.folder,
                file=path.name,
                url=official.url,
            )


def find_pack(folder: Path) -> ModelPack:
    """Recognise the detector and the recognizer in ``folder`` by their graphs.

    A folder holding a single subfolder of models (a zip unpacked one level too deep) is
    accepted; the pack's ``folder`` is then that subfolder. When several models qualify,
    the official file names come first, then alphabetical order.
    Raises ModelPackMissingError naming the folder and what is missing.
    """
    return _choose(_scan(folder))


def pack_folder(name_or_folder: str | Path, models_dir: Path) -> Path:
    """Where a pack lives: ``models_dir / name`` for a name, the folder itself for a path."""
    if isinstance(name_or_folder, str) and is_url(name_or_folder):
        return models_dir / name_from_url(name_or_folder)
    return models_dir / name_or_folder


def ensure_pack(name_or_folder: str | Path, models_dir: Path) -> ModelPack:
    """The installed pack, or ModelPackMissingError telling which folder to fill with what.

    Nothing is downloaded: the caller decides whether to call :func:`fetch_pack`. Packs
    placed by hand (closed networks) are found the same way as downloaded ones.
    """
    return find_pack(pack_folder(name_or_folder, models_dir))


# --------------------------------------------------------------------------------------
# Verification report
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModelReport:
    """One ONNX file of a pack."""

    file: str
    kind: str
    size_bytes: int
    sha256: str | None
    inputs: tuple[TensorInfo, ...] = ()
    outputs: int = 0
    embedding_size: int | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class PackReport:
    """What ``upr-faces models verify DIR`` prints (``as_dict`` for JSON).

    ``ok`` means no problem at all (a pack with an unreadable extra file still works but
    is not ok). ``missing``: for an official pack, its files absent by name (the extra
    models are optional; ``problems`` says whether the pack is usable); for another
    pack, the roles (face detector, face recognizer) not found.
    """

    folder: str
    official: str | None
    ok: bool
    detector: str | None
    recognizer: str | None
    embedding_size: int | None
    identity: str | None
    models: tuple[ModelReport, ...]
    missing: tuple[str, ...]
    problems: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        """Plain data for ``json.dumps``."""
        return asdict(self)


def verify_pack(folder: Path) -> PackReport:
    """Inspect every model of a pack and hash it; never raises for a bad pack."""
    official = OFFICIAL_PACKS.get(folder.name)
    try:
        scan = _scan(folder)
    except ModelPackMissingError as err:
        return PackReport(
            folder=str(folder),
            official=official.name if official else None,
            ok=False,
            detector=None,
            recognizer=None,
            embedding_size=None,
            identity=None,
            models=(),
            missing=official.files if official else err.missing,
            problems=err.problems,
        )
    problems: list[str] = []
    reports: list[ModelReport] = []
    for info in scan.models:
        reports.append(
            ModelReport(
                info.path.name,
                info.kind,
                info.size_bytes,
                file_sha256(info.path),
                info.inputs,
                len(info.outputs),
                info.embedding_size,
            )
        )
    for path, reason in scan.unreadable:
        size = path.stat().st_size
        reports.append(ModelReport(path.name, "unreadable", size, file_sha256(path), error=reason))
        problems.append(f"{path.name}: not a readable ONNX model")
    reports.sort(key=lambda report: report.file)
    pack: ModelPack | None = None
    try:
        pack = _choose(scan)
    except ModelPackMissingError as err:
        problems[:0] = err.problems
    missing: tuple[str, ...] = ()
    if official is not None:
        present = {path.name for path in _onnx_files(scan.folder)}
        missing = tuple(name for name in official.files if name not in present)
    elif pack is None:
        missing = tuple(
            role
            for role, kind in (("face detector", "detector"), ("face recognizer", "recognizer"))
            if not any(info.kind == kind for info in scan.models)
        )
    return PackReport(
        folder=str(scan.folder),
        official=official.name if official else None,
        ok=not problems,
        detector=pack.detector.name if pack else None,
        recognizer=pack.recognizer.name if pack else None,
        embedding_size=pack.embedding_size if pack else None,
        identity=pack.identity if pack else None,
        models=tuple(reports),
        missing=missing,
        problems=tuple(problems),
    )
