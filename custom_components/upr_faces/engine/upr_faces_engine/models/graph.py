"""ONNX graphs read cheaply: inputs, outputs and the role of a model (detector, recognizer).

The ONNX protobuf is walked for the graph's inputs, outputs and first nodes only, seeking
over weights, so a 170 MB recognizer costs a few milliseconds. ONNX Runtime is used only
when the protobuf leaves the embedding size symbolic (it then infers the shape, or runs
the model once on zeros). Results and file hashes are cached per process, keyed by path,
size, modification time and inode.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final, Literal

from ..errors import ModelPackError

_LOGGER = logging.getLogger(__name__)

RECOGNIZER_INPUT: Final = 112
KEYPOINT_OUTPUTS: Final = 9
PLAIN_OUTPUTS: Final = 6
# How many of the graph's first nodes are read to tell whether it normalises its input.
HEAD_NODES: Final = 16
# Element-wise arithmetic that, applied to the input with constants, scales pixels.
_NORMALISING_OPS: Final = frozenset({"Sub", "Mul", "Div", "Add"})
_STANDARD_DOMAINS: Final = frozenset({"", "ai.onnx"})

type ModelKind = Literal["detector", "detector_no_keypoints", "recognizer", "other"]


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """A graph input or output: its name and shape (None for unknown or symbolic dims;
    ``shape`` itself is None when even the rank is unknown)."""

    name: str
    shape: tuple[int | None, ...] | None


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What a model file's graph says it is.

    ``normalises_input``: the graph's first nodes subtract a mean from and/or scale its
    input by constants (MXNet's ``_minusscalar`` and ``_mulscalar``, as InsightFace's
    ``ArcFaceONNX`` detects), so the model takes raw 0..255 pixels and must not be fed
    normalised ones. False when the graph could only be read by ONNX Runtime.
    """

    path: Path
    kind: ModelKind
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    size_bytes: int
    embedding_size: int | None = None
    normalises_input: bool = False

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

    @property
    def batch_size(self) -> int | None:
        """The first input's batch dimension when the graph fixes it (1 for most SCRFD
        exports), None when it is symbolic or -1: the model then takes several images at
        once."""
        shape = self.inputs[0].shape if self.inputs else None
        if not shape:
            return 1  # rank unknown: assume one image at a time
        return shape[0]


@dataclass(frozen=True, slots=True)
class _Node:
    """The parts of a NodeProto that tell what it does to which tensors."""

    op_type: str
    domain: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Graph:
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    normalises_input: bool = False


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


def _node(stream: IO[bytes], start: int, end: int) -> _Node:
    """Parse a NodeProto's inputs, outputs, op_type and domain, seeking over attributes."""
    inputs: list[str] = []
    outputs: list[str] = []
    op_type = domain = ""
    for number, wire, offset, value in _fields(stream, start, end):
        if wire != 2:
            continue
        if number == 1:
            inputs.append(_string(stream, offset, value))
        elif number == 2:
            outputs.append(_string(stream, offset, value))
        elif number == 4:
            op_type = _string(stream, offset, value)
        elif number == 7:
            domain = _string(stream, offset, value)
    return _Node(op_type, domain, tuple(inputs), tuple(outputs))


def _normalises_input(name: str, nodes: list[_Node], initializers: set[str]) -> bool:
    """Whether the input first goes through Sub/Mul/Div/Add with constants.

    The chain is followed from the input while each consumer is such an operation with a
    constant (an initializer or a Constant node) as its other operand, and with the input
    as the minuend or the dividend; anything else ends it.
    """
    constants = set(initializers)
    constants.update(out for node in nodes if node.op_type == "Constant" for out in node.outputs)
    tensor, found = name, False
    for node in nodes:
        if tensor not in node.inputs:
            continue
        if (
            node.op_type not in _NORMALISING_OPS
            or node.domain not in _STANDARD_DOMAINS
            or len(node.inputs) != 2
            or len(node.outputs) != 1
        ):
            break
        first, second = node.inputs
        other = second if first == tensor else first
        if other not in constants or (node.op_type in ("Sub", "Div") and first != tensor):
            break
        tensor, found = node.outputs[0], True
    return found


def _graph_from_protobuf(path: Path) -> _Graph:
    """Graph inputs (initializers excluded, as ONNX Runtime does), outputs, and whether the
    first nodes normalise the input."""
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
        nodes: list[_Node] = []
        start, length = graph
        for number, wire, offset, value in _fields(stream, start, start + length):
            if wire != 2:
                continue
            if number == 1:
                if len(nodes) < HEAD_NODES:
                    nodes.append(_node(stream, offset, offset + value))
            elif number == 11:
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
    normalises = _normalises_input(real_inputs[0].name, nodes, initializers)
    return _Graph(real_inputs, tuple(outputs), normalises)


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


def _graph_from_onnxruntime(path: Path) -> _Graph:
    """Inputs and outputs from ONNX Runtime (which does not show the graph's nodes)."""
    try:
        session = _ort_session(path)
    except Exception as err:  # onnxruntime raises its own exception classes
        raise ModelPackError(f"{path}: not a readable ONNX model ({err})") from err
    return _Graph(_ort_tensors(session.get_inputs()), _ort_tensors(session.get_outputs()))


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
        graph = _graph_from_protobuf(path)
    except (_ProtoError, OSError) as err:
        _LOGGER.debug("%s: protobuf walk failed (%s); asking onnxruntime", path, err)
        graph = _graph_from_onnxruntime(path)
    inputs, outputs = graph.inputs, graph.outputs
    kind, width_unknown = _classify(inputs, outputs)
    embedding_size: int | None = None
    if kind == "recognizer":
        out_shape = outputs[0].shape
        if width_unknown or out_shape is None:
            embedding_size = _probe_embedding_size(path)
        else:
            embedding_size = out_shape[1]
    info = ModelInfo(path, kind, inputs, outputs, key[1], embedding_size, graph.normalises_input)
    _remember(_INFO_CACHE, key, info)
    return info


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's content (cached per path, size, mtime and inode)."""
    key = _file_key(path)
    with _CACHE_LOCK:
        cached = _SHA_CACHE.get(key)
    if cached is not None:
        return cached
    digest = sha256_of(path)
    _remember(_SHA_CACHE, key, digest)
    return digest


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
