"""Hostile uploads against a real `atri serve`: random bytes, truncated files, nothing, an
hour of audio, wrong content types and file names that try to leave the upload folder,
on POST /search/audio and the admin POST /clips. Each gets the status api.md gives it,
and the service answers searches exactly as before afterwards. (Sizes:
test_upload_size.py; the decoders themselves: test_upload_decoding.py.)"""

from __future__ import annotations

import io
import struct
import tracemalloc
import uuid

import httpx
import numpy as np
import pytest
import soundfile as sf

from atri.service.errors import InvalidAudio
from atri.service.upload import DurationLimits, decode_upload

HOUR = 3600.0
DEFAULT_LIMITS = DurationLimits(min_s=0.1, max_s=600.0)  # api.md's defaults
MB = 1 << 20


# --- hostile files ------------------------------------------------------------------------


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


def truncated_mp3(tone) -> bytes:
    """An MP3 cut to half: libsndfile reads the prefix without any error, and only the
    comparison with the header's frame count (training/data/audio_io.py) reveals the cut."""
    data = tone(3.0, 44100, "MP3")
    cut = data[: len(data) // 2]
    with sf.SoundFile(io.BytesIO(cut)) as f:  # the premise: libsndfile does not complain
        expected, got = f.frames, len(f.read(dtype="float32"))
    assert got < 0.9 * expected, (got, expected)
    return cut


def truncated_flac(tone) -> bytes:
    data = tone(3.0, 44100, "FLAC")
    return data[: len(data) // 2]


def truncated_wav(tone) -> bytes:
    data = tone(3.0, 44100, "WAV")
    return data[: len(data) // 2]


def wav_claiming_an_hour(tone) -> bytes:
    """1 s of WAV whose header declares an hour: libsndfile reads the second without a
    word (it shortens the data chunk to the file), so the service reads the header."""
    data = bytearray(tone(1.0, 16000, "WAV", "PCM_16"))
    at = data.find(b"data")
    claimed = 16000 * 2 * int(HOUR)
    struct.pack_into("<I", data, at + 4, claimed)
    struct.pack_into("<I", data, 4, at + 8 + claimed - 8)
    assert sf.info(io.BytesIO(bytes(data))).frames == 16000  # the premise
    return bytes(data)


HOSTILE = {
    # name: (tone -> bytes, status, code)
    "random-bytes": (
        lambda tone: np.random.default_rng(0).bytes(64 * 1024),
        415,
        "unsupported_audio",
    ),
    "truncated-flac": (truncated_flac, 415, "unsupported_audio"),
    "truncated-mp3": (truncated_mp3, 415, "unsupported_audio"),
    "truncated-wav": (truncated_wav, 415, "unsupported_audio"),
    "wav-claiming-an-hour": (wav_claiming_an_hour, 415, "unsupported_audio"),
    "zero-bytes": (lambda tone: b"", 422, "invalid_audio"),
    "one-hour-flac": (lambda tone: hour_of_flac(), 422, "invalid_audio"),
    "one-hour-flac-unknown-length": (
        lambda tone: hour_of_flac(known_length=False),
        422,
        "invalid_audio",
    ),
}


@pytest.fixture(scope="module")
def hostile(make_audio) -> dict[str, bytes]:
    return {name: make(make_audio) for name, (make, _, _) in HOSTILE.items()}


def assert_error(response: httpx.Response, status: int, code: str, name: str = "") -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    assert set(error) == {"code", "message", "details"}
    if "truncated" in name or "claiming" in name:  # one answer for every container
        assert f"{name}.bin: truncated audio: the header declares " in error["message"]
        assert error["details"]["reason"] == "truncated"
        assert error["details"]["held_frames"] < error["details"]["declared_frames"]
    return error


# --- each hostile file, on both upload endpoints --------------------------------------------


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_audio_search(name, hostile, uploads, assert_unchanged) -> None:
    _, status, code = HOSTILE[name]
    error = assert_error(uploads.search_audio(hostile[name], f"{name}.bin"), status, code, name)
    if name.startswith("one-hour"):
        assert error["details"]["duration_s"] > DEFAULT_LIMITS.max_s
    if name == "random-bytes":
        assert set(error["details"]["decoders"]) == {"libsndfile", "ffmpeg"}
    assert_unchanged()


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_clip_upload(name, hostile, uploads, assert_unchanged) -> None:
    _, status, code = HOSTILE[name]
    clip_id = f"hostile-{name}"
    assert_error(uploads.add_clip(hostile[name], f"{name}.bin", id=clip_id), status, code, name)
    assert httpx.get(f"{uploads.url}/clips/{clip_id}", timeout=10).status_code == 404  # not added
    assert_unchanged()


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


# --- wrong content types ---------------------------------------------------------------------


PNG = b"\x89PNG\r\n\x1a\n" + np.random.default_rng(2).bytes(4096)


def test_wrong_content_types(uploads, make_audio, assert_unchanged) -> None:
    url, wav = uploads.url, make_audio(1.0)
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
        f"{url}/clips", json={"file": "x", "captions": "{}"}, headers=uploads.admin_headers,
        timeout=30,
    )  # fmt: skip
    assert_error(clip_as_json, 422, "validation_error")
    search_as_text = httpx.post(
        f"{url}/search", content=b'{"q": "a piano", "lang": "eng"}',
        headers={"content-type": "text/plain"}, timeout=30,
    )  # fmt: skip
    assert_error(search_as_text, 422, "validation_error")
    # the bytes decide, not the declared type: audio labelled as an image is searched ...
    assert uploads.search_audio(wav, "tone.png", "image/png").status_code == 200
    # ... and an image labelled as audio is refused as unreadable
    assert_error(uploads.search_audio(PNG, "tone.wav", "audio/wav"), 415, "unsupported_audio")
    assert_unchanged()


# --- file names and ids that try to leave the upload folder ------------------------------------


TRAVERSAL_NAMES = ["../../../../../../etc/passwd", "/etc/passwd", "..\\..\\windows\\win.ini"]


@pytest.mark.parametrize("name", TRAVERSAL_NAMES)
def test_traversal_file_names_on_audio_search(name, uploads, make_audio, assert_unchanged) -> None:
    assert uploads.search_audio(make_audio(1.0), name).status_code == 200  # a label only
    error = assert_error(uploads.search_audio(PNG, name), 415, "unsupported_audio")
    assert "root:" not in error["message"]  # nothing was read from that path
    assert_unchanged()


def test_traversal_file_names_on_clip_upload(
    reliability_server, uploads, make_audio, assert_unchanged, tmp_path
) -> None:
    url, uploaded = uploads.url, reliability_server.index / "uploads"
    marker = f"atri-traversal-{uuid.uuid4().hex}"
    names = [f"../../../../../../{tmp_path}/{marker}.flac", f"{tmp_path}/{marker}-abs.flac"]
    added = []
    try:
        for i, name in enumerate(names):
            clip_id = f"traversal-{i}"
            response = uploads.add_clip(make_audio(1.0), name, id=clip_id)
            assert response.status_code == 201, response.text
            added.append(clip_id)
            assert (uploaded / f"{clip_id}.flac").is_file()  # stored by id, in uploads/
            audio = httpx.get(f"{url}/audio/{clip_id}", timeout=10)
            assert audio.status_code == 200 and audio.headers["content-type"] == "audio/flac"
        assert not list(tmp_path.glob(f"{marker}*")), "a file name chose where audio went"
        assert sorted(p.name for p in uploaded.iterdir()) == sorted(f"{i}.flac" for i in added)
    finally:
        for clip_id in added:
            deleted = httpx.delete(
                f"{url}/clips/{clip_id}", headers=uploads.admin_headers, timeout=30
            )
            assert deleted.status_code == 204
    assert_unchanged()


@pytest.mark.parametrize(
    "clip_id", ["../../etc/passwd", "/etc/passwd", "..", "a/b", "a\\b", ".hidden", "x" * 200]
)
def test_traversal_ids_are_refused(clip_id, uploads, make_audio, assert_unchanged) -> None:
    error = assert_error(uploads.add_clip(make_audio(1.0), id=clip_id), 422, "invalid_input")
    assert error["details"]["field"] == "id"
    assert_unchanged()


@pytest.mark.parametrize(
    "path", ["/audio/..%2F..%2F..%2Fetc%2Fpasswd", "/clips/..%2F..%2Fetc%2Fpasswd",
             "/audio/%2Fetc%2Fpasswd"]
)  # fmt: skip
def test_traversal_paths_find_no_clip(path, uploads) -> None:
    response = httpx.get(f"{uploads.url}{path}", timeout=10)
    assert response.status_code == 404
    assert response.json()["error"]["code"] in {"clip_not_found", "not_found"}
    assert b"root:" not in response.content
