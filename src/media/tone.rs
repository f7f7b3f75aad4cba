//! Test tones and a Goertzel detector: how tests (and operators' checks) tell which tone a
//! recording holds, without an FFT dependency.

use std::f64::consts::PI;

/// `ms` milliseconds of a sine at `freq` Hz, 8 kHz, peak `amplitude`.
pub fn sine(freq: f64, ms: u32, amplitude: i16) -> Vec<i16> {
    let n = ms as usize * 8;
    (0..n)
        .map(|i| {
            (f64::from(amplitude) * (2.0 * PI * freq * i as f64 / 8000.0).sin()).round() as i16
        })
        .collect()
}

/// Power of `samples` at `freq` Hz (Goertzel algorithm), normalised by length².
pub fn goertzel_power(samples: &[i16], freq: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let coeff = 2.0 * (2.0 * PI * freq / 8000.0).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = f64::from(x) + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let p = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    p / (samples.len() as f64 * samples.len() as f64)
}

/// The frequency between `lo` and `hi` Hz (in `step` Hz steps) with the most power.
pub fn dominant_frequency(samples: &[i16], lo: f64, hi: f64, step: f64) -> f64 {
    let mut best = (lo, f64::MIN);
    let mut f = lo;
    while f <= hi {
        let p = goertzel_power(samples, f);
        if p > best.1 {
            best = (f, p);
        }
        f += step;
    }
    best.0
}

/// Root mean square level.
pub fn rms(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let sum: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    (sum / samples.len() as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_tone() {
        for f in [440.0, 1000.0, 2750.0] {
            let s = sine(f, 200, 8000);
            assert_eq!(dominant_frequency(&s, 200.0, 3400.0, 10.0), f);
        }
        let s = sine(1000.0, 20, 10000);
        assert!((rms(&s) - 10000.0 / 2f64.sqrt()).abs() < 50.0);
        assert_eq!(rms(&[]), 0.0);
    }
}
