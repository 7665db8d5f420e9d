"""Safe loading and access: no user-supplied file is unpickled beyond torch's weights-only
allow-list (a .pt whose pickle runs code is refused before the code runs, wherever it is
given), /audio/{id} serves nothing outside the configured audio folders, the admin token
is checked in constant time, every request body has a size limit, and CORS is off
unless configured."""

from __future__ import annotations

import ast
import builtins
import hmac
import io
import json
import pickle
import re
import select
import shutil
import socket
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from atri.service.app import create_app

REPO = Path(__file__).resolve().parents[2]
SHIPPED = ["src", "training", "index", "service", "bench", "scripts"]


# --- malicious pickles ---------------------------------------------------------------------


class Payload:
    """Unpickling this runs `exec`, which writes the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return builtins.exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",)


def evil_files(folder: Path) -> dict[str, Path]:
    """The payload in each form torch.load meets: zip (torch >= 1.6), legacy, bare pickle."""
    marker = folder / "PWNED"
    state = {"weight": torch.zeros(2), "payload": Payload(marker)}
    files = {}
    files["zip"] = folder / "evil.pt"
    torch.save(state, files["zip"])
    files["legacy"] = folder / "evil-legacy.pth"
    torch.save(state, files["legacy"], _use_new_zipfile_serialization=False)
    files["pickle"] = folder / "evil-pickle.ckpt"
    files["pickle"].write_bytes(pickle.dumps(state))
    return files


def test_the_payload_runs_when_unpickled_plainly(tmp_path) -> None:
    """The premise of the tests below: these files do run code under plain unpickling."""
    files = evil_files(tmp_path)
    pickle.loads(files["pickle"].read_bytes())
    assert (tmp_path / "PWNED").read_text() == "pwned"


PICKLE_WARNING = "ignore:Detected pickle protocol"  # torch's, about the bare pickle


@pytest.mark.filterwarnings(PICKLE_WARNING)
@pytest.mark.parametrize("form", ["zip", "legacy", "pickle"])
def test_malicious_checkpoint_file_is_refused(form, tmp_path) -> None:
    from atri.training.checkpoint import UnsafeCheckpointError, load_checkpoint

    path = evil_files(tmp_path)[form]
    with pytest.raises(UnsafeCheckpointError, match="refused to unpickle"):
        load_checkpoint(path)
    assert not (tmp_path / "PWNED").exists()


def test_malicious_checkpoint_given_to_index_build_exits_2(tmp_path, capsys) -> None:
    from atri.index import cli

    evil = evil_files(tmp_path)["zip"]
    audio = tmp_path / "audio"
    audio.mkdir()
    (audio / "a.flac").write_bytes(flac())
    args = ["--audio-dir", str(audio), "--out", str(tmp_path / "index")]
    assert cli.main(["build", "--checkpoint", str(evil), *args]) == 2
    assert "refused to unpickle" in capsys.readouterr().err
    assert not (tmp_path / "PWNED").exists()


def test_malicious_checkpoint_given_to_serve_fails_the_load(index_dir, make_settings, tmp_path):
    evil = evil_files(tmp_path)["zip"]
    app = create_app(make_settings(index_dir, checkpoint=str(evil)))
    with TestClient(app) as client:
        state = app.state.load_state
        assert state.done.wait(timeout=120)
        health = client.get("/health")
    assert health.status_code == 503 and health.json()["status"] == "failed"
    assert "refused to unpickle" in health.json()["error"]
    assert not (tmp_path / "PWNED").exists()


def test_malicious_train_state_is_refused_on_resume(checkpoint_dir, tmp_path) -> None:
    from atri.training.train import RunOptions, TrainConfig
    from atri.training.trainer import STATE_FILE, Dist, Run

    out = tmp_path / "run"
    shutil.copytree(checkpoint_dir, out / "last")
    shutil.copy(evil_files(tmp_path)["zip"], out / "last" / STATE_FILE)
    config = TrainConfig(strategy="kcl", train=str(tmp_path / "t"), val=str(tmp_path / "v"))
    with pytest.raises(pickle.UnpicklingError):
        Run(config, RunOptions(out=out, resume=True), Dist(0, 1, torch.device("cpu")))
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.filterwarnings(PICKLE_WARNING)
def test_malicious_backbone_files_are_refused(tmp_path) -> None:
    from atri.training.aisfx import load_aisfx_state
    from atri.training.ced import read_ced_checkpoint

    for form, path in evil_files(tmp_path).items():
        with pytest.raises(pickle.UnpicklingError):
            load_aisfx_state(path, expected_sha256=None)
        with pytest.raises(pickle.UnpicklingError):
            read_ced_checkpoint(path)
        assert not (tmp_path / "PWNED").exists(), form


# --- no unrestricted unpickling anywhere in the shipped code --------------------------------


UNSAFE_CALLS = {
    "pickle.load", "pickle.loads", "pickle.Unpickler", "cPickle.load", "cPickle.loads",
    "dill.load", "dill.loads", "joblib.load", "pandas.read_pickle", "pd.read_pickle",
    "marshal.load", "marshal.loads", "shelve.open", "yaml.unsafe_load",
}  # fmt: skip


def dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    return "?"


def unsafe_loads(source: str, where: str) -> list[str]:
    """Calls that unpickle without restriction, in one file's source."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = dotted(node.func)
        keywords = {k.arg: k.value for k in node.keywords}

        def is_true(key: str, keywords: dict = keywords) -> bool:
            value = keywords.get(key)
            return isinstance(value, ast.Constant) and value.value is True

        line = f"{where}:{node.lineno}: {name}"
        if name in UNSAFE_CALLS or name.endswith(".read_pickle"):
            found.append(line)
        elif name.endswith("torch.load") and not is_true("weights_only"):
            found.append(f"{line} without weights_only=True")
        elif name in ("np.load", "numpy.load") and "allow_pickle" in keywords:
            if not (isinstance(v := keywords["allow_pickle"], ast.Constant) and v.value is False):
                found.append(f"{line} with allow_pickle")
        elif name == "yaml.load" and "SafeLoader" not in ast.unparse(node):
            found.append(f"{line} without SafeLoader")
    return found


def test_the_scan_finds_unsafe_loads() -> None:
    source = (
        "import pickle, torch, numpy as np\n"
        "pickle.load(f)\n"
        "torch.load(p)\n"
        "torch.load(p, weights_only=False)\n"
        "np.load(p, allow_pickle=True)\n"
        "torch.load(p, map_location='cpu', weights_only=True)\n"
        "np.load(p)\n"
    )
    assert [line.split(": ", 1)[1] for line in unsafe_loads(source, "x.py")] == [
        "pickle.load",
        "torch.load without weights_only=True",
        "torch.load without weights_only=True",
        "np.load with allow_pickle",
    ]


def test_no_unrestricted_unpickling_in_shipped_code() -> None:
    found = []
    for folder in SHIPPED:
        for path in sorted((REPO / folder).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            where = str(path.relative_to(REPO))
            found += unsafe_loads(text, where)
            for literal in ("weights_only=False", "allow_pickle=True"):
                if literal in text:
                    found.append(f"{where}: {literal}")
    assert not found, "\n".join(found)


# --- /audio/{id} stays inside the audio folders ---------------------------------------------


def flac(seconds: float = 0.5) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.zeros(int(seconds * 16000), dtype=np.float32), 16000, format="FLAC")
    return buf.getvalue()


@pytest.fixture(scope="module")
def escape_client(index_dir, make_settings, make_client, tmp_path_factory):
    """The index, plus records whose audio lies outside the one allowed folder in every
    way a path can get there; served with ATRI_AUDIO_DIRS = that folder."""
    from atri.index.store import IndexStore
    from atri.training.manifest import ClipRecord

    tmp = tmp_path_factory.mktemp("escape")
    allowed, outside = tmp / "allowed", tmp / "outside"
    allowed.mkdir()
    outside.mkdir()
    secret = outside / "secret.flac"
    secret.write_bytes(b"SECRET" + flac())
    (allowed / "inside.flac").write_bytes(flac())
    (allowed / "link-out.flac").symlink_to(secret)
    (allowed / "link-in.flac").symlink_to(allowed / "inside.flac")
    (allowed / "dir-out").symlink_to(outside, target_is_directory=True)
    paths = {
        "inside": allowed / "inside.flac",
        "link-in": allowed / "link-in.flac",
        "absolute-out": secret,
        "dotdot-out": Path(f"{allowed}/../outside/secret.flac"),
        "link-out": allowed / "link-out.flac",
        "dir-link-out": allowed / "dir-out" / "secret.flac",
        "etc-passwd": Path("/etc/passwd"),
        "missing-in": allowed / "gone.flac",
    }
    root = Path(shutil.copytree(index_dir, tmp / "idx"))
    store = IndexStore.open(root)
    try:
        vector = np.ones(store.dim, dtype=np.float32) / np.sqrt(store.dim)
        for clip_id, path in paths.items():
            store.add_clip(ClipRecord(clip_id, str(path), {}, {}), vector, {})
    finally:
        store.close()
    with make_client(make_settings(root, audio_dirs=[allowed])) as client:
        yield client


@pytest.mark.parametrize(
    ("clip_id", "status"),
    [("inside", 200), ("link-in", 200), ("absolute-out", 404), ("dotdot-out", 404),
     ("link-out", 404), ("dir-link-out", 404), ("etc-passwd", 404), ("missing-in", 404)],
)  # fmt: skip
def test_audio_outside_the_allowed_folders_is_not_served(escape_client, clip_id, status) -> None:
    response = escape_client.get(f"/audio/{clip_id}")
    assert response.status_code == status, response.text
    assert b"SECRET" not in response.content and b"root:" not in response.content
    if status == 404:
        assert response.json()["error"]["code"] == "not_found"
    ranged = escape_client.get(f"/audio/{clip_id}", headers={"Range": "bytes=0-5"})
    assert ranged.status_code == (206 if status == 200 else 404)
    assert b"SECRET" not in ranged.content


# --- the admin token ----------------------------------------------------------------------------


def no_engine(settings):
    raise RuntimeError("no model is loaded in this test")


@pytest.fixture(scope="module")
def stub_client(index_dir, make_settings):
    """An app whose engine never loads: the admin check, body limits and CORS come
    first, without a model."""
    app = create_app(make_settings(index_dir), load=no_engine)
    with TestClient(app) as client:
        assert app.state.load_state.done.wait(timeout=30)
        yield client


@pytest.fixture
def spy_compare(monkeypatch) -> list[tuple[bytes, bytes]]:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    return calls


def test_admin_token_401_403_and_constant_time(stub_client, admin_headers, spy_compare) -> None:
    token = admin_headers["Authorization"].removeprefix("Bearer ")
    calls = {
        "none": stub_client.delete("/clips/x"),
        "empty": stub_client.delete("/clips/x", headers={"Authorization": "Bearer "}),
        "basic": stub_client.delete("/clips/x", headers={"Authorization": f"Basic {token}"}),
        "wrong": stub_client.delete("/clips/x", headers={"Authorization": "Bearer nope"}),
        "same-length": stub_client.delete(
            "/clips/x", headers={"Authorization": "Bearer " + "x" * len(token)}
        ),
        "prefix": stub_client.delete("/clips/x", headers={"Authorization": f"Bearer {token[:-1]}"}),
        "right": stub_client.delete("/clips/x", headers=admin_headers),
    }
    for name in ("none", "empty", "basic"):
        assert calls[name].status_code == 401, name
        assert calls[name].json()["error"]["code"] == "unauthorized"
        assert calls[name].headers["WWW-Authenticate"] == "Bearer"
    for name in ("wrong", "same-length", "prefix"):
        assert calls[name].status_code == 403, name
        assert calls[name].json()["error"]["code"] == "forbidden"
    assert calls["right"].status_code == 503  # past the check; the engine is not loaded
    compared = [a for a, b in spy_compare if b == token.encode()]
    assert compared == [b"nope", b"x" * len(token), token[:-1].encode(), token.encode()]
    posted = stub_client.post("/clips", files={"file": ("a.wav", b"x")}, data={"captions": "{}"})
    assert posted.status_code == 401


# --- every body has a size limit ------------------------------------------------------------


def post_raw(url: str, path: str, headers: bytes, chunks) -> tuple[int, dict, int]:
    """POST `chunks` until the server answers (it may answer and close before the body
    is sent: a client that insists on sending it all would see a broken pipe);
    (status, JSON body, bytes sent)."""
    where = urlparse(url)
    sent, answer = 0, b""
    with socket.create_connection((where.hostname, where.port), timeout=60) as sock:
        sock.sendall(b"POST %s HTTP/1.1\r\nHost: localhost\r\n%s\r\n" % (path.encode(), headers))
        try:
            for chunk in chunks:
                if select.select([sock], [], [], 0)[0]:
                    break
                sock.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        sock.settimeout(30)
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
                head, _, body = answer.partition(b"\r\n\r\n")
                length = re.search(rb"content-length: *(\d+)", head, re.IGNORECASE)
                if length and len(body) >= int(length.group(1)):
                    break
        except ConnectionResetError:
            pass
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body), sent


def test_huge_json_body_is_refused_not_parsed(reliability_server) -> None:
    url = reliability_server.url
    many = ('{"q": "x", "k": [' + ",".join(["[]"] * 7_000_000) + "]}").encode()  # 21 MB
    long = json.dumps({"q": "a" * 5_000_000, "lang": "eng"}).encode()
    for body in (many, long):
        t0 = time.perf_counter()
        head = b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
        pieces = (body[i : i + (1 << 16)] for i in range(0, len(body), 1 << 16))
        status, answer, sent = post_raw(url, "/search", head, pieces)
        assert status == 413, answer
        assert answer["error"]["details"]["limit_bytes"] == 1 << 20
        assert sent < len(body) and time.perf_counter() - t0 < 10

    def chunked():  # no Content-Length: refused while it streams
        yield b'7\r\n{"q": "\r\n'
        for _ in range(1024):  # 64 MB
            yield b"%x\r\n%s\r\n" % (1 << 16, b"a" * (1 << 16))

    head = b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
    status, answer, sent = post_raw(url, "/consistency", head, chunked())
    assert status == 413 and answer["error"]["code"] == "payload_too_large"
    assert sent < 16 << 20  # the limit, plus what the sockets' buffers held


def test_json_bodies_under_the_limit_are_validated(reliability_server) -> None:
    url = reliability_server.url
    long_query = httpx.post(f"{url}/search", json={"q": "a" * 500_000, "lang": "eng"}, timeout=60)
    assert long_query.status_code == 422
    deep = "[" * 100_000 + "]" * 100_000  # nested beyond the parser's recursion limit
    nested = httpx.post(
        f"{url}/search", content=deep, headers={"content-type": "application/json"}, timeout=60
    )
    assert nested.status_code == 422 and nested.json()["error"]["code"] == "validation_error"
    many_errors = {"queries": {f"x{i}": "" for i in range(20_000)}, "k": 5}
    response = httpx.post(f"{url}/consistency", json=many_errors, timeout=60)
    assert response.status_code == 422
    details = response.json()["error"]["details"]
    assert details["n_errors"] == 20_000 and len(details["errors"]) == 20  # a bounded answer
    form_field = httpx.post(
        f"{url}/search/audio", files={"file": ("a.wav", b"x")}, data={"lang": "e" * (2 << 20)},
        timeout=60,
    )  # fmt: skip
    assert form_field.status_code == 422  # a form field over Starlette's 1 MB part limit


# --- CORS ---------------------------------------------------------------------------------


def test_cors_is_off_by_default(reliability_server) -> None:
    origin = {"Origin": "https://elsewhere.example"}
    response = httpx.get(f"{reliability_server.url}/languages", headers=origin, timeout=10)
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers
    preflight = httpx.options(
        f"{reliability_server.url}/search",
        headers={**origin, "Access-Control-Request-Method": "POST"},
        timeout=10,
    )
    assert "access-control-allow-origin" not in preflight.headers


def test_cors_when_configured(index_dir, make_settings) -> None:
    allowed = "https://app.example"
    app = create_app(make_settings(index_dir, cors_origins=[allowed]), load=no_engine)
    with TestClient(app) as client:
        ok = client.get("/languages", headers={"Origin": allowed})
        assert ok.headers["access-control-allow-origin"] == allowed
        other = client.get("/languages", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        preflight = client.options(
            "/search",
            headers={"Origin": allowed, "Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "content-type"},
        )  # fmt: skip
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == allowed
        assert "POST" in preflight.headers["access-control-allow-methods"]
        error = client.get("/search", params={"q": "x"}, headers={"Origin": allowed})
        assert error.status_code == 503  # errors carry the header too
        assert error.headers["access-control-allow-origin"] == allowed
