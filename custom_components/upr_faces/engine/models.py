"""Model packs: find, verify, download and describe InsightFace-style ONNX packs.

A pack is a folder of ONNX files laid out like InsightFace's ``buffalo_l``, ``buffalo_m``,
``buffalo_s`` and ``buffalo_sc``. The face detector and the face recognizer are recognised
by their graphs, never by their file names:

* detector: one 4-D input ``[1, 3, H, W]`` and 9 outputs (SCRFD with 5 keypoints); a
  6-output SCRFD (no keypoints) is recognised and refused with a clear message;
* recognizer: one input ``[N, 3, 112, 112]`` and one 2-D output ``[N, D]``, where ``D`` is
  the embedding size (read from the model, never assumed).

Other models of the official packs (landmarks 2d106 and 1k3d68, gender/age) are ignored.

Graphs are read cheaply: the ONNX protobuf is walked for its graph inputs and outputs
only, seeking over weights, so a 170 MB recognizer costs a few milliseconds. ONNX Runtime
is used only when the protobuf leaves the embedding size symbolic (it then infers the
shape, or runs the model once on zeros). Results and file hashes are cached per process,
keyed by path, size, modification time and inode.

Downloads: :func:`fetch_pack` is synchronous (urllib; for the CLI, or an executor) and
:func:`async_fetch_pack` runs over an injected ``aiohttp.ClientSession`` (Home Assistant's
shared session), doing its file work in the default executor. Both write
``<dest>/<pack>.zip.part``, resume it with an HTTP ``Range`` request, retry with backoff,
verify the archive and install it atomically (see :func:`fetch_pack`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import io
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import IO, TYPE_CHECKING, Any, Final, Literal
from urllib.parse import urlsplit, urlunsplit

from .errors import ModelPackError

if TYPE_CHECKING:
    import aiohttp

_LOGGER = logging.getLogger(__name__)

RELEASE_URL: Final = "https://github.com/deepinsight/insightface/releases/download/v0.7"
USER_AGENT: Final = "upr-faces (model pack download)"
CHUNK_SIZE: Final = 256 * 1024
MAX_UNPACKED_BYTES: Final = 8 * 1024**3
RECOGNIZER_INPUT: Final = 112
KEYPOINT_OUTPUTS: Final = 9
PLAIN_OUTPUTS: Final = 6

type ModelKind = Literal["detector", "detector_no_keypoints", "recognizer", "other"]
type ProgressCallback = Callable[[int, int | None], None]
"""Called with (bytes of the archive on disk, its total size or None when unknown)."""


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
# Graph inspection
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """A graph input or output: its name and shape (None for unknown or symbolic dims;
    ``shape`` itself is None when even the rank is unknown)."""

    name: str
    shape: tuple[int | None, ...] | None


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What a model file's graph says it is."""

    path: Path
    kind: ModelKind
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    size_bytes: int
    embedding_size: int | None = None

    @property
    def input_size(self) -> tuple[int, int] | None:
        """(width, height) of the first input when the graph fixes it, else None."""
        shape = self.inputs[0].shape if self.inputs else None
        if shape is None or len(shape) != 4:
            return None
        height, width = shape[2], shape[3]
        if height is None or width is None:
            return None
        return (width, height)


class _ProtoError(Exception):
    """The file is not a protobuf laid out like an ONNX model."""


def _varint(stream: IO[bytes]) -> int:
    result = 0
    shift = 0
    while True:
        byte = stream.read(1)
        if not byte:
            raise _ProtoError("truncated varint")
        result |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return result
        shift += 7
        if shift > 63:
            raise _ProtoError("varint too long")


def _fields(stream: IO[bytes], start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """Walk the protobuf fields in ``[start, end)``.

    Yields ``(number, wire_type, offset, value)``: for length-delimited fields ``offset``
    is where the payload starts and ``value`` its length; for varints ``value`` is the
    number. The consumer may read the stream freely: each step seeks back.
    """
    pos = start
    while pos < end:
        stream.seek(pos)
        key = _varint(stream)
        number, wire = key >> 3, key & 7
        value = 0
        if wire == 0:
            value = _varint(stream)
            offset = nxt = stream.tell()
        elif wire == 1:
            offset = stream.tell()
            nxt = offset + 8
        elif wire == 2:
            value = _varint(stream)
            offset = stream.tell()
            nxt = offset + value
        elif wire == 5:
            offset = stream.tell()
            nxt = offset + 4
        else:
            raise _ProtoError(f"unsupported wire type {wire}")
        if number == 0 or nxt > end:
            raise _ProtoError("field runs past its message")
        yield number, wire, offset, value
        pos = nxt


def _read(stream: IO[bytes], offset: int, length: int) -> bytes:
    stream.seek(offset)
    data = stream.read(length)
    if len(data) != length:
        raise _ProtoError("truncated field")
    return data


def _string(stream: IO[bytes], offset: int, length: int) -> str:
    try:
        return _read(stream, offset, length).decode()
    except UnicodeDecodeError as err:
        raise _ProtoError("bad string") from err


def _tensor_name(stream: IO[bytes], start: int, end: int) -> str:
    """Name (field 8) of a TensorProto, seeking over its data."""
    for number, wire, offset, value in _fields(stream, start, end):
        if number == 8 and wire == 2:
            return _string(stream, offset, value)
    return ""


def _value_info(data: bytes) -> TensorInfo:
    """Parse a ValueInfoProto: name, and the shape of a tensor type."""
    stream = io.BytesIO(data)
    name = ""
    shape: tuple[int | None, ...] | None = None
    for number, wire, offset, value in _fields(stream, 0, len(data)):
        if wire != 2:
            continue
        if number == 1:
            name = _string(stream, offset, value)
        elif number == 2:  # TypeProto
            for t_number, t_wire, t_offset, t_value in _fields(stream, offset, offset + value):
                if t_number != 1 or t_wire != 2:  # tensor_type
                    continue
                for s_number, s_wire, s_offset, s_value in _fields(
                    stream, t_offset, t_offset + t_value
                ):
                    if s_number == 2 and s_wire == 2:  # shape
                        shape = _shape(stream, s_offset, s_offset + s_value)
    return TensorInfo(name, shape)


def _shape(stream: IO[bytes], start: int, end: int) -> tuple[int | None, ...]:
    dims: list[int | None] = []
    for number, wire, offset, value in _fields(stream, start, end):
        if number != 1 or wire != 2:
            continue
        dim: int | None = None
        for d_number, d_wire, _d_offset, d_value in _fields(stream, offset, offset + value):
            if d_number == 1 and d_wire == 0:
                signed = d_value - (1 << 64) if d_value >= 1 << 63 else d_value
                dim = signed if signed > 0 else None
        dims.append(dim)
    return tuple(dims)


def _graph_from_protobuf(path: Path) -> tuple[tuple[TensorInfo, ...], tuple[TensorInfo, ...]]:
    """Graph inputs (initializers excluded, as ONNX Runtime does) and outputs."""
    size = path.stat().st_size
    with path.open("rb") as stream:
        graph: tuple[int, int] | None = None
        has_ir_version = False
        for number, wire, offset, value in _fields(stream, 0, size):
            if number == 1 and wire == 0:
                has_ir_version = True
            elif number == 7 and wire == 2:
                graph = (offset, value)
        if graph is None or not has_ir_version:
            raise _ProtoError("no ONNX graph")
        inputs: list[TensorInfo] = []
        outputs: list[TensorInfo] = []
        initializers: set[str] = set()
        start, length = graph
        for number, wire, offset, value in _fields(stream, start, start + length):
            if wire != 2:
                continue
            if number == 11:
                inputs.append(_value_info(_read(stream, offset, value)))
            elif number == 12:
                outputs.append(_value_info(_read(stream, offset, value)))
            elif number == 5:
                initializers.add(_tensor_name(stream, offset, offset + value))
            elif number == 15:  # SparseTensorProto: its values tensor carries the name
                for s_number, s_wire, s_offset, s_value in _fields(stream, offset, offset + value):
                    if s_number == 1 and s_wire == 2:
                        initializers.add(_tensor_name(stream, s_offset, s_offset + s_value))
    real_inputs = tuple(tensor for tensor in inputs if tensor.name not in initializers)
    if not real_inputs or not outputs:
        raise _ProtoError("graph without inputs or outputs")
    return real_inputs, tuple(outputs)


def _ort_session(path: Path) -> Any:
    import onnxruntime as ort  # heavy, and only needed as a fallback

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _ort_tensors(items: Any) -> tuple[TensorInfo, ...]:
    tensors: list[TensorInfo] = []
    for item in items:
        shape = item.shape
        dims = None if shape is None else tuple(d if isinstance(d, int) else None for d in shape)
        tensors.append(TensorInfo(str(item.name), dims))
    return tuple(tensors)


def _graph_from_onnxruntime(path: Path) -> tuple[tuple[TensorInfo, ...], tuple[TensorInfo, ...]]:
    try:
        session = _ort_session(path)
    except Exception as err:  # onnxruntime raises its own exception classes
        raise ModelPackError(f"{path}: not a readable ONNX model ({err})") from err
    return _ort_tensors(session.get_inputs()), _ort_tensors(session.get_outputs())


def _probe_embedding_size(path: Path) -> int:
    """Embedding width of a recognizer whose graph leaves it symbolic."""
    import numpy as np

    try:
        session = _ort_session(path)
        shape = session.get_outputs()[0].shape
        if shape is not None and len(shape) == 2 and isinstance(shape[1], int) and shape[1] > 0:
            return int(shape[1])
        name = session.get_inputs()[0].name
        zeros = np.zeros((1, 3, RECOGNIZER_INPUT, RECOGNIZER_INPUT), dtype=np.float32)
        result = session.run(None, {name: zeros})[0]
    except Exception as err:  # onnxruntime raises its own exception classes
        raise ModelPackError(f"{path}: cannot run the recognizer ({err})") from err
    if getattr(result, "ndim", 0) != 2:
        raise ModelPackError(f"{path}: recognizer output is not [N, D]")
    return int(result.shape[1])


def _classify(
    inputs: tuple[TensorInfo, ...], outputs: tuple[TensorInfo, ...]
) -> tuple[ModelKind, bool]:
    """The kind of model, and whether a recognizer's width is still unknown."""
    if len(inputs) != 1:
        return "other", False
    shape = inputs[0].shape
    if shape is None or len(shape) != 4 or shape[1] not in (3, None):
        return "other", False
    if len(outputs) in (KEYPOINT_OUTPUTS, PLAIN_OUTPUTS) and shape[0] in (1, None):
        kind: ModelKind = (
            "detector" if len(outputs) == KEYPOINT_OUTPUTS else "detector_no_keypoints"
        )
        return kind, False
    if len(outputs) == 1 and shape[2] == RECOGNIZER_INPUT and shape[3] == RECOGNIZER_INPUT:
        out = outputs[0].shape
        if out is None:
            return "recognizer", True
        if len(out) == 2:
            return "recognizer", out[1] is None
    return "other", False


_CACHE_LOCK = threading.Lock()
_INFO_CACHE: dict[tuple[str, int, int, int], ModelInfo] = {}
_SHA_CACHE: dict[tuple[str, int, int, int], str] = {}
_CACHE_LIMIT: Final = 512


def _file_key(path: Path) -> tuple[str, int, int, int]:
    stat = path.stat()
    return (os.path.abspath(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)


def _remember[V](
    cache: dict[tuple[str, int, int, int], V], key: tuple[str, int, int, int], value: V
) -> None:
    with _CACHE_LOCK:
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[key] = value


def inspect_model(path: Path) -> ModelInfo:
    """Read a model's graph and classify it (cached; cheap even for large files).

    Raises ModelPackError when the file cannot be read as an ONNX model.
    """
    try:
        key = _file_key(path)
    except OSError as err:
        raise ModelPackError(f"{path}: cannot read ({err.strerror})") from err
    with _CACHE_LOCK:
        cached = _INFO_CACHE.get(key)
    if cached is not None:
        return cached
    try:
        inputs, outputs = _graph_from_protobuf(path)
    except (_ProtoError, OSError) as err:
        _LOGGER.debug("%s: protobuf walk failed (%s); asking onnxruntime", path, err)
        inputs, outputs = _graph_from_onnxruntime(path)
    kind, width_unknown = _classify(inputs, outputs)
    embedding_size: int | None = None
    if kind == "recognizer":
        out_shape = outputs[0].shape
        if width_unknown or out_shape is None:
            embedding_size = _probe_embedding_size(path)
        else:
            embedding_size = out_shape[1]
    info = ModelInfo(path, kind, inputs, outputs, key[1], embedding_size)
    _remember(_INFO_CACHE, key, info)
    return info


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's content (cached per path, size, mtime and inode)."""
    key = _file_key(path)
    with _CACHE_LOCK:
        cached = _SHA_CACHE.get(key)
    if cached is not None:
        return cached
    digest = _sha256_of(path)
    _remember(_SHA_CACHE, key, digest)
    return digest


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


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
    return ModelPack(folder, detector.path, recognizer.path)


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
    if isinstance(name_or_folder, str) and _is_url(name_or_folder):
        return models_dir / _name_from_url(name_or_folder)
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


# --------------------------------------------------------------------------------------
# Download
# --------------------------------------------------------------------------------------

_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


@dataclass(frozen=True, slots=True)
class _Target:
    name: str
    url: str

    @property
    def safe_url(self) -> str:
        return safe_url(self.url)


class _RetryableError(Exception):
    """A network failure worth another attempt."""


class _RestartError(_RetryableError):
    """The server's answer cannot extend the ``.part``: drop it and start again."""


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


def _is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def _name_from_url(url: str) -> str:
    last = PurePosixPath(urlsplit(url).path).name
    name = last.removesuffix(".zip")
    if not _NAME_RE.fullmatch(name) or name.endswith("."):
        raise ModelPackError(f"cannot tell the pack name from {safe_url(url)}: give the pack name")
    return name


def _target(name_or_url: str, url: str | None) -> _Target:
    if _is_url(name_or_url):
        if url is not None and url != name_or_url:
            raise ModelPackError("give the download URL once (as the pack or as url=)")
        return _Target(_name_from_url(name_or_url), name_or_url)
    name = name_or_url
    if not _NAME_RE.fullmatch(name) or name.endswith("."):
        raise ModelPackError(f"invalid model pack name {name!r}")
    if url is None:
        official = OFFICIAL_PACKS.get(name)
        if official is None:
            known = ", ".join(OFFICIAL_PACKS)
            raise ModelPackError(
                f"unknown model pack {name!r}: give its download URL (official packs: {known})"
            )
        url = official.url
    if not _is_url(url):
        raise ModelPackError(f"unsupported download URL {safe_url(url)} (http or https only)")
    return _Target(name, url)


def part_path(dest_dir: Path, name: str) -> Path:
    """Where the archive of pack ``name`` is downloaded to (and resumed from)."""
    return dest_dir / f"{name}.zip.part"


def _part_size(part: Path) -> int:
    try:
        return part.stat().st_size
    except FileNotFoundError:
        return 0


_CONTENT_RANGE_RE: Final = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", re.IGNORECASE)
_UNSATISFIED_RANGE_RE: Final = re.compile(r"bytes\s+\*/(\d+)", re.IGNORECASE)


def _plan(
    status: int, content_range: str | None, content_length: str | None, offset: int
) -> tuple[bool, int | None]:
    """(append to the .part?, total size or None) for a successful response."""
    length = int(content_length) if content_length and content_length.isdigit() else None
    if status == 206 and offset:
        match = _CONTENT_RANGE_RE.fullmatch((content_range or "").strip())
        if match is None or int(match.group(1)) != offset:
            raise _RestartError(f"server answered range {content_range!r} to bytes={offset}-")
        total = None if match.group(3) == "*" else int(match.group(3))
        if total is None and length is not None:
            total = offset + length
        return True, total
    if offset:
        _LOGGER.debug("server ignored the range request; downloading from the start")
    if status == 206:  # a range we did not ask for
        raise _RetryableError("unexpected partial content")
    return False, length


def _unsatisfied_range(part: Path, content_range: str | None, offset: int) -> bool:
    """Handle 416: True when the .part is already complete; otherwise drop it."""
    match = _UNSATISFIED_RANGE_RE.fullmatch((content_range or "").strip())
    if match is not None and int(match.group(1)) == offset:
        return True
    part.unlink(missing_ok=True)
    return False


def _status_error(target: _Target, status: int, reason: str) -> Exception:
    if status >= 500 or status in (408, 429):
        return _RetryableError(f"HTTP {status} {reason}".rstrip())
    return ModelPackDownloadError(
        f"cannot download model pack {target.name} from {target.safe_url}: "
        f"HTTP {status} {reason}".rstrip(),
        url=target.safe_url,
        status=status,
    )


def _report(progress: ProgressCallback | None, done: int, total: int | None) -> None:
    if progress is not None:
        progress(done, total)


def _write(handle: IO[bytes], chunk: bytes, part: Path) -> None:
    try:
        handle.write(chunk)
    except OSError as err:
        raise ModelPackError(f"cannot write {part}: {err.strerror}") from err


def _open_part(part: Path, append: bool) -> IO[bytes]:
    try:
        return part.open("ab" if append else "wb")
    except OSError as err:
        raise ModelPackError(f"cannot write {part}: {err.strerror}") from err


def _request_headers(offset: int) -> dict[str, str]:
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return headers


def _download_sync(
    target: _Target, part: Path, progress: ProgressCallback | None, io_timeout: float
) -> None:
    """One attempt: download the rest of the archive into ``part``."""
    offset = _part_size(part)
    request = urllib.request.Request(target.url, headers=_request_headers(offset))
    try:
        response = urllib.request.urlopen(request, timeout=io_timeout)
    except urllib.error.HTTPError as err:
        with err:
            if err.code == 416 and offset:
                if _unsatisfied_range(part, err.headers.get("Content-Range"), offset):
                    return
                raise _RetryableError("server refused the range; starting again") from err
            raise _status_error(target, err.code, str(err.reason)) from err
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        raise _RetryableError(str(getattr(err, "reason", err))) from err
    with response:
        try:
            append, total = _plan(
                response.status,
                response.headers.get("Content-Range"),
                response.headers.get("Content-Length"),
                offset,
            )
        except _RestartError:
            part.unlink(missing_ok=True)
            raise
        done = offset if append else 0
        with _open_part(part, append) as handle:
            _report(progress, done, total)
            while True:
                try:
                    chunk = response.read(CHUNK_SIZE)
                except (http.client.HTTPException, OSError) as err:
                    raise _RetryableError(f"connection lost ({err!r})") from err
                if not chunk:
                    break
                _write(handle, chunk, part)
                done += len(chunk)
                _report(progress, done, total)
    if total is not None and done < total:
        raise _RetryableError(f"connection closed after {done} of {total} bytes")


class _DownloadLock:
    """An exclusive, non-blocking lock on ``<dest>/.<pack>.lock`` (POSIX; a no-op elsewhere).

    The lock file is removed on release; acquiring re-checks that the locked file is still
    the one at the path, so removing it cannot let two holders in.
    """

    def __init__(self, dest_dir: Path, name: str) -> None:
        self._path = dest_dir / f".{name}.lock"
        self._name = name
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            import fcntl  # POSIX only
        except ImportError:  # pragma: no cover - Windows
            return
        while True:
            try:
                fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                raise ModelPackError(f"cannot create {self._path}: {err.strerror}") from err
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                os.close(fd)
                raise ModelPackError(
                    f"model pack {self._name} is already being downloaded into {self._path.parent}"
                ) from err
            try:
                same = os.stat(self._path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                return
            os.close(fd)  # the previous holder removed it meanwhile: lock the new one

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path)
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None

    def __enter__(self) -> _DownloadLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _prepare(dest_dir: Path, target: _Target) -> ModelPack | None:
    """Create ``dest_dir``; the pack when already installed and valid, else None."""
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ModelPackError(f"cannot create {dest_dir}: {err.strerror}") from err
    folder = dest_dir / target.name
    if not folder.exists():
        return None
    try:
        return find_pack(folder)
    except ModelPackError as err:
        raise ModelPackError(
            f"{err}; {folder} exists but is not a usable pack: fix it, or remove it to "
            "download it again"
        ) from err


def _give_up_or_wait(
    target: _Target, err: _RetryableError, attempt: int, retries: int, part: Path, delay: float
) -> float:
    """After failed attempt number ``attempt`` (from 0): the backoff delay, or raise."""
    if attempt >= retries:
        raise ModelPackDownloadError(
            f"cannot download model pack {target.name} from {target.safe_url}: {err} "
            f"(gave up after {attempt + 1} attempts; the partial download {part.name} is "
            "kept and the next try resumes it)",
            url=target.safe_url,
        ) from err
    wait = delay * (1 << attempt)
    _LOGGER.warning(
        "Download of model pack %s interrupted (%s); retrying in %.0f s", target.name, err, wait
    )
    return wait


def fetch_pack(
    name_or_url: str,
    dest_dir: Path,
    *,
    url: str | None = None,
    sha256: str | None = None,
    progress: ProgressCallback | None = None,
    retries: int = 3,
    retry_delay: float = 1.0,
    io_timeout: float = 60.0,
) -> ModelPack:
    """Download and install a pack into ``dest_dir/<name>``; return it.

    ``name_or_url`` is an official pack name (``buffalo_l`` ...), any pack name with
    ``url=``, or the URL of a ``<name>.zip``. Nothing is requested when the pack is already
    installed and valid; a folder of that name that is not a valid pack is an error (it is
    never overwritten).

    The archive goes to ``<dest>/<name>.zip.part``; an existing ``.part`` is resumed with a
    ``Range`` request (a server that answers 200 restarts it). Connection errors, 5xx and
    cut transfers are retried up to ``retries`` times (each retry resuming), waiting
    ``retry_delay`` seconds, then twice as long each time; 4xx answers are not retried.
    When it gives up, the ``.part`` stays and the next call resumes it. The archive is
    then checked (``sha256`` when given, every member's CRC while unpacking, no paths
    outside the pack), unpacked into a temporary folder in ``dest_dir`` (same filesystem),
    checked with :func:`find_pack`, and renamed into place. Files at the top of the zip or
    inside one ``<name>/`` folder are both accepted. A corrupt, truncated or non-pack
    archive raises ModelPackDownloadError and deletes the ``.part``; no half pack or
    temporary folder is ever left behind. ``progress(done, total)`` is called from this
    thread; an exception it raises aborts the download and keeps the ``.part``.
    ``io_timeout`` is how long to wait for a connection or for data before an attempt fails.
    """
    target = _target(name_or_url, url)
    existing = _prepare(dest_dir, target)
    if existing is not None:
        return existing
    with _DownloadLock(dest_dir, target.name):
        existing = _prepare(dest_dir, target)
        if existing is not None:
            return existing
        part = part_path(dest_dir, target.name)
        _LOGGER.info("Downloading model pack %s from %s", target.name, target.safe_url)
        attempt = 0
        while True:
            try:
                _download_sync(target, part, progress, io_timeout)
                break
            except _RetryableError as err:
                time.sleep(_give_up_or_wait(target, err, attempt, retries, part, retry_delay))
                attempt += 1
        return _install(target, dest_dir, part, sha256)


async def async_fetch_pack(
    session: aiohttp.ClientSession,
    name_or_url: str,
    dest_dir: Path,
    *,
    url: str | None = None,
    sha256: str | None = None,
    progress: ProgressCallback | None = None,
    retries: int = 3,
    retry_delay: float = 1.0,
    io_timeout: float = 60.0,
) -> ModelPack:
    """:func:`fetch_pack` over an injected aiohttp session (Home Assistant's shared one).

    Network I/O runs on the event loop; every file operation (writing chunks, checking,
    unpacking, hashing) runs in the loop's default executor, so the loop never blocks.
    ``progress`` is called on the event loop. The session is not closed.
    """
    loop = asyncio.get_running_loop()
    target = _target(name_or_url, url)
    existing = await loop.run_in_executor(None, _prepare, dest_dir, target)
    if existing is not None:
        return existing
    lock = _DownloadLock(dest_dir, target.name)
    await loop.run_in_executor(None, lock.acquire)
    try:
        existing = await loop.run_in_executor(None, _prepare, dest_dir, target)
        if existing is not None:
            return existing
        part = part_path(dest_dir, target.name)
        _LOGGER.info("Downloading model pack %s from %s", target.name, target.safe_url)
        attempt = 0
        while True:
            try:
                await _download_async(session, target, part, progress, io_timeout)
                break
            except _RetryableError as err:
                delay = _give_up_or_wait(target, err, attempt, retries, part, retry_delay)
                await asyncio.sleep(delay)
                attempt += 1
        return await loop.run_in_executor(None, _install, target, dest_dir, part, sha256)
    finally:
        lock.release()


async def _download_async(
    session: aiohttp.ClientSession,
    target: _Target,
    part: Path,
    progress: ProgressCallback | None,
    io_timeout: float,
) -> None:
    import aiohttp  # the sync path does not need it

    loop = asyncio.get_running_loop()
    offset = await loop.run_in_executor(None, _part_size, part)
    client_timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=io_timeout, sock_read=io_timeout
    )
    done = 0
    total: int | None = None
    try:
        async with session.get(
            target.url, headers=_request_headers(offset), timeout=client_timeout
        ) as response:
            if response.status == 416 and offset:
                content_range = response.headers.get("Content-Range")
                if await loop.run_in_executor(
                    None, _unsatisfied_range, part, content_range, offset
                ):
                    return
                raise _RetryableError("server refused the range; starting again")
            if response.status >= 400:
                raise _status_error(target, response.status, response.reason or "")
            try:
                append, total = _plan(
                    response.status,
                    response.headers.get("Content-Range"),
                    response.headers.get("Content-Length"),
                    offset,
                )
            except _RestartError:
                await loop.run_in_executor(None, part.unlink, True)
                raise
            done = offset if append else 0
            handle = await loop.run_in_executor(None, _open_part, part, append)
            pending = bytearray()  # coalesce small reads; flushed even when the link drops
            try:
                _report(progress, done, total)
                async for data in response.content.iter_any():
                    pending += data
                    if len(pending) >= CHUNK_SIZE:
                        await loop.run_in_executor(None, _write, handle, bytes(pending), part)
                        done += len(pending)
                        pending.clear()
                        _report(progress, done, total)
            finally:
                try:
                    if pending:
                        await loop.run_in_executor(None, _write, handle, bytes(pending), part)
                        done += len(pending)
                        _report(progress, done, total)
                finally:
                    await loop.run_in_executor(None, handle.close)
    except (aiohttp.ClientError, TimeoutError) as err:
        raise _RetryableError(f"connection lost ({err!r})") from err
    if total is not None and done < total:
        raise _RetryableError(f"connection closed after {done} of {total} bytes")


# --------------------------------------------------------------------------------------
# Unpacking
# --------------------------------------------------------------------------------------


def _archive_error(target: _Target, problem: str) -> ModelPackDownloadError:
    return ModelPackDownloadError(
        f"model pack archive {target.name}.zip from {target.safe_url}: {problem}; "
        "the download was deleted, try again",
        url=target.safe_url,
    )


def _member_path(root: Path, info: zipfile.ZipInfo, target: _Target) -> Path | None:
    """Where a member goes under ``root``; None for entries to skip; raises on escapes."""
    name = info.filename.replace("\\", "/")
    parts = PurePosixPath(name).parts
    if not parts or parts[0] == "__MACOSX" or parts[-1].startswith("._"):
        return None
    if name.startswith("/") or ".." in parts or ":" in parts[0]:
        raise _archive_error(target, f"unsafe path {info.filename!r}")
    if info.is_dir():
        return None
    return root.joinpath(*parts)


def _unpack(archive: Path, root: Path, target: _Target) -> None:
    """Extract ``archive`` under ``root``, checking every member's CRC."""
    try:
        with zipfile.ZipFile(archive) as zipped:
            members = zipped.infolist()
            unpacked = sum(info.file_size for info in members)
            if unpacked > MAX_UNPACKED_BYTES:
                raise _archive_error(target, f"unpacks to {unpacked} bytes, too many")
            free = shutil.disk_usage(root).free
            if unpacked > free:
                raise ModelPackError(
                    f"not enough disk space in {root.parent} for model pack {target.name}: "
                    f"{unpacked} bytes needed, {free} free"
                )
            for info in members:
                dest = _member_path(root, info, target)
                if dest is None:
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zipped.open(info) as source, dest.open("wb") as sink:
                    shutil.copyfileobj(source, sink, CHUNK_SIZE)
                    sink.flush()
                    os.fsync(sink.fileno())
    except ModelPackError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, ValueError) as err:
        raise _archive_error(target, f"corrupt or truncated zip ({err})") from err
    except NotImplementedError as err:
        raise _archive_error(target, f"unsupported zip ({err})") from err
    except OSError as err:
        raise ModelPackError(f"cannot unpack model pack {target.name} into {root}: {err}") from err


def _install(target: _Target, dest_dir: Path, part: Path, sha256: str | None) -> ModelPack:
    """Check the downloaded archive and install it atomically as ``dest_dir/<name>``."""
    final = dest_dir / target.name
    try:
        if sha256 is not None:
            actual = _sha256_of(part)
            if actual.lower() != sha256.strip().lower():
                raise _archive_error(target, f"sha256 {actual} does not match {sha256}")
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=dest_dir))
        try:
            _unpack(part, staging, target)
            try:
                unpacked = find_pack(staging)
            except ModelPackMissingError as err:
                raise _archive_error(
                    target, "not a usable model pack: " + "; ".join(err.problems)
                ) from err
            try:
                os.rename(unpacked.folder, final)
            except OSError as err:
                if not final.exists():
                    raise ModelPackError(f"cannot install model pack into {final}: {err}") from err
                _LOGGER.debug("%s appeared meanwhile; keeping it", final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except ModelPackDownloadError:
        part.unlink(missing_ok=True)
        raise
    part.unlink(missing_ok=True)
    pack = find_pack(final)
    _LOGGER.info("Installed model pack %s in %s", target.name, final)
    return pack
