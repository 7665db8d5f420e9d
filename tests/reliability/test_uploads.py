"""Hostile uploads against a real `atri serve`: random bytes, truncated files, nothing, an
hour of audio, 200 MB, wrong content types and file names that try to leave the upload
folder, on POST /search/audio and the admin POST /clips. Each gets the status api.md
gives it, and the service answers searches exactly as before afterwards."""

from __future__ import annotations

import io
import json
import select
import socket
import subprocess
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np
import pytest
import soundfile as sf

from atri.service.errors import InvalidAudio, UnsupportedAudio
from atri.service.upload import DurationLimits, decode_upload, ffmpeg_exe

HOUR = 3600.0
DEFAULT_LIMITS = DurationLimits(min_s=0.1, max_s=600.0)  # api.md's defaults
MB = 1 << 20


# --- hostile files ------------------------------------------------------------------------


def tone_bytes(seconds: float, sr: int = 16000, fmt: str = "WAV") -> bytes:
    t = np.arange(int(seconds * sr)) / sr
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sr, format=fmt)
    return buf.getvalue()


def hour_of_flac(sr: int = 16000, known_length: bool = True) -> bytes:
    """One hour of near-silence as FLAC (a few hundred KB, far below the size limit),
    written a minute at a time. Without `known_length` the STREAMINFO total is 0,
    "unknown", as a streaming encoder leaves it."""
    buf = io.BytesIO()
    minute = (1e-4 * np.sin(np.arange(60 * sr) / 7)).astype(np.float32)
    with sf.SoundFile(buf, "w", sr, 1, format="FLAC", subtype="PCM_16") as f:
        for _ in range(int(HOUR // 60)):
            f.write(minute)
    data = bytearray(buf.getvalue())
    if not known_length:
        data[18:26] = (int.from_bytes(data[18:26], "big") & ~((1 << 36) - 1)).to_bytes(8, "big")
    return bytes(data)


def truncated_mp3() -> bytes:
    """An MP3 cut to half: libsndfile reads the prefix without any error, and only the
    comparison with the header's frame count (training/audio_io.py) reveals the cut."""
    data = tone_bytes(3.0, 44100, "MP3")
    cut = data[: len(data) // 2]
    with sf.SoundFile(io.BytesIO(cut)) as f:  # the premise: libsndfile does not complain
        expected, got = f.frames, len(f.read(dtype="float32"))
    assert got < 0.9 * expected, (got, expected)
    return cut


def truncated_flac() -> bytes:
    data = tone_bytes(3.0, 44100, "FLAC")
    return data[: len(data) // 2]


HOSTILE = {
    # name: (bytes, status, code)
    "random-bytes": (lambda: np.random.default_rng(0).bytes(64 * 1024), 415, "unsupported_audio"),
    "truncated-flac": (truncated_flac, 415, "unsupported_audio"),
    "truncated-mp3": (truncated_mp3, 415, "unsupported_audio"),
    "zero-bytes": (lambda: b"", 422, "invalid_audio"),
    "one-hour-flac": (hour_of_flac, 422, "invalid_audio"),
    "one-hour-flac-unknown-length": (
        lambda: hour_of_flac(known_length=False),
        422,
        "invalid_audio",
    ),
}


@pytest.fixture(scope="module")
def hostile() -> dict[str, bytes]:
    return {name: make() for name, (make, _, _) in HOSTILE.items()}


# --- the service, and what it answered before -------------------------------------------


@pytest.fixture(scope="module")
def url(reliability_server) -> str:
    return reliability_server.url


@pytest.fixture(scope="module")
def reference(url, records, clip_ids) -> dict:
    """Answers to a text and an audio search before any hostile upload."""
    return answers(url, Path(records[clip_ids[0]].audio).read_bytes())


def answers(url: str, audio: bytes) -> dict:
    text = httpx.get(f"{url}/search", params={"q": "a piano", "lang": "eng", "k": 5}, timeout=60)
    sound = httpx.post(
        f"{url}/search/audio", files={"file": ("clip.flac", audio)}, data={"k": "5"}, timeout=60
    )
    assert text.status_code == 200 and sound.status_code == 200, (text.text, sound.text)
    health = httpx.get(f"{url}/health", timeout=10).json()
    return {
        "text": [(h["id"], h["score"]) for h in text.json()["results"]],
        "audio": [(h["id"], h["score"]) for h in sound.json()["similar_clips"]],
        "captions": [(c["text"], c["score"]) for c in sound.json()["captions"]],
        "index_size": health["index_size"],
    }


def assert_unchanged(url: str, reference: dict, records, clip_ids) -> None:
    assert answers(url, Path(records[clip_ids[0]].audio).read_bytes()) == reference


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    assert set(error) == {"code", "message", "details"}
    return error


def search_audio(url: str, data: bytes, name: str = "upload.wav", ctype: str | None = None):
    part = (name, data) if ctype is None else (name, data, ctype)
    return httpx.post(f"{url}/search/audio", files={"file": part}, data={"k": "3"}, timeout=120)


def add_clip(url: str, headers: dict, data: bytes, name: str = "clip.wav", **fields: str):
    form = {"captions": json.dumps({"eng": ["an uploaded tone"]}), **fields}
    return httpx.post(
        f"{url}/clips", files={"file": (name, data)}, data=form, headers=headers, timeout=120
    )


# --- each hostile file, on both upload endpoints --------------------------------------------


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_audio_search(name, hostile, url, reference, records, clip_ids) -> None:
    _, status, code = HOSTILE[name]
    error = assert_error(search_audio(url, hostile[name], f"{name}.bin"), status, code)
    if name.startswith("one-hour"):
        assert error["details"]["duration_s"] > DEFAULT_LIMITS.max_s
    if name == "random-bytes":
        assert set(error["details"]["decoders"]) == {"libsndfile", "ffmpeg"}
    assert_unchanged(url, reference, records, clip_ids)


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_clip_upload(
    name, hostile, url, admin_headers, reference, records, clip_ids
) -> None:
    _, status, code = HOSTILE[name]
    clip_id = f"hostile-{name}"
    assert_error(add_clip(url, admin_headers, hostile[name], id=clip_id), status, code)
    assert httpx.get(f"{url}/clips/{clip_id}", timeout=10).status_code == 404  # nothing added
    assert_unchanged(url, reference, records, clip_ids)


# --- an hour of audio is refused without decoding the hour ----------------------------------


def test_an_hour_with_a_known_length_is_refused_from_its_header(hostile, monkeypatch) -> None:
    def no_decoding(*args, **kwargs):
        raise AssertionError("the hour was decoded")

    monkeypatch.setattr("atri.service.upload.decode", no_decoding)
    with pytest.raises(InvalidAudio) as info:
        decode_upload(hostile["one-hour-flac"], 16000, DEFAULT_LIMITS, name="h.flac", timeout_s=30)
    assert info.value.details["duration_s"] == pytest.approx(HOUR)


def test_an_hour_of_unknown_length_is_decoded_only_past_the_limit(hostile) -> None:
    """The header cannot tell; decoding stops 1 s past the limit. The whole hour, as
    float32 at 16 kHz, would take 230 MB; the limit's worth takes 38 MB."""
    tracemalloc.start()
    try:
        with pytest.raises(InvalidAudio) as info:
            decode_upload(
                hostile["one-hour-flac-unknown-length"], 16000, DEFAULT_LIMITS,
                name="h.flac", timeout_s=30,
            )  # fmt: skip
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert DEFAULT_LIMITS.max_s < info.value.details["duration_s"] <= DEFAULT_LIMITS.max_s + 1.5
    assert peak < 100 * MB, f"peak {peak / MB:.0f} MB"


# --- 200 MB, streamed: refused at the limit, never held in memory -----------------------------


def peak_rss_growth(pid: int, action) -> tuple[object, float]:
    """(action's result, growth of the process's peak RSS in MB while it ran): the peak
    is reset first (/proc/PID/clear_refs), so an earlier peak cannot hide this one."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    base = _status_kb(pid, "VmRSS")
    result = action()
    time.sleep(0.2)  # let the server finish with the connection
    return result, (_status_kb(pid, "VmHWM") - base) / 1024


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def stream_upload(url: str, path: str, total: int, headers: bytes = b"") -> tuple[bytes, int]:
    """POST a multipart body of `total` bytes, chunked (no Content-Length), stopping
    once the server answers; (the answer's head, bytes sent)."""
    where = urlparse(url)
    chunk = np.random.default_rng(1).bytes(256 * 1024)
    sent = 0
    answer = b""
    with socket.create_connection((where.hostname, where.port), timeout=60) as sock:
        sock.sendall(
            b"POST %s HTTP/1.1\r\nHost: localhost\r\n%s"
            b"Content-Type: multipart/form-data; boundary=zzz\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" % (path.encode(), headers)
        )
        part = (
            b'--zzz\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n'
            b"Content-Type: audio/wav\r\n\r\n"
        )
        sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
        deadline = time.monotonic() + 120
        try:
            while sent < total and time.monotonic() < deadline:
                if select.select([sock], [], [], 0)[0]:
                    break  # the server answered
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # it answered and closed
        sock.settimeout(30)
        try:
            while b"\r\n\r\n" not in answer:
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
        except ConnectionResetError:
            pass
    return answer, sent


@pytest.mark.parametrize("path", ["/search/audio", "/clips"])
def test_200_mb_upload_is_refused_while_streaming(
    path, reliability_server, admin_headers, reference, records, clip_ids
) -> None:
    auth = b"Authorization: %s\r\n" % admin_headers["Authorization"].encode()
    (answer, sent), growth = peak_rss_growth(
        reliability_server.proc.pid,
        lambda: stream_upload(reliability_server.url, path, 200 * MB, auth),
    )
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    limit = 20 * MB  # api.md's default, which this server runs with
    assert limit < sent < 200 * MB  # refused on the way, not after the 200 MB
    print(f"{path}: sent {sent / MB:.0f} MB, server peak RSS +{growth:.1f} MB")
    assert growth < 40, f"the server's peak RSS grew by {growth:.0f} MB"
    assert_unchanged(reliability_server.url, reference, records, clip_ids)


def test_the_rss_meter_sees_an_accepted_upload(reliability_server) -> None:
    """The control of the test above: 5 minutes of 16 kHz WAV (9.6 MB, under the limit)
    are read and decoded, and the meter sees the process grow by at least their size."""
    wav = tone_bytes(300.0)
    response, growth = peak_rss_growth(
        reliability_server.proc.pid, lambda: search_audio(reliability_server.url, wav)
    )
    assert response.status_code == 200, response.text
    assert growth > len(wav) / MB, f"grew {growth:.1f} MB"


def test_200_mb_announced_is_refused_before_the_body(reliability_server) -> None:
    where = urlparse(reliability_server.url)
    with socket.create_connection((where.hostname, where.port), timeout=30) as sock:
        sock.sendall(
            b"POST /search/audio HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: multipart/form-data; boundary=zzz\r\n"
            b"Content-Length: %d\r\n\r\n" % (200 * MB)
        )
        answer = b""
        while not answer.endswith(b"}}"):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413")
    assert json.loads(body)["error"]["details"]["limit_bytes"] == 20 * MB


# --- wrong content types ---------------------------------------------------------------------


PNG = b"\x89PNG\r\n\x1a\n" + np.random.default_rng(2).bytes(4096)


def test_wrong_content_types(url, admin_headers, reference, records, clip_ids) -> None:
    wav = tone_bytes(1.0)
    as_json = httpx.post(f"{url}/search/audio", json={"file": "x"}, timeout=30)
    assert_error(as_json, 422, "validation_error")
    as_text = httpx.post(
        f"{url}/search/audio", content=wav, headers={"content-type": "text/plain"}, timeout=30
    )
    assert_error(as_text, 422, "validation_error")
    no_boundary = httpx.post(
        f"{url}/search/audio", content=wav,
        headers={"content-type": "multipart/form-data"}, timeout=30,
    )  # fmt: skip
    assert_error(no_boundary, 422, "validation_error")
    clip_as_json = httpx.post(
        f"{url}/clips", json={"file": "x", "captions": "{}"}, headers=admin_headers, timeout=30
    )
    assert_error(clip_as_json, 422, "validation_error")
    search_as_text = httpx.post(
        f"{url}/search", content=b'{"q": "a piano", "lang": "eng"}',
        headers={"content-type": "text/plain"}, timeout=30,
    )  # fmt: skip
    assert_error(search_as_text, 422, "validation_error")
    # the bytes decide, not the declared type: audio labelled as an image is searched ...
    assert search_audio(url, wav, "tone.png", "image/png").status_code == 200
    # ... and an image labelled as audio is refused as unreadable
    assert_error(search_audio(url, PNG, "tone.wav", "audio/wav"), 415, "unsupported_audio")
    assert_unchanged(url, reference, records, clip_ids)


# --- file names and ids that try to leave the upload folder ------------------------------------


TRAVERSAL_NAMES = ["../../../../../../etc/passwd", "/etc/passwd", "..\\..\\windows\\win.ini"]


@pytest.mark.parametrize("name", TRAVERSAL_NAMES)
def test_traversal_file_names_on_audio_search(name, url, reference, records, clip_ids) -> None:
    assert search_audio(url, tone_bytes(1.0), name).status_code == 200  # a label only
    error = assert_error(search_audio(url, PNG, name), 415, "unsupported_audio")
    assert "root:" not in error["message"]  # nothing was read from that path
    assert_unchanged(url, reference, records, clip_ids)


def test_traversal_file_names_on_clip_upload(
    reliability_server, admin_headers, reference, records, clip_ids, tmp_path
) -> None:
    url, uploads = reliability_server.url, reliability_server.index / "uploads"
    marker = f"atri-traversal-{uuid.uuid4().hex}"
    names = [f"../../../../../../{tmp_path}/{marker}.flac", f"{tmp_path}/{marker}-abs.flac"]
    added = []
    try:
        for i, name in enumerate(names):
            clip_id = f"traversal-{i}"
            response = add_clip(url, admin_headers, tone_bytes(1.0), name, id=clip_id)
            assert response.status_code == 201, response.text
            added.append(clip_id)
            assert (uploads / f"{clip_id}.flac").is_file()  # stored by id, in uploads/
            audio = httpx.get(f"{url}/audio/{clip_id}", timeout=10)
            assert audio.status_code == 200 and audio.headers["content-type"] == "audio/flac"
        assert not list(tmp_path.glob(f"{marker}*")), "a file name chose where audio went"
        assert sorted(p.name for p in uploads.iterdir()) == sorted(f"{i}.flac" for i in added)
    finally:
        for clip_id in added:
            deleted = httpx.delete(f"{url}/clips/{clip_id}", headers=admin_headers, timeout=30)
            assert deleted.status_code == 204
    assert_unchanged(url, reference, records, clip_ids)


@pytest.mark.parametrize(
    "clip_id", ["../../etc/passwd", "/etc/passwd", "..", "a/b", "a\\b", ".hidden", "x" * 200]
)
def test_traversal_ids_are_refused(
    clip_id, url, admin_headers, reference, records, clip_ids
) -> None:
    error = assert_error(add_clip(url, admin_headers, tone_bytes(1.0), id=clip_id), 422,
                         "invalid_input")  # fmt: skip
    assert error["details"]["field"] == "id"
    assert_unchanged(url, reference, records, clip_ids)


@pytest.mark.parametrize(
    "path", ["/audio/..%2F..%2F..%2Fetc%2Fpasswd", "/clips/..%2F..%2Fetc%2Fpasswd",
             "/audio/%2Fetc%2Fpasswd"]
)  # fmt: skip
def test_traversal_paths_find_no_clip(path, url) -> None:
    response = httpx.get(f"{url}{path}", timeout=10)
    assert response.status_code == 404
    assert response.json()["error"]["code"] in {"clip_not_found", "not_found"}
    assert b"root:" not in response.content


def test_ffmpeg_follows_no_concat_script(tmp_path, monkeypatch) -> None:
    """An upload that is an ffmpeg concat script naming a file beside the upload's temp
    file: plain ffmpeg would decode that file (checked first), the service's refuses."""
    exe = ffmpeg_exe()
    if exe is None:
        pytest.skip("imageio-ffmpeg is not installed")
    (tmp_path / "neighbour.wav").write_bytes(tone_bytes(2.0))
    script = b"ffconcat version 1.0\nfile 'neighbour.wav'\n"
    (tmp_path / "script.upload").write_bytes(script)
    plain = subprocess.run(
        [exe, "-nostdin", "-loglevel", "error", "-i", str(tmp_path / "script.upload"),
         "-ac", "1", "-ar", "16000", "-f", "f32le", "pipe:1"],
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert plain.returncode == 0 and len(plain.stdout) > 16000 * 4  # the premise
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(UnsupportedAudio) as info:
        decode_upload(script, 16000, DEFAULT_LIMITS, name="list.txt", timeout_s=30)
    assert info.value.details["decoders"]["ffmpeg"]  # ffmpeg refused it too


def test_mp3_without_a_xing_header_is_not_mistaken_for_a_cut(url, tmp_path) -> None:
    """libsndfile estimates such a file's frame count from its size, a little too high;
    a valid file must not be refused as truncated."""
    exe = ffmpeg_exe()
    if exe is None:
        pytest.skip("imageio-ffmpeg is not installed")
    (tmp_path / "src.wav").write_bytes(tone_bytes(5.0, 44100))
    out = tmp_path / "cbr.mp3"
    subprocess.run(
        [exe, "-nostdin", "-y", "-loglevel", "error", "-i", str(tmp_path / "src.wav"),
         "-c:a", "libmp3lame", "-b:a", "128k", "-write_xing", "0", str(out)],
        check=True, timeout=60,
    )  # fmt: skip
    data = out.read_bytes()
    with sf.SoundFile(io.BytesIO(data)) as f:  # the premise: the estimate is too high
        assert len(f.read(dtype="float32")) < f.frames
    response = search_audio(url, data, "cbr.mp3")
    assert response.status_code == 200, response.text
    assert response.json()["duration_s"] == pytest.approx(5.0, abs=0.1)


@pytest.mark.parametrize(
    ("sr", "channels", "fmt"),
    [(44100, 2, "WAV"), (22050, 6, "FLAC"), (48000, 2, "OGG"), (16000, 1, "WAV")],
)
def test_block_wise_decoding_equals_whole_file_decoding(sr, channels, fmt) -> None:
    """Decoding reads blocks and resamples as a stream (bounded memory); the samples are
    exactly those of reading the whole file and resampling it in one go."""
    import soxr

    from atri.training.audio_io import BLOCK_SAMPLES, decode

    rng = np.random.default_rng(sr + channels)
    frames = 3 * BLOCK_SAMPLES // channels + 123  # several blocks
    buf = io.BytesIO()
    sf.write(
        buf, (0.1 * rng.standard_normal((frames, channels))).astype(np.float32), sr, format=fmt
    )
    data = buf.getvalue()
    with sf.SoundFile(io.BytesIO(data)) as f:
        whole = f.read(dtype="float32", always_2d=True).mean(axis=1).astype(np.float32)
    if sr != 16000:
        whole = soxr.resample(whole, sr, 16000, quality="HQ").astype(np.float32)
    assert np.array_equal(decode(data, 16000), whole)
