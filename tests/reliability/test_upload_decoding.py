"""What the upload decoders do with files built to mislead them: an ffmpeg concat script
naming a file beside the upload, an MP3 whose frame count libsndfile overestimates, and
block-wise decoding against decoding the whole file at once."""

from __future__ import annotations

import io
import subprocess
import tempfile

import numpy as np
import pytest
import soundfile as sf

from atri.service.errors import UnsupportedAudio
from atri.service.upload import DurationLimits, decode_upload, ffmpeg_exe

DEFAULT_LIMITS = DurationLimits(min_s=0.1, max_s=600.0)  # api.md's defaults


def test_ffmpeg_follows_no_concat_script(tmp_path, monkeypatch, make_audio) -> None:
    """An upload that is an ffmpeg concat script naming a file beside the upload's temp
    file: plain ffmpeg would decode that file (checked first), the service's refuses."""
    exe = ffmpeg_exe()
    if exe is None:
        pytest.skip("imageio-ffmpeg is not installed")
    (tmp_path / "neighbour.wav").write_bytes(make_audio(2.0))
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


def test_mp3_without_a_xing_header_is_not_mistaken_for_a_cut(
    uploads, make_audio, tmp_path
) -> None:
    """libsndfile estimates such a file's frame count from its size, a little too high;
    a valid file must not be refused as truncated."""
    exe = ffmpeg_exe()
    if exe is None:
        pytest.skip("imageio-ffmpeg is not installed")
    (tmp_path / "src.wav").write_bytes(make_audio(5.0, 44100))
    out = tmp_path / "cbr.mp3"
    subprocess.run(
        [exe, "-nostdin", "-y", "-loglevel", "error", "-i", str(tmp_path / "src.wav"),
         "-c:a", "libmp3lame", "-b:a", "128k", "-write_xing", "0", str(out)],
        check=True, timeout=60,
    )  # fmt: skip
    data = out.read_bytes()
    with sf.SoundFile(io.BytesIO(data)) as f:  # the premise: the estimate is too high
        assert len(f.read(dtype="float32")) < f.frames
    response = uploads.search_audio(data, "cbr.mp3")
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

    from atri.training.data.audio_io import BLOCK_SAMPLES, decode

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
