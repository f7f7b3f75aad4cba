//! The script file format (TOML): the serde model, which is also the source of the published
//! JSON Schema (docs/script.schema.json).
//!
//! These types describe what an author writes. They are checked and turned into an executable
//! [`super::CompiledScript`] by [`super::validate::compile`]; nothing here is trusted before that.
//! Field names are English; what the robot says is the author's (Simplified Chinese) text.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Largest script file accepted, in bytes (a real script is a few tens of KiB).
pub const MAX_SCRIPT_BYTES: usize = 1024 * 1024;

/// A call script (话术).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Script {
    /// Identity of the script.
    pub script: ScriptInfo,
    /// Call-wide settings: start node, limits, closing prompts, defaults for nodes.
    pub settings: Settings,
    /// Variables the prompts use, by name (`{name}` in a prompt text).
    #[serde(default)]
    pub variables: BTreeMap<String, Variable>,
    /// Words the tokeniser must keep whole (product names, bank terms), in addition to every
    /// keyword of every intent, which is added automatically.
    #[serde(default)]
    pub dictionary: Vec<String>,
    /// What the customer may mean, each with keyword or regex rules.
    #[serde(default)]
    pub intents: Vec<Intent>,
    /// Intents that are recognised at every listening node and jump somewhere (do-not-call,
    /// complaint, "转人工"). Knowledge nodes are the other kind of global intent.
    #[serde(default)]
    pub global: Vec<GlobalRoute>,
    /// The nodes of the call flow.
    pub nodes: Vec<Node>,
    /// Intent grading (A/B/C/D levels and the rules deciding them).
    pub grading: Grading,
}

/// Identity of the script.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScriptInfo {
    /// Stable key across versions: lower-case letters, digits, `-` and `_`, 1–64 characters.
    pub key: String,
    /// Display name, e.g. "信用卡还款提醒".
    pub name: String,
    /// What the script is for, for the people approving it.
    #[serde(default)]
    pub description: String,
    /// The TTS voice that speaks the prompts (a voice id of the speech engine).
    pub voice: String,
}

/// Call-wide settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The node the call starts in (after the callee answers).
    pub start: String,
    /// Most customer turns (speech, key press or silence) before the robot closes the call.
    #[serde(default = "default_max_rounds")]
    pub max_rounds: u32,
    /// Longest call in seconds from answer to hang-up; the robot starts its closing prompt in
    /// time to finish before this.
    #[serde(default = "default_max_duration")]
    pub max_duration_secs: u32,
    /// Default for nodes: how long to wait for the customer to start speaking, in ms.
    #[serde(default = "default_no_input_timeout")]
    pub no_input_timeout_ms: u32,
    /// Default for nodes: the longest a prompt may take to say, in ms. Prompts estimated to
    /// take longer fail validation; at run time a prompt not reported finished by then is
    /// treated as finished.
    #[serde(default = "default_say_timeout")]
    pub say_timeout_ms: u32,
    /// Longest the robot waits for the text of an utterance once the customer started
    /// speaking, in ms; past it the turn counts as not understood.
    #[serde(default = "default_max_utterance")]
    pub max_utterance_ms: u32,
    /// Default barge-in policy for nodes.
    #[serde(default)]
    pub barge_in: BargeIn,
    /// Speech rate used to estimate how long a prompt takes, in characters per second.
    /// Mandarin TTS at normal speed says about 4–5 characters a second.
    #[serde(default = "default_speech_rate")]
    pub speech_rate_cps: f32,
    /// What the robot says when the script itself cannot go on.
    pub closing: Closing,
    /// Default silence handling for listening nodes that have none of their own.
    #[serde(default)]
    pub no_input: Option<NoInput>,
    /// Default handling of "not understood" for listening nodes that have none of their own.
    #[serde(default)]
    pub no_match: Option<NoMatch>,
    /// Key presses recognised at every listening node: digit (`0`–`9`, `*`, `#`) → intent.
    #[serde(default)]
    pub dtmf: BTreeMap<String, String>,
}

fn default_max_rounds() -> u32 {
    20
}
fn default_max_duration() -> u32 {
    300
}
fn default_no_input_timeout() -> u32 {
    6000
}
fn default_say_timeout() -> u32 {
    20_000
}
fn default_max_utterance() -> u32 {
    20_000
}
fn default_speech_rate() -> f32 {
    4.5
}

/// Closing prompts said when the engine ends a call on its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Closing {
    /// Said when `max_rounds` is reached.
    pub max_rounds: String,
    /// Said when the call nears `max_duration_secs`.
    pub max_duration: String,
    /// Said when the script cannot continue (no fallback, a step limit).
    pub error: String,
}

/// One variable of the script.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Variable {
    /// The kind of value; checked when a call starts.
    #[serde(rename = "type")]
    pub kind: VarType,
    /// Whether each call must supply it (from the number list). Variables filled during the
    /// call (`capture`) are not required.
    #[serde(default)]
    pub required: bool,
    /// Value used when the call does not supply one.
    #[serde(default)]
    pub default: Option<String>,
    /// What it means, for authors and operators.
    #[serde(default)]
    pub description: String,
}

/// The type of a variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum VarType {
    /// Free text, e.g. a form of address ("张先生").
    String,
    /// A whole number.
    Integer,
    /// A money amount in yuan, e.g. `3200` or `3200.50`.
    Amount,
    /// A calendar date `YYYY-MM-DD`; prompts say it as "3月15日".
    Date,
    /// A string of digits, e.g. the last four digits of a card.
    Digits,
}

/// When the customer may interrupt a prompt by speaking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BargeIn {
    /// The prompt always plays to the end (disclosures); speech during it is answered after.
    Never,
    /// Speech stops the prompt at once.
    #[default]
    Always,
    /// Speech stops the prompt only after it has played this many milliseconds.
    AfterMs(u32),
}

/// An intent: what the customer means, recognised by rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Intent {
    /// Identifier used by branches, knowledge nodes, DTMF maps and grading (`hit('name')`).
    pub name: String,
    /// Human-readable name used in grading reasons, e.g. "同意办理".
    pub label: String,
    /// Ranks this intent against others that match the same utterance (higher wins).
    /// Equal priority: the current node's branches win over global intents.
    #[serde(default)]
    pub priority: i32,
    /// Counts as a refusal in the grading fact `refusals`.
    #[serde(default)]
    pub refusal: bool,
    /// The rules; the intent matches if any rule matches.
    #[serde(default)]
    pub rules: Vec<Rule>,
}

/// One matching rule. Keyword lists are matched on the tokenised, normalised utterance; a
/// keyword preceded by a negation word in the same clause ("不需要", "没有逾期") does not
/// count, unless `negated = true`, which matches only negated keywords.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Matches if any of these keywords occurs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub any: Vec<String>,
    /// Matches if all of these keywords occur.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub all: Vec<String>,
    /// Matches if the whole utterance (without punctuation and trailing particles such as
    /// 啊/呀/吧) is one of these phrases.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exact: Vec<String>,
    /// Matches if this regular expression matches the normalised utterance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// Keywords that veto this rule when they occur (not negated).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not: Vec<String>,
    /// Match keywords only when negated ("不需要" for `any = ["需要"]`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub negated: bool,
    /// Confidence reported when this rule matches (0–1); by default it depends on the kind of
    /// rule and how much of the utterance the keywords cover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f32>,
}

/// A global intent that jumps to a node from any listening node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GlobalRoute {
    /// The intent.
    pub intent: String,
    /// Where to go.
    pub goto: String,
}

/// A prompt: what the robot says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Prompt {
    /// Text only, synthesised by TTS.
    Text(String),
    /// Text with a pre-recorded audio file (played instead of TTS; the text is the record).
    Recorded {
        /// What the recording says (with `{variables}` it is synthesised instead).
        text: String,
        /// Audio file, relative to the script file's directory.
        audio: String,
    },
}

impl Prompt {
    /// The text.
    pub fn text(&self) -> &str {
        match self {
            Self::Text(t) | Self::Recorded { text: t, .. } => t,
        }
    }

    /// The audio file, if any.
    pub fn audio(&self) -> Option<&str> {
        match self {
            Self::Text(_) => None,
            Self::Recorded { audio, .. } => Some(audio),
        }
    }
}

/// What kind of node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    /// Main flow: say a prompt, listen, branch by intent (or go on to `next`).
    #[default]
    Main,
    /// Global knowledge (业务问答): answers one of its intents from any listening node, then
    /// returns to where the call was.
    Knowledge,
    /// Transfer to a human agent (转人工) at a SIP target, after an optional prompt.
    Transfer,
    /// Say a closing prompt and hang up with a reason.
    End,
}

/// How the robot continues after a knowledge answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Resume {
    /// Say the interrupted node's prompt again (its next variant).
    #[default]
    Reprompt,
    /// Listen again at the interrupted node without repeating its question.
    Listen,
}

/// Why a call ends at an end node.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The script reached its normal end.
    Completed,
    /// The customer refused.
    Refused,
    /// The customer asked not to be called again; the number is suppressed.
    DoNotCall,
    /// The callee is not the customer.
    WrongPerson,
    /// The customer did not answer (silence).
    NoResponse,
    /// The round limit was reached.
    MaxRounds,
    /// The duration limit was reached.
    MaxDuration,
    /// The script could not continue.
    Error,
    /// The call was handed to a human agent.
    Transferred,
    /// The customer hung up.
    CustomerHangup,
}

impl EndReason {
    /// Snake-case name, as in scripts, records and grading expressions (`end == 'refused'`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Refused => "refused",
            Self::DoNotCall => "do_not_call",
            Self::WrongPerson => "wrong_person",
            Self::NoResponse => "no_response",
            Self::MaxRounds => "max_rounds",
            Self::MaxDuration => "max_duration",
            Self::Error => "error",
            Self::Transferred => "transferred",
            Self::CustomerHangup => "customer_hangup",
        }
    }

    /// Every reason.
    pub const ALL: [EndReason; 10] = [
        Self::Completed,
        Self::Refused,
        Self::DoNotCall,
        Self::WrongPerson,
        Self::NoResponse,
        Self::MaxRounds,
        Self::MaxDuration,
        Self::Error,
        Self::Transferred,
        Self::CustomerHangup,
    ];
}

/// One node of the call flow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// Identifier, unique in the script (`goto = "identity"`).
    pub id: String,
    /// What kind of node.
    #[serde(default)]
    pub kind: NodeKind,
    /// Display title, e.g. "身份确认".
    #[serde(default)]
    pub title: String,
    /// Prompt variants; each visit says the next one (first visit the first).
    #[serde(default)]
    pub prompts: Vec<Prompt>,
    /// Main nodes: listen after the prompt (default) or go on to `next` without listening.
    #[serde(default = "yes")]
    pub listen: bool,
    /// Main nodes that do not listen: the node that follows.
    #[serde(default)]
    pub next: Option<String>,
    /// Main nodes: where each intent leads. The first branch for an intent is used.
    #[serde(default)]
    pub branches: Vec<Branch>,
    /// Knowledge nodes: the intents this node answers.
    #[serde(default)]
    pub intents: Vec<String>,
    /// Knowledge nodes: how to continue after the answer.
    #[serde(default)]
    pub resume: Resume,
    /// Transfer nodes: the SIP target of the agent queue, e.g. `sip:8001@callcenter.bank.local`.
    #[serde(default)]
    pub target: Option<String>,
    /// End nodes: why the call ends.
    #[serde(default)]
    pub reason: Option<EndReason>,
    /// Barge-in policy; the script's default if absent.
    #[serde(default)]
    pub barge_in: Option<BargeIn>,
    /// How long to wait for speech after the prompt, in ms; the script's default if absent.
    #[serde(default)]
    pub no_input_timeout_ms: Option<u32>,
    /// The longest a prompt of this node may take, in ms; the script's default if absent.
    #[serde(default)]
    pub say_timeout_ms: Option<u32>,
    /// Silence handling; the script's default if absent.
    #[serde(default)]
    pub no_input: Option<NoInput>,
    /// "Not understood" handling; the script's default if absent.
    #[serde(default)]
    pub no_match: Option<NoMatch>,
    /// Key presses at this node: digit → intent (checked before the script-wide map).
    #[serde(default)]
    pub dtmf: BTreeMap<String, String>,
    /// Tags attached to the call when the node is entered.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Tags attached only to the turn in which the node is entered.
    #[serde(default)]
    pub turn_tags: Vec<String>,
    /// Added to the call's score when the node is entered.
    #[serde(default)]
    pub score: i32,
}

fn yes() -> bool {
    true
}

/// Where an intent leads from a main node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Branch {
    /// The intent.
    pub intent: String,
    /// The node it leads to.
    pub goto: String,
    /// Tags attached to the call when this branch is taken.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Added to the score when this branch is taken.
    #[serde(default)]
    pub score: i32,
    /// Fill a variable from what the customer said.
    #[serde(default)]
    pub capture: Option<Capture>,
}

/// Takes a value out of the utterance into a variable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Capture {
    /// The variable to set (declared in `[variables]`).
    pub var: String,
    /// What to extract.
    pub extract: Extract,
}

/// What a capture extracts from the normalised utterance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Extract {
    /// A date phrase: "15号", "3月20日", "明天", "下周五", "月底".
    Date,
    /// A money amount: "3200", "3200元", "两千块" (as digits).
    Amount,
    /// The first run of digits.
    Digits,
    /// The whole utterance (normalised).
    Text,
    /// The first capture group of this regular expression (or the whole match).
    Regex(String),
}

/// Silence handling: reprompt, then give up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoInput {
    /// Said on the first, second, … silence; their number is the retry limit.
    #[serde(default)]
    pub reprompts: Vec<String>,
    /// Where to go when the reprompts are used up.
    pub then: String,
}

/// "Not understood" handling: clarify, then fall back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoMatch {
    /// Said on the first, second, … unrecognised answer; their number is the retry limit.
    #[serde(default)]
    pub clarify: Vec<String>,
    /// Where to go when the clarifications are used up.
    pub then: String,
}

/// Grading: levels and rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Grading {
    /// The levels, best first (e.g. A, B, C, D).
    pub levels: Vec<Level>,
    /// The level given when no rule matches.
    pub default_level: String,
    /// Rules, tried in order; the first that matches decides the level.
    #[serde(default)]
    pub rules: Vec<GradeRule>,
}

/// One level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Level {
    /// Identifier, e.g. `A`.
    pub id: String,
    /// Display name, e.g. "A级".
    pub name: String,
    /// Meaning, e.g. "有意向".
    #[serde(default)]
    pub label: String,
    /// Display colour, `#rrggbb`.
    #[serde(default)]
    pub color: Option<String>,
}

/// A grading rule: a small expression over call facts (see docs/script-format.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GradeRule {
    /// Rule identifier, stored with the call.
    pub name: String,
    /// The level this rule gives.
    pub level: String,
    /// The condition, e.g. `hit('agree') and duration >= 30`.
    pub when: String,
    /// Reason text stored with the call; generated from `when` if absent
    /// ("命中'同意办理'且通话≥30秒").
    #[serde(default)]
    pub reason: Option<String>,
}

/// Where a TOML parse error is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (line {line}, column {column})")]
pub struct ParseError {
    /// 1-based line (0 when unknown).
    pub line: usize,
    /// 1-based column (0 when unknown).
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl Script {
    /// Parses script text (TOML). Unknown keys are rejected.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        if text.len() > MAX_SCRIPT_BYTES {
            return Err(ParseError {
                line: 0,
                column: 0,
                message: format!("script is larger than {MAX_SCRIPT_BYTES} bytes"),
            });
        }
        toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map_or((0, 0), |s| line_col(text, s.start));
            ParseError {
                line,
                column,
                message: e.message().to_owned(),
            }
        })
    }

    /// The JSON Schema of the script format, as published in docs/script.schema.json.
    pub fn json_schema() -> String {
        let schema = schemars::schema_for!(Script);
        let mut s = serde_json::to_string_pretty(&schema).unwrap_or_default();
        s.push('\n');
        s
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_name_the_line() {
        let e = Script::parse("[script]\nkey = \"a\"\nname = 3\n").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        let e = Script::parse("[script]\nkey = \"a\"\nbogus = 1\n").unwrap_err();
        assert!(e.message.contains("bogus"), "{e}");
    }

    #[test]
    fn barge_in_forms() {
        #[derive(Deserialize)]
        struct W {
            b: BargeIn,
        }
        let w: W = toml::from_str("b = \"never\"").unwrap();
        assert_eq!(w.b, BargeIn::Never);
        let w: W = toml::from_str("b = { after_ms = 1500 }").unwrap();
        assert_eq!(w.b, BargeIn::AfterMs(1500));
    }
}
