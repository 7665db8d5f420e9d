import numpy as np
import pytest
import soundfile as sf

from atri.training.data.audio_io import AudioDecodeError, decode, load_audio


def _tone(sr: int, seconds: float = 1.0, freq: float = 1000.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    x = 0.5 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    return np.stack([x, 0.5 * x], axis=1) if channels == 2 else x


def _peak_hz(x: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[spectrum.argmax()])


@pytest.mark.parametrize(
    ("fmt", "subtype", "ext"),
    [("WAV", "PCM_16", "wav"), ("FLAC", "PCM_16", "flac"), ("OGG", "VORBIS", "ogg"),
     ("MP3", "MPEG_LAYER_III", "mp3")],
)
@pytest.mark.parametrize("sr", [44100, 48000])
@pytest.mark.parametrize("channels", [1, 2])
def test_decodes_formats_to_mono_16k(tmp_path, fmt, subtype, ext, sr, channels):
    path = tmp_path / f"tone.{ext}"
    sf.write(path, _tone(sr, channels=channels), sr, format=fmt, subtype=subtype)
    wave = load_audio(path, 16000)
    assert wave.dtype == np.float32 and wave.ndim == 1
    # mp3 encoders add a little priming/padding; the rest are exact in length
    assert abs(len(wave) - 16000) <= (1200 if ext == "mp3" else 1)
    assert abs(_peak_hz(wave, 16000) - 1000.0) < 5.0
    expected_rms = 0.5 / np.sqrt(2) * (0.75 if channels == 2 else 1.0)  # channels averaged
    assert np.sqrt(np.mean(wave[2000:-2000] ** 2)) == pytest.approx(expected_rms, rel=0.05)


def test_resampler_is_band_limited(tmp_path):
    # 9 kHz lies above the 8 kHz Nyquist limit of 16 kHz audio: it must vanish instead
    # of aliasing to 7 kHz as naive decimation would.
    path = tmp_path / "high.wav"
    sf.write(path, _tone(48000, freq=9000.0), 48000)
    wave = load_audio(path, 16000)
    assert np.sqrt(np.mean(wave[2000:-2000] ** 2)) < 1e-3


def test_truncated_flac_is_an_error(tmp_path):
    path = tmp_path / "t.flac"
    sf.write(path, _tone(44100, seconds=3.0), 44100, format="FLAC")
    data = path.read_bytes()
    cut = tmp_path / "cut.flac"
    cut.write_bytes(data[: len(data) // 2])
    # libsndfile notices most cuts itself ("lost sync"); the frame-count check catches
    # a cut it would pass over. Either way the caller gets an error naming the file.
    with pytest.raises(AudioDecodeError, match=r"cut.flac: (truncated audio|cannot decode)"):
        load_audio(cut, 16000)


def test_non_audio_and_missing_files_are_errors(tmp_path):
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"this is not audio at all" * 10)
    with pytest.raises(AudioDecodeError, match="junk.wav: cannot decode audio"):
        load_audio(junk, 16000)
    with pytest.raises(AudioDecodeError, match="nope.flac: audio file not found"):
        load_audio(tmp_path / "nope.flac", 16000)
    with pytest.raises(AudioDecodeError, match="upload.bin"):
        decode(b"\x00\x01garbage", 16000, name="upload.bin")
