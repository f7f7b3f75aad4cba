//! SIP user agent (sans-IO core): message framing and normalisation in front of rsip, the
//! out-of-dialog request policy, and — built on these — transactions, dialogs, authentication
//! and registration.

pub mod auth;
pub mod message;
pub mod sdp;
pub mod syntax;
pub mod transaction;
pub mod uas;
