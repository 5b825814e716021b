"""speech_calibration/data/audio.py on real files: every format, rate and channel layout in, mono float32 at
16 kHz out; every bad file out with a one-line error naming it."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from speech_calibration.data.audio import MODEL_RATE, load_audio, probe_audio, write_audio
from speech_calibration.errors import UserError


def peak_hz(x: np.ndarray, rate: int = MODEL_RATE) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1.0 / rate)[np.argmax(spectrum)])


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg", ".mp3"])
@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
@pytest.mark.parametrize("channels", [1, 2])
def test_any_format_rate_and_layout_loads_as_16k_mono_float32(make_audio, suffix, rate, channels):
    path = make_audio(f"tone{suffix}", rate=rate, channels=channels, seconds=0.5, freq=440.0, amplitude=0.5)
    x = load_audio(path)
    assert x.dtype == np.float32 and x.ndim == 1
    assert abs(len(x) - 0.5 * MODEL_RATE) <= 2  # the duration survives resampling
    assert abs(peak_hz(x) - 440.0) < 5.0  # so does the pitch
    expected = 0.5 / np.sqrt(2) / channels  # stereo: tone left, silence right, averaged to mono
    assert rms(x[400:-400]) == pytest.approx(expected, rel=0.05)


def test_16k_pcm_wav_loads_unchanged(make_audio):
    path = make_audio("a.wav", rate=MODEL_RATE)
    x = load_audio(path)
    reference, _ = sf.read(str(path), dtype="float32")
    np.testing.assert_array_equal(x, reference)


def test_write_audio_round_trip_is_16k_mono_pcm16(tmp_path):
    x = (0.25 * np.sin(np.linspace(0, 200, 8000))).astype(np.float32)
    path = tmp_path / "out.wav"
    write_audio(path, x)
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.subtype) == (MODEL_RATE, 1, "PCM_16")
    np.testing.assert_allclose(load_audio(path), x, atol=1.0 / 32768)
    assert [p.name for p in tmp_path.iterdir()] == ["out.wav"]  # no temporary file left behind


def test_write_audio_refuses_nan(tmp_path):
    with pytest.raises(ValueError, match="NaN"):
        write_audio(tmp_path / "bad.wav", np.array([0.0, np.nan], dtype=np.float32))
    assert not list(tmp_path.iterdir())


def _one_line_about(err: pytest.ExceptionInfo, path, *words: str) -> None:
    message = str(err.value)
    assert "\n" not in message
    assert str(path) in message
    for word in words:
        assert word in message, message


@pytest.mark.parametrize("reader", [load_audio, probe_audio])
def test_missing_file(tmp_path, reader):
    path = tmp_path / "nope.wav"
    with pytest.raises(UserError) as err:
        reader(path)
    _one_line_about(err, path, "not found")


@pytest.mark.parametrize("reader", [load_audio, probe_audio])
def test_empty_file_is_undecodable(tmp_path, reader):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(UserError) as err:
        reader(path)
    _one_line_about(err, path, "cannot be decoded as audio", "re-encode")


@pytest.mark.parametrize("reader", [load_audio, probe_audio])
def test_garbage_file_is_undecodable(tmp_path, reader):
    path = tmp_path / "garbage.flac"
    path.write_bytes(b"this is not audio at all\n" * 40)
    with pytest.raises(UserError) as err:
        reader(path)
    _one_line_about(err, path, "cannot be decoded as audio")


@pytest.mark.parametrize("reader", [load_audio, probe_audio])
def test_random_bytes_named_mp3_say_they_cannot_be_decoded_not_that_the_file_is_missing(tmp_path, reader):
    """libsndfile's reason for random bytes (its MP3 reader tried last) is 'File does not exist or is not a regular
    file (possibly a pipe?)', wrong for a file that is there: the message says it cannot be decoded, and no more."""
    path = tmp_path / "noise.mp3"
    path.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(UserError) as err:
        reader(path)
    assert str(err.value) == f"{path}: cannot be decoded as audio; re-encode it as WAV, FLAC, OGG or MP3"


@pytest.mark.parametrize("reader", [load_audio, probe_audio])
def test_file_without_samples(tmp_path, reader):
    path = tmp_path / "zero.wav"
    sf.write(str(path), np.zeros(0, dtype=np.float32), MODEL_RATE, subtype="PCM_16")
    with pytest.raises(UserError) as err:
        reader(path)
    _one_line_about(err, path, "no samples")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_samples(tmp_path, bad):
    path = tmp_path / "corrupt.wav"
    x = np.zeros(1600, dtype=np.float32)
    x[100] = bad
    sf.write(str(path), x, MODEL_RATE, subtype="FLOAT")  # float WAV stores NaN/inf as they are
    with pytest.raises(UserError) as err:
        load_audio(path)
    _one_line_about(err, path, "NaN or infinite")


@pytest.mark.parametrize("subtype, channels, container", [("PCM_16", 1, "WAV"), ("PCM_24", 2, "WAV"),
                                                         ("FLOAT", 1, "WAV"), ("PCM_16", 1, "WAVEX"),
                                                         ("PCM_24", 2, "WAVEX"), ("PCM_16", 1, "RF64"),
                                                         ("FLOAT", 2, "RF64")])
def test_a_wav_cut_short_is_refused_naming_what_its_header_announces(tmp_path, subtype, channels, container):
    """A WAV whose copy stopped early still decodes, as a shorter clip: its RIFF header (an RF64's ds64 chunk) still
    announces the full length, and probe_audio compares the two (review: a 1.44-s clip cut to 78 frames was scored
    as 5 ms)."""
    rate = 16000
    whole = tmp_path / "whole.wav"
    data = np.zeros((int(1.44 * rate), channels), dtype=np.float32)
    sf.write(str(whole), data, rate, subtype=subtype, format=container)
    assert probe_audio(whole).frames == len(data)  # the whole file passes
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole.read_bytes()[:2000])
    held = sf.info(str(cut)).frames
    assert 0 < held < len(data)  # soundfile reads what is there without a word
    with pytest.raises(UserError) as err:
        probe_audio(cut)
    message = str(err.value)
    assert str(cut) in message and "truncated" in message and "\n" not in message
    assert f"announces {len(data)} samples (1.440 s) but the file holds {held}" in message


def test_a_streamed_wavs_placeholder_length_is_not_taken_for_truncation(tmp_path):
    """A streaming writer that never went back to its header leaves a placeholder data size (0x7FFFFFFF here): the
    file is whole, and probe_audio does not call it truncated."""
    path = tmp_path / "streamed.wav"
    sf.write(str(path), np.zeros(16000, dtype=np.float32), 16000, subtype="PCM_16")
    raw = bytearray(path.read_bytes())
    at = raw.index(b"data") + 4
    raw[at:at + 4] = (0x7FFFFFFF).to_bytes(4, "little")
    path.write_bytes(bytes(raw))
    assert probe_audio(path).frames > 0

