//! The 话术 FSM: drives one call through a compiled script, turn by turn.
//!
//! Sans-IO (see the crate's core contract): the call layer feeds [`Input`]s with
//! [`Machine::handle_input`] and timer expiries with [`Machine::handle_timeout`], drains
//! [`Machine::poll_output`] to `None` after each, and reads [`Machine::poll_timeout`].
//! Deterministic given inputs and times. It never panics on any input sequence, and it always
//! ends: every customer turn (speech, key press, silence) is a round and the robot closes at
//! `max_rounds`; it starts its closing prompt in time to finish before `max_duration_secs` and
//! hangs up at that limit whatever happens; robot prompts without customer turns in between
//! are capped too. The call's grade is available from [`Machine::outcome`] once it has ended.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::grading::{CallFacts, Grade};
use super::matcher::IntentHit;
use super::script::{BargeIn, EndReason, NodeKind, Resume, VarType};
use super::validate::{
    CExtract, CPrompt, CompiledScript, GlobalAction, Piece, check_value, parse_date,
    speech_duration,
};

/// What the customer said, as the ASR reports it.
#[derive(Clone, PartialEq)]
pub struct Heard {
    /// The text (personal data: never logged).
    pub text: String,
    /// When speech started.
    pub start: Instant,
    /// When it ended.
    pub end: Instant,
    /// ASR confidence, 0–1.
    pub confidence: f32,
}

impl std::fmt::Debug for Heard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Heard")
            .field("text", &crate::telemetry::Redacted(&self.text))
            .field("confidence", &self.confidence)
            .finish()
    }
}

/// Inputs from the call layer.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// The callee answered: the script starts.
    CallAnswered,
    /// An utterance was recognised.
    Heard(Heard),
    /// A key was pressed (RFC 4733 event): `0`–`9`, `*`, `#`.
    Dtmf(char),
    /// The call layer's endpointing heard no speech within the listen timeout.
    NoInput,
    /// Speech started (voice activity): barge-in.
    SpeechStarted,
    /// The current prompt finished playing.
    PromptFinished,
    /// The customer hung up.
    Hangup,
}

/// What to say.
#[derive(Clone, PartialEq, Serialize)]
pub struct SayPrompt {
    /// The rendered text (may contain personal data from variables: never logged).
    pub text: String,
    /// A pre-recorded file to play instead of TTS (only for prompts without variables).
    pub audio: Option<String>,
    /// The node it belongs to.
    pub node: String,
}

impl std::fmt::Debug for SayPrompt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SayPrompt")
            .field("text", &crate::telemetry::Redacted(&self.text))
            .field("audio", &self.audio)
            .field("node", &self.node)
            .finish()
    }
}

/// Where a tag attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TagScope {
    /// To the call (stored with the call, used by grading).
    Call,
    /// To the current turn only.
    Turn,
}

/// Who spoke a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Speaker {
    /// The robot.
    Robot,
    /// The customer.
    Customer,
}

/// How the customer answered in a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// Speech.
    Speech,
    /// A key press.
    Dtmf,
    /// Silence.
    Silence,
}

/// One turn, for the call record (the `turns` table).
#[derive(Clone, PartialEq, Serialize)]
pub struct TurnRecord {
    /// 1, 2, … within the call.
    pub seq: u32,
    /// Who.
    pub speaker: Speaker,
    /// The node the turn belongs to.
    pub node: String,
    /// Start, ms after answer.
    pub start_ms: u64,
    /// End, ms after answer.
    pub end_ms: u64,
    /// What was said (robot: the rendered prompt; customer: the ASR text, or the key) —
    /// personal data, stored encrypted and never logged.
    pub text: String,
    /// Customer turns: speech, key press or silence.
    pub answer: Option<Answer>,
    /// The recognised intent.
    pub intent: Option<String>,
    /// The rule that matched.
    pub rule: Option<String>,
    /// The match confidence.
    pub confidence: Option<f32>,
    /// The ASR confidence.
    pub asr_confidence: Option<f32>,
    /// Tags attached in this turn (call and turn scope).
    pub tags: Vec<String>,
    /// Robot turns cut short by barge-in or hang-up.
    pub interrupted: bool,
}

impl std::fmt::Debug for TurnRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnRecord")
            .field("seq", &self.seq)
            .field("speaker", &self.speaker)
            .field("node", &self.node)
            .field("text", &crate::telemetry::Redacted(&self.text))
            .field("intent", &self.intent)
            .field("rule", &self.rule)
            .finish()
    }
}

/// Outputs for the call layer.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Play a prompt with this barge-in policy; answer with `PromptFinished`.
    Say {
        /// What to say.
        prompt: SayPrompt,
        /// Barge-in policy for it.
        barge_in: BargeIn,
    },
    /// Listen for the customer; `NoInput` if no speech starts within `timeout`.
    Listen {
        /// No-input timeout.
        timeout: Duration,
    },
    /// Hand the call to a human agent (SIP REFER or a bridged INVITE).
    Transfer {
        /// SIP target.
        target: String,
    },
    /// Hang up.
    Hangup {
        /// Why.
        reason: EndReason,
    },
    /// A tag attaches.
    Tag {
        /// The tag.
        tag: String,
        /// Call or turn.
        scope: TagScope,
    },
    /// The score changed.
    Score {
        /// Change.
        delta: i32,
        /// New total.
        total: i32,
    },
    /// A variable was filled from what the customer said.
    SetVariable {
        /// Name.
        name: String,
        /// Value (personal data).
        value: crate::telemetry::Redacted<String>,
    },
    /// Never call this number again (do-not-call request).
    Suppress {
        /// The callee's number.
        number: crate::telemetry::Redacted<String>,
    },
    /// A finished turn.
    TurnRecord(TurnRecord),
}

/// The result of a call's script run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    /// Why it ended.
    pub end: EndReason,
    /// The grade.
    pub grade: Grade,
    /// The facts it was graded on.
    pub facts: CallFacts,
    /// Call tags in the order they attached.
    pub tags: Vec<String>,
}

/// Why a call could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VarError {
    /// A required variable is missing.
    #[error("variable '{0}' is required")]
    Missing(String),
    /// A value does not fit the type (the value itself is not shown: personal data).
    #[error("variable '{name}' must be {expected}")]
    Invalid {
        /// Name.
        name: String,
        /// What is allowed.
        expected: String,
    },
    /// Not declared by the script.
    #[error("variable '{0}' is not declared by the script")]
    Unknown(String),
}

/// Checks supplied variables against the script and fills defaults.
pub fn bind_variables(
    script: &CompiledScript,
    supplied: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, VarError> {
    let decl = script.variables();
    if let Some(k) = supplied.keys().find(|k| !decl.contains_key(*k)) {
        return Err(VarError::Unknown(k.clone()));
    }
    let mut out = BTreeMap::new();
    for (name, v) in decl {
        match supplied.get(name).or(v.default.as_ref()) {
            Some(val) => {
                check_value(v.kind, val).map_err(|expected| VarError::Invalid {
                    name: name.clone(),
                    expected,
                })?;
                out.insert(name.clone(), val.clone());
            }
            None if v.required => return Err(VarError::Missing(name.clone())),
            None => {}
        }
    }
    Ok(out)
}

/// What happens when a prompt finishes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum After {
    /// Listen at the node.
    Listen,
    /// Enter another node.
    Next(usize),
    /// Knowledge answered: back to the node.
    Resume(usize, Resume),
    /// Transfer.
    Transfer(String),
    /// Hang up.
    Hangup(EndReason),
}

/// Something the customer did, kept while a prompt without barge-in plays.
#[derive(Debug, Clone, PartialEq)]
enum Pending {
    Heard(Heard),
    Dtmf(char),
}

#[derive(Debug, Clone, PartialEq)]
struct Speaking {
    node: usize,
    after: After,
    started: Instant,
    watchdog: Instant,
    barge_in: BargeIn,
    text: String,
    pending: Option<Pending>,
}

#[derive(Debug, Clone, PartialEq)]
struct Listening {
    node: usize,
    deadline: Instant,
    speech_started: bool,
}

/// The FSM state; each variant carries only what is valid in it.
#[derive(Debug, Clone, PartialEq)]
enum State {
    /// Before the callee answers.
    Idle,
    /// A prompt is playing.
    Speaking(Speaking),
    /// Waiting for the customer.
    Listening(Listening),
    /// Done; see the outcome.
    Ended,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Speaking(_) => "speaking",
            Self::Listening(_) => "listening",
            Self::Ended => "ended",
        }
    }
}

/// What the customer did in a turn, for its record.
struct Said {
    text: String,
    answer: Answer,
    asr: Option<f32>,
    start: Instant,
}

/// What the machine is doing, for drivers and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Waiting for the callee to answer.
    Idle,
    /// A prompt is playing.
    Speaking,
    /// Waiting for the customer.
    Listening,
    /// Done.
    Ended,
}

/// How the customer answered, resolved.
enum Choice {
    Branch(usize),
    Global(GlobalAction),
}

/// One call's script run.
#[derive(Debug)]
pub struct Machine {
    script: Arc<CompiledScript>,
    vars: BTreeMap<String, String>,
    callee: String,
    state: State,
    out: VecDeque<Output>,
    answered: Option<Instant>,
    hard_deadline: Option<Instant>,
    closing_at: Option<Instant>,
    closing: bool,
    /// The node the customer is being asked at (for knowledge answers and records).
    current: usize,
    visits: BTreeMap<usize, u32>,
    no_input_count: usize,
    no_match_count: usize,
    robot_says: u32,
    seq: u32,
    turn_tags: Vec<String>,
    // Facts.
    rounds: u32,
    score: i32,
    refusals: u32,
    no_inputs: u32,
    no_matches: u32,
    customer_turns: u32,
    knowledge: u32,
    tags: Vec<String>,
    intents: BTreeMap<String, u32>,
    visited: BTreeSet<String>,
    captured: BTreeSet<String>,
    outcome: Option<Outcome>,
}

impl Machine {
    /// A machine for one call. `vars` come from [`bind_variables`]; `callee` is the number
    /// (only ever passed back in [`Output::Suppress`]).
    pub fn new(
        script: Arc<CompiledScript>,
        vars: BTreeMap<String, String>,
        callee: String,
    ) -> Self {
        let start = script.start;
        Self {
            script,
            vars,
            callee,
            state: State::Idle,
            out: VecDeque::new(),
            answered: None,
            hard_deadline: None,
            closing_at: None,
            closing: false,
            current: start,
            visits: BTreeMap::new(),
            no_input_count: 0,
            no_match_count: 0,
            robot_says: 0,
            seq: 0,
            turn_tags: Vec::new(),
            rounds: 0,
            score: 0,
            refusals: 0,
            no_inputs: 0,
            no_matches: 0,
            customer_turns: 0,
            knowledge: 0,
            tags: Vec::new(),
            intents: BTreeMap::new(),
            visited: BTreeSet::new(),
            captured: BTreeSet::new(),
            outcome: None,
        }
    }

    /// Handles one input.
    pub fn handle_input(&mut self, now: Instant, input: Input) {
        if self.limits(now) {
            return;
        }
        match (self.state.clone(), input) {
            (State::Ended, _) => {}
            (State::Idle, Input::CallAnswered) => {
                self.answered = Some(now);
                let max = self.script.max_duration;
                let closing = speech_duration(
                    &self.render(&self.script.closing[1]),
                    self.script.speech_rate_cps,
                ) + Duration::from_secs(1);
                self.hard_deadline = Some(now + max);
                self.closing_at = Some(now + max.saturating_sub(closing.min(max / 2)));
                self.enter(now, self.script.start);
            }
            (State::Idle, Input::Hangup) => {
                self.answered = Some(now);
                self.finish(now, EndReason::CustomerHangup);
            }
            (State::Idle, _) => {}
            (_, Input::Hangup) => {
                self.robot_turn_cut(now);
                self.finish(now, EndReason::CustomerHangup);
            }
            (State::Speaking(s), Input::PromptFinished) => self.finish_say(now, s),
            (State::Speaking(s), Input::SpeechStarted) => {
                if self.may_barge(now, &s) {
                    let node = s.node;
                    self.robot_record(now, &s, true);
                    let timeout = self.script.max_utterance;
                    self.set_state(State::Listening(Listening {
                        node,
                        deadline: now + timeout,
                        speech_started: true,
                    }));
                    self.out.push_back(Output::Listen {
                        timeout: self.node_timeout(node),
                    });
                }
            }
            (State::Speaking(mut s), Input::Heard(h)) => {
                if self.may_barge(now, &s) {
                    self.robot_record(now, &s, true);
                    self.customer(now, s.node, Pending::Heard(h));
                } else {
                    s.pending = Some(Pending::Heard(h));
                    self.state = State::Speaking(s);
                }
            }
            (State::Speaking(mut s), Input::Dtmf(d)) => {
                if s.after == After::Listen || matches!(s.after, After::Resume(..)) {
                    // A key press always interrupts a prompt that expects an answer.
                    self.robot_record(now, &s, true);
                    let node = match s.after {
                        After::Resume(n, _) => n,
                        _ => s.node,
                    };
                    self.customer(now, node, Pending::Dtmf(d));
                } else {
                    s.pending = Some(Pending::Dtmf(d));
                    self.state = State::Speaking(s);
                }
            }
            (State::Speaking(_), Input::NoInput | Input::CallAnswered) => {}
            (State::Listening(l), Input::Heard(h)) => self.customer(now, l.node, Pending::Heard(h)),
            (State::Listening(l), Input::Dtmf(d)) => self.customer(now, l.node, Pending::Dtmf(d)),
            (State::Listening(l), Input::NoInput) => self.silence(now, l.node),
            (State::Listening(mut l), Input::SpeechStarted) => {
                l.speech_started = true;
                l.deadline = now + self.script.max_utterance;
                self.state = State::Listening(l);
            }
            (State::Listening(_), Input::PromptFinished | Input::CallAnswered) => {}
        }
    }

    /// Handles timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.limits(now) {
            return;
        }
        match self.state.clone() {
            State::Speaking(s) if now >= s.watchdog => self.finish_say(now, s),
            State::Listening(l) if now >= l.deadline => {
                if l.speech_started {
                    // Speech began but no text came: counts as not understood.
                    self.customer(
                        now,
                        l.node,
                        Pending::Heard(Heard {
                            text: String::new(),
                            start: now,
                            end: now,
                            confidence: 0.0,
                        }),
                    );
                } else {
                    self.silence(now, l.node);
                }
            }
            State::Idle | State::Speaking(_) | State::Listening(_) | State::Ended => {}
        }
    }

    /// The next output, until `None`.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`Machine::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let state = match &self.state {
            State::Idle | State::Ended => return None,
            State::Speaking(s) => s.watchdog,
            State::Listening(l) => l.deadline,
        };
        let closing = if self.closing { None } else { self.closing_at };
        [Some(state), closing, self.hard_deadline]
            .into_iter()
            .flatten()
            .min()
    }

    /// What the machine is doing.
    pub fn phase(&self) -> Phase {
        match self.state {
            State::Idle => Phase::Idle,
            State::Speaking(_) => Phase::Speaking,
            State::Listening(_) => Phase::Listening,
            State::Ended => Phase::Ended,
        }
    }

    /// Whether the run has ended.
    pub fn is_ended(&self) -> bool {
        self.state == State::Ended
    }

    /// The outcome, once ended.
    pub fn outcome(&self) -> Option<&Outcome> {
        self.outcome.as_ref()
    }

    /// Customer turns handled so far.
    pub fn rounds(&self) -> u32 {
        self.rounds
    }

    /// The node the call is at.
    pub fn current_node(&self) -> &str {
        self.script
            .nodes
            .get(self.current)
            .map_or("", |n| n.id.as_str())
    }

    /// The variables (supplied and captured).
    pub fn variables(&self) -> &BTreeMap<String, String> {
        &self.vars
    }

    // --- internals -------------------------------------------------------------------------

    fn set_state(&mut self, to: State) {
        log::debug!(
            from = self.state.name(),
            to = to.name(),
            node = self.current_node();
            "conversation state"
        );
        self.state = to;
    }

    /// Applies the duration limits; true if the input must be dropped.
    fn limits(&mut self, now: Instant) -> bool {
        if self.state == State::Ended {
            return true;
        }
        if let Some(hd) = self.hard_deadline
            && now >= hd
        {
            self.robot_turn_cut(now);
            self.out.push_back(Output::Hangup {
                reason: EndReason::MaxDuration,
            });
            self.finish(now, EndReason::MaxDuration);
            return true;
        }
        if let Some(c) = self.closing_at
            && now >= c
            && !self.closing
        {
            self.robot_turn_cut(now);
            self.close(now, EndReason::MaxDuration);
            return true;
        }
        false
    }

    fn node_timeout(&self, node: usize) -> Duration {
        self.script
            .nodes
            .get(node)
            .map_or(Duration::from_secs(6), |n| n.no_input_timeout)
    }

    fn may_barge(&self, now: Instant, s: &Speaking) -> bool {
        let expects_answer = matches!(s.after, After::Listen | After::Resume(..));
        expects_answer
            && match s.barge_in {
                BargeIn::Never => false,
                BargeIn::Always => true,
                BargeIn::AfterMs(ms) => {
                    now.saturating_duration_since(s.started) >= Duration::from_millis(u64::from(ms))
                }
            }
    }

    fn offset_ms(&self, t: Instant) -> u64 {
        self.answered.map_or(0, |a| {
            u64::try_from(t.saturating_duration_since(a).as_millis()).unwrap_or(u64::MAX)
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq += 1;
        self.seq
    }

    fn robot_record(&mut self, now: Instant, s: &Speaking, interrupted: bool) {
        let seq = self.next_seq();
        let node = self
            .script
            .nodes
            .get(s.node)
            .map_or_else(String::new, |n| n.id.clone());
        let tags = std::mem::take(&mut self.turn_tags);
        self.out.push_back(Output::TurnRecord(TurnRecord {
            seq,
            speaker: Speaker::Robot,
            node,
            start_ms: self.offset_ms(s.started),
            end_ms: self.offset_ms(now),
            text: s.text.clone(),
            answer: None,
            intent: None,
            rule: None,
            confidence: None,
            asr_confidence: None,
            tags,
            interrupted,
        }));
    }

    /// Records a prompt cut off by a hang-up or the duration limit.
    fn robot_turn_cut(&mut self, now: Instant) {
        if let State::Speaking(s) = self.state.clone() {
            self.robot_record(now, &s, true);
        }
    }

    fn add_tag(&mut self, tag: &str, scope: TagScope) {
        if scope == TagScope::Call {
            if self.tags.iter().any(|t| t == tag) {
                return;
            }
            self.tags.push(tag.to_owned());
        }
        self.turn_tags.push(tag.to_owned());
        self.out.push_back(Output::Tag {
            tag: tag.to_owned(),
            scope,
        });
    }

    fn add_score(&mut self, delta: i32) {
        if delta != 0 {
            self.score = self.score.saturating_add(delta);
            self.out.push_back(Output::Score {
                delta,
                total: self.score,
            });
        }
    }

    fn render(&self, p: &CPrompt) -> String {
        let mut s = String::new();
        for piece in &p.pieces {
            match piece {
                Piece::Text(t) => s.push_str(t),
                Piece::Var(v) => {
                    let val = self.vars.get(v).map_or("", String::as_str);
                    let is_date = self
                        .script
                        .variables()
                        .get(v)
                        .is_some_and(|d| d.kind == VarType::Date);
                    match parse_date(val).filter(|_| is_date) {
                        Some((_, m, d)) => s.push_str(&format!("{m}月{d}日")),
                        None => s.push_str(val),
                    }
                }
            }
        }
        s
    }

    /// Starts saying a prompt of `node`.
    fn say(&mut self, now: Instant, node: usize, p: &CPrompt, after: After) {
        self.robot_says += 1;
        let text = self.render(p);
        let (id, say_timeout, policy) = match self.script.nodes.get(node) {
            Some(n) => (n.id.clone(), n.say_timeout, n.barge_in),
            None => (String::new(), Duration::from_secs(20), BargeIn::Never),
        };
        // Closing and transfer announcements are always said to the end.
        let barge_in = match after {
            After::Listen | After::Resume(..) | After::Next(_) => policy,
            After::Transfer(_) | After::Hangup(_) => BargeIn::Never,
        };
        let audio = p
            .audio
            .clone()
            .filter(|_| p.pieces.iter().all(|x| matches!(x, Piece::Text(_))));
        self.out.push_back(Output::Say {
            prompt: SayPrompt {
                text: text.clone(),
                audio,
                node: id,
            },
            barge_in,
        });
        let mut watchdog = now + say_timeout;
        if let Some(hd) = self.hard_deadline {
            watchdog = watchdog.min(hd);
        }
        self.set_state(State::Speaking(Speaking {
            node,
            after,
            started: now,
            watchdog,
            barge_in,
            text,
            pending: None,
        }));
    }

    /// Most robot prompts in a call: bounds prompt chains that involve no customer turn.
    fn max_says(&self) -> u32 {
        self.script.max_rounds.saturating_mul(4).saturating_add(32)
    }

    /// Enters a node.
    fn enter(&mut self, now: Instant, node: usize) {
        if self.robot_says >= self.max_says() {
            return self.close(now, EndReason::Error);
        }
        let script = self.script.clone();
        let Some(n) = script.nodes.get(node) else {
            return self.close(now, EndReason::Error);
        };
        if n.kind == NodeKind::Knowledge {
            // Reached by a jump rather than its intents: answer and come back.
            return self.answer(now, node, self.current);
        }
        self.visited.insert(n.id.clone());
        self.current = node;
        self.no_input_count = 0;
        self.no_match_count = 0;
        self.node_effects(node);
        let visit = self.visits.entry(node).or_insert(0);
        let variant = *visit as usize;
        *visit += 1;
        let prompt = (!n.prompts.is_empty()).then(|| n.prompts[variant % n.prompts.len()].clone());
        match n.kind {
            NodeKind::Main => {
                let after = match (n.listen, n.next) {
                    (true, _) => After::Listen,
                    (false, Some(next)) => After::Next(next),
                    (false, None) => After::Hangup(EndReason::Error),
                };
                match prompt {
                    Some(p) => self.say(now, node, &p, after),
                    None => self.close(now, EndReason::Error),
                }
            }
            NodeKind::Transfer => {
                let target = n.target.clone().unwrap_or_default();
                match prompt {
                    Some(p) => self.say(now, node, &p, After::Transfer(target)),
                    None => self.transfer(now, target),
                }
            }
            NodeKind::End => {
                let reason = n.reason.unwrap_or(EndReason::Completed);
                if reason == EndReason::DoNotCall {
                    self.out.push_back(Output::Suppress {
                        number: crate::telemetry::Redacted(self.callee.clone()),
                    });
                }
                self.closing = true;
                match prompt {
                    Some(p) => self.say(now, node, &p, After::Hangup(reason)),
                    None => self.hangup(now, reason),
                }
            }
            NodeKind::Knowledge => {}
        }
    }

    fn node_effects(&mut self, node: usize) {
        let script = self.script.clone();
        let Some(n) = script.nodes.get(node) else {
            return;
        };
        for t in &n.tags {
            self.add_tag(t, TagScope::Call);
        }
        for t in &n.turn_tags {
            self.add_tag(t, TagScope::Turn);
        }
        self.add_score(n.score);
    }

    /// Says a knowledge node's answer, then resumes at `back`.
    fn answer(&mut self, now: Instant, knowledge: usize, back: usize) {
        let script = self.script.clone();
        let Some(k) = script.nodes.get(knowledge) else {
            return self.close(now, EndReason::Error);
        };
        self.knowledge += 1;
        self.visited.insert(k.id.clone());
        self.node_effects(knowledge);
        let visit = self.visits.entry(knowledge).or_insert(0);
        let variant = *visit as usize;
        *visit += 1;
        match k.prompts.get(variant % k.prompts.len().max(1)).cloned() {
            Some(p) => self.say(now, knowledge, &p, After::Resume(back, k.resume)),
            None => self.close(now, EndReason::Error),
        }
    }

    fn transfer(&mut self, now: Instant, target: String) {
        self.out.push_back(Output::Transfer { target });
        self.finish(now, EndReason::Transferred);
    }

    fn hangup(&mut self, now: Instant, reason: EndReason) {
        self.out.push_back(Output::Hangup { reason });
        self.finish(now, reason);
    }

    /// The engine ends the call on its own: closing prompt, then hang-up.
    fn close(&mut self, now: Instant, reason: EndReason) {
        self.closing = true;
        let idx = match reason {
            EndReason::MaxRounds => 0,
            EndReason::MaxDuration => 1,
            _ => 2,
        };
        let p = self.script.closing[idx].clone();
        let node = self.current;
        self.say(now, node, &p, After::Hangup(reason));
    }

    fn listen(&mut self, now: Instant, node: usize) {
        if self.rounds >= self.script.max_rounds {
            return self.close(now, EndReason::MaxRounds);
        }
        let timeout = self.node_timeout(node);
        self.set_state(State::Listening(Listening {
            node,
            deadline: now + timeout,
            speech_started: false,
        }));
        self.out.push_back(Output::Listen { timeout });
    }

    fn finish_say(&mut self, now: Instant, s: Speaking) {
        self.robot_record(now, &s, false);
        let after = s.after.clone();
        match after {
            After::Listen => match s.pending {
                Some(p) => self.customer(now, s.node, p),
                None => self.listen(now, s.node),
            },
            After::Next(n) => self.enter(now, n),
            After::Resume(back, mode) => {
                self.current = back;
                match (s.pending, mode) {
                    (Some(p), _) => self.customer(now, back, p),
                    (None, Resume::Listen) => self.listen(now, back),
                    (None, Resume::Reprompt) => {
                        if self.rounds >= self.script.max_rounds {
                            return self.close(now, EndReason::MaxRounds);
                        }
                        let script = self.script.clone();
                        let Some(n) = script.nodes.get(back) else {
                            return self.close(now, EndReason::Error);
                        };
                        let visit = self.visits.entry(back).or_insert(0);
                        let variant = *visit as usize;
                        *visit += 1;
                        match n.prompts.get(variant % n.prompts.len().max(1)).cloned() {
                            Some(p) => self.say(now, back, &p, After::Listen),
                            None => self.listen(now, back),
                        }
                    }
                }
            }
            After::Transfer(t) => self.transfer(now, t),
            After::Hangup(r) => self.hangup(now, r),
        }
    }

    /// Whether entering `node` leads to the end of the call without another customer turn.
    fn terminal_ahead(&self, mut node: usize) -> bool {
        for _ in 0..self.script.nodes.len().min(64) {
            match self.script.nodes.get(node) {
                Some(n) if matches!(n.kind, NodeKind::End | NodeKind::Transfer) => return true,
                Some(n) if n.kind == NodeKind::Main && !n.listen => match n.next {
                    Some(next) => node = next,
                    None => return false,
                },
                _ => return false,
            }
        }
        false
    }

    /// Enters `node`, unless the round limit says the call must close first.
    fn go(&mut self, now: Instant, node: usize) {
        if self.rounds >= self.script.max_rounds && !self.terminal_ahead(node) {
            self.close(now, EndReason::MaxRounds)
        } else {
            self.enter(now, node)
        }
    }

    fn customer_record(
        &mut self,
        now: Instant,
        node: usize,
        said: Said,
        hit: Option<(&str, &IntentHit)>,
    ) {
        let seq = self.next_seq();
        let tags = std::mem::take(&mut self.turn_tags);
        let node = self
            .script
            .nodes
            .get(node)
            .map_or_else(String::new, |n| n.id.clone());
        self.out.push_back(Output::TurnRecord(TurnRecord {
            seq,
            speaker: Speaker::Customer,
            node,
            start_ms: self.offset_ms(said.start),
            end_ms: self.offset_ms(now),
            text: said.text,
            answer: Some(said.answer),
            intent: hit.map(|h| h.0.to_owned()),
            rule: hit.map(|h| h.1.rule.clone()),
            confidence: hit.map(|h| h.1.confidence),
            asr_confidence: said.asr,
            tags,
            interrupted: false,
        }));
    }

    fn silence(&mut self, now: Instant, node: usize) {
        self.rounds += 1;
        self.no_inputs += 1;
        let started = now.checked_sub(self.node_timeout(node)).unwrap_or(now);
        let said = Said {
            text: String::new(),
            answer: Answer::Silence,
            asr: None,
            start: started,
        };
        self.customer_record(now, node, said, None);
        let script = self.script.clone();
        let Some(retry) = script.nodes.get(node).and_then(|n| n.no_input.as_ref()) else {
            return self.close(now, EndReason::Error);
        };
        if self.no_input_count < retry.texts.len() && self.rounds < script.max_rounds {
            let p = retry.texts[self.no_input_count].clone();
            self.no_input_count += 1;
            self.say(now, node, &p, After::Listen);
        } else {
            self.go(now, retry.then);
        }
    }

    /// Resolves what the customer meant at `node`.
    fn resolve(&self, node: usize, input: &Pending) -> Option<(IntentHit, Choice)> {
        let script = &self.script;
        let n = script.nodes.get(node)?;
        let branch_of = |intent: usize| n.branches.iter().position(|b| b.intent == intent);
        let global_of = |intent: usize| script.globals.iter().find(|g| g.0 == intent).map(|g| g.1);
        match input {
            Pending::Dtmf(d) => {
                let key = d.to_string();
                let intent = *n.dtmf.get(&key).or_else(|| script.dtmf.get(&key))?;
                let hit = IntentHit {
                    intent,
                    confidence: 1.0,
                    rule: format!("dtmf:{d}"),
                };
                match (branch_of(intent), global_of(intent)) {
                    (Some(b), _) => Some((hit, Choice::Branch(b))),
                    (None, Some(g)) => Some((hit, Choice::Global(g))),
                    (None, None) => None,
                }
            }
            Pending::Heard(h) => {
                if h.text.trim().is_empty() {
                    return None;
                }
                let u = script.tokenizer.utterance(&h.text);
                let mut candidates: Vec<usize> = n.branches.iter().map(|b| b.intent).collect();
                for g in &script.globals {
                    if !candidates.contains(&g.0) {
                        candidates.push(g.0);
                    }
                }
                let hits = script.classifier.classify(&u, &candidates);
                // Highest priority, then the node's own branches, then confidence, then
                // declaration order: deterministic.
                let best = hits
                    .into_iter()
                    .filter(|h| candidates.contains(&h.intent))
                    .map(|h| {
                        let prio = script.intents.get(h.intent).map_or(0, |i| i.priority);
                        let local = branch_of(h.intent).is_some();
                        let order = candidates
                            .iter()
                            .position(|c| *c == h.intent)
                            .unwrap_or(usize::MAX);
                        (prio, local, h, order)
                    })
                    .max_by(|a, b| {
                        a.0.cmp(&b.0)
                            .then(a.1.cmp(&b.1))
                            .then(a.2.confidence.total_cmp(&b.2.confidence))
                            .then(b.3.cmp(&a.3))
                    })?;
                let (_, local, hit, _) = best;
                let choice = match (local, branch_of(hit.intent), global_of(hit.intent)) {
                    (true, Some(b), _) => Choice::Branch(b),
                    (_, _, Some(g)) => Choice::Global(g),
                    (_, Some(b), None) => Choice::Branch(b),
                    (_, None, None) => return None,
                };
                Some((hit, choice))
            }
        }
    }

    /// Handles what the customer said or pressed at `node`.
    fn customer(&mut self, now: Instant, node: usize, input: Pending) {
        self.rounds += 1;
        self.customer_turns += 1;
        let said = match &input {
            Pending::Heard(h) => Said {
                text: h.text.clone(),
                answer: Answer::Speech,
                asr: Some(h.confidence),
                start: h.start.min(now),
            },
            Pending::Dtmf(d) => Said {
                text: d.to_string(),
                answer: Answer::Dtmf,
                asr: None,
                start: now,
            },
        };
        let resolved = self.resolve(node, &input);
        let script = self.script.clone();
        let Some((hit, choice)) = resolved else {
            self.no_matches += 1;
            self.customer_record(now, node, said, None);
            let Some(retry) = script.nodes.get(node).and_then(|n| n.no_match.as_ref()) else {
                return self.close(now, EndReason::Error);
            };
            if self.no_match_count < retry.texts.len() && self.rounds < script.max_rounds {
                let p = retry.texts[self.no_match_count].clone();
                self.no_match_count += 1;
                return self.say(now, node, &p, After::Listen);
            }
            return self.go(now, retry.then);
        };
        let intent = script.intents.get(hit.intent).cloned();
        if let Some(i) = &intent {
            *self.intents.entry(i.name.clone()).or_insert(0) += 1;
            if i.refusal {
                self.refusals += 1;
            }
        }
        let name = intent.as_ref().map_or("", |i| i.name.as_str()).to_owned();
        match choice {
            Choice::Branch(b) => {
                let Some(br) = script.nodes.get(node).and_then(|n| n.branches.get(b)) else {
                    return self.close(now, EndReason::Error);
                };
                for t in &br.tags {
                    self.add_tag(t, TagScope::Call);
                }
                self.add_score(br.score);
                if let (Some((var, ex)), Pending::Heard(h)) = (&br.capture, &input)
                    && let Some(v) = extract(ex, &script.tokenizer.utterance(&h.text).normalized)
                {
                    self.vars.insert(var.clone(), v.clone());
                    self.captured.insert(var.clone());
                    self.out.push_back(Output::SetVariable {
                        name: var.clone(),
                        value: crate::telemetry::Redacted(v),
                    });
                }
                self.customer_record(now, node, said, Some((&name, &hit)));
                self.go(now, br.goto);
            }
            Choice::Global(GlobalAction::Goto(t)) => {
                self.customer_record(now, node, said, Some((&name, &hit)));
                self.go(now, t);
            }
            Choice::Global(GlobalAction::Knowledge(k)) => {
                self.customer_record(now, node, said, Some((&name, &hit)));
                if self.rounds >= script.max_rounds {
                    return self.close(now, EndReason::MaxRounds);
                }
                self.answer(now, k, node);
            }
        }
    }

    fn facts(&self, now: Instant, end: EndReason) -> CallFacts {
        let secs = self
            .answered
            .map_or(0, |a| now.saturating_duration_since(a).as_secs());
        CallFacts {
            rounds: self.rounds,
            duration_secs: u32::try_from(secs).unwrap_or(u32::MAX),
            score: self.score,
            refusals: self.refusals,
            no_inputs: self.no_inputs,
            no_matches: self.no_matches,
            customer_turns: self.customer_turns,
            knowledge: self.knowledge,
            end,
            intents: self.intents.clone(),
            tags: self.tags.iter().cloned().collect(),
            visited: self.visited.clone(),
            captured: self.captured.clone(),
        }
    }

    fn finish(&mut self, now: Instant, end: EndReason) {
        let facts = self.facts(now, end);
        let grade = self.script.grader.grade(&facts);
        log::debug!(end = end.as_str(), level = grade.level.as_str(), rounds = self.rounds; "script run ended");
        self.outcome = Some(Outcome {
            end,
            grade,
            facts,
            tags: self.tags.clone(),
        });
        self.set_state(State::Ended);
    }
}

/// Takes a value out of a normalised utterance.
pub fn extract(ex: &CExtract, normalized: &str) -> Option<String> {
    let re = match ex {
        CExtract::Text => {
            let t: String = normalized.trim().chars().take(64).collect();
            return (!t.is_empty()).then_some(t);
        }
        CExtract::Regex(r) | CExtract::Date(r) | CExtract::Amount(r) | CExtract::Digits(r) => r,
    };
    let caps = re.captures(normalized)?;
    let m = caps.get(1).or_else(|| caps.get(0))?;
    let v: String = m.as_str().chars().take(64).collect();
    (!v.is_empty()).then_some(v)
}
