//! The call-script (话术) engine: a sans-IO core.
//!
//! ```text
//!  script text (TOML) ──Script::parse──▶ Script ──validate::compile──▶ CompiledScript (Arc)
//!                                                   │ problems: every one, with its node
//!  call layer ──Input──▶ Machine ──Output──▶ call layer (Say, Listen, Transfer, Hangup, …)
//!                          │ matcher: normalise → jieba → rules → intent + confidence + rule
//!                          └ grading: facts → first matching rule → level + reason
//! ```
//! - [`script`]: the file format (serde types; the JSON Schema is generated from them).
//! - [`validate`]: checks (unreachable nodes, missing nodes, undeclared variables, loops
//!   without exit, prompts too long, rules that never match, missing audio) and compilation.
//! - [`normalize`], [`matcher`]: text normalisation and intent matching.
//! - [`expr`], [`grading`]: grading expressions and levels.
//! - [`machine`]: the per-call FSM.
//!
//! Nothing here reads a clock, a file or a socket: times arrive as `now`, audio-file
//! existence arrives as [`validate::CheckEnv`]. What customers say and variable values are
//! personal data; they are never logged (Debug prints them redacted).

pub mod expr;
pub mod grading;
pub mod machine;
pub mod matcher;
pub mod normalize;
pub mod script;
pub mod validate;

pub use machine::{Input, Machine, Outcome, Output};
pub use script::Script;
pub use validate::{CheckEnv, CompiledScript, Problem, ProblemKind, compile, compile_text};
