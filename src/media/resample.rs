//! WAV input and sample-rate conversion to the 8 kHz the phone network carries.
//!
//! Downsampling first low-pass filters at the input rate (windowed-sinc FIR, cut-off just
//! below the telephone band's 4 kHz Nyquist limit) so nothing above 4 kHz folds back into the
//! call, then interpolates linearly at the output instants.

/// A decoded WAV file (PCM 16-bit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wav {
    /// Sample rate in Hz.
    pub rate: u32,
    /// Channels (1 or 2).
    pub channels: u16,
    /// Interleaved samples.
    pub samples: Vec<i16>,
}

/// Why a WAV file could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WavError {
    /// Not RIFF/WAVE, or a chunk runs past the end.
    #[error("not a WAV file: {0}")]
    Malformed(&'static str),
    /// Compressed or non-16-bit audio.
    #[error("unsupported WAV format: {0}; use 16-bit PCM")]
    Unsupported(String),
}

fn u16le(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32le(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Parses a RIFF/WAVE file with 16-bit PCM samples (format 1, or WAVE_FORMAT_EXTENSIBLE
/// carrying PCM), mono or stereo, any rate.
pub fn read_wav(bytes: &[u8]) -> Result<Wav, WavError> {
    if bytes.get(0..4) != Some(b"RIFF") || bytes.get(8..12) != Some(b"WAVE") {
        return Err(WavError::Malformed("missing RIFF/WAVE header"));
    }
    let mut at = 12;
    let mut fmt: Option<(u16, u16, u32, u16)> = None;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let len = u32le(bytes, at + 4).ok_or(WavError::Malformed("truncated chunk"))? as usize;
        let body = at + 8;
        let end = body
            .checked_add(len)
            .ok_or(WavError::Malformed("chunk length"))?;
        match id {
            b"fmt " => {
                let format = u16le(bytes, body).ok_or(WavError::Malformed("short fmt chunk"))?;
                let channels =
                    u16le(bytes, body + 2).ok_or(WavError::Malformed("short fmt chunk"))?;
                let rate = u32le(bytes, body + 4).ok_or(WavError::Malformed("short fmt chunk"))?;
                let bits = u16le(bytes, body + 14).ok_or(WavError::Malformed("short fmt chunk"))?;
                // WAVE_FORMAT_EXTENSIBLE: the real format is the sub-format GUID's first word.
                let format = if format == 0xFFFE {
                    u16le(bytes, body + 24).unwrap_or(0)
                } else {
                    format
                };
                fmt = Some((format, channels, rate, bits));
            }
            b"data" => {
                let (format, channels, rate, bits) =
                    fmt.ok_or(WavError::Malformed("data before fmt"))?;
                if format != 1 || bits != 16 {
                    return Err(WavError::Unsupported(format!(
                        "format {format}, {bits} bits"
                    )));
                }
                if !(1..=2).contains(&channels) || !(4000..=192_000).contains(&rate) {
                    return Err(WavError::Unsupported(format!(
                        "{channels} channels at {rate} Hz"
                    )));
                }
                // Some writers leave the data length unset (streaming); take what is there.
                let data = &bytes[body..end.min(bytes.len())];
                let samples = data
                    .chunks_exact(2)
                    .map(|c| i16::from_le_bytes([c[0], c[1]]))
                    .collect();
                return Ok(Wav {
                    rate,
                    channels,
                    samples,
                });
            }
            _ => {}
        }
        at = end + (len & 1);
    }
    Err(WavError::Malformed("no data chunk"))
}

/// Mixes to mono (stereo: the mean of both channels).
pub fn to_mono(w: &Wav) -> Vec<i16> {
    if w.channels == 1 {
        return w.samples.clone();
    }
    w.samples
        .chunks_exact(usize::from(w.channels))
        .map(|f| (f.iter().map(|s| i32::from(*s)).sum::<i32>() / i32::from(w.channels)) as i16)
        .collect()
}

/// Windowed-sinc (Blackman) low-pass taps for `cutoff` Hz at `rate` Hz.
fn lowpass(rate: u32, cutoff: f64, taps: usize) -> Vec<f64> {
    let fc = cutoff / f64::from(rate);
    let m = (taps - 1) as f64;
    let mut h: Vec<f64> = (0..taps)
        .map(|i| {
            let x = i as f64 - m / 2.0;
            let sinc = if x == 0.0 {
                2.0 * fc
            } else {
                (2.0 * std::f64::consts::PI * fc * x).sin() / (std::f64::consts::PI * x)
            };
            let w = 0.42 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / m).cos()
                + 0.08 * (4.0 * std::f64::consts::PI * i as f64 / m).cos();
            sinc * w
        })
        .collect();
    let sum: f64 = h.iter().sum();
    for v in &mut h {
        *v /= sum;
    }
    h
}

/// Converts mono `samples` at `rate` Hz to `to` Hz.
pub fn resample(samples: &[i16], rate: u32, to: u32) -> Vec<i16> {
    if rate == to || samples.is_empty() {
        return samples.to_vec();
    }
    // Band-limit first when going down (cut-off at 90 % of the new Nyquist frequency).
    let filtered: Vec<f64> = if to < rate {
        let h = lowpass(rate, 0.45 * f64::from(to), 101);
        let half = h.len() / 2;
        (0..samples.len())
            .map(|n| {
                h.iter()
                    .enumerate()
                    .map(|(k, c)| {
                        let idx = n as isize + k as isize - half as isize;
                        if idx < 0 || idx as usize >= samples.len() {
                            0.0
                        } else {
                            c * f64::from(samples[idx as usize])
                        }
                    })
                    .sum()
            })
            .collect()
    } else {
        samples.iter().map(|s| f64::from(*s)).collect()
    };
    let out_len = (samples.len() as u64 * u64::from(to) / u64::from(rate)) as usize;
    let step = f64::from(rate) / f64::from(to);
    (0..out_len)
        .map(|i| {
            let pos = i as f64 * step;
            let j = pos.floor() as usize;
            let frac = pos - j as f64;
            let a = filtered[j.min(filtered.len() - 1)];
            let b = filtered[(j + 1).min(filtered.len() - 1)];
            (a + (b - a) * frac)
                .round()
                .clamp(f64::from(i16::MIN), f64::from(i16::MAX)) as i16
        })
        .collect()
}

/// A 16-bit PCM WAV file of interleaved `samples`.
pub fn wav_bytes(rate: u32, channels: u16, samples: &[i16]) -> Vec<u8> {
    let data_len = u32::try_from(samples.len() * 2).unwrap_or(u32::MAX);
    let mut b = Vec::with_capacity(44 + samples.len() * 2);
    b.extend_from_slice(&crate::wav::header(rate, channels, data_len));
    for s in samples {
        b.extend_from_slice(&s.to_le_bytes());
    }
    b
}

/// The first channel (the customer's leg of a call recording: left).
pub fn left_channel(w: &Wav) -> Vec<i16> {
    w.samples
        .iter()
        .step_by(usize::from(w.channels.max(1)))
        .copied()
        .collect()
}

/// A WAV file as 8 kHz mono PCM, ready to play into a call.
pub fn wav_to_8k_mono(bytes: &[u8]) -> Result<Vec<i16>, WavError> {
    let w = read_wav(bytes)?;
    Ok(resample(&to_mono(&w), w.rate, 8000))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::tone::{dominant_frequency, rms, sine};

    /// A WAV file with an extra LIST chunk before `data` (the reader must skip it).
    fn wav(rate: u32, channels: u16, samples: &[i16]) -> Vec<u8> {
        let mut b = wav_bytes(rate, channels, samples);
        b.splice(36..36, b"LIST\x04\x00\x00\x00abcd".iter().copied());
        b
    }

    #[test]
    fn tone_survives_downsampling_and_keeps_its_length() {
        // 440 Hz at 48 kHz, 1 s → 8 kHz: still 440 Hz, 8000 samples.
        let at48: Vec<i16> = (0..48_000)
            .map(|n| {
                (10_000.0 * (2.0 * std::f64::consts::PI * 440.0 * n as f64 / 48_000.0).sin()) as i16
            })
            .collect();
        let out = wav_to_8k_mono(&wav(48_000, 1, &at48)).unwrap();
        assert_eq!(out.len(), 8000);
        let f = dominant_frequency(&out[800..7200], 100.0, 3900.0, 10.0);
        assert!((f - 440.0).abs() <= 10.0, "{f}");
    }

    #[test]
    fn frequencies_above_4khz_are_removed_not_folded() {
        // 6 kHz at 16 kHz would alias to 2 kHz without the filter.
        let hi: Vec<i16> = (0..16_000)
            .map(|n| {
                (10_000.0 * (2.0 * std::f64::consts::PI * 6000.0 * n as f64 / 16_000.0).sin())
                    as i16
            })
            .collect();
        let out = resample(&hi, 16_000, 8000);
        assert!(
            rms(&out[400..7600]) < 150.0,
            "aliasing: rms {}",
            rms(&out[400..7600])
        );
        let ok = sine(1000.0, 1000, 10_000);
        assert_eq!(resample(&ok, 8000, 8000), ok);
    }

    #[test]
    fn written_wav_reads_back() {
        let w = read_wav(&wav_bytes(16_000, 2, &[1, -1, 2, -2])).unwrap();
        assert_eq!((w.rate, w.channels), (16_000, 2));
        assert_eq!(left_channel(&w), vec![1, 2]);
    }

    #[test]
    fn stereo_is_mixed_and_bad_files_are_refused() {
        let st = wav(8000, 2, &[1000, 3000, -1000, -3000]);
        assert_eq!(wav_to_8k_mono(&st).unwrap(), vec![2000, -2000]);
        assert!(matches!(
            read_wav(b"RIFF\0\0\0\0WAVE"),
            Err(WavError::Malformed(_))
        ));
        let mut eight_bit = wav(8000, 1, &[0, 0]);
        eight_bit[34] = 8;
        assert!(matches!(
            read_wav(&eight_bit),
            Err(WavError::Unsupported(_))
        ));
    }
}
