"""Model packs: recognition by graph, errors, verification, download, resume and unpacking.

Everything is real: the shared SCRFD-500M and 128-d recognizer, small ONNX graphs built with
``onnx`` for the other kinds of model, and an HTTP server on 127.0.0.1 with Range support.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import aiohttp
import onnxruntime as ort
import pytest

from upr_faces_engine.errors import ModelPackError
from upr_faces_engine.models import (
    OFFICIAL_PACKS,
    ModelPack,
    ModelPackChecksumError,
    ModelPackDownloadError,
    ModelPackMissingError,
    async_fetch_pack,
    ensure_pack,
    fetch_pack,
    file_sha256,
    find_pack,
    inspect_model,
    model_identity,
    part_path,
    verify_pack,
)

DET = "det_500m.onnx"
REC = "mobilefacenet_128d.onnx"
CUT = 1_000_000


# --------------------------------------------------------------------------------------
# Helpers: packs on disk and small ONNX graphs
# --------------------------------------------------------------------------------------


def _copy(test_pack: Path, folder: Path, **names: str) -> Path:
    """Copy the shared models into ``folder`` as ``det=NAME`` and ``rec=NAME``."""
    folder.mkdir(parents=True, exist_ok=True)
    if "det" in names:
        shutil.copyfile(test_pack / DET, folder / names["det"])
    if "rec" in names:
        shutil.copyfile(test_pack / REC, folder / names["rec"])
    return folder


def _onnx_model(input_shape: list[int | str], outputs: int = 1, width: int | None = None) -> bytes:
    """A tiny real ONNX graph: GlobalAveragePool, then ``outputs`` Identity outputs, or a
    MatMul to ``[N, width]`` whose weight is also listed as a graph input (old exporters)."""
    onnx = pytest.importorskip("onnx")
    helper, numpy_helper, tensor = onnx.helper, onnx.numpy_helper, onnx.TensorProto
    import numpy as np

    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["pooled"])]
    inputs = [helper.make_tensor_value_info("x", tensor.FLOAT, input_shape)]
    initializers = []
    if width is None:
        outs = []
        for index in range(outputs):
            nodes.append(helper.make_node("Identity", ["pooled"], [f"out{index}"]))
            outs.append(helper.make_tensor_value_info(f"out{index}", tensor.FLOAT, None))
    else:
        weight = np.ones((3, width), dtype=np.float32)
        initializers.append(numpy_helper.from_array(weight, "weight"))
        inputs.append(helper.make_tensor_value_info("weight", tensor.FLOAT, [3, width]))
        nodes.append(helper.make_node("Flatten", ["pooled"], ["flat"]))
        nodes.append(helper.make_node("MatMul", ["flat", "weight"], ["emb"]))
        outs = [helper.make_tensor_value_info("emb", tensor.FLOAT, ["n", width])]
    graph = helper.make_graph(nodes, "g", inputs, outs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    data: bytes = model.SerializeToString()
    return data


@pytest.fixture(scope="module")
def extra_models() -> dict[str, bytes]:
    """Other kinds of model, as bytes: each a real graph."""
    return {
        "detector6": _onnx_model([1, 3, "h", "w"], outputs=6),
        "genderage": _onnx_model(["n", 3, 96, 96], width=3),
        "landmark": _onnx_model(["n", 3, 192, 192], width=212),
        "recognizer256": _onnx_model(["n", 3, 112, 112], width=256),
    }


# --------------------------------------------------------------------------------------
# Recognition by graph
# --------------------------------------------------------------------------------------


def test_find_shared_pack(test_pack: Path) -> None:
    pack = find_pack(test_pack)
    assert pack == ModelPack(test_pack, test_pack / DET, test_pack / REC)
    assert pack.embedding_size == 128
    assert pack.detector_input_name == "input.1"
    assert pack.detector_input_size is None  # dynamic H, W
    digest = hashlib.sha256((test_pack / REC).read_bytes()).hexdigest()
    assert pack.recognizer_sha256 == digest == file_sha256(test_pack / REC)
    assert pack.identity == f"mobilefacenet_128d:{digest[:16]}:128" == model_identity(pack)


def test_find_pack_by_graph_not_name(
    test_pack: Path, tmp_path: Path, extra_models: dict[str, bytes]
) -> None:
    """Swapped names, an odd name, and buffalo_l's other models are all sorted out (in a
    folder of one's own: in an official pack's folder, official names must hold the
    official files, see test_official_files_are_pinned)."""
    folder = _copy(test_pack, tmp_path / "my_pack", det="w600k_r50.onnx", rec="det_10g.onnx")
    (folder / "genderage.onnx").write_bytes(extra_models["genderage"])
    (folder / "2d106det.onnx").write_bytes(extra_models["landmark"])
    (folder / "Old SCRFD (copy).ONNX").write_bytes(extra_models["detector6"])
    pack = find_pack(folder)
    assert pack.detector == folder / "w600k_r50.onnx"
    assert pack.recognizer == folder / "det_10g.onnx"
    assert pack.embedding_size == 128
    kinds = {path.name: inspect_model(path).kind for path in folder.iterdir()}
    assert kinds == {
        "w600k_r50.onnx": "detector",
        "det_10g.onnx": "recognizer",
        "genderage.onnx": "other",
        "2d106det.onnx": "other",
        "Old SCRFD (copy).ONNX": "detector_no_keypoints",
    }


def test_embedding_size_read_not_assumed(tmp_path: Path, extra_models: dict[str, bytes]) -> None:
    folder = tmp_path / "mypack"
    folder.mkdir()
    (folder / "b_recognizer.onnx").write_bytes(extra_models["recognizer256"])
    (folder / "detector.onnx").write_bytes(extra_models["detector6"])
    with pytest.raises(ModelPackMissingError, match="no keypoint outputs"):
        find_pack(folder)
    info = inspect_model(folder / "b_recognizer.onnx")
    assert (info.kind, info.embedding_size) == ("recognizer", 256)


def test_several_recognizers_official_name_first(
    test_pack: Path, tmp_path: Path, extra_models: dict[str, bytes]
) -> None:
    official = _copy(test_pack, tmp_path / "mine", det="det_10g.onnx", rec="w600k_r50.onnx")
    (official / "a_recognizer.onnx").write_bytes(extra_models["recognizer256"])
    assert find_pack(official).recognizer.name == "w600k_r50.onnx"
    other = _copy(test_pack, tmp_path / "other", det="d.onnx", rec="b_recognizer.onnx")
    (other / "a_recognizer.onnx").write_bytes(extra_models["recognizer256"])
    pack = find_pack(other)
    assert (pack.recognizer.name, pack.embedding_size) == ("a_recognizer.onnx", 256)


def test_graph_reader_agrees_with_onnxruntime(
    test_pack: Path, tmp_path: Path, extra_models: dict[str, bytes]
) -> None:
    paths = [test_pack / DET, test_pack / REC]
    for name, data in extra_models.items():
        paths.append(tmp_path / f"{name}.onnx")
        paths[-1].write_bytes(data)
    for path in paths:
        info = inspect_model(path)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        pairs = [(info.inputs, session.get_inputs()), (info.outputs, session.get_outputs())]
        for ours, theirs in pairs:
            assert [t.name for t in ours] == [t.name for t in theirs], path.name
            for tensor, other in zip(ours, theirs, strict=True):
                if tensor.shape is None:
                    continue
                assert len(tensor.shape) == len(other.shape), path.name
                for dim, their_dim in zip(tensor.shape, other.shape, strict=True):
                    if dim is not None:
                        assert dim == their_dim, path.name
        assert inspect_model(path) is info  # cached


def _prefixed_recognizer(prefix: list[tuple[str, str, str]], constant_node: bool) -> bytes:
    """A real 112x112 recognizer graph (GlobalAveragePool, MatMul to 128) whose input first
    goes through ``prefix``: ``(op, first operand, second operand)`` each, where ``x`` is the
    running tensor, ``c`` a constant (an initializer, or a Constant node) and ``""`` none."""
    onnx = pytest.importorskip("onnx")
    helper, numpy_helper, tensor = onnx.helper, onnx.numpy_helper, onnx.TensorProto
    import numpy as np

    nodes = []
    initializers = [numpy_helper.from_array(np.ones((3, 128), dtype=np.float32), "weight")]
    if constant_node:
        value = numpy_helper.from_array(np.array(127.5, dtype=np.float32))
        nodes.append(helper.make_node("Constant", [], ["c"], value=value))
    else:
        initializers.append(numpy_helper.from_array(np.array(127.5, dtype=np.float32), "c"))
    current = "pixels"
    for index, (op, first, second) in enumerate(prefix):
        names = {"x": current, "c": "c"}
        operands = [names[name] for name in (first, second) if name]
        nodes.append(helper.make_node(op, operands, [f"t{index}"]))
        current = f"t{index}"
    nodes += [
        helper.make_node("GlobalAveragePool", [current], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("MatMul", ["flat", "weight"], ["emb"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("pixels", tensor.FLOAT, ["n", 3, 112, 112])],
        [helper.make_tensor_value_info("emb", tensor.FLOAT, ["n", 128])],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    data: bytes = model.SerializeToString()
    return data


@pytest.mark.parametrize(
    ("prefix", "constant_node", "normalises"),
    [
        ([("Sub", "x", "c"), ("Mul", "x", "c")], False, True),  # MXNet's arcface
        ([("Sub", "x", "c"), ("Div", "x", "c")], True, True),
        ([("Mul", "c", "x")], False, True),
        ([("Add", "x", "c")], True, True),
        ([], False, False),
        ([("Sub", "c", "x")], False, False),  # c - x is not a normalisation
        ([("Div", "c", "x")], True, False),
        ([("Mul", "x", "x")], False, False),  # no constant
        ([("Relu", "x", ""), ("Mul", "x", "c")], False, False),  # not on the input itself
    ],
)
def test_input_normalisation_read_from_graph(
    tmp_path: Path, prefix: list[tuple[str, str, str]], constant_node: bool, normalises: bool
) -> None:
    path = tmp_path / "recognizer.onnx"
    path.write_bytes(_prefixed_recognizer(prefix, constant_node))
    info = inspect_model(path)
    assert (info.kind, info.embedding_size) == ("recognizer", 128)
    assert info.normalises_input is normalises


def test_shared_models_do_not_normalise_their_input(test_pack: Path) -> None:
    """The shared models are fed normalised pixels (a Mul deeper in them does not count)."""
    for name in (DET, REC):
        assert inspect_model(test_pack / name).normalises_input is False
    assert find_pack(test_pack).recognizer_normalises_input is False


def test_nested_folder_placed_by_hand(test_pack: Path, tmp_path: Path) -> None:
    inner = _copy(test_pack, tmp_path / "buffalo_sc" / "buffalo_sc", det=DET, rec=REC)
    pack = ensure_pack("buffalo_sc", tmp_path)
    assert pack.folder == inner
    assert ensure_pack(tmp_path / "buffalo_sc", tmp_path / "elsewhere") == pack


# --------------------------------------------------------------------------------------
# Errors a person can act on
# --------------------------------------------------------------------------------------


def test_missing_recognizer_official(test_pack: Path, tmp_path: Path) -> None:
    folder = _copy(test_pack, tmp_path / "buffalo_sc", det=DET)
    with pytest.raises(ModelPackMissingError) as caught:
        find_pack(folder)
    message = str(caught.value)
    assert str(folder) in message
    assert "no face recognizer found (expected w600k_mbf.onnx)" in message
    assert OFFICIAL_PACKS["buffalo_sc"].url in message
    assert caught.value.missing == ("w600k_mbf.onnx",)
    assert caught.value.folder == folder


def test_missing_detector_official(test_pack: Path, tmp_path: Path) -> None:
    folder = _copy(test_pack, tmp_path / "buffalo_l", rec="w600k_r50.onnx")
    with pytest.raises(ModelPackError, match=r"no face detector found \(expected det_10g\.onnx\)"):
        find_pack(folder)


def test_missing_files_other_pack(test_pack: Path, tmp_path: Path) -> None:
    folder = _copy(test_pack, tmp_path / "mine", det="detector.onnx")
    with pytest.raises(ModelPackMissingError) as caught:
        find_pack(folder)
    assert f"model pack {folder}: no face recognizer found" in str(caught.value)
    assert caught.value.missing == ("face recognizer",)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelPackMissingError, match=r"empty: no \.onnx files"):
        find_pack(empty)


def test_ensure_pack_says_what_to_put_where(tmp_path: Path) -> None:
    with pytest.raises(ModelPackMissingError) as caught:
        ensure_pack("buffalo_l", tmp_path / "models")
    message = str(caught.value)
    folder = tmp_path / "models" / "buffalo_l"
    assert f"model pack {folder}: folder not found" in message
    assert f"put det_10g.onnx and w600k_r50.onnx in {folder}" in message
    assert "https://github.com/deepinsight/insightface/releases/download/v0.7/buffalo_l.zip" in (
        message
    )
    assert caught.value.missing == ("det_10g.onnx", "w600k_r50.onnx")


def test_unreadable_model_is_reported(test_pack: Path, tmp_path: Path) -> None:
    folder = _copy(test_pack, tmp_path / "mine", det=DET, rec="w600k_mbf.onnx")
    (folder / "broken.onnx").write_bytes(b"this is not a model" * 10)
    assert find_pack(folder).recognizer.name == "w600k_mbf.onnx"
    report = verify_pack(folder)
    assert not report.ok
    assert report.problems == ("broken.onnx: not a readable ONNX model",)
    assert [m.kind for m in report.models] == ["unreadable", "detector", "recognizer"]


def test_official_files_are_pinned(test_pack: Path, tmp_path: Path) -> None:
    """An official pack's files are checked against their published sha256 before use:
    the shared detector is InsightFace's det_500m.onnx byte for byte (so the pin is the
    real one); a stand-in under the official recognizer's name is refused, saying which
    file and what to do; under another name it is a model of one's own and is used."""
    pins = OFFICIAL_PACKS["buffalo_sc"].pinned
    assert pins[DET] == hashlib.sha256((test_pack / DET).read_bytes()).hexdigest()
    assert set(pins) == {"det_500m.onnx", "w600k_mbf.onnx"}
    assert set(OFFICIAL_PACKS["buffalo_m"].pinned) == {"w600k_r50.onnx"}  # none published
    folder = _copy(test_pack, tmp_path / "buffalo_sc", det=DET, rec="w600k_mbf.onnx")
    with pytest.raises(ModelPackChecksumError) as caught:
        ensure_pack("buffalo_sc", tmp_path)
    assert caught.value.file == "w600k_mbf.onnx"
    message = str(caught.value)
    assert pins["w600k_mbf.onnx"] in message
    assert hashlib.sha256((folder / "w600k_mbf.onnx").read_bytes()).hexdigest() in message
    assert OFFICIAL_PACKS["buffalo_sc"].url in message
    (folder / "w600k_mbf.onnx").rename(folder / REC)
    assert ensure_pack("buffalo_sc", tmp_path).recognizer.name == REC


# --------------------------------------------------------------------------------------
# verify_pack
# --------------------------------------------------------------------------------------


def test_verify_pack(test_pack: Path, tmp_path: Path, extra_models: dict[str, bytes]) -> None:
    report = verify_pack(test_pack)
    assert report.ok
    assert (report.detector, report.recognizer, report.embedding_size) == (DET, REC, 128)
    hashes = {m.file: m.sha256 for m in report.models}
    assert hashes[DET] == hashlib.sha256((test_pack / DET).read_bytes()).hexdigest()
    data = json.loads(json.dumps(report.as_dict()))
    assert data["identity"] == find_pack(test_pack).identity
    assert data["models"][0]["inputs"] == [{"name": "input.1", "shape": [1, 3, None, None]}]

    folder = _copy(test_pack, tmp_path / "buffalo_s", det=DET)
    (folder / "genderage.onnx").write_bytes(extra_models["genderage"])
    bad = verify_pack(folder)
    assert not bad.ok
    assert bad.problems == ("no face recognizer found (expected w600k_mbf.onnx)",)
    assert bad.missing == ("1k3d68.onnx", "2d106det.onnx", "w600k_mbf.onnx")
    absent = verify_pack(tmp_path / "nothing")
    assert (absent.ok, absent.problems) == (False, ("folder not found",))


# --------------------------------------------------------------------------------------
# A real HTTP server with Range support
# --------------------------------------------------------------------------------------


@dataclass
class Route:
    """What the server answers on one path."""

    body: bytes = b""
    status: int = 200
    cut_after: int | None = None  # the next ``cuts`` answers stop after this many bytes
    cuts: int = 1
    ignore_range: bool = False
    wrong_range: bool = False  # answer a Range request with 206 from byte 0


@dataclass
class ServerState:
    """Routes and the requests seen, as (path, Range header)."""

    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


class _Server(HTTPServer):
    state: ServerState


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        state = self.server.state
        path = self.path.split("?", 1)[0]
        range_header = self.headers.get("Range")
        state.requests.append((path, range_header))
        route = state.routes.get(path)
        if route is None or route.status != 200:
            self.send_error(404 if route is None else route.status)
            return
        body, start, status = route.body, 0, 200
        if range_header and not route.ignore_range:
            match = re.fullmatch(r"bytes=(\d+)-", range_header)
            assert match is not None
            start = 0 if route.wrong_range else int(match.group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        payload = body[start:]
        self.send_response(status)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        if route.cut_after is not None and route.cuts > 0:
            route.cuts -= 1
            payload = payload[: route.cut_after]
        self.wfile.write(payload)


@pytest.fixture
def server(socket_enabled: None) -> Iterator[ServerState]:
    """An HTTP/1.0 server on 127.0.0.1, stopped (thread joined) after the test.

    ``socket_enabled`` (pytest-socket) lifts Home Assistant's test ban on sockets; its
    allow-list still limits connections to 127.0.0.1.
    """
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.state = ServerState(port=httpd.server_address[1])
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), name="pack-server")
    thread.start()
    try:
        yield httpd.state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def _zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zipped:
        for name, data in files.items():
            zipped.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def zips(test_pack: Path) -> dict[str, bytes]:
    """The test pack zipped flat and inside a ``buffalo_sc/`` folder (built once)."""
    det, rec = (test_pack / DET).read_bytes(), (test_pack / REC).read_bytes()
    return {
        "flat": _zip({DET: det, REC: rec}),
        "nested": _zip({"buffalo_sc/": b"", f"buffalo_sc/{DET}": det, f"buffalo_sc/{REC}": rec}),
        "detector_only": _zip({DET: det}),
        "escape": _zip({DET: det, f"../{REC}": rec}),
    }


class Progress:
    """Records progress calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int | None]] = []

    def __call__(self, done: int, total: int | None) -> None:
        self.calls.append((done, total))

    def check(self, size: int) -> None:
        dones = [done for done, _ in self.calls]
        assert dones == sorted(dones)
        assert len(self.calls) > 3
        assert self.calls[-1] == (size, size)
        assert {total for _, total in self.calls} == {size}


def _assert_clean(dest: Path, *allowed: str) -> None:
    """Nothing in ``dest`` but ``allowed``: no half pack, temp dir, lock or .part."""
    assert sorted(os.listdir(dest)) == sorted(allowed)


def _assert_installed(test_pack: Path, pack: ModelPack, dest: Path) -> None:
    assert pack.folder == dest / "buffalo_sc"
    assert (pack.detector.name, pack.recognizer.name) == (DET, REC)
    assert (pack.folder / DET).read_bytes() == (test_pack / DET).read_bytes()
    assert pack.embedding_size == 128
    _assert_clean(dest, "buffalo_sc")


# --------------------------------------------------------------------------------------
# Downloads
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["flat", "nested"])
def test_fetch(
    test_pack: Path, tmp_path: Path, server: ServerState, zips: dict[str, bytes], layout: str
) -> None:
    server.routes[f"/{layout}/buffalo_sc.zip"] = Route(zips[layout])
    progress = Progress()
    pack = fetch_pack(server.url(f"/{layout}/buffalo_sc.zip"), tmp_path, progress=progress)
    _assert_installed(test_pack, pack, tmp_path)
    progress.check(len(zips[layout]))
    assert server.requests == [(f"/{layout}/buffalo_sc.zip", None)]


def test_fetch_official_name_with_url_and_sha256(
    test_pack: Path, tmp_path: Path, server: ServerState, zips: dict[str, bytes]
) -> None:
    server.routes["/mirror/pack.zip"] = Route(zips["flat"])
    digest = hashlib.sha256(zips["flat"]).hexdigest()
    pack = fetch_pack("buffalo_sc", tmp_path, url=server.url("/mirror/pack.zip"), sha256=digest)
    _assert_installed(test_pack, pack, tmp_path)


def test_fetch_sha256_mismatch(tmp_path: Path, server: ServerState, zips: dict[str, bytes]) -> None:
    server.routes["/buffalo_sc.zip"] = Route(zips["flat"])
    with pytest.raises(ModelPackDownloadError, match="sha256 .* does not match 0000"):
        fetch_pack(server.url("/buffalo_sc.zip"), tmp_path, sha256="0000")
    _assert_clean(tmp_path)


def test_fetched_official_file_with_another_content_is_not_installed(
    test_pack: Path, tmp_path: Path, server: ServerState
) -> None:
    """An official pack's zip whose recognizer is not the published file: refused before
    it is installed, the archive deleted, nothing left to be used."""
    det, rec = (test_pack / DET).read_bytes(), (test_pack / REC).read_bytes()
    server.routes["/buffalo_sc.zip"] = Route(_zip({DET: det, "w600k_mbf.onnx": rec}))
    with pytest.raises(ModelPackDownloadError, match=r"w600k_mbf\.onnx is not the official"):
        fetch_pack(server.url("/buffalo_sc.zip"), tmp_path)
    _assert_clean(tmp_path)
    assert not (tmp_path / "buffalo_sc").exists()


def _resumed_at(header: str | None) -> int:
    assert header is not None
    assert header.startswith("bytes=")
    return int(header.removeprefix("bytes=").rstrip("-"))


def test_fetch_resumes_after_cut(
    test_pack: Path, tmp_path: Path, server: ServerState, zips: dict[str, bytes]
) -> None:
    """The retry asks for the rest: from what reached the disk before the cut (aiohttp may
    drop a few bytes it had buffered when the link broke, never more than it received)."""
    server.routes["/buffalo_sc.zip"] = Route(zips["flat"], cut_after=CUT)
    progress = Progress()
    url = server.url("/buffalo_sc.zip")
    pack = fetch_pack(url, tmp_path, progress=progress, retry_delay=0)
    _assert_installed(test_pack, pack, tmp_path)
    (_, first), (_, second) = server.requests
    assert first is None
    assert CUT // 2 < _resumed_at(second) <= CUT
    progress.check(len(zips["flat"]))


def test_fetch_resumes_on_next_call(
    test_pack: Path, tmp_path: Path, server: ServerState, zips: dict[str, bytes]
) -> None:
    """A download given up keeps its .part; each later call resumes it from its size."""
    server.routes["/buffalo_sc.zip"] = Route(zips["flat"], cut_after=CUT, cuts=2)
    url = server.url("/buffalo_sc.zip")
    part = part_path(tmp_path, "buffalo_sc")
    sizes = []
    for _ in range(2):
        with pytest.raises(ModelPackDownloadError, match="gave up after 1 attempts"):
            fetch_pack(url, tmp_path, retries=0)
        sizes.append(part.stat().st_size)
    pack = fetch_pack(url, tmp_path, retries=0)
    _assert_installed(test_pack, pack, tmp_path)
    first, second, third = (header for _, header in server.requests)
    assert first is None
    assert (_resumed_at(second), _resumed_at(third)) == tuple(sizes)
    assert 0 < sizes[0] <= CUT < sizes[1] <= sizes[0] + CUT


def test_fetch_server_ignoring_range_restarts(
    test_pack: Path, tmp_path: Path, server: ServerState, zips: dict[str, bytes]
) -> None:
    server.routes["/buffalo_sc.zip"] = Route(zips["flat"], ignore_range=True)
    part_path(tmp_path, "buffalo_sc").write_bytes(b"stale bytes" * 100)
    pack = fetch_pack(server.url("/buffalo_sc.zip"), tmp_path)
    _assert_installed(test_pack, pack, tmp_path)
    assert server.requests == [("/buffalo_sc.zip", "bytes=1100-")]


def test_fetch_wrong_range_restarts(
    test_pack: Path, tmp_path: Path, server: ServerState, zips: dict[str, bytes]
) -> None:
    server.routes["/buffalo_sc.zip"] = Route(zips["flat"], wrong_range=True)
    part_path(tmp_path, "buffalo_sc").write_bytes(zips["flat"][:5000])
    pack = fetch_pack(server.url("/buffalo_sc.zip"), tmp_path, retry_delay=0)
    _assert_installed(test_pack, pack, tmp_path)
    assert [r for _, r in server.requests] == ["bytes=5000-", None]


def test_fetch_complete_part_is_installed(
    test_pack: Path, tmp_path: Path, server: ServerState, zips: dict[str, bytes]
) -> None:
    """A finished .part (process stopped before unpacking) gets 416 and is installed."""
    server.routes["/buffalo_sc.zip"] = Route(zips["flat"])
    part_path(tmp_path, "buffalo_sc").write_bytes(zips["flat"])
    pack = fetch_pack(server.url("/buffalo_sc.zip"), tmp_path)
    _assert_installed(test_pack, pack, tmp_path)
    assert len(server.requests) == 1


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes(b ^ 0xFF for b in data[at : at + 16]) + data[at + 16 :]


@pytest.mark.parametrize(
    "damage",
    ["truncated", "flipped_data", "flipped_directory", "not_a_pack", "escaping_path"],
)
def test_bad_archive(
    tmp_path: Path, server: ServerState, zips: dict[str, bytes], damage: str
) -> None:
    good = zips["flat"]
    body = {
        "truncated": good[: len(good) // 2],
        "flipped_data": _flip(good, len(good) // 3),
        "flipped_directory": _flip(good, good.rindex(b"PK\x01\x02")),
        "not_a_pack": zips["detector_only"],
        "escaping_path": zips["escape"],
    }[damage]
    server.routes["/buffalo_sc.zip"] = Route(body)
    url = server.url("/buffalo_sc.zip")
    with pytest.raises(ModelPackDownloadError) as caught:
        fetch_pack(url, tmp_path / "models")
    assert f"buffalo_sc.zip from {url}" in str(caught.value)
    reason = {
        "not_a_pack": "not a usable model pack: no face recognizer found",
        "escaping_path": "unsafe path '../mobilefacenet_128d.onnx'",
    }.get(damage, "corrupt or truncated zip")
    assert reason in str(caught.value)
    _assert_clean(tmp_path / "models")  # no pack, no temp dir, no .part
    _assert_clean(tmp_path, "models")  # nothing escaped


def test_http_404(tmp_path: Path, server: ServerState, caplog: pytest.LogCaptureFixture) -> None:
    url = server.url("/missing/buffalo_sc.zip?token=hunter2")
    with pytest.raises(ModelPackDownloadError) as caught:
        fetch_pack(url, tmp_path)
    message = str(caught.value)
    assert "HTTP 404" in message
    assert server.url("/missing/buffalo_sc.zip") in message
    assert "hunter2" not in message
    assert "hunter2" not in caplog.text
    assert caught.value.status == 404
    assert len(server.requests) == 1  # a 404 is not retried
    _assert_clean(tmp_path)


def test_server_errors_retried_then_given_up(tmp_path: Path, server: ServerState) -> None:
    server.routes["/buffalo_sc.zip"] = Route(status=503)
    with pytest.raises(ModelPackDownloadError, match="gave up after 3 attempts"):
        fetch_pack(server.url("/buffalo_sc.zip"), tmp_path, retries=2, retry_delay=0)
    assert len(server.requests) == 3


def test_already_present_makes_no_request(
    test_pack: Path, tmp_path: Path, server: ServerState
) -> None:
    folder = _copy(test_pack, tmp_path / "buffalo_sc", det=DET, rec=REC)
    pack = fetch_pack(server.url("/buffalo_sc.zip"), tmp_path)
    assert pack.folder == folder
    assert fetch_pack("buffalo_sc", tmp_path) == pack  # the official URL is never asked either
    assert server.requests == []


def test_invalid_existing_folder_is_kept(test_pack: Path, tmp_path: Path) -> None:
    folder = _copy(test_pack, tmp_path / "buffalo_sc", det=DET)
    with pytest.raises(ModelPackError, match="exists but is not a usable pack"):
        fetch_pack("buffalo_sc", tmp_path)
    assert os.listdir(folder) == [DET]


def test_unknown_pack_needs_url(tmp_path: Path) -> None:
    with pytest.raises(ModelPackError, match="unknown model pack 'antelope'.*buffalo_l"):
        fetch_pack("antelope", tmp_path)
    with pytest.raises(ModelPackError, match="invalid model pack name"):
        fetch_pack("../x", tmp_path, url="http://127.0.0.1:1/x.zip")


async def test_async_fetch_resumes(
    test_pack: Path, tmp_path: Path, server: ServerState, zips: dict[str, bytes]
) -> None:
    server.routes["/nested/buffalo_sc.zip"] = Route(zips["nested"], cut_after=CUT)
    progress = Progress()
    url = server.url("/nested/buffalo_sc.zip")
    async with aiohttp.ClientSession() as session:
        pack = await async_fetch_pack(session, url, tmp_path, progress=progress, retry_delay=0)
        _assert_installed(test_pack, pack, tmp_path)
        assert await async_fetch_pack(session, url, tmp_path) == pack
    # aiohttp may drop bytes it had buffered when the link broke: resume from what is on disk
    (_, first), (_, second) = server.requests
    assert first is None
    assert second is not None
    assert 0 < int(second.removeprefix("bytes=").rstrip("-")) <= CUT
    progress.check(len(zips["nested"]))


async def test_async_fetch_errors(
    tmp_path: Path, server: ServerState, zips: dict[str, bytes]
) -> None:
    server.routes["/buffalo_sc.zip"] = Route(zips["flat"][:-100])
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ModelPackDownloadError, match="HTTP 404"):
            await async_fetch_pack(session, server.url("/nothing.zip"), tmp_path)
        with pytest.raises(ModelPackDownloadError, match="corrupt or truncated zip"):
            await async_fetch_pack(session, server.url("/buffalo_sc.zip"), tmp_path)
    _assert_clean(tmp_path)


async def test_async_fetch_complete_part_and_ignored_range(
    test_pack: Path, tmp_path: Path, server: ServerState, zips: dict[str, bytes]
) -> None:
    server.routes["/a/buffalo_sc.zip"] = Route(zips["flat"])
    server.routes["/b/buffalo_sc.zip"] = Route(zips["flat"], ignore_range=True)
    async with aiohttp.ClientSession() as session:
        part_path(tmp_path / "a", "buffalo_sc").parent.mkdir()
        part_path(tmp_path / "a", "buffalo_sc").write_bytes(zips["flat"])
        pack = await async_fetch_pack(session, server.url("/a/buffalo_sc.zip"), tmp_path / "a")
        _assert_installed(test_pack, pack, tmp_path / "a")
        part_path(tmp_path / "b", "buffalo_sc").parent.mkdir()
        part_path(tmp_path / "b", "buffalo_sc").write_bytes(b"stale")
        pack = await async_fetch_pack(session, server.url("/b/buffalo_sc.zip"), tmp_path / "b")
        _assert_installed(test_pack, pack, tmp_path / "b")
    assert [r for _, r in server.requests] == [f"bytes={len(zips['flat'])}-", "bytes=5-"]


def test_one_download_at_a_time(tmp_path: Path) -> None:
    fcntl = pytest.importorskip("fcntl")
    with (tmp_path / ".buffalo_sc.lock").open("w") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ModelPackError, match="already being downloaded"):
            fetch_pack("buffalo_sc", tmp_path, url="http://127.0.0.1:9/buffalo_sc.zip")


def test_bad_names_and_urls(tmp_path: Path) -> None:
    with pytest.raises(ModelPackError, match="http or https only"):
        fetch_pack("mine", tmp_path, url="ftp://127.0.0.1/mine.zip")
    with pytest.raises(ModelPackError, match="cannot tell the pack name"):
        fetch_pack("http://127.0.0.1:9/", tmp_path)
    with pytest.raises(ModelPackError, match="give the download URL once"):
        fetch_pack("http://127.0.0.1:9/a.zip", tmp_path, url="http://127.0.0.1:9/b.zip")
    assert OFFICIAL_PACKS["buffalo_m"].files == (
        "1k3d68.onnx",
        "2d106det.onnx",
        "det_2.5g.onnx",
        "genderage.onnx",
        "w600k_r50.onnx",
    )
    assert OFFICIAL_PACKS["buffalo_sc"].required == ("det_500m.onnx", "w600k_mbf.onnx")


def test_unreadable_named_when_pack_unusable(test_pack: Path, tmp_path: Path) -> None:
    folder = _copy(test_pack, tmp_path / "mine", det="d.onnx")
    (folder / "recognizer.onnx").write_bytes(b"\x00" * 64)
    with pytest.raises(ModelPackMissingError, match="unreadable: recognizer.onnx"):
        ensure_pack("http://127.0.0.1:9/mine.zip", tmp_path)  # a URL names its pack too
    report = verify_pack(folder)
    assert report.missing == ("face recognizer",)
    assert report.problems == (
        "no face recognizer found (expected a 112x112 face recognizer)",
        "recognizer.onnx: not a readable ONNX model",
    )


@pytest.mark.parametrize("keep", [10, 1000, 100_000])
def test_truncated_model_is_unreadable(test_pack: Path, tmp_path: Path, keep: int) -> None:
    path = tmp_path / "cut.onnx"
    path.write_bytes((test_pack / REC).read_bytes()[:keep])
    with pytest.raises(ModelPackError, match="not a readable ONNX model"):
        inspect_model(path)


def test_cli_models_fetch_and_verify(
    tmp_path: Path,
    server: ServerState,
    zips: dict[str, bytes],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`upr-faces models fetch` downloads with progress; `models verify` reports the pack."""
    from upr_faces_engine.cli import main

    server.routes["/buffalo_sc.zip"] = Route(zips["flat"])
    url = server.url("/buffalo_sc.zip")
    assert main(["models", "fetch", "buffalo_sc", "--dir", str(tmp_path), "--url", url]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out.strip().splitlines()[-1])
    assert result["pack"] == str(tmp_path / "buffalo_sc")
    assert result["identity"].endswith(":128")
    assert "download:" in err
    assert main(["models", "verify", str(tmp_path / "buffalo_sc")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    assert report["embedding_size"] == 128
    # a 404 is one line on stderr and a non-zero exit
    bad = server.url("/missing.zip")
    assert main(["models", "fetch", "buffalo_s", "--dir", str(tmp_path), "--url", bad]) == 1
    err = capsys.readouterr().err
    assert "404" in err
    assert "Traceback" not in err
    assert main(["models", "verify", str(tmp_path / "nothing")]) == 1
