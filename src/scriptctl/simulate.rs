//! The script simulator: runs a script against typed (or scripted) customer turns with a
//! virtual clock, so an author sees what the robot says, which node it is in, which intent and
//! rule matched, the tags, and the final level with its reason.
//!
//! Time is simulated: a prompt lasts as long as the speech-rate estimate says, the customer
//! starts speaking one second after the robot stops and speaks at the same rate, `/silence`
//! waits for the no-input timeout. Every run of the same transcript prints the same JSON.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{invalid, load, parse_vars, read_text, usage};
use crate::app::Failure;
use crate::conversation::machine::{
    Heard, Input, Machine, Outcome, Output, Phase, TagScope, TurnRecord, bind_variables,
};
use crate::conversation::script::{BargeIn, EndReason};
use crate::conversation::validate::{CompiledScript, speech_duration};
use crate::time::{Clock, SystemClock};

/// One customer step of a transcript or the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The customer says this.
    Say(String),
    /// The customer says nothing until the no-input timeout.
    Silence,
    /// The customer presses a key.
    Dtmf(char),
    /// The customer hangs up.
    Hangup,
    /// Time passes (seconds) with nothing from the customer.
    Wait(u64),
}

impl Step {
    /// The step as written in a transcript.
    pub fn as_line(&self) -> String {
        match self {
            Self::Say(t) => t.clone(),
            Self::Silence => "/silence".into(),
            Self::Dtmf(d) => format!("/dtmf {d}"),
            Self::Hangup => "/hangup".into(),
            Self::Wait(s) => format!("/wait {s}"),
        }
    }
}

/// Parses one line: text, `/silence`, `/dtmf 1`, `/hangup`, `/wait 10`; `None` for blank
/// lines and `#` comments.
pub fn parse_step(line: &str) -> Result<Option<Step>, String> {
    let l = line.trim();
    if l.is_empty() || l.starts_with('#') {
        return Ok(None);
    }
    let Some(cmd) = l.strip_prefix('/') else {
        return Ok(Some(Step::Say(l.to_owned())));
    };
    let mut parts = cmd.split_whitespace();
    match (parts.next(), parts.next(), parts.next()) {
        (Some("silence"), None, None) => Ok(Some(Step::Silence)),
        (Some("hangup"), None, None) => Ok(Some(Step::Hangup)),
        (Some("dtmf"), Some(d), None)
            if d.len() == 1
                && d.chars()
                    .all(|c| c.is_ascii_digit() || c == '*' || c == '#') =>
        {
            Ok(d.chars().next().map(Step::Dtmf))
        }
        (Some("wait"), Some(s), None) => s
            .parse::<u64>()
            .ok()
            .filter(|s| (1..=3600).contains(s))
            .map(|s| Some(Step::Wait(s)))
            .ok_or_else(|| "/wait takes seconds, 1 to 3600".to_owned()),
        _ => Err(format!(
            "unknown command '{l}' (use /silence, /dtmf D, /hangup, /wait SECONDS)"
        )),
    }
}

/// A transcript file: optional `# vars: a=b,c=d` header lines, then one step per line.
pub fn parse_transcript(text: &str) -> Result<(String, Vec<Step>), String> {
    let mut vars = Vec::new();
    let mut steps = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if let Some(v) = line.trim().strip_prefix("# vars:") {
            vars.push(v.trim().to_owned());
            continue;
        }
        match parse_step(line) {
            Ok(Some(s)) => steps.push(s),
            Ok(None) => {}
            Err(e) => return Err(format!("line {}: {e}", i + 1)),
        }
    }
    Ok((vars.join(","), steps))
}

/// Something that happened, with its time in ms after the call was answered.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The robot says a prompt.
    Say {
        /// Time.
        t_ms: u64,
        /// Node.
        node: String,
        /// Text.
        text: String,
        /// Audio file, if pre-recorded.
        #[serde(skip_serializing_if = "Option::is_none")]
        audio: Option<String>,
        /// Barge-in policy.
        barge_in: String,
    },
    /// The robot listens.
    Listen {
        /// Time.
        t_ms: u64,
        /// No-input timeout.
        timeout_ms: u64,
    },
    /// A customer step from the transcript or console.
    Customer {
        /// Time.
        t_ms: u64,
        /// The step as written.
        input: String,
    },
    /// A finished turn.
    Turn {
        /// Time.
        t_ms: u64,
        /// The record.
        #[serde(flatten)]
        turn: TurnRecord,
    },
    /// A tag attached.
    Tag {
        /// Time.
        t_ms: u64,
        /// Tag.
        tag: String,
        /// Scope.
        scope: TagScope,
    },
    /// Score changed.
    Score {
        /// Time.
        t_ms: u64,
        /// Change.
        delta: i32,
        /// Total.
        total: i32,
    },
    /// A variable was captured.
    SetVariable {
        /// Time.
        t_ms: u64,
        /// Name.
        name: String,
        /// Value.
        value: String,
    },
    /// The number is put on the do-not-call list.
    Suppress {
        /// Time.
        t_ms: u64,
    },
    /// Transfer to an agent.
    Transfer {
        /// Time.
        t_ms: u64,
        /// Target.
        target: String,
    },
    /// The robot hangs up.
    Hangup {
        /// Time.
        t_ms: u64,
        /// Reason.
        reason: EndReason,
    },
}

/// The result of a simulated call, as `--transcript` prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Script key.
    pub script: String,
    /// Script name.
    pub name: String,
    /// What happened.
    pub events: Vec<Event>,
    /// How it ended and its grade (absent if the transcript ran out before the end).
    pub outcome: Option<Outcome>,
}

fn barge_in_text(b: BargeIn) -> String {
    match b {
        BargeIn::Never => "never".into(),
        BargeIn::Always => "always".into(),
        BargeIn::AfterMs(ms) => format!("after {ms} ms"),
    }
}

/// A simulated call.
pub struct Simulator {
    m: Machine,
    base: Instant,
    now: Instant,
    rate: f32,
    says: u64,
    last_text: String,
    /// Every event so far.
    pub events: Vec<Event>,
}

/// Most automatic robot steps per customer step (prompt chains are bounded by the machine; this
/// only guards the simulator's own loop).
const MAX_SETTLE: usize = 10_000;

impl Simulator {
    /// Answers a call at `base` and runs the robot until it listens or ends.
    pub fn start(
        script: Arc<CompiledScript>,
        supplied: &BTreeMap<String, String>,
        base: Instant,
    ) -> Result<Self, crate::conversation::machine::VarError> {
        let vars = bind_variables(&script, supplied)?;
        let rate = script.speech_rate_cps;
        let mut s = Self {
            m: Machine::new(script, vars, "simulated-callee".into()),
            base,
            now: base,
            rate,
            says: 0,
            last_text: String::new(),
            events: Vec::new(),
        };
        s.m.handle_input(base, Input::CallAnswered);
        s.settle();
        Ok(s)
    }

    fn t(&self) -> u64 {
        u64::try_from(self.now.saturating_duration_since(self.base).as_millis()).unwrap_or(0)
    }

    fn drain(&mut self) {
        while let Some(o) = self.m.poll_output() {
            let t_ms = self.t();
            let e = match o {
                Output::Say { prompt, barge_in } => {
                    self.says += 1;
                    self.last_text = prompt.text.clone();
                    Event::Say {
                        t_ms,
                        node: prompt.node,
                        text: prompt.text,
                        audio: prompt.audio,
                        barge_in: barge_in_text(barge_in),
                    }
                }
                Output::Listen { timeout } => Event::Listen {
                    t_ms,
                    timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(0),
                },
                Output::Transfer { target } => Event::Transfer { t_ms, target },
                Output::Hangup { reason } => Event::Hangup { t_ms, reason },
                Output::Tag { tag, scope } => Event::Tag { t_ms, tag, scope },
                Output::Score { delta, total } => Event::Score { t_ms, delta, total },
                Output::SetVariable { name, value } => Event::SetVariable {
                    t_ms,
                    name,
                    value: value.0,
                },
                Output::Suppress { .. } => Event::Suppress { t_ms },
                Output::TurnRecord(turn) => Event::Turn { t_ms, turn },
            };
            self.events.push(e);
        }
    }

    /// Moves time to `t`, firing the machine's timers on the way.
    fn advance_to(&mut self, t: Instant) {
        while let Some(d) = self.m.poll_timeout() {
            if d > t || self.m.is_ended() {
                break;
            }
            self.now = d.max(self.now);
            self.m.handle_timeout(self.now);
            self.drain();
        }
        self.now = t.max(self.now);
    }

    /// Plays prompts to their end until the machine listens or ends.
    fn settle(&mut self) {
        self.drain();
        for _ in 0..MAX_SETTLE {
            if self.m.phase() != Phase::Speaking {
                return;
            }
            let says = self.says;
            let dur = speech_duration(&self.last_text, self.rate).max(Duration::from_millis(500));
            self.advance_to(self.now + dur);
            if self.says == says && self.m.phase() == Phase::Speaking {
                self.m.handle_input(self.now, Input::PromptFinished);
            }
            self.drain();
        }
    }

    /// Whether the call has ended.
    pub fn ended(&self) -> bool {
        self.m.is_ended()
    }

    /// The node the call is at.
    pub fn node(&self) -> &str {
        self.m.current_node()
    }

    /// Applies one customer step; returns the index of the first new event.
    pub fn step(&mut self, step: &Step) -> usize {
        let first = self.events.len();
        if self.m.is_ended() {
            return first;
        }
        let t_ms = self.t();
        self.events.push(Event::Customer {
            t_ms,
            input: step.as_line(),
        });
        match step {
            Step::Say(text) => {
                self.advance_to(self.now + Duration::from_secs(1));
                if !self.m.is_ended() {
                    let start = self.now;
                    self.m.handle_input(start, Input::SpeechStarted);
                    self.drain();
                    let end =
                        start + speech_duration(text, self.rate).max(Duration::from_millis(300));
                    self.advance_to(end);
                    self.m.handle_input(
                        self.now,
                        Input::Heard(Heard {
                            text: text.clone(),
                            start,
                            end,
                            confidence: 0.95,
                        }),
                    );
                }
            }
            Step::Silence => {
                if let Some(d) = self.m.poll_timeout() {
                    self.advance_to(d);
                }
            }
            Step::Dtmf(d) => {
                self.advance_to(self.now + Duration::from_secs(1));
                self.m.handle_input(self.now, Input::Dtmf(*d));
            }
            Step::Hangup => {
                self.advance_to(self.now + Duration::from_secs(1));
                self.m.handle_input(self.now, Input::Hangup);
            }
            Step::Wait(s) => self.advance_to(self.now + Duration::from_secs(*s)),
        }
        self.settle();
        first
    }

    /// The outcome, once ended.
    pub fn outcome(&self) -> Option<&Outcome> {
        self.m.outcome()
    }
}

/// Runs a whole transcript and returns the report.
pub fn run(
    script: Arc<CompiledScript>,
    supplied: &BTreeMap<String, String>,
    steps: &[Step],
    base: Instant,
) -> Result<Report, crate::conversation::machine::VarError> {
    let key = script.source.script.key.clone();
    let name = script.source.script.name.clone();
    let mut sim = Simulator::start(script, supplied, base)?;
    for s in steps {
        if sim.ended() {
            break;
        }
        sim.step(s);
    }
    Ok(Report {
        script: key,
        name,
        outcome: sim.outcome().cloned(),
        events: sim.events,
    })
}

/// One event as the console shows it (Chinese labels for script authors).
pub fn console_line(e: &Event, script: &CompiledScript) -> Option<String> {
    let title = |id: &str| {
        script
            .nodes
            .iter()
            .find(|n| n.id == id)
            .map_or_else(|| id.to_owned(), |n| format!("{} {}", n.id, n.title))
    };
    let label = |name: &str| {
        script
            .intents
            .iter()
            .find(|i| i.name == name)
            .map_or_else(|| name.to_owned(), |i| format!("{}（{name}）", i.label))
    };
    Some(match e {
        Event::Say {
            node,
            text,
            barge_in,
            ..
        } => {
            format!("机器人 [{}]：{text}    （打断：{barge_in}）", title(node))
        }
        Event::Turn { turn, .. }
            if turn.speaker == crate::conversation::machine::Speaker::Customer =>
        {
            match (&turn.intent, &turn.rule, turn.confidence) {
                (Some(i), Some(r), Some(c)) => {
                    format!("  ↳ 意图：{}  规则：{r}  置信度：{c:.2}", label(i))
                }
                _ if turn.answer == Some(crate::conversation::machine::Answer::Silence) => {
                    "  ↳ 无应答".to_owned()
                }
                _ => "  ↳ 未识别意图".to_owned(),
            }
        }
        Event::Tag { tag, scope, .. } => match scope {
            TagScope::Call => format!("  ↳ 标签：{tag}"),
            TagScope::Turn => format!("  ↳ 本轮标签：{tag}"),
        },
        Event::Score { delta, total, .. } => format!("  ↳ 得分 {delta:+}（累计 {total}）"),
        Event::SetVariable { name, value, .. } => format!("  ↳ 记录变量 {name} = {value}"),
        Event::Suppress { .. } => "  ↳ 号码已加入勿扰名单".to_owned(),
        Event::Transfer { target, .. } => format!("  ↳ 转人工：{target}"),
        Event::Hangup { reason, .. } => format!("  ↳ 挂机：{}", reason.as_str()),
        Event::Listen { .. } | Event::Customer { .. } | Event::Turn { .. } => return None,
    })
}

/// The closing lines of a console session.
pub fn console_outcome(o: &Outcome) -> String {
    format!(
        "通话结束：{}，{} 轮，{} 秒，得分 {}\n评级：{}（{}）规则：{}\n原因：{}\n标签：{}\n",
        o.end.as_str(),
        o.facts.rounds,
        o.facts.duration_secs,
        o.facts.score,
        o.grade.level_name,
        o.grade.level_label,
        o.grade.rule.as_deref().unwrap_or("（默认）"),
        o.grade.reason,
        if o.tags.is_empty() {
            "（无）".to_owned()
        } else {
            o.tags.join("、")
        }
    )
}

/// `vaultcall script simulate FILE [--vars …] [--transcript FILE]`.
pub fn simulate_cmd(
    path: &Path,
    vars: Option<&str>,
    transcript: Option<&Path>,
) -> Result<String, Failure> {
    let f = load(path)?;
    let script = match f.compiled {
        Ok(c) => Arc::new(c),
        Err(problems) => {
            for p in &problems {
                println!("{}: {p}", path.display());
            }
            return Err(invalid(path, &problems));
        }
    };
    let (header, steps) = match transcript {
        Some(t) => {
            let text = read_text(t)?;
            let (h, s) =
                parse_transcript(&text).map_err(|e| usage(format!("{}: {e}", t.display())))?;
            (h, Some(s))
        }
        None => (String::new(), None),
    };
    let mut supplied = parse_vars(&header)?;
    supplied.extend(parse_vars(vars.unwrap_or(""))?);
    let base = SystemClock.mono();
    if let Some(steps) = steps {
        let report =
            run(script, &supplied, &steps, base).map_err(|e| usage(format!("--vars: {e}")))?;
        let mut s = serde_json::to_string_pretty(&report).map_err(Failure::runtime)?;
        s.push('\n');
        return Ok(s);
    }
    let mut sim = Simulator::start(script.clone(), &supplied, base)
        .map_err(|e| usage(format!("--vars: {e}")))?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let w = |out: &mut std::io::StdoutLock<'_>, s: &str| {
        let _ = writeln!(out, "{s}");
    };
    w(
        &mut out,
        &format!(
            "模拟通话：{}（{}）。输入客户说的话，或 /silence、/dtmf 1、/hangup、/wait 秒数；Ctrl-D 结束。",
            script.source.script.name, script.source.script.key
        ),
    );
    for e in &sim.events {
        if let Some(l) = console_line(e, &script) {
            w(&mut out, &l);
        }
    }
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    while !sim.ended() {
        let _ = write!(out, "客户> ");
        let _ = out.flush();
        let Some(Ok(line)) = lines.next() else { break };
        let step = match parse_step(&line) {
            Ok(Some(s)) => s,
            Ok(None) => continue,
            Err(e) => {
                w(&mut out, &format!("  ！{e}"));
                continue;
            }
        };
        let first = sim.step(&step);
        for e in &sim.events[first..] {
            if let Some(l) = console_line(e, &script) {
                w(&mut out, &l);
            }
        }
    }
    match sim.outcome() {
        Some(o) => Ok(console_outcome(o)),
        None => Ok(format!("（通话未结束，停在节点 {}）\n", sim.node())),
    }
}
