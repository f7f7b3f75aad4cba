//! # vaultcall
//!
//! An on-prem AI outbound-call appliance for banks: one daemon on the bank's own GPU server
//! that dials customers through the bank's SIP trunk, talks Mandarin with local ONNX speech
//! models, follows an approved call script (话术), grades intent, keeps encrypted recordings and
//! answers erasure requests. Nothing leaves the box.
//!
//! ## Module map
//!
//! ```text
//!  SIP trunk ⇄ [sip] ⇄ [call] ⇄ [conversation]      one call = SIP dialog + media + script run
//!    RTP     ⇄ [media] ⇄ ┘  ⇅
//!                    [speech] VAD → ASR, TTS → prompt cache
//!  [dialer] campaigns under caps       [vault] encrypted recordings, keys, erasure, audit
//!  [store]  SQLite (WAL), one writer   [admin] HTTP API + web page, TLS, roles
//! ```
//!
//! Modules present today: [`config`], [`telemetry`], [`time`], [`ids`], [`store`], [`vault`]
//! (keys, the encrypted file format, receipts — no database), [`records`] (the vault composed
//! with the store: subjects, recording, playback, erasure, retention, rotation),
//! [`conversation`] (the call-script engine) and [`scriptctl`], [`sip`] (the SIP user agent),
//! [`media`] (the RTP engine core; its tokio driver is [`runtime::rtp_io`]), [`admin`], [`runtime`], [`app`]. `store` and `vault` depend only on plain
//! modules; `records` is the one place that joins them (docs/vault.md).
//!
//! ## Two kinds of code
//!
//! **Cores** (`sip`, `media`, `conversation`, `call`, `dialer`, pure parts of `speech`) are
//! sans-IO: plain structs that never read a clock, touch a socket or file, spawn, sleep or lock.
//! Time and randomness come in as arguments. **The shell** (`runtime`, `store`, `vault` file
//! I/O, `admin`, `scriptctl`, `app`, `main`) moves bytes and time into cores and executes their outputs.
//! `tests/architecture.rs` fails if a core file uses tokio, `std::net`, `std::fs`, threads or
//! locks.
//!
//! ## The core contract
//!
//! ```text
//! core.handle_xxx(now, input)          // network input, timer, or a command from our code
//! while let Some(out) = core.poll_output() { shell executes out }   // Transmit | Event | Request
//! core.poll_timeout() -> Option<Instant>                            // when to call handle_timeout
//! ```
//! Mutate once, then drain outputs to `None`, then read the next timeout. States are enums whose
//! variants carry only what is valid in that state; matches are exhaustive; every transition goes
//! through one function that logs from/to at debug. Timers are named after the RFC. Outcomes
//! such as 486 Busy, a Timer B expiry or a BYE are events, not errors. A core asks for resources
//! (an RTP port, an ASR decode) as outputs; results come back as inputs.
//!
//! ## House rules (short form)
//!
//! Time comes from [`time::Clock`] only; every queue, map and buffer is bounded and counted;
//! remote input never panics; no personal data in logs — wrap it in [`telemetry::Redacted`];
//! secrets come from files of mode 0600 or systemd credentials, never argv, env or logs.

#![deny(clippy::unwrap_used, missing_docs)]

pub mod admin;
pub mod app;
pub mod config;
pub mod conversation;
pub mod dial;
pub mod fs;
pub mod ids;
pub mod media;
pub mod records;
pub mod runtime;
pub mod scriptctl;
pub mod sip;
pub mod speech;
pub mod speechctl;
pub mod store;
pub mod telemetry;
pub mod time;
pub mod vault;
pub mod wav;
