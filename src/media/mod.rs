//! The RTP media engine, sans-IO (see the crate docs for the core contract).
//!
//! - [`rtp`]: RTP packets (through `rtp-rs`) and RTCP reports;
//! - [`g711`]: μ-law and A-law.

pub mod g711;
pub mod rtp;
