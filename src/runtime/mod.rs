//! The tokio shell: systemd notification, lifecycle state, the control channel between the
//! admin API and the app, and socket drivers. Protocol logic lives in the sans-IO cores; the
//! drivers here only move bytes and time into them.

pub mod control;
pub mod lifecycle;
pub mod recording;
pub mod rtp_io;
pub mod sip_endpoint;
pub mod sip_stream;
pub mod systemd;
pub mod trunk;
pub mod trunk_state;
