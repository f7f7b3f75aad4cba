//! Voice activity detection and endpointing on 20 ms frames of 8 kHz audio (sans-IO).
//!
//! A [`VoiceDetector`] says whether one frame is voice; [`WebRtcVad`] is the production one
//! (webrtc-vad, GMM-based). The [`Endpointer`] turns those decisions into utterances: speech
//! starts after `speech_start_ms` of voice (→ [`VadEvent::SpeechStarted`], the barge-in
//! signal), ends after `hangover_ms` of silence or at `max_utterance_ms`
//! (→ [`VadEvent::UtteranceEnded`] with the audio, `pre_roll_ms` before the start included).
//! Frames below `energy_floor_dbfs` are silence whatever the detector says (line hiss, comfort
//! noise).
//!
//! webrtc-vad's handle is `!Send`: an `Endpointer<WebRtcVad>` lives on one thread — the per-call
//! media consumer, or a thread of its own — and is fed from there.

use std::collections::VecDeque;
use std::time::Duration;

use crate::config::VadConfig;

/// Samples in one 20 ms frame at 8 kHz.
pub const FRAME: usize = 160;
/// One frame's duration.
pub const FRAME_MS: u32 = 20;

/// Decides whether a frame is voice.
pub trait VoiceDetector {
    /// `frame` holds [`FRAME`] samples at 8 kHz.
    fn is_voice(&mut self, frame: &[i16]) -> bool;
}

/// webrtc-vad at 8 kHz with the configured aggressiveness.
pub struct WebRtcVad(webrtc_vad::Vad);

impl std::fmt::Debug for WebRtcVad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebRtcVad")
    }
}

impl WebRtcVad {
    /// Aggressiveness 0 (quality) to 3 (very aggressive); values above 3 are treated as 3.
    pub fn new(aggressiveness: u8) -> Self {
        let mode = match aggressiveness {
            0 => webrtc_vad::VadMode::Quality,
            1 => webrtc_vad::VadMode::LowBitrate,
            2 => webrtc_vad::VadMode::Aggressive,
            _ => webrtc_vad::VadMode::VeryAggressive,
        };
        Self(webrtc_vad::Vad::new_with_rate_and_mode(
            webrtc_vad::SampleRate::Rate8kHz,
            mode,
        ))
    }
}

impl VoiceDetector for WebRtcVad {
    fn is_voice(&mut self, frame: &[i16]) -> bool {
        // A frame of the wrong length is a bug of ours; treat it as silence rather than fail.
        self.0.is_voice_segment(frame).unwrap_or(false)
    }
}

/// What the endpointer reports.
#[derive(Debug, Clone, PartialEq)]
pub enum VadEvent {
    /// Voice for `speech_start_ms`: the customer is talking (stop the robot: barge-in).
    SpeechStarted {
        /// Stream time of the first voiced frame.
        at: Duration,
    },
    /// An utterance is complete.
    UtteranceEnded {
        /// Stream time of the first voiced frame.
        start: Duration,
        /// Stream time of the end of the last voiced frame.
        end: Duration,
        /// 8 kHz audio from `start − pre_roll` to the end of the hangover.
        audio: Vec<i16>,
        /// True when `max_utterance_ms` cut it (speech goes on in the next one).
        cut: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Silence {
        voiced_run: u32,
    },
    Speech {
        start: u64,
        last_voice: u64,
        silent_run: u32,
    },
}

/// The endpointing state machine (see the module documentation).
#[derive(Debug)]
pub struct Endpointer<D> {
    detector: D,
    cfg: VadConfig,
    state: State,
    /// Frames processed so far (stream time = frames × 20 ms).
    frames: u64,
    /// Recent frames while silent (pre-roll plus the voiced run being confirmed).
    ring: VecDeque<Vec<i16>>,
    /// The utterance being collected.
    audio: Vec<i16>,
    /// Stream frame index of `audio[0]`.
    audio_start: u64,
    events: VecDeque<VadEvent>,
}

fn frames_of(ms: u32) -> u32 {
    ms.div_ceil(FRAME_MS).max(1)
}

fn at(frames: u64) -> Duration {
    Duration::from_millis(frames * u64::from(FRAME_MS))
}

/// Frame level in dBFS.
pub fn dbfs(frame: &[i16]) -> f64 {
    let rms = crate::media::tone::rms(frame);
    if rms <= 0.0 {
        -120.0
    } else {
        20.0 * (rms / 32768.0).log10()
    }
}

impl<D: VoiceDetector> Endpointer<D> {
    /// A new endpointer in silence.
    pub fn new(detector: D, cfg: VadConfig) -> Self {
        Self {
            detector,
            cfg,
            state: State::Silence { voiced_run: 0 },
            frames: 0,
            ring: VecDeque::new(),
            audio: Vec::new(),
            audio_start: 0,
            events: VecDeque::new(),
        }
    }

    fn transition(&mut self, to: State) {
        log::trace!(from:? = self.state, to:? = to; "endpointer transition");
        self.state = to;
    }

    /// Feeds one 20 ms frame ([`FRAME`] samples; shorter frames are padded with silence).
    pub fn push(&mut self, frame: &[i16]) {
        let mut f = frame.to_vec();
        f.resize(FRAME, 0);
        let voiced = dbfs(&f) >= self.cfg.energy_floor_dbfs && self.detector.is_voice(&f);
        let idx = self.frames;
        self.frames += 1;
        let start_frames = frames_of(self.cfg.speech_start_ms);
        let pre_roll = frames_of(self.cfg.pre_roll_ms).max(1) as usize;
        match self.state {
            State::Silence { voiced_run } => {
                self.ring.push_back(f);
                let run = if voiced { voiced_run + 1 } else { 0 };
                while self.ring.len() > pre_roll + run as usize {
                    self.ring.pop_front();
                }
                if run >= start_frames {
                    let start = idx + 1 - u64::from(run);
                    self.audio_start = self.frames - self.ring.len() as u64;
                    self.audio = self.ring.drain(..).flatten().collect();
                    self.events
                        .push_back(VadEvent::SpeechStarted { at: at(start) });
                    self.transition(State::Speech {
                        start,
                        last_voice: idx,
                        silent_run: 0,
                    });
                } else {
                    self.transition(State::Silence { voiced_run: run });
                }
            }
            State::Speech {
                start,
                last_voice,
                silent_run,
            } => {
                self.audio.extend_from_slice(&f);
                let (last_voice, silent_run) = if voiced {
                    (idx, 0)
                } else {
                    (last_voice, silent_run + 1)
                };
                let long =
                    (idx + 1 - start) * u64::from(FRAME_MS) >= u64::from(self.cfg.max_utterance_ms);
                if silent_run >= frames_of(self.cfg.hangover_ms) {
                    self.finish(start, last_voice + 1, false);
                    self.transition(State::Silence { voiced_run: 0 });
                } else if long {
                    self.finish(start, idx + 1, true);
                    // Speech goes on: the next utterance starts at the next frame.
                    self.audio_start = self.frames;
                    self.transition(State::Speech {
                        start: self.frames,
                        last_voice: idx,
                        silent_run: 0,
                    });
                } else {
                    self.transition(State::Speech {
                        start,
                        last_voice,
                        silent_run,
                    });
                }
            }
        }
    }

    fn finish(&mut self, start: u64, end: u64, cut: bool) {
        let audio = std::mem::take(&mut self.audio);
        self.events.push_back(VadEvent::UtteranceEnded {
            start: at(start),
            end: at(end),
            audio,
            cut,
        });
    }

    /// Ends the stream: an utterance in progress is reported as it stands.
    pub fn flush(&mut self) {
        if let State::Speech {
            start, last_voice, ..
        } = self.state
        {
            self.finish(start, last_voice + 1, false);
            self.transition(State::Silence { voiced_run: 0 });
        }
        self.ring.clear();
    }

    /// The next event, if any (drain after every push).
    pub fn poll_event(&mut self) -> Option<VadEvent> {
        self.events.pop_front()
    }

    /// Whether an utterance is in progress.
    pub fn in_speech(&self) -> bool {
        matches!(self.state, State::Speech { .. })
    }

    /// Stream time so far.
    pub fn now(&self) -> Duration {
        at(self.frames)
    }
}

/// Splits a recording into utterances (batch use: `vaultcall transcribe`).
pub fn segment<D: VoiceDetector>(
    detector: D,
    cfg: &VadConfig,
    samples_8k: &[i16],
) -> Vec<(Duration, Duration, Vec<i16>)> {
    let mut ep = Endpointer::new(detector, cfg.clone());
    let mut out = Vec::new();
    let mut take = |ep: &mut Endpointer<D>| {
        while let Some(e) = ep.poll_event() {
            if let VadEvent::UtteranceEnded {
                start, end, audio, ..
            } = e
            {
                out.push((start, end, audio));
            }
        }
    };
    for f in samples_8k.chunks(FRAME) {
        ep.push(f);
        take(&mut ep);
    }
    ep.flush();
    take(&mut ep);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A detector that reads its decision from the frame: voice when the first sample is
    /// non-zero (the endpointer's rules are under test, not webrtc-vad).
    struct Marked;
    impl VoiceDetector for Marked {
        fn is_voice(&mut self, frame: &[i16]) -> bool {
            frame[0] != 0
        }
    }

    fn voice() -> Vec<i16> {
        crate::media::tone::sine(300.0, 20, 8000)
            .into_iter()
            .map(|s| if s == 0 { 1 } else { s })
            .collect()
    }

    fn cfg() -> VadConfig {
        VadConfig {
            speech_start_ms: 60,
            hangover_ms: 300,
            max_utterance_ms: 2000,
            pre_roll_ms: 100,
            ..VadConfig::default()
        }
    }

    #[test]
    fn start_after_n_ms_end_after_hangover_with_pre_roll() {
        let mut ep = Endpointer::new(Marked, cfg());
        let silence = vec![0i16; FRAME];
        for _ in 0..10 {
            ep.push(&silence);
        }
        // Two voiced frames are not enough (60 ms = 3 frames).
        ep.push(&voice());
        ep.push(&voice());
        assert!(ep.poll_event().is_none());
        ep.push(&silence);
        for _ in 0..25 {
            ep.push(&voice());
        }
        assert_eq!(
            ep.poll_event(),
            Some(VadEvent::SpeechStarted {
                at: Duration::from_millis(260)
            })
        );
        for _ in 0..14 {
            ep.push(&silence);
        }
        assert!(
            ep.poll_event().is_none(),
            "280 ms of silence is within the hangover"
        );
        ep.push(&silence);
        match ep.poll_event() {
            Some(VadEvent::UtteranceEnded {
                start,
                end,
                audio,
                cut,
            }) => {
                assert_eq!(start, Duration::from_millis(260));
                assert_eq!(end, Duration::from_millis(760));
                assert!(!cut);
                // 5 pre-roll frames (100 ms) + 25 voiced + 15 hangover.
                assert_eq!(audio.len(), (5 + 25 + 15) * FRAME);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn energy_floor_and_max_length() {
        let mut ep = Endpointer::new(Marked, cfg());
        // "Voice" far below the floor is silence.
        for _ in 0..20 {
            ep.push(&[1i16; FRAME]);
        }
        assert!(ep.poll_event().is_none());
        for _ in 0..150 {
            ep.push(&voice());
        }
        let mut cuts = 0;
        while let Some(e) = ep.poll_event() {
            if let VadEvent::UtteranceEnded { cut, .. } = e {
                assert!(cut);
                cuts += 1;
            }
        }
        assert_eq!(cuts, 1, "3 s of speech with a 2 s cap");
        ep.flush();
        assert!(matches!(
            ep.poll_event(),
            Some(VadEvent::UtteranceEnded { cut: false, .. })
        ));
    }

    #[test]
    fn segment_splits_a_recording() {
        let mut rec = Vec::new();
        for part in 0..3 {
            rec.extend(std::iter::repeat_n(0i16, FRAME * 30));
            for _ in 0..(20 + part * 10) {
                rec.extend(voice());
            }
        }
        rec.extend(std::iter::repeat_n(0i16, FRAME * 30));
        let segs = segment(Marked, &cfg(), &rec);
        assert_eq!(segs.len(), 3);
        assert_eq!(segs[0].0, Duration::from_millis(600));
        assert_eq!(segs[0].1, Duration::from_millis(1000));
    }

    #[test]
    fn webrtc_vad_hears_no_voice_in_silence() {
        let mut v = WebRtcVad::new(3);
        assert!(!v.is_voice(&[0i16; FRAME]));
    }
}
