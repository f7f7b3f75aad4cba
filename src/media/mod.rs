//! The RTP media engine, sans-IO (see the crate docs for the core contract).
//!
//! - [`rtp`]: RTP packets (through `rtp-rs`) and RTCP reports;
//! - [`g711`]: μ-law and A-law;
//! - [`jitter`]: reception statistics (RFC 3550 A.1, A.3, A.8) and the adaptive playout buffer;
//! - [`dtmf`]: RFC 4733 telephone events, both ways;
//! - [`session`]: one call's media — pacing, continuity, symmetric RTP, RTCP, DTMF, taps;
//! - [`tap`]: per-frame PCM of both directions and the recording sink (stereo WAV);
//! - [`tone`]: test tones and a Goertzel detector.
//!
//! The tokio driver is `runtime::rtp_io`; the design is written up in `docs/media.md`.

pub mod dtmf;
pub mod g711;
pub mod jitter;
pub mod resample;
pub mod rtp;
pub mod session;
pub mod tap;
pub mod tone;

#[cfg(test)]
mod session_tests;

/// An arbitrary instant for tests (cores never read the clock; tests need a starting point).
#[cfg(test)]
pub(crate) fn test_instant() -> std::time::Instant {
    use crate::time::Clock as _;
    crate::time::ManualClock::new(std::time::UNIX_EPOCH).mono()
}
