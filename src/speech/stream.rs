//! Streaming recognition of one call's customer audio (sans-IO).
//!
//! [`AsrStream`] is fed 20 ms frames at 8 kHz. Its endpointer reports speech starts (barge-in)
//! at once; when an utterance ends it asks for a decode ([`StreamOutput::Decode`], 16 kHz audio
//! for the recogniser); the shell runs it on the ASR workers and hands the result back with
//! [`AsrStream::handle_decoded`], and the stream emits the finished [`Utterance`] — text after
//! Traditional → Simplified, ITN and hotwords, start and end times, decode time.
//!
//! ```text
//! stream.push_frame(frame);                        // every 20 ms
//! while let Some(out) = stream.poll_output() {     // SpeechStarted | Decode | Utterance
//!     Decode(req) => engine.submit(req.audio_16k) → later stream.handle_decoded(req.id, raw)
//! }
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use super::asr::hotwords::Pinyin;
use super::asr::{PostProcess, RawTranscript, Transcript, post_process};
use super::vad::{Endpointer, VadEvent, VoiceDetector};

/// A decode the stream asks the shell for.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeRequest {
    /// Utterance number within the stream (for [`AsrStream::handle_decoded`]).
    pub id: u64,
    /// The utterance at 16 kHz, −1..1, ready for the recogniser.
    pub audio_16k: Vec<f32>,
    /// Stream time of its start.
    pub start: Duration,
    /// Stream time of its end.
    pub end: Duration,
}

/// A recognised utterance.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Utterance {
    /// Utterance number within the stream.
    pub id: u64,
    /// Stream time of its start.
    #[serde(with = "secs")]
    pub start: Duration,
    /// Stream time of its end.
    #[serde(with = "secs")]
    pub end: Duration,
    /// Encoder + decoder time.
    #[serde(with = "secs")]
    pub decode_time: Duration,
    /// The transcript.
    pub transcript: Transcript,
}

mod secs {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_f64((d.as_secs_f64() * 1000.0).round() / 1000.0)
    }
}

/// What the stream asks of the shell or tells it.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamOutput {
    /// The customer started talking.
    SpeechStarted {
        /// Stream time.
        at: Duration,
    },
    /// Decode this utterance and call [`AsrStream::handle_decoded`].
    Decode(DecodeRequest),
    /// A finished utterance.
    Utterance(Utterance),
    /// A decode failed (queue full, worker error); the utterance is lost and the call goes on.
    DecodeFailed {
        /// Utterance number.
        id: u64,
        /// Why.
        reason: String,
    },
}

/// One call's streaming recogniser (see the module documentation).
#[derive(Debug)]
pub struct AsrStream<D> {
    endpointer: Endpointer<D>,
    post: PostProcess,
    pinyin: Arc<Pinyin>,
    next_id: u64,
    pending: BTreeMap<u64, (Duration, Duration)>,
    outputs: VecDeque<StreamOutput>,
    /// Most decodes in flight; beyond it an utterance is dropped (and reported).
    max_pending: usize,
}

/// 8 kHz → 16 kHz for the recogniser (band-limited resampler of the media engine), as floats.
pub fn to_16k(samples_8k: &[i16]) -> Vec<f32> {
    crate::media::resample::resample(samples_8k, 8000, 16_000)
        .into_iter()
        .map(|s| f32::from(s) / 32768.0)
        .collect()
}

impl<D: VoiceDetector> AsrStream<D> {
    /// A stream with its detector, post-processing and pinyin table.
    pub fn new(endpointer: Endpointer<D>, post: PostProcess, pinyin: Arc<Pinyin>) -> Self {
        Self {
            endpointer,
            post,
            pinyin,
            next_id: 0,
            pending: BTreeMap::new(),
            outputs: VecDeque::new(),
            max_pending: 8,
        }
    }

    /// Feeds one 20 ms frame of 8 kHz audio.
    pub fn push_frame(&mut self, frame: &[i16]) {
        self.endpointer.push(frame);
        self.drain_vad();
    }

    /// Ends the stream (the call hung up): an utterance in progress is decoded as it stands.
    pub fn finish(&mut self) {
        self.endpointer.flush();
        self.drain_vad();
    }

    fn drain_vad(&mut self) {
        while let Some(e) = self.endpointer.poll_event() {
            match e {
                VadEvent::SpeechStarted { at } => {
                    self.outputs.push_back(StreamOutput::SpeechStarted { at });
                }
                VadEvent::UtteranceEnded {
                    start, end, audio, ..
                } => {
                    let id = self.next_id;
                    self.next_id += 1;
                    if self.pending.len() >= self.max_pending {
                        self.outputs.push_back(StreamOutput::DecodeFailed {
                            id,
                            reason: "too many decodes in flight".into(),
                        });
                        continue;
                    }
                    self.pending.insert(id, (start, end));
                    self.outputs.push_back(StreamOutput::Decode(DecodeRequest {
                        id,
                        audio_16k: to_16k(&audio),
                        start,
                        end,
                    }));
                }
            }
        }
    }

    /// The recogniser's result for utterance `id`.
    pub fn handle_decoded(&mut self, id: u64, result: Result<RawTranscript, String>) {
        let Some((start, end)) = self.pending.remove(&id) else {
            return;
        };
        match result {
            Ok(raw) => {
                let transcript = post_process(&raw, &self.post, &self.pinyin);
                self.outputs.push_back(StreamOutput::Utterance(Utterance {
                    id,
                    start,
                    end,
                    decode_time: raw.decode_time,
                    transcript,
                }));
            }
            Err(reason) => self
                .outputs
                .push_back(StreamOutput::DecodeFailed { id, reason }),
        }
    }

    /// The next output, if any (drain after every input).
    pub fn poll_output(&mut self) -> Option<StreamOutput> {
        self.outputs.pop_front()
    }

    /// Whether the customer is talking now.
    pub fn in_speech(&self) -> bool {
        self.endpointer.in_speech()
    }

    /// Decodes asked for and not yet answered.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}
