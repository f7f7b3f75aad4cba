"""Reference log-mel front end of Whisper in numpy (float64), and the fixture generator for the
Rust implementation's unit test (src/speech/asr/mel.rs must match it within 1e-4).

16 kHz mono float; reflect-pad n_fft/2 = 200 samples on each side; STFT with n_fft 400, hop
160, periodic Hann window; power spectrum; drop the last frame; Slaney-style mel filterbank of
80 bins over 0-8 kHz (area-normalised triangles); log10(max(x, 1e-10)); clamp at (max - 8);
(x + 4) / 4.
"""
import json

import numpy as np

RATE = 16000
N_FFT = 400
HOP = 160
N_MELS = 80


def hz_to_mel(f):
    """Slaney mel scale: linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    f_sp = 200.0 / 3
    mels = f / f_sp
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, mels)


def mel_to_hz(m):
    m = np.asarray(m, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def mel_filters():
    """[80, 201] triangular filters with Slaney area normalisation."""
    fft_freqs = np.arange(N_FFT // 2 + 1) * RATE / N_FFT
    mel_pts = np.linspace(hz_to_mel(0.0), hz_to_mel(RATE / 2), N_MELS + 2)
    hz_pts = mel_to_hz(mel_pts)
    fb = np.zeros((N_MELS, N_FFT // 2 + 1))
    for i in range(N_MELS):
        lo, mid, hi = hz_pts[i], hz_pts[i + 1], hz_pts[i + 2]
        up = (fft_freqs - lo) / (mid - lo)
        down = (hi - fft_freqs) / (hi - mid)
        fb[i] = np.maximum(0.0, np.minimum(up, down)) * (2.0 / (hi - lo))
    return fb


def log_mel(audio):
    """[80, frames] for a float64 array of 16 kHz samples (frames = len // 160)."""
    x = np.pad(np.asarray(audio, dtype=np.float64), N_FFT // 2, mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)  # periodic Hann
    n_frames = 1 + (len(x) - N_FFT) // HOP
    frames = np.stack([x[i * HOP:i * HOP + N_FFT] * window for i in range(n_frames)])
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2  # [frames, 201]
    power = power[:-1]
    mel = mel_filters() @ power.T
    logm = np.log10(np.maximum(mel, 1e-10))
    logm = np.maximum(logm, logm.max() - 8.0)
    return (logm + 4.0) / 4.0


def fixture(path):
    """Writes the Rust test's fixture: a deterministic 0.5 s signal and its log-mel values."""
    n = RATE // 2
    t = np.arange(n) / RATE
    # A chirp, two tones and a pseudo-random component (an LCG, reproducible in Rust).
    seed = 12345
    noise = np.empty(n)
    for i in range(n):
        seed = (seed * 1103515245 + 12345) % (1 << 31)
        noise[i] = seed / float(1 << 31) - 0.5
    audio = 0.3 * np.sin(2 * np.pi * (200 + 1500 * t) * t) + 0.2 * np.sin(2 * np.pi * 440 * t)
    audio += 0.1 * np.sin(2 * np.pi * 3000 * t) + 0.05 * noise
    m = log_mel(audio)
    with open(path, "w") as f:
        json.dump(
            {
                "about": "models/features.py fixture(): audio = 0.3 sin(2pi(200+1500t)t) + 0.2 sin(2pi 440 t)"
                " + 0.1 sin(2pi 3000 t) + 0.05 (lcg(12345)/2^31 - 0.5), 16 kHz, 8000 samples",
                "frames": int(m.shape[1]),
                "mel": [round(float(v), 7) for v in m.T.reshape(-1)],
            },
            f,
        )
