//! The local speech engine: everything runs on the box through ONNX Runtime.
//!
//! - [`onnx`] (shell): the ONNX Runtime library, execution providers, sessions, model files
//!   and their digests;
//! - [`worker`] (shell): worker threads owning the sessions — [`worker::AsrEngine`] (batched
//!   Whisper decoding) and [`worker::TtsEngine`] (Kokoro, clause by clause, prompt cache);
//! - [`mel`]: Whisper's log-mel front end;
//! - [`asr`]: token rules, greedy decoding guards, Traditional → Simplified, ITN, hotwords;
//! - [`vad`]: webrtc-vad and the endpointer (SpeechStarted / UtteranceEnded);
//! - [`stream`]: [`stream::AsrStream`], streaming recognition of one call's audio;
//! - [`tts`]: the Mandarin text front end and Kokoro's inputs and outputs;
//! - [`announce`]: the early-media announcement classifier.
//!
//! Everything but `onnx` and `worker` is sans-IO (see the crate docs). The models come from
//! `make models` (`models/models.toml`); `docs/speech.md` describes the pipeline and limits.

pub mod announce;
pub mod asr;
pub mod mel;
pub mod onnx;
pub mod stream;
pub mod tts;
pub mod vad;
pub mod worker;
