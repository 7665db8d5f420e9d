"""Audio-to-text search (POST /search/audio) and the upload path under it: decoders
(libsndfile, then ffmpeg for webm/m4a), 413 / 415 / 422, durations."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from atri.service.errors import InvalidAudio, UnsupportedAudio
from atri.service.upload import DurationLimits, decode_upload

LIMITS = DurationLimits(min_s=0.1, max_s=600.0)
# The decoder that must read each format: libsndfile what it can, ffmpeg the containers
# browsers and phones record.
DECODER = {
    "wav": "libsndfile",
    "flac": "libsndfile",
    "ogg": "libsndfile",
    "webm": "ffmpeg",
    "m4a": "ffmpeg",
}


# --- decoding ------------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "decoder"), DECODER.items())
def test_every_format_decodes_to_mono_16k(audio_samples, fmt, decoder) -> None:
    decoded = decode_upload(audio_samples[fmt], 16000, LIMITS, name=f"a.{fmt}", timeout_s=30)
    assert decoded.decoder == decoder
    assert decoded.sample_rate == 16000
    assert decoded.wave.dtype == np.float32 and decoded.wave.ndim == 1
    # 1.5 s; lossy codecs pad a little (priming samples)
    assert 1.45 <= decoded.duration_s <= 1.6
    # a 440 Hz tone stays a 440 Hz tone
    spectrum = np.abs(np.fft.rfft(decoded.wave[:16000]))
    assert abs(np.argmax(spectrum) - 440) <= 2


@pytest.mark.parametrize(
    "data", [b"this is not audio at all" * 10, b"\x00" * 4096, bytes(range(256)) * 64]
)
def test_bytes_no_decoder_reads_are_415_with_both_reasons(data) -> None:
    with pytest.raises(UnsupportedAudio) as info:
        decode_upload(data, 16000, LIMITS, name="junk.bin", timeout_s=30)
    assert info.value.status == 415
    reasons = info.value.details["decoders"]
    assert set(reasons) == {"libsndfile", "ffmpeg"}
    assert all(reasons.values())
    assert "junk.bin" in info.value.message


def test_truncated_flac_is_415(audio_samples) -> None:
    data = audio_samples["flac"]
    with pytest.raises(UnsupportedAudio) as info:
        decode_upload(data[: len(data) // 2], 16000, LIMITS, name="cut.flac", timeout_s=30)
    assert info.value.details["decoder"] == "libsndfile"  # not handed on to ffmpeg
    assert "cut.flac" in info.value.message


def test_empty_upload_is_422() -> None:
    with pytest.raises(InvalidAudio):
        decode_upload(b"", 16000, LIMITS, name="empty.wav", timeout_s=30)


def test_header_only_wav_is_422() -> None:
    buf = io.BytesIO()
    sf.write(buf, np.zeros(0, dtype=np.float32), 16000, format="WAV")
    with pytest.raises(InvalidAudio) as info:
        decode_upload(buf.getvalue(), 16000, LIMITS, name="empty.wav", timeout_s=30)
    assert info.value.details["duration_s"] == 0


def test_too_short_is_422(make_audio) -> None:
    with pytest.raises(InvalidAudio) as info:
        decode_upload(make_audio(0.05), 16000, LIMITS, name="short.wav", timeout_s=30)
    assert info.value.status == 422
    assert info.value.details["duration_s"] == pytest.approx(0.05, abs=1e-3)
    decode_upload(make_audio(0.1), 16000, LIMITS, name="ok.wav", timeout_s=30)


@pytest.mark.parametrize("fmt", ["wav", "webm"])
def test_too_long_is_422_for_both_decoders(audio_samples, fmt) -> None:
    limits = DurationLimits(min_s=0.1, max_s=1.0)  # the samples last 1.5 s
    with pytest.raises(InvalidAudio) as info:
        decode_upload(audio_samples[fmt], 16000, limits, name=f"long.{fmt}", timeout_s=30)
    assert "longer" in info.value.message


# --- the endpoint --------------------------------------------------------------------------


def test_an_indexed_clip_finds_itself_and_captions(client, tiny_corpus, records, clip_ids):
    target = clip_ids[2]
    audio = (tiny_corpus / records[target].audio).read_bytes()
    response = client.post(
        "/search/audio", files={"file": ("clip.flac", audio)}, data={"lang": "fr", "k": "5"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["lang"] == "fra" and body["k"] == 5
    assert body["duration_s"] > 1
    similar = body["similar_clips"]
    assert similar[0]["id"] == target
    assert similar[0]["score"] == pytest.approx(1.0, abs=2e-3)  # float16 storage
    assert [c["rank"] for c in similar] == [1, 2, 3, 4, 5]
    assert all(set(c) == {"rank", "id", "score", "audio_url"} for c in similar)
    captions = body["captions"]
    assert len(captions) == 5
    texts = [c["text"] for c in captions]
    assert len(set(texts)) == len(texts)  # distinct strings
    french = {t: i for i, r in records.items() for t in r.captions["fra"]}
    for c in captions:
        assert set(c) == {"rank", "text", "score", "clip_ids", "source"}
        assert c["source"] == "index"  # the index has no vocabulary
        assert c["text"] in french  # a caption of the requested language
        assert french[c["text"]] in c["clip_ids"]
    scores = [c["score"] for c in captions]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("fmt", ["wav", "ogg", "webm", "m4a"])
def test_browser_and_phone_formats_are_accepted(client, audio_samples, fmt) -> None:
    response = client.post("/search/audio", files={"file": (f"rec.{fmt}", audio_samples[fmt])})
    assert response.status_code == 200, response.text
    assert response.json()["lang"] == "eng"  # the default


def test_not_audio_is_415(client) -> None:
    response = client.post("/search/audio", files={"file": ("notes.txt", b"hello world " * 100)})
    assert response.status_code == 415
    error = response.json()["error"]
    assert error["code"] == "unsupported_audio"
    assert "libsndfile" in error["message"] and "ffmpeg" in error["message"]


def test_short_and_empty_uploads_are_422(client, make_audio) -> None:
    for data in (b"", make_audio(0.02)):
        response = client.post("/search/audio", files={"file": ("a.wav", data)})
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "invalid_audio"


def test_missing_file_or_bad_k_is_422(client, make_audio) -> None:
    assert client.post("/search/audio", data={"lang": "eng"}).status_code == 422
    response = client.post("/search/audio", files={"file": ("a.wav", make_audio(1))}, data={"k": 0})
    assert response.status_code == 422


def test_over_the_size_limit_is_413(index_dir, make_client, make_settings, make_audio) -> None:
    settings = make_settings(index_dir, max_upload_bytes=64_000)
    with make_client(settings) as c:
        response = c.post("/search/audio", files={"file": ("a.wav", make_audio(3.0))})  # 96 kB
        assert response.status_code == 413
        error = response.json()["error"]
        assert error["code"] == "payload_too_large"
        assert error["details"]["limit_bytes"] == 64_000

        def chunks():  # no Content-Length: the limit is enforced while the body streams in
            for _ in range(20):
                yield b"x" * 8192

        response = c.post(
            "/search/audio",
            content=chunks(),
            headers={"content-type": "multipart/form-data; boundary=b"},
        )
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "payload_too_large"
        small = c.post("/search/audio", files={"file": ("a.wav", make_audio(1.0))})  # 32 kB
        assert small.status_code == 200


def test_non_finite_samples_are_422() -> None:
    wave = np.full(16000, np.nan, dtype=np.float32)
    data = io.BytesIO()
    sf.write(data, wave, 16000, format="WAV", subtype="FLOAT")
    with pytest.raises(InvalidAudio) as info:
        decode_upload(data.getvalue(), 16000, LIMITS, name="nan.wav", timeout_s=30)
    assert "NaN" in info.value.message
