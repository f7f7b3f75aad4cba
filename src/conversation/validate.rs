//! Validation and compilation: a [`Script`] becomes a [`CompiledScript`] only if it has no
//! problems, and every problem is reported with the node it is in.
//!
//! Defect classes ([`ProblemKind`]): unreachable nodes, jumps to missing nodes, undeclared
//! variables, loops without an exit, prompts too long to say within the node's `say_timeout_ms`
//! (estimated at the script's `speech_rate_cps`, see [`speech_duration`]), rules that can never
//! match, missing audio files, and malformed values. Whether audio files exist is a question
//! for the file system, so the caller answers it ([`CheckEnv::audio_present`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use regex::{Regex, RegexBuilder};
use serde::Serialize;

use super::expr::{self, Bounds, Func, Labels};
use super::grading::{CompiledRule, Grader, LevelInfo};
use super::matcher::{IntentClassifier, KeywordIntent, KeywordMatcher, KeywordRule, Tokenizer};
use super::normalize::{core_phrase, is_clause_break, normalize};
use super::script::{
    BargeIn, EndReason, Extract, NodeKind, Prompt, Resume, Script, VarType, Variable,
};

/// Most nodes, intents, rules per intent and keywords per rule a script may have.
pub const MAX_NODES: usize = 500;
const MAX_INTENTS: usize = 500;
const MAX_RULES: usize = 100;
const MAX_KEYWORDS: usize = 500;
/// Compiled-size limit of one author regex (bounded matching cost).
const REGEX_SIZE_LIMIT: usize = 256 * 1024;

/// The class of a validation problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// The file is not valid TOML for the script format.
    Syntax,
    /// A value is malformed or out of range, or a field does not fit the node kind.
    Invalid,
    /// A node cannot be reached from the start node.
    Unreachable,
    /// A jump to a node that does not exist.
    MissingNode,
    /// A variable used but not declared.
    UndeclaredVariable,
    /// A loop whose nodes have no way out (only the round limit or a hang-up ends it).
    LoopWithoutExit,
    /// A prompt estimated to take longer than the node's `say_timeout_ms`.
    PromptTooLong,
    /// A matching or grading rule that can never match.
    NeverMatches,
    /// A prompt's audio file is missing.
    MissingAudio,
}

impl ProblemKind {
    /// Snake-case name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Syntax => "syntax",
            Self::Invalid => "invalid",
            Self::Unreachable => "unreachable",
            Self::MissingNode => "missing_node",
            Self::UndeclaredVariable => "undeclared_variable",
            Self::LoopWithoutExit => "loop_without_exit",
            Self::PromptTooLong => "prompt_too_long",
            Self::NeverMatches => "never_matches",
            Self::MissingAudio => "missing_audio",
        }
    }
}

/// One problem found in a script.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Class.
    pub kind: ProblemKind,
    /// The node it is in, if it is in one.
    pub node: Option<String>,
    /// Where in the file (`nodes[3].branches[1].goto`, `grading.rules[0]`).
    pub path: String,
    /// What is wrong (never personal data: scripts contain none).
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.node {
            Some(n) => write!(f, "node '{n}' ({}): {}", self.path, self.message),
            None => write!(f, "{}: {}", self.path, self.message),
        }?;
        write!(f, " [{}]", self.kind.as_str())
    }
}

/// What validation needs to know from outside the script.
#[derive(Debug, Clone, Default)]
pub struct CheckEnv {
    /// The audio files (as written in the script) that exist; `None` skips the check (e.g.
    /// when a script arrives over the API, away from its audio directory).
    pub audio_present: Option<BTreeSet<String>>,
}

/// Typical spoken length, in characters, of a variable's value (for prompt-length estimates).
fn typical_chars(t: VarType) -> usize {
    match t {
        VarType::String => 3,  // 张先生
        VarType::Integer => 4, // 三十六
        VarType::Amount => 8,  // 三千二百五十元
        VarType::Date => 5,    // 3月15日
        VarType::Digits => 4,  // 8 8 6 1
    }
}

/// How long `text` takes to say at `cps` characters per second: every Han character, digit
/// or letter pair counts as one character, and each clause break adds a 0.3 s pause.
pub fn speech_duration(text: &str, cps: f32) -> Duration {
    let mut chars = 0.0f32;
    let mut pauses = 0.0f32;
    for c in text.chars() {
        if is_clause_break(c) {
            pauses += 0.3;
        } else if c.is_ascii_alphabetic() {
            chars += 0.5;
        } else if c.is_alphanumeric() {
            chars += 1.0;
        }
    }
    let secs = chars / cps.max(0.1) + pauses;
    Duration::from_millis((secs * 1000.0) as u64)
}

/// A piece of a prompt template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Literal text.
    Text(String),
    /// A variable by name.
    Var(String),
}

/// Splits a prompt into text and `{variable}` pieces; `{{` and `}}` are literal braces.
pub fn template(text: &str) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut lit = String::new();
    let mut it = text.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '{' if it.peek() == Some(&'{') => {
                it.next();
                lit.push('{');
            }
            '}' if it.peek() == Some(&'}') => {
                it.next();
                lit.push('}');
            }
            '{' => {
                let mut name = String::new();
                loop {
                    match it.next() {
                        Some('}') => break,
                        Some(c) if c.is_ascii_alphanumeric() || c == '_' => name.push(c),
                        _ => {
                            return Err("'{' must start a {variable} (write {{ for a brace)".into());
                        }
                    }
                }
                if name.is_empty() {
                    return Err("empty {} in a prompt".into());
                }
                if !lit.is_empty() {
                    out.push(Piece::Text(std::mem::take(&mut lit)));
                }
                out.push(Piece::Var(name));
            }
            '}' => return Err("'}' without '{' (write }} for a brace)".into()),
            c => lit.push(c),
        }
    }
    if !lit.is_empty() {
        out.push(Piece::Text(lit));
    }
    Ok(out)
}

/// A compiled prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CPrompt {
    /// Template pieces.
    pub pieces: Vec<Piece>,
    /// Audio file, if any (used only when the prompt has no variables).
    pub audio: Option<String>,
}

/// Reprompts or clarifications, then a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CRetry {
    /// Texts in order; their number is the retry limit.
    pub texts: Vec<CPrompt>,
    /// Node after the last.
    pub then: usize,
}

/// What a capture extracts; the built-in kinds are regexes too (see [`DATE_PATTERN`]).
#[derive(Debug, Clone)]
pub enum CExtract {
    /// A date phrase.
    Date(Regex),
    /// A money amount.
    Amount(Regex),
    /// Digits.
    Digits(Regex),
    /// The whole utterance.
    Text,
    /// An author's regex (first group, or the whole match).
    Regex(Regex),
}

/// Date phrases a promise-to-pay capture recognises (after normalisation, so numerals are
/// digits): "3月20日", "下个月5号", "15号", "明天", "下周五", "月底", "3天后".
pub const DATE_PATTERN: &str = r"(\d{1,2}月\d{1,2}[日号]|下个?月\d{1,2}[日号]|\d{1,2}[日号]|大后天|后天|明天|今天|下下?(?:周|星期|礼拜)[一二三四五六日天1-7]|(?:周|星期|礼拜)[一二三四五六日天1-7]|下个?月[初底中]|月[初底中]|\d{1,2}天[以之]?[后内])";
/// Money amounts: digits with an optional fraction, before an optional 元/块.
pub const AMOUNT_PATTERN: &str = r"(\d+(?:\.\d{1,2})?)\s*(?:元|块)?";
/// A run of digits.
pub const DIGITS_PATTERN: &str = r"(\d+)";

/// A compiled branch.
#[derive(Debug, Clone)]
pub struct CBranch {
    /// Intent index.
    pub intent: usize,
    /// Target node.
    pub goto: usize,
    /// Call tags.
    pub tags: Vec<String>,
    /// Score delta.
    pub score: i32,
    /// Capture into a variable.
    pub capture: Option<(String, CExtract)>,
}

/// A compiled node.
#[derive(Debug, Clone)]
pub struct CNode {
    /// Id.
    pub id: String,
    /// Title (the id when none was given).
    pub title: String,
    /// Kind.
    pub kind: NodeKind,
    /// Prompt variants.
    pub prompts: Vec<CPrompt>,
    /// Listens after the prompt.
    pub listen: bool,
    /// Next node for main nodes that do not listen.
    pub next: Option<usize>,
    /// Branches.
    pub branches: Vec<CBranch>,
    /// Knowledge: intents answered.
    pub answers: Vec<usize>,
    /// Knowledge: how to continue.
    pub resume: Resume,
    /// Transfer target.
    pub target: Option<String>,
    /// End reason.
    pub reason: Option<EndReason>,
    /// Barge-in policy.
    pub barge_in: BargeIn,
    /// No-input timeout.
    pub no_input_timeout: Duration,
    /// Longest prompt.
    pub say_timeout: Duration,
    /// Silence handling (effective, defaults applied).
    pub no_input: Option<CRetry>,
    /// No-match handling (effective).
    pub no_match: Option<CRetry>,
    /// Digit → intent.
    pub dtmf: BTreeMap<String, usize>,
    /// Call tags on entry.
    pub tags: Vec<String>,
    /// Turn tags on entry.
    pub turn_tags: Vec<String>,
    /// Score on entry.
    pub score: i32,
}

/// A compiled intent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CIntent {
    /// Name.
    pub name: String,
    /// Label.
    pub label: String,
    /// Priority.
    pub priority: i32,
    /// Counts as a refusal.
    pub refusal: bool,
}

/// A global intent's effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlobalAction {
    /// Jump to a node.
    Goto(usize),
    /// Answer with a knowledge node and come back.
    Knowledge(usize),
}

/// A script ready to run: every reference resolved, every rule compiled.
#[derive(Debug, Clone)]
pub struct CompiledScript {
    /// The script as written.
    pub source: Script,
    /// Nodes, in file order.
    pub nodes: Vec<CNode>,
    /// Intents, in file order.
    pub intents: Vec<CIntent>,
    /// Global intents (routes, then knowledge nodes), in file order.
    pub globals: Vec<(usize, GlobalAction)>,
    /// Script-wide DTMF map.
    pub dtmf: BTreeMap<String, usize>,
    /// Start node.
    pub start: usize,
    /// Tokeniser with the script's dictionary.
    pub tokenizer: Tokenizer,
    /// The intent classifier.
    pub classifier: Arc<dyn IntentClassifier>,
    /// Grading.
    pub grader: Grader,
    /// Closing prompts: max rounds, max duration, error.
    pub closing: [CPrompt; 3],
    /// Limits.
    pub max_rounds: u32,
    /// Limits.
    pub max_duration: Duration,
    /// Longest wait for an utterance's text once speech started.
    pub max_utterance: Duration,
    /// Speech rate for estimates.
    pub speech_rate_cps: f32,
}

impl CompiledScript {
    /// Replaces the intent classifier (e.g. with a model-based one); the script's intents
    /// keep their indices.
    pub fn with_classifier(mut self, c: Arc<dyn IntentClassifier>) -> Self {
        self.classifier = c;
        self
    }

    /// A node's index by id.
    pub fn node_index(&self, id: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }

    /// The declared variables.
    pub fn variables(&self) -> &BTreeMap<String, Variable> {
        &self.source.variables
    }
}

/// Parses and compiles script text; every problem is reported.
pub fn compile_text(text: &str, env: &CheckEnv) -> Result<CompiledScript, Vec<Problem>> {
    let script = Script::parse(text).map_err(|e| {
        vec![Problem {
            kind: ProblemKind::Syntax,
            node: None,
            path: format!("line {}, column {}", e.line, e.column),
            message: e.message,
        }]
    })?;
    compile(&script, env)
}

struct Ctx<'a> {
    s: &'a Script,
    env: &'a CheckEnv,
    problems: Vec<Problem>,
    node_ids: BTreeMap<&'a str, usize>,
    intent_ids: BTreeMap<&'a str, usize>,
}

impl<'a> Ctx<'a> {
    fn report(
        &mut self,
        kind: ProblemKind,
        node: Option<&str>,
        path: impl Into<String>,
        msg: impl Into<String>,
    ) {
        self.problems.push(Problem {
            kind,
            node: node.map(str::to_owned),
            path: path.into(),
            message: msg.into(),
        });
    }

    fn node_ref(&mut self, from: Option<&str>, path: &str, target: &str) -> usize {
        match self.node_ids.get(target) {
            Some(i) => *i,
            None => {
                self.report(
                    ProblemKind::MissingNode,
                    from,
                    path,
                    format!("jump to missing node '{target}'"),
                );
                usize::MAX
            }
        }
    }

    fn intent_ref(&mut self, from: Option<&str>, path: &str, name: &str) -> usize {
        match self.intent_ids.get(name) {
            Some(i) => *i,
            None => {
                self.report(
                    ProblemKind::Invalid,
                    from,
                    path,
                    format!("unknown intent '{name}'"),
                );
                usize::MAX
            }
        }
    }

    /// Compiles a prompt text: variables declared, length within `limit`, audio present.
    fn prompt(&mut self, node: Option<&str>, path: &str, p: &Prompt, limit: Duration) -> CPrompt {
        let text = p.text();
        let pieces = match template(text) {
            Ok(p) => p,
            Err(e) => {
                self.report(ProblemKind::Invalid, node, path, e);
                Vec::new()
            }
        };
        if text.trim().is_empty() {
            self.report(ProblemKind::Invalid, node, path, "empty prompt");
        }
        let mut spoken = String::new();
        for piece in &pieces {
            match piece {
                Piece::Text(t) => spoken.push_str(t),
                Piece::Var(v) => match self.s.variables.get(v) {
                    Some(var) => spoken.push_str(&"字".repeat(typical_chars(var.kind))),
                    None => self.report(
                        ProblemKind::UndeclaredVariable,
                        node,
                        path,
                        format!("variable '{{{v}}}' is used but not declared in [variables]"),
                    ),
                },
            }
        }
        let est = speech_duration(&spoken, self.s.settings.speech_rate_cps);
        if est > limit {
            self.report(
                ProblemKind::PromptTooLong,
                node,
                path,
                format!(
                    "prompt takes about {:.1} s to say at {} characters/s, longer than the {:.1} s say timeout; split it or raise say_timeout_ms",
                    est.as_secs_f32(),
                    self.s.settings.speech_rate_cps,
                    limit.as_secs_f32()
                ),
            );
        }
        if let (Some(a), Some(present)) = (p.audio(), &self.env.audio_present)
            && !present.contains(a)
        {
            self.report(
                ProblemKind::MissingAudio,
                node,
                path,
                format!("audio file '{a}' does not exist"),
            );
        }
        CPrompt {
            pieces,
            audio: p.audio().map(str::to_owned),
        }
    }

    fn text_prompt(&mut self, node: Option<&str>, path: &str, t: &str, limit: Duration) -> CPrompt {
        self.prompt(node, path, &Prompt::Text(t.to_owned()), limit)
    }

    /// Checks a DTMF map (digit → intent) and resolves its intents.
    fn dtmf_map(
        &mut self,
        node: Option<&str>,
        prefix: &str,
        map: &BTreeMap<String, String>,
    ) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for (k, intent) in map {
            let path = format!("{prefix}.dtmf.\"{k}\"");
            if !valid_digit_key(k) {
                self.report(
                    ProblemKind::Invalid,
                    node,
                    &path,
                    "keys are single digits, '*' or '#'",
                );
            }
            let ix = self.intent_ref(node, &path, intent);
            out.insert(k.clone(), ix);
        }
        out
    }

    fn regex(&mut self, node: Option<&str>, path: &str, src: &str) -> Option<Regex> {
        match RegexBuilder::new(src).size_limit(REGEX_SIZE_LIMIT).build() {
            Ok(r) => Some(r),
            Err(e) => {
                let first = e
                    .to_string()
                    .lines()
                    .last()
                    .unwrap_or("invalid")
                    .trim()
                    .to_owned();
                self.report(
                    ProblemKind::Invalid,
                    node,
                    path,
                    format!("invalid regular expression: {first}"),
                );
                None
            }
        }
    }
}

fn valid_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|f| f.is_ascii_lowercase() || f == '_')
        && s.len() <= 64
        && c.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Whether `s` is a valid script key.
pub fn valid_key(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn valid_digit_key(k: &str) -> bool {
    k.len() == 1
        && k.chars()
            .all(|c| c.is_ascii_digit() || c == '*' || c == '#')
}

/// Checks a value against a variable type.
pub fn check_value(t: VarType, v: &str) -> Result<(), String> {
    let ok = match t {
        VarType::String => !v.trim().is_empty() && v.chars().count() <= 64,
        VarType::Integer => v.parse::<i64>().is_ok(),
        VarType::Amount => {
            let (int, frac) = v.split_once('.').unwrap_or((v, ""));
            !int.is_empty()
                && int.len() <= 12
                && int.chars().all(|c| c.is_ascii_digit())
                && frac.len() <= 2
                && frac.chars().all(|c| c.is_ascii_digit())
        }
        VarType::Date => parse_date(v).is_some(),
        VarType::Digits => !v.is_empty() && v.len() <= 32 && v.chars().all(|c| c.is_ascii_digit()),
    };
    if ok {
        Ok(())
    } else {
        Err(match t {
            VarType::String => "text of 1 to 64 characters",
            VarType::Integer => "a whole number",
            VarType::Amount => "an amount such as 3200 or 3200.50",
            VarType::Date => "a date YYYY-MM-DD",
            VarType::Digits => "digits only",
        }
        .to_owned())
    }
}

/// `YYYY-MM-DD` → (year, month, day), checked.
pub fn parse_date(v: &str) -> Option<(u32, u32, u32)> {
    let mut p = v.split('-');
    let (y, m, d) = (p.next()?, p.next()?, p.next()?);
    if p.next().is_some() || y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let (y, m, d): (u32, u32, u32) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => return None,
    };
    (1..=days).contains(&d).then_some((y, m, d))
}

fn ms(v: u32) -> Duration {
    Duration::from_millis(u64::from(v))
}

/// Checks `script` and compiles it; all problems are returned if there are any.
pub fn compile(s: &Script, env: &CheckEnv) -> Result<CompiledScript, Vec<Problem>> {
    let mut cx = Ctx {
        s,
        env,
        problems: Vec::new(),
        node_ids: BTreeMap::new(),
        intent_ids: BTreeMap::new(),
    };
    let st = &s.settings;

    // Identity and limits.
    if !valid_key(&s.script.key) {
        cx.report(ProblemKind::Invalid, None, "script.key", "1–64 characters: lower-case letters, digits, '-' and '_', starting with a letter or digit");
    }
    if s.script.name.trim().is_empty() {
        cx.report(
            ProblemKind::Invalid,
            None,
            "script.name",
            "must not be empty",
        );
    }
    if s.script.voice.trim().is_empty() {
        cx.report(
            ProblemKind::Invalid,
            None,
            "script.voice",
            "must not be empty",
        );
    }
    let limits: [(&str, u32, u32, u32); 5] = [
        ("settings.max_rounds", st.max_rounds, 1, 200),
        ("settings.max_duration_secs", st.max_duration_secs, 10, 3600),
        (
            "settings.no_input_timeout_ms",
            st.no_input_timeout_ms,
            500,
            60_000,
        ),
        ("settings.say_timeout_ms", st.say_timeout_ms, 1000, 120_000),
        (
            "settings.max_utterance_ms",
            st.max_utterance_ms,
            1000,
            120_000,
        ),
    ];
    for (path, v, lo, hi) in limits {
        if !(lo..=hi).contains(&v) {
            cx.report(
                ProblemKind::Invalid,
                None,
                path,
                format!("{v} is out of range; allowed {lo} to {hi}"),
            );
        }
    }
    if !(1.0..=15.0).contains(&st.speech_rate_cps) {
        cx.report(
            ProblemKind::Invalid,
            None,
            "settings.speech_rate_cps",
            "allowed 1 to 15 characters per second",
        );
    }
    for (name, v) in &s.variables {
        let path = format!("variables.{name}");
        if !valid_name(name) {
            cx.report(
                ProblemKind::Invalid,
                None,
                &path,
                "variable names use lower-case letters, digits and '_'",
            );
        }
        if let Some(d) = &v.default
            && let Err(e) = check_value(v.kind, d)
        {
            cx.report(
                ProblemKind::Invalid,
                None,
                format!("{path}.default"),
                format!("must be {e}"),
            );
        }
    }

    // Ids first, so references can be resolved in any order.
    if s.nodes.len() > MAX_NODES || s.intents.len() > MAX_INTENTS {
        cx.report(
            ProblemKind::Invalid,
            None,
            "nodes",
            format!("at most {MAX_NODES} nodes and {MAX_INTENTS} intents"),
        );
    }
    for (i, n) in s.nodes.iter().enumerate() {
        if !valid_name(&n.id) {
            cx.report(
                ProblemKind::Invalid,
                Some(&n.id),
                format!("nodes[{i}].id"),
                "node ids use lower-case letters, digits and '_'",
            );
        }
        if cx.node_ids.insert(&n.id, i).is_some() {
            cx.report(
                ProblemKind::Invalid,
                Some(&n.id),
                format!("nodes[{i}].id"),
                "duplicate node id",
            );
        }
    }
    for (i, it) in s.intents.iter().enumerate() {
        if !valid_name(&it.name) {
            cx.report(
                ProblemKind::Invalid,
                None,
                format!("intents[{i}].name"),
                "intent names use lower-case letters, digits and '_'",
            );
        }
        if cx.intent_ids.insert(&it.name, i).is_some() {
            cx.report(
                ProblemKind::Invalid,
                None,
                format!("intents[{i}].name"),
                format!("duplicate intent '{}'", it.name),
            );
        }
    }
    let start = cx.node_ref(None, "settings.start", &st.start);

    // Intents and their rules.
    let mut keywords: BTreeSet<String> = s.dictionary.iter().map(|w| normalize(w)).collect();
    let mut kintents = Vec::new();
    for (i, it) in s.intents.iter().enumerate() {
        let ipath = format!("intents[{i}] '{}'", it.name);
        if it.label.trim().is_empty() {
            cx.report(
                ProblemKind::Invalid,
                None,
                format!("{ipath}.label"),
                "must not be empty",
            );
        }
        if it.rules.len() > MAX_RULES {
            cx.report(
                ProblemKind::Invalid,
                None,
                &ipath,
                format!("at most {MAX_RULES} rules"),
            );
        }
        let mut rules = Vec::new();
        for (j, r) in it.rules.iter().enumerate() {
            let rpath = format!("{ipath}.rules[{j}]");
            let norm = |v: &Vec<String>| {
                v.iter()
                    .map(|k| normalize(k).trim().to_owned())
                    .collect::<Vec<_>>()
            };
            let (any, all, not) = (norm(&r.any), norm(&r.all), norm(&r.not));
            let exact: Vec<String> = r.exact.iter().map(|p| core_phrase(&normalize(p))).collect();
            if any.len() + all.len() + not.len() + exact.len() > MAX_KEYWORDS {
                cx.report(
                    ProblemKind::Invalid,
                    None,
                    &rpath,
                    format!("at most {MAX_KEYWORDS} keywords"),
                );
            }
            if any.is_empty() && all.is_empty() && exact.is_empty() && r.regex.is_none() {
                cx.report(
                    ProblemKind::NeverMatches,
                    None,
                    &rpath,
                    "rule has no any/all/exact/regex condition and can never match",
                );
            }
            for k in any.iter().chain(&all).chain(&not) {
                if k.is_empty() {
                    cx.report(
                        ProblemKind::NeverMatches,
                        None,
                        &rpath,
                        "empty keyword can never match",
                    );
                }
            }
            if exact.iter().any(String::is_empty) {
                cx.report(ProblemKind::NeverMatches, None, &rpath, "exact phrase is empty after removing punctuation and particles; it can never match");
            }
            if let Some(k) = all.iter().chain(&any).find(|k| not.contains(k))
                && (all.contains(k) || any.iter().all(|a| not.contains(a)))
                && !r.negated
            {
                cx.report(
                    ProblemKind::NeverMatches,
                    None,
                    &rpath,
                    format!(
                        "keyword '{k}' is both required and vetoed (not); the rule can never match"
                    ),
                );
            }
            if r.negated && any.is_empty() && all.is_empty() {
                cx.report(
                    ProblemKind::Invalid,
                    None,
                    &rpath,
                    "negated applies to any/all keywords; this rule has none",
                );
            }
            if let Some(c) = r.confidence
                && !(0.0..=1.0).contains(&c)
            {
                cx.report(
                    ProblemKind::Invalid,
                    None,
                    &rpath,
                    "confidence must be between 0 and 1",
                );
            }
            let regex = r
                .regex
                .as_deref()
                .and_then(|src| cx.regex(None, &format!("{rpath}.regex"), src));
            keywords.extend(any.iter().chain(&all).chain(&not).cloned());
            rules.push(KeywordRule {
                any,
                all,
                exact,
                regex,
                not,
                negated: r.negated,
                confidence: r.confidence,
            });
        }
        kintents.push(KeywordIntent { rules });
    }
    let intents: Vec<CIntent> = s
        .intents
        .iter()
        .map(|i| CIntent {
            name: i.name.clone(),
            label: i.label.clone(),
            priority: i.priority,
            refusal: i.refusal,
        })
        .collect();

    // Script-wide settings that refer to intents and nodes.
    let dtmf = cx.dtmf_map(None, "settings", &st.dtmf);
    let say_default = ms(st.say_timeout_ms);
    let closing = [
        cx.text_prompt(
            None,
            "settings.closing.max_rounds",
            &st.closing.max_rounds,
            say_default,
        ),
        cx.text_prompt(
            None,
            "settings.closing.max_duration",
            &st.closing.max_duration,
            say_default,
        ),
        cx.text_prompt(
            None,
            "settings.closing.error",
            &st.closing.error,
            say_default,
        ),
    ];
    let mut globals = Vec::new();
    for (i, g) in s.global.iter().enumerate() {
        let path = format!("global[{i}]");
        let intent = cx.intent_ref(None, &format!("{path}.intent"), &g.intent);
        let goto = cx.node_ref(None, &format!("{path}.goto"), &g.goto);
        globals.push((intent, GlobalAction::Goto(goto)));
    }

    // Nodes.
    let mut nodes = Vec::new();
    for (i, n) in s.nodes.iter().enumerate() {
        nodes.push(compile_node(&mut cx, i, n, say_default, &mut globals));
    }

    // Every intent must be reachable somewhere, and DTMF keys must lead somewhere.
    let mut used: BTreeSet<usize> = globals.iter().map(|g| g.0).collect();
    used.extend(dtmf.values().copied());
    for n in &nodes {
        used.extend(n.branches.iter().map(|b| b.intent));
        used.extend(n.dtmf.values().copied());
    }
    for (i, it) in s.intents.iter().enumerate() {
        if !used.contains(&i) {
            cx.report(ProblemKind::NeverMatches, None, format!("intents[{i}] '{}'", it.name), "intent is not used by any branch, knowledge node, global route or key press; it can never match");
        }
    }
    let global_intents: BTreeSet<usize> = globals.iter().map(|g| g.0).collect();
    for (i, n) in nodes.iter().enumerate() {
        for (k, intent) in &n.dtmf {
            let leads =
                n.branches.iter().any(|b| b.intent == *intent) || global_intents.contains(intent);
            if *intent != usize::MAX && !leads {
                let name = &s.intents[*intent].name;
                cx.report(ProblemKind::NeverMatches, Some(&n.id), format!("nodes[{i}].dtmf.\"{k}\""), format!("key {k} means intent '{name}', for which this node has no branch and there is no global route"));
            }
        }
        for b in &n.branches {
            if b.goto != usize::MAX && nodes[b.goto].kind == NodeKind::Knowledge {
                cx.report(
                    ProblemKind::Invalid,
                    Some(&n.id),
                    format!("nodes[{i}].branches"),
                    format!(
                        "'{}' is a knowledge node: it is reached by its intents, not by a jump",
                        nodes[b.goto].id
                    ),
                );
            }
        }
    }
    for (j, (_, a)) in globals.iter().enumerate() {
        if let GlobalAction::Goto(t) = a
            && *t != usize::MAX
            && nodes[*t].kind == NodeKind::Knowledge
        {
            cx.report(
                ProblemKind::Invalid,
                None,
                format!("global[{j}].goto"),
                format!(
                    "'{}' is a knowledge node: it is reached by its intents, not by a jump",
                    nodes[*t].id
                ),
            );
        }
    }

    let tokenizer_words: Vec<String> = keywords.into_iter().filter(|k| !k.is_empty()).collect();

    if start != usize::MAX {
        graph_checks(&mut cx, &nodes, &globals, start);
    }
    let grader = compile_grading(&mut cx, &nodes, &used);

    if !cx.problems.is_empty() {
        let mut p = cx.problems;
        p.sort_by_key(|a| (node_order(s, &a.node), a.kind));
        return Err(p);
    }
    let tokenizer = Tokenizer::new(tokenizer_words.iter().map(String::as_str));
    Ok(CompiledScript {
        source: s.clone(),
        nodes,
        intents,
        globals,
        dtmf,
        start,
        tokenizer,
        classifier: Arc::new(KeywordMatcher { intents: kintents }),
        grader,
        closing,
        max_rounds: st.max_rounds,
        max_duration: Duration::from_secs(u64::from(st.max_duration_secs)),
        max_utterance: ms(st.max_utterance_ms),
        speech_rate_cps: st.speech_rate_cps,
    })
}

fn node_pos(s: &Script, id: &str) -> usize {
    s.nodes.iter().position(|n| n.id == id).unwrap_or(0)
}

/// Sort key: script-wide problems first, then by node position in the file.
fn node_order(s: &Script, node: &Option<String>) -> usize {
    node.as_ref().map_or(0, |id| node_pos(s, id) + 1)
}

fn compile_node(
    cx: &mut Ctx<'_>,
    i: usize,
    n: &super::script::Node,
    say_default: Duration,
    globals: &mut Vec<(usize, GlobalAction)>,
) -> CNode {
    let s = cx.s;
    let st = &s.settings;
    let id = Some(n.id.as_str());
    let p = format!("nodes[{i}]");
    let say_timeout = n.say_timeout_ms.map_or(say_default, ms);
    if let Some(v) = n.say_timeout_ms
        && !(1000..=120_000).contains(&v)
    {
        cx.report(
            ProblemKind::Invalid,
            id,
            format!("{p}.say_timeout_ms"),
            "allowed 1000 to 120000",
        );
    }
    if let Some(v) = n.no_input_timeout_ms
        && !(500..=60_000).contains(&v)
    {
        cx.report(
            ProblemKind::Invalid,
            id,
            format!("{p}.no_input_timeout_ms"),
            "allowed 500 to 60000",
        );
    }
    let barge_in = n.barge_in.unwrap_or(st.barge_in);
    if let BargeIn::AfterMs(v) = barge_in
        && ms(v) >= say_timeout
    {
        cx.report(
            ProblemKind::Invalid,
            id,
            format!("{p}.barge_in"),
            "after_ms must be shorter than the say timeout",
        );
    }
    let prompts: Vec<CPrompt> = n
        .prompts
        .iter()
        .enumerate()
        .map(|(j, pr)| cx.prompt(id, &format!("{p}.prompts[{j}]"), pr, say_timeout))
        .collect();
    let need_prompt = matches!(n.kind, NodeKind::Main | NodeKind::Knowledge);
    if need_prompt && prompts.is_empty() {
        cx.report(
            ProblemKind::Invalid,
            id,
            format!("{p}.prompts"),
            "this kind of node needs at least one prompt",
        );
    }
    let misplaced = |cx: &mut Ctx<'_>, field: &str, present: bool| {
        if present {
            cx.report(
                ProblemKind::Invalid,
                id,
                format!("{p}.{field}"),
                format!("'{field}' does not apply to a {:?} node", n.kind).to_lowercase(),
            );
        }
    };
    let is_main = n.kind == NodeKind::Main;
    let listens = is_main && n.listen;
    misplaced(cx, "branches", !is_main && !n.branches.is_empty());
    misplaced(
        cx,
        "intents",
        n.kind != NodeKind::Knowledge && !n.intents.is_empty(),
    );
    misplaced(
        cx,
        "target",
        n.kind != NodeKind::Transfer && n.target.is_some(),
    );
    misplaced(cx, "reason", n.kind != NodeKind::End && n.reason.is_some());
    misplaced(cx, "next", (!is_main || n.listen) && n.next.is_some());
    misplaced(cx, "no_input", !listens && n.no_input.is_some());
    misplaced(cx, "no_match", !listens && n.no_match.is_some());
    misplaced(cx, "dtmf", !listens && !n.dtmf.is_empty());
    if is_main && !n.listen && !n.branches.is_empty() {
        cx.report(
            ProblemKind::NeverMatches,
            id,
            format!("{p}.branches"),
            "the node does not listen, so its branches can never match",
        );
    }

    // Branches.
    let mut branches: Vec<CBranch> = Vec::new();
    for (j, b) in n.branches.iter().enumerate() {
        let bp = format!("{p}.branches[{j}]");
        let intent = cx.intent_ref(id, &format!("{bp}.intent"), &b.intent);
        let goto = cx.node_ref(id, &format!("{bp}.goto"), &b.goto);
        if intent != usize::MAX && branches.iter().any(|x| x.intent == intent) {
            cx.report(ProblemKind::NeverMatches, id, &bp, format!("an earlier branch of this node already takes intent '{}'; this one can never match", b.intent));
        }
        let capture = b.capture.as_ref().map(|c| {
            if !s.variables.contains_key(&c.var) {
                cx.report(
                    ProblemKind::UndeclaredVariable,
                    id,
                    format!("{bp}.capture.var"),
                    format!(
                        "variable '{}' is captured but not declared in [variables]",
                        c.var
                    ),
                );
            }
            let builtin = |src: &str| Regex::new(src).map_err(|e| e.to_string());
            let ex = match &c.extract {
                Extract::Date => builtin(DATE_PATTERN).map_or(CExtract::Text, CExtract::Date),
                Extract::Amount => builtin(AMOUNT_PATTERN).map_or(CExtract::Text, CExtract::Amount),
                Extract::Digits => builtin(DIGITS_PATTERN).map_or(CExtract::Text, CExtract::Digits),
                Extract::Text => CExtract::Text,
                Extract::Regex(r) => cx
                    .regex(id, &format!("{bp}.capture.extract"), r)
                    .map_or(CExtract::Text, CExtract::Regex),
            };
            (c.var.clone(), ex)
        });
        branches.push(CBranch {
            intent,
            goto,
            tags: b.tags.clone(),
            score: b.score,
            capture,
        });
    }

    // Silence and no-match handling, with the script's defaults.
    let retry = |cx: &mut Ctx<'_>, field: &str, texts: &[String], then: &str| CRetry {
        texts: texts
            .iter()
            .enumerate()
            .map(|(j, t)| cx.text_prompt(id, &format!("{p}.{field}[{j}]"), t, say_timeout))
            .collect(),
        then: cx.node_ref(id, &format!("{p}.{field}.then"), then),
    };
    let (no_input, no_match) = if listens {
        let ni = n.no_input.as_ref().or(st.no_input.as_ref());
        let nm = n.no_match.as_ref().or(st.no_match.as_ref());
        if ni.is_none() {
            cx.report(
                ProblemKind::Invalid,
                id,
                format!("{p}.no_input"),
                "a listening node needs silence handling (here or in [settings.no_input])",
            );
        }
        if nm.is_none() {
            cx.report(
                ProblemKind::Invalid,
                id,
                format!("{p}.no_match"),
                "a listening node needs no-match handling (here or in [settings.no_match])",
            );
        }
        (
            ni.map(|x| retry(cx, "no_input.reprompts", &x.reprompts, &x.then)),
            nm.map(|x| retry(cx, "no_match.clarify", &x.clarify, &x.then)),
        )
    } else {
        (None, None)
    };
    let next = match (is_main && !n.listen, &n.next) {
        (true, Some(t)) => Some(cx.node_ref(id, &format!("{p}.next"), t)),
        (true, None) => {
            cx.report(
                ProblemKind::Invalid,
                id,
                format!("{p}.next"),
                "a node that does not listen needs 'next'",
            );
            None
        }
        _ => None,
    };
    let node_dtmf = cx.dtmf_map(id, &p, &n.dtmf);
    let mut answers = Vec::new();
    match n.kind {
        NodeKind::Knowledge => {
            if n.intents.is_empty() {
                cx.report(ProblemKind::Invalid, id, format!("{p}.intents"), "a knowledge node needs the intents it answers");
            }
            for (j, name) in n.intents.iter().enumerate() {
                let ix = cx.intent_ref(id, &format!("{p}.intents[{j}]"), name);
                answers.push(ix);
                globals.push((ix, GlobalAction::Knowledge(i)));
            }
        }
        NodeKind::Transfer => match &n.target {
            Some(t) if ["sip:", "sips:", "tel:"].iter().any(|s| t.starts_with(s)) && t.len() > 5 && !t.chars().any(char::is_whitespace) => {}
            Some(_) => cx.report(ProblemKind::Invalid, id, format!("{p}.target"), "a SIP or tel URI, e.g. sip:8001@callcenter.bank.local"),
            None => cx.report(ProblemKind::Invalid, id, format!("{p}.target"), "a transfer node needs a target"),
        },
        NodeKind::End => match n.reason {
            Some(EndReason::Transferred | EndReason::CustomerHangup | EndReason::MaxDuration) => cx.report(
                ProblemKind::Invalid,
                id,
                format!("{p}.reason"),
                "an end node's reason is one of completed, refused, do_not_call, wrong_person, no_response, max_rounds, error",
            ),
            Some(_) => {}
            None => cx.report(ProblemKind::Invalid, id, format!("{p}.reason"), "an end node needs a reason"),
        },
        NodeKind::Main => {}
    }
    for (field, tags) in [("tags", &n.tags), ("turn_tags", &n.turn_tags)] {
        if tags
            .iter()
            .any(|t| t.trim().is_empty() || t.chars().count() > 32)
        {
            cx.report(
                ProblemKind::Invalid,
                id,
                format!("{p}.{field}"),
                "tags are 1 to 32 characters",
            );
        }
    }
    CNode {
        id: n.id.clone(),
        title: if n.title.is_empty() {
            n.id.clone()
        } else {
            n.title.clone()
        },
        kind: n.kind,
        prompts,
        listen: listens,
        next,
        branches,
        answers,
        resume: n.resume,
        target: n.target.clone(),
        reason: n.reason,
        barge_in,
        no_input_timeout: n.no_input_timeout_ms.map_or(ms(st.no_input_timeout_ms), ms),
        say_timeout,
        no_input,
        no_match,
        dtmf: node_dtmf,
        tags: n.tags.clone(),
        turn_tags: n.turn_tags.clone(),
        score: n.score,
    }
}

/// The node's own exits (not global intents).
fn edges(n: &CNode) -> Vec<usize> {
    let mut e: Vec<usize> = n.branches.iter().map(|b| b.goto).collect();
    e.extend(n.next);
    e.extend(n.no_input.as_ref().map(|r| r.then));
    e.extend(n.no_match.as_ref().map(|r| r.then));
    e.retain(|x| *x != usize::MAX);
    e
}

fn reach(nodes: &[CNode], from: &[usize]) -> Vec<bool> {
    let mut seen = vec![false; nodes.len()];
    let mut stack: Vec<usize> = from.to_vec();
    while let Some(i) = stack.pop() {
        if i >= nodes.len() || seen[i] {
            continue;
        }
        seen[i] = true;
        stack.extend(edges(&nodes[i]));
    }
    seen
}

fn graph_checks(
    cx: &mut Ctx<'_>,
    nodes: &[CNode],
    globals: &[(usize, GlobalAction)],
    start: usize,
) {
    // Reachable: from the start by the nodes' own exits, plus global targets (reachable from
    // any listening node), plus whatever those lead to.
    let mut seen = reach(nodes, &[start]);
    if seen.iter().enumerate().any(|(i, s)| *s && nodes[i].listen) {
        let roots: Vec<usize> = std::iter::once(start)
            .chain(globals.iter().map(|(_, a)| match a {
                GlobalAction::Goto(n) | GlobalAction::Knowledge(n) => *n,
            }))
            .collect();
        seen = reach(nodes, &roots);
    }
    for (i, n) in nodes.iter().enumerate() {
        if !seen[i] {
            cx.report(
                ProblemKind::Unreachable,
                Some(&n.id),
                format!("nodes[{i}]"),
                "node cannot be reached from the start node or a global intent",
            );
        }
    }
    // Loops without exit: strongly connected sets with no edge out and no terminal node.
    let r: Vec<Vec<bool>> = (0..nodes.len())
        .map(|i| reach(nodes, &edges(&nodes[i])))
        .collect();
    let mut done = vec![false; nodes.len()];
    for i in 0..nodes.len() {
        if done[i] || !r[i][i] || !seen[i] {
            continue;
        }
        let scc: Vec<usize> = (0..nodes.len()).filter(|&j| r[i][j] && r[j][i]).collect();
        for &j in &scc {
            done[j] = true;
        }
        let terminal = scc
            .iter()
            .any(|&j| matches!(nodes[j].kind, NodeKind::End | NodeKind::Transfer));
        let exits = scc
            .iter()
            .any(|&j| edges(&nodes[j]).iter().any(|t| !scc.contains(t)));
        if !terminal && !exits {
            let names: Vec<&str> = scc.iter().map(|&j| nodes[j].id.as_str()).collect();
            cx.report(
                ProblemKind::LoopWithoutExit,
                Some(&nodes[scc[0]].id),
                format!("nodes[{}]", scc[0]),
                format!("loop {} has no exit to an end or transfer node; only the round limit would end the call", names.join(" → ")),
            );
        }
    }
}

struct NodeLabels<'a> {
    s: &'a Script,
}

impl Labels for NodeLabels<'_> {
    fn intent(&self, name: &str) -> String {
        self.s
            .intents
            .iter()
            .find(|i| i.name == name)
            .map_or_else(|| name.to_owned(), |i| i.label.clone())
    }
    fn node(&self, id: &str) -> String {
        self.s
            .nodes
            .iter()
            .find(|n| n.id == id)
            .filter(|n| !n.title.is_empty())
            .map_or_else(|| id.to_owned(), |n| n.title.clone())
    }
    fn variable(&self, name: &str) -> String {
        // The description up to its first bracket: "客户承诺的还款日期（通话中记录）".
        self.s
            .variables
            .get(name)
            .map(|v| {
                v.description
                    .split(['（', '('])
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_owned()
            })
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| format!("'{name}'"))
    }
}

fn compile_grading(cx: &mut Ctx<'_>, nodes: &[CNode], used_intents: &BTreeSet<usize>) -> Grader {
    let s = cx.s;
    let g = &s.grading;
    let mut levels = Vec::new();
    for (i, l) in g.levels.iter().enumerate() {
        let p = format!("grading.levels[{i}]");
        if l.id.trim().is_empty() || l.name.trim().is_empty() {
            cx.report(
                ProblemKind::Invalid,
                None,
                &p,
                "a level needs an id and a name",
            );
        }
        if levels.iter().any(|x: &LevelInfo| x.id == l.id) {
            cx.report(
                ProblemKind::Invalid,
                None,
                &p,
                format!("duplicate level '{}'", l.id),
            );
        }
        if let Some(c) = &l.color
            && !(c.len() == 7
                && c.starts_with('#')
                && c[1..].chars().all(|x| x.is_ascii_hexdigit()))
        {
            cx.report(
                ProblemKind::Invalid,
                None,
                format!("{p}.color"),
                "a colour is #rrggbb",
            );
        }
        levels.push(LevelInfo {
            id: l.id.clone(),
            name: l.name.clone(),
            label: l.label.clone(),
            color: l.color.clone(),
        });
    }
    if levels.is_empty() {
        cx.report(
            ProblemKind::Invalid,
            None,
            "grading.levels",
            "at least one level is needed",
        );
    }
    let level_of = |id: &str| levels.iter().position(|l| l.id == id);
    let default_level = level_of(&g.default_level).unwrap_or_else(|| {
        cx.report(
            ProblemKind::Invalid,
            None,
            "grading.default_level",
            format!("unknown level '{}'", g.default_level),
        );
        0
    });
    let tags: BTreeSet<&str> = nodes
        .iter()
        .flat_map(|n| {
            n.tags
                .iter()
                .chain(&n.turn_tags)
                .chain(n.branches.iter().flat_map(|b| &b.tags))
        })
        .map(String::as_str)
        .collect();
    let captured: BTreeSet<&str> = nodes
        .iter()
        .flat_map(|n| {
            n.branches
                .iter()
                .filter_map(|b| b.capture.as_ref().map(|c| c.0.as_str()))
        })
        .collect();
    let bounds = Bounds {
        max_rounds: i64::from(s.settings.max_rounds),
        max_duration_secs: i64::from(s.settings.max_duration_secs),
    };
    let labels = NodeLabels { s };
    let mut rules = Vec::new();
    let mut catch_all: Option<String> = None;
    for (i, r) in g.rules.iter().enumerate() {
        let p = format!("grading.rules[{i}] '{}'", r.name);
        if rules.iter().any(|x: &CompiledRule| x.name == r.name) || r.name.trim().is_empty() {
            cx.report(
                ProblemKind::Invalid,
                None,
                &p,
                "rule names must be present and unique",
            );
        }
        let level = level_of(&r.level).unwrap_or_else(|| {
            cx.report(
                ProblemKind::Invalid,
                None,
                format!("{p}.level"),
                format!("unknown level '{}'", r.level),
            );
            0
        });
        let when = match expr::parse(&r.when) {
            Ok(e) => e,
            Err(e) => {
                cx.report(
                    ProblemKind::Invalid,
                    None,
                    format!("{p}.when"),
                    e.to_string(),
                );
                continue;
            }
        };
        if let Some(prev) = &catch_all {
            cx.report(
                ProblemKind::NeverMatches,
                None,
                &p,
                format!("rule '{prev}' before it always matches, so this rule never does"),
            );
        }
        if !expr::satisfiable(&when, &bounds) {
            cx.report(
                ProblemKind::NeverMatches,
                None,
                format!("{p}.when"),
                format!(
                    "condition can never hold within max_rounds {} and max_duration_secs {}",
                    s.settings.max_rounds, s.settings.max_duration_secs
                ),
            );
        }
        let mut refs = Vec::new();
        expr::references(&when, &mut refs);
        for (f, name) in refs {
            let missing = match f {
                Func::Hit | Func::Hits => match cx.intent_ids.get(name.as_str()) {
                    None => Some(format!("intent '{name}' does not exist")),
                    Some(i) if !used_intents.contains(i) => {
                        Some(format!("intent '{name}' is never listened for"))
                    }
                    Some(_) => None,
                },
                Func::Tag => (!tags.contains(name.as_str()))
                    .then(|| format!("tag '{name}' is never attached")),
                Func::Visited => (!cx.node_ids.contains_key(name.as_str()))
                    .then(|| format!("node '{name}' does not exist")),
                Func::Captured => (!captured.contains(name.as_str()))
                    .then(|| format!("variable '{name}' is never captured")),
            };
            if let Some(m) = missing {
                // A reference that can never be true only dooms the rule if it is required.
                cx.report(
                    ProblemKind::NeverMatches,
                    None,
                    format!("{p}.when"),
                    format!("{m}, so this part can never be true"),
                );
            }
        }
        if expr::always(&when) && catch_all.is_none() {
            catch_all = Some(r.name.clone());
        }
        let reason = r
            .reason
            .clone()
            .unwrap_or_else(|| expr::describe(&when, &labels));
        rules.push(CompiledRule {
            name: r.name.clone(),
            level,
            when,
            reason,
        });
    }
    Grader {
        levels,
        default_level,
        rules,
    }
}
