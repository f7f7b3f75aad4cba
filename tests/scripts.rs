//! The script engine end to end: golden transcripts that cover every branch of both example
//! scripts, property tests of the FSM, one test per validation defect class, the published
//! JSON Schema, and the `vaultcall script` commands (exit codes, JSON, lifecycle).
//!
//! Golden files: `tests/scripts/<script>/<name>.txt` (customer turns) and `<name>.golden`
//! (what happened). `UPDATE_GOLDEN=1 cargo test --test scripts` rewrites them; review the diff.
#![allow(clippy::disallowed_methods)] // the simulator's base instant; all times are relative

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use vaultcall::conversation::Script;
use vaultcall::conversation::machine::{Answer, Heard, Input, Machine, Output, Speaker};
use vaultcall::conversation::script::NodeKind;
use vaultcall::conversation::validate::{CheckEnv, CompiledScript, ProblemKind, compile_text};
use vaultcall::scriptctl::simulate::{self, Event, Step};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn example(key: &str) -> Arc<CompiledScript> {
    static CACHE: OnceLock<BTreeMap<&'static str, Arc<CompiledScript>>> = OnceLock::new();
    let all = CACHE.get_or_init(|| {
        let mut m = BTreeMap::new();
        for k in ["card-repayment-reminder", "loan-follow-up"] {
            let text = std::fs::read_to_string(root().join(format!("packaging/scripts/{k}.toml")))
                .unwrap();
            let c =
                compile_text(&text, &CheckEnv::default()).unwrap_or_else(|p| panic!("{k}: {p:?}"));
            m.insert(k, Arc::new(c));
        }
        m
    });
    all[key].clone()
}

/// A readable rendering of a simulated call, for golden files.
fn render(events: &[Event], outcome: Option<&vaultcall::conversation::Outcome>) -> String {
    let mut s = String::new();
    let secs = |t: u64| format!("{:>6.1}", t as f64 / 1000.0);
    for e in events {
        match e {
            Event::Say {
                t_ms,
                node,
                text,
                barge_in,
                ..
            } => s.push_str(&format!(
                "{} robot    [{node}] {text}  (barge-in {barge_in})\n",
                secs(*t_ms)
            )),
            Event::Customer { t_ms, input } => {
                s.push_str(&format!("{} customer {input}\n", secs(*t_ms)))
            }
            Event::Turn { turn, .. } if turn.speaker == Speaker::Customer => {
                let m = match (&turn.intent, &turn.rule, turn.confidence) {
                    (Some(i), Some(r), Some(c)) => format!("intent {i} by {r} ({c:.2})"),
                    _ => format!("{:?}, no intent", turn.answer.unwrap_or(Answer::Speech))
                        .to_lowercase(),
                };
                s.push_str(&format!("         ↳ at {}: {m}\n", turn.node));
            }
            Event::Tag { tag, scope, .. } => {
                s.push_str(&format!("         ↳ tag {tag} ({scope:?})\n"))
            }
            Event::Score { delta, total, .. } => {
                s.push_str(&format!("         ↳ score {delta:+} = {total}\n"))
            }
            Event::SetVariable { name, value, .. } => {
                s.push_str(&format!("         ↳ set {name} = {value}\n"))
            }
            Event::Suppress { t_ms } => s.push_str(&format!("{} suppress number\n", secs(*t_ms))),
            Event::Transfer { t_ms, target } => {
                s.push_str(&format!("{} transfer {target}\n", secs(*t_ms)))
            }
            Event::Hangup { t_ms, reason } => {
                s.push_str(&format!("{} hangup {}\n", secs(*t_ms), reason.as_str()))
            }
            Event::Listen { .. } | Event::Turn { .. } => {}
        }
    }
    match outcome {
        Some(o) => s.push_str(&format!(
            "end {} after {} rounds, {} s, score {}; level {} by {}; {}; tags [{}]\n",
            o.end.as_str(),
            o.facts.rounds,
            o.facts.duration_secs,
            o.facts.score,
            o.grade.level,
            o.grade.rule.as_deref().unwrap_or("default"),
            o.grade.reason,
            o.tags.join(", ")
        )),
        None => s.push_str("(not ended)\n"),
    }
    s
}

/// What a run covers: nodes, branches, global routes, silence and no-match handling.
fn coverage(script: &CompiledScript, events: &[Event], out: &mut BTreeSet<String>) {
    let s = &script.source.settings;
    let retries: Vec<(&str, &Vec<String>, &str)> = [
        s.no_input
            .as_ref()
            .map(|x| ("no_input", &x.reprompts, x.then.as_str())),
        s.no_match
            .as_ref()
            .map(|x| ("no_match", &x.clarify, x.then.as_str())),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut last_unmatched: Option<Answer> = None;
    for e in events {
        match e {
            Event::Say { node, text, .. } => {
                out.insert(format!("node {node}"));
                for (kind, texts, then) in &retries {
                    let follows = match last_unmatched {
                        Some(Answer::Silence) => *kind == "no_input",
                        Some(_) => *kind == "no_match",
                        None => false,
                    };
                    if follows && texts.contains(text) {
                        out.insert(format!("{kind} retry"));
                    }
                    if follows && node == then {
                        out.insert(format!("{kind} fallback"));
                    }
                }
                last_unmatched = None;
            }
            Event::Turn { turn, .. } if turn.speaker == Speaker::Customer => {
                last_unmatched = None;
                match &turn.intent {
                    Some(i) => {
                        let n = script.nodes.iter().find(|n| n.id == turn.node).unwrap();
                        let idx = script.intents.iter().position(|x| &x.name == i).unwrap();
                        if n.branches.iter().any(|b| b.intent == idx) {
                            out.insert(format!("branch {}.{i}", n.id));
                        } else {
                            out.insert(format!("global {i}"));
                        }
                    }
                    None => last_unmatched = turn.answer,
                }
            }
            _ => {}
        }
    }
}

fn expected_coverage(script: &CompiledScript) -> BTreeSet<String> {
    let mut want = BTreeSet::new();
    for n in &script.nodes {
        want.insert(format!("node {}", n.id));
        for b in &n.branches {
            want.insert(format!("branch {}.{}", n.id, script.intents[b.intent].name));
        }
    }
    for g in &script.source.global {
        want.insert(format!("global {}", g.intent));
    }
    for k in ["no_input", "no_match"] {
        want.insert(format!("{k} retry"));
        want.insert(format!("{k} fallback"));
    }
    want
}

fn golden_dir(key: &str) -> PathBuf {
    root().join("tests/scripts").join(key)
}

fn run_goldens(key: &str) {
    let script = example(key);
    let mut covered = BTreeSet::new();
    let mut failures = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(golden_dir(key))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "{key}: too few transcripts");
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let (vars, steps) = simulate::parse_transcript(&text).unwrap();
        let vars = vaultcall::scriptctl::parse_vars(&vars)
            .map_err(|e| e.message)
            .unwrap();
        let report = simulate::run(script.clone(), &vars, &steps, Instant::now()).unwrap();
        assert!(
            report.outcome.is_some(),
            "{}: the call did not end",
            f.display()
        );
        coverage(&script, &report.events, &mut covered);
        let got = render(&report.events, report.outcome.as_ref());
        let golden = f.with_extension("golden");
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&golden, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&golden).unwrap_or_default();
        if want != got {
            failures.push(format!(
                "{}:\n--- want\n{want}--- got\n{got}",
                golden.display()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "golden mismatches (UPDATE_GOLDEN=1 to accept):\n{}",
        failures.join("\n")
    );
    let missing: Vec<String> = expected_coverage(&script)
        .difference(&covered)
        .cloned()
        .collect();
    assert!(
        missing.is_empty(),
        "{key}: transcripts do not cover {missing:?}"
    );
}

#[test]
fn card_reminder_golden_transcripts_cover_every_branch() {
    run_goldens("card-repayment-reminder");
}

#[test]
fn loan_follow_up_golden_transcripts_cover_every_branch() {
    run_goldens("loan-follow-up");
}

#[test]
fn golden_outcomes_that_matter() {
    // Spot checks a reviewer can read without the golden files.
    let script = example("card-repayment-reminder");
    let vars = vaultcall::scriptctl::parse_vars(
        "name=张先生,amount=3200,due_date=2026-12-05,card_tail=8861",
    )
    .unwrap();
    let run = |lines: &[&str]| {
        let steps: Vec<Step> = lines
            .iter()
            .map(|l| simulate::parse_step(l).unwrap().unwrap())
            .collect();
        simulate::run(script.clone(), &vars, &steps, Instant::now()).unwrap()
    };
    let r = run(&["是我", "我明天还", "对"]);
    let o = r.outcome.unwrap();
    assert_eq!(
        (o.grade.level.as_str(), o.grade.rule.as_deref()),
        ("A", Some("promised_date"))
    );
    assert!(r.events.iter().any(|e| matches!(e, Event::SetVariable { name, value, .. } if name == "promise_date" && value == "明天")));
    let r = run(&["是我", "别再打了"]);
    assert!(r.events.iter().any(|e| matches!(e, Event::Suppress { .. })));
    assert_eq!(r.outcome.unwrap().end.as_str(), "do_not_call");
    // The prompt says the date the way people do.
    assert!(
        r.events
            .iter()
            .any(|e| matches!(e, Event::Say { text, .. } if text.contains("12月5日")))
    );
}

// ------------------------------------------------------------------ property tests

#[derive(Debug, Clone)]
enum Ev {
    Heard(usize),
    Dtmf(char),
    NoInput,
    SpeechStarted,
    PromptFinished,
    Hangup,
    Wait(u64),
}

const PHRASES: &[&str] = &[
    "是我",
    "不是",
    "我明天还",
    "没钱",
    "你们是哪个银行",
    "手续费多少",
    "你是机器人吗",
    "转人工",
    "别再打了",
    "可以",
    "不需要",
    "利率多少",
    "好的",
    "嗯",
    "",
    "我在开车",
    "15号",
    "啊哈哈",
    "需要",
    "我没有逾期",
];

fn ev() -> impl Strategy<Value = Ev> {
    prop_oneof![
        6 => (0..PHRASES.len()).prop_map(Ev::Heard),
        1 => prop::sample::select(vec!['0', '1', '5', '#']).prop_map(Ev::Dtmf),
        2 => Just(Ev::NoInput),
        2 => Just(Ev::SpeechStarted),
        5 => Just(Ev::PromptFinished),
        1 => (0u64..30_000).prop_map(Ev::Wait),
        0 => Just(Ev::Hangup),
    ]
}

/// Drives a machine like a shell would: timers fire when due, outputs are drained after every
/// call. Returns the instant it ended.
fn drive(m: &mut Machine, t0: Instant, events: &[(Ev, u64)], hangup_at: Option<usize>) -> Instant {
    let mut now = t0;
    let drain = |m: &mut Machine| {
        let mut n = 0;
        while let Some(o) = m.poll_output() {
            n += 1;
            assert!(n < 1000, "unbounded outputs");
            if let Output::Hangup { .. } | Output::Transfer { .. } = o {
                // Terminal outputs come last or with records only.
            }
        }
    };
    m.handle_input(now, Input::CallAnswered);
    drain(m);
    for (i, (e, gap)) in events.iter().enumerate() {
        let target = now + Duration::from_millis(*gap);
        while let Some(d) = m.poll_timeout() {
            if d > target {
                break;
            }
            now = d.max(now);
            m.handle_timeout(now);
            drain(m);
        }
        now = target.max(now);
        if m.is_ended() {
            return now;
        }
        let input = match e {
            Ev::Heard(p) => Input::Heard(Heard {
                text: PHRASES[*p].to_owned(),
                start: now,
                end: now,
                confidence: 0.9,
            }),
            Ev::Dtmf(d) => Input::Dtmf(*d),
            Ev::NoInput => Input::NoInput,
            Ev::SpeechStarted => Input::SpeechStarted,
            Ev::PromptFinished => Input::PromptFinished,
            Ev::Hangup => Input::Hangup,
            Ev::Wait(ms) => {
                now += Duration::from_millis(*ms);
                continue;
            }
        };
        let input = if Some(i) == hangup_at {
            Input::Hangup
        } else {
            input
        };
        m.handle_input(now, input);
        drain(m);
    }
    // Nothing more from the customer: the machine must end on its timers alone.
    for _ in 0..10_000 {
        if m.is_ended() {
            return now;
        }
        let d = m.poll_timeout().expect("a live machine always has a timer");
        now = d.max(now);
        m.handle_timeout(now);
        drain(m);
    }
    panic!("machine did not end on its timers");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, .. ProptestConfig::default() })]

    #[test]
    fn random_calls_never_panic_and_end_within_limits(
        which in 0usize..2,
        events in prop::collection::vec((ev(), 0u64..8000), 0..80),
        hang in prop::option::of(0usize..80),
    ) {
        let key = ["card-repayment-reminder", "loan-follow-up"][which];
        let script = example(key);
        let vars = vaultcall::scriptctl::parse_vars(if which == 0 {
            "name=张先生,amount=3200,due_date=2026-12-05,card_tail=8861"
        } else {
            "name=李女士"
        }).unwrap();
        let vars = vaultcall::conversation::machine::bind_variables(&script, &vars).unwrap();
        let mut m = Machine::new(script.clone(), vars, "13800000000".into());
        let t0 = Instant::now();
        let ended = drive(&mut m, t0, &events, hang);
        prop_assert!(m.is_ended());
        let o = m.outcome().expect("outcome once ended");
        prop_assert!(o.facts.rounds <= script.max_rounds, "rounds {}", o.facts.rounds);
        prop_assert!(ended.duration_since(t0) <= script.max_duration, "ran {:?}", ended.duration_since(t0));
        prop_assert!(m.poll_output().is_none());
        prop_assert!(m.poll_timeout().is_none());
        // Determinism: the same inputs give the same outcome.
        let vars2 = vaultcall::conversation::machine::bind_variables(&script, &BTreeMap::from([
            ("name".to_owned(), if which == 0 { "张先生" } else { "李女士" }.to_owned()),
        ]).into_iter().chain(if which == 0 { vec![
            ("amount".to_owned(), "3200".to_owned()),
            ("due_date".to_owned(), "2026-12-05".to_owned()),
            ("card_tail".to_owned(), "8861".to_owned()),
        ] } else { vec![] }).collect()).unwrap();
        let mut m2 = Machine::new(script, vars2, "13800000000".into());
        drive(&mut m2, t0, &events, hang);
        prop_assert_eq!(m.outcome(), m2.outcome());
    }
}

// ------------------------------------------------------------------ validation defect classes

const BASE: &str = r#"
[script]
key = "mini"
name = "最小话术"
voice = "zh-female-1"

[settings]
start = "ask"
max_rounds = 6
max_duration_secs = 120

[settings.closing]
max_rounds = "再见。"
max_duration = "再见。"
error = "再见。"

[settings.no_input]
reprompts = ["您好？"]
then = "bye"

[settings.no_match]
clarify = ["没听清。"]
then = "bye"

[variables.name]
type = "string"
required = true

[[intents]]
name = "yes"
label = "肯定"
rules = [{ any = ["是的"] }]

[[intents]]
name = "no"
label = "否定"
rules = [{ any = ["是"], negated = true }]

[[nodes]]
id = "ask"
prompts = ["请问是{name}吗？"]
branches = [{ intent = "yes", goto = "bye" }, { intent = "no", goto = "bye" }]

[[nodes]]
id = "bye"
kind = "end"
reason = "completed"
prompts = ["再见。"]

[grading]
default_level = "B"
levels = [{ id = "A", name = "A级" }, { id = "B", name = "B级" }]

[[grading.rules]]
name = "yes"
level = "A"
when = "hit('yes')"
"#;

/// Writes a variant of the base script and runs `vaultcall script validate` on it.
fn validate_variant(edit: impl Fn(&str) -> String) -> (Option<i32>, String, String) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("s.toml");
    std::fs::write(&p, edit(BASE)).unwrap();
    let o = common::vaultcall(&["script", "validate", p.to_str().unwrap()]);
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn assert_problem(edit: impl Fn(&str) -> String, kind: ProblemKind, node: Option<&str>) {
    let (code, out, err) = validate_variant(edit);
    assert_eq!(code, Some(78), "stdout:\n{out}\nstderr:\n{err}");
    let line = out
        .lines()
        .find(|l| l.ends_with(&format!("[{}]", kind.as_str())))
        .unwrap_or_else(|| panic!("no {} problem in:\n{out}", kind.as_str()));
    if let Some(n) = node {
        assert!(line.contains(&format!("node '{n}'")), "{line}");
    }
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn base_script_is_valid() {
    let (code, out, err) = validate_variant(str::to_owned);
    assert_eq!(code, Some(0), "{out}{err}");
}

#[test]
fn defect_unreachable_node() {
    assert_problem(
        |b| {
            format!(
                "{b}\n[[nodes]]\nid = \"orphan\"\nkind = \"end\"\nreason = \"completed\"\nprompts = [\"再见。\"]\n"
            )
        },
        ProblemKind::Unreachable,
        Some("orphan"),
    );
}

#[test]
fn defect_jump_to_missing_node() {
    assert_problem(
        |b| {
            b.replace(
                r#"{ intent = "no", goto = "bye" }"#,
                r#"{ intent = "no", goto = "byee" }"#,
            )
        },
        ProblemKind::MissingNode,
        Some("ask"),
    );
}

#[test]
fn defect_undeclared_variable() {
    assert_problem(
        |b| b.replace("请问是{name}吗？", "请问是{nmae}吗？"),
        ProblemKind::UndeclaredVariable,
        Some("ask"),
    );
}

#[test]
fn defect_loop_without_exit() {
    // "loop_a" ⇄ "loop_b": every exit of both leads back into the loop.
    let nodes = r#"
[[nodes]]
id = "loop_a"
prompts = ["确定吗？"]
branches = [{ intent = "yes", goto = "loop_b" }]
no_input = { then = "loop_b" }
no_match = { then = "loop_b" }

[[nodes]]
id = "loop_b"
prompts = ["真的确定吗？"]
branches = [{ intent = "yes", goto = "loop_a" }]
no_input = { then = "loop_a" }
no_match = { then = "loop_a" }
"#;
    assert_problem(
        move |b| {
            b.replace(
                r#"{ intent = "no", goto = "bye" }"#,
                r#"{ intent = "no", goto = "loop_a" }"#,
            ) + nodes
        },
        ProblemKind::LoopWithoutExit,
        Some("loop_a"),
    );
}

#[test]
fn defect_prompt_too_long() {
    let long = "您好，".repeat(60);
    assert_problem(
        move |b| b.replace("请问是{name}吗？", &long),
        ProblemKind::PromptTooLong,
        Some("ask"),
    );
}

#[test]
fn defect_rule_that_can_never_match() {
    // A keyword both required and vetoed.
    assert_problem(
        |b| {
            b.replace(
                r#"rules = [{ any = ["是的"] }]"#,
                r#"rules = [{ all = ["是的"], not = ["是的"] }]"#,
            )
        },
        ProblemKind::NeverMatches,
        None,
    );
    // A second branch for the same intent at a node.
    assert_problem(
        |b| {
            b.replace(
                r#"{ intent = "no", goto = "bye" }]"#,
                r#"{ intent = "no", goto = "bye" }, { intent = "yes", goto = "bye" }]"#,
            )
        },
        ProblemKind::NeverMatches,
        Some("ask"),
    );
    // A grading rule that cannot hold within the limits.
    let (code, out, _) =
        validate_variant(|b| b.replace("when = \"hit('yes')\"", "when = \"duration > 600\""));
    assert_eq!(code, Some(78));
    assert!(
        out.contains("grading.rules[0] 'yes'.when") && out.contains("[never_matches]"),
        "{out}"
    );
}

#[test]
fn defect_missing_audio_file() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("present.wav"), b"RIFF").unwrap();
    let text = BASE.replace(
        r#"prompts = ["再见。"]"#,
        r#"prompts = [{ text = "再见。", audio = "present.wav" }, { text = "再见！", audio = "audio/missing.wav" }]"#,
    );
    let p = d.path().join("s.toml");
    std::fs::write(&p, text).unwrap();
    let o = common::vaultcall(&["script", "validate", p.to_str().unwrap()]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(78), "{out}");
    assert_eq!(out.lines().count(), 1, "only the missing file: {out}");
    assert!(
        out.contains("node 'bye'")
            && out.contains("audio/missing.wav")
            && out.contains("[missing_audio]"),
        "{out}"
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let (code, out, _) = validate_variant(|b| {
        b.replace("请问是{name}吗？", "请问是{x}吗？")
            .replace(r#"goto = "bye" }]"#, r#"goto = "nowhere" }]"#)
            + "\n[[nodes]]\nid = \"orphan\"\nkind = \"end\"\nreason = \"refused\"\n"
    });
    assert_eq!(code, Some(78));
    for k in ["undeclared_variable", "missing_node", "unreachable"] {
        assert!(out.contains(&format!("[{k}]")), "{k} missing from:\n{out}");
    }
}

#[test]
fn syntax_errors_name_the_line() {
    let (code, out, _) = validate_variant(|b| b.replace("max_rounds = 6", "max_rounds = \"six\""));
    assert_eq!(code, Some(78));
    assert!(out.contains("line 9") && out.contains("[syntax]"), "{out}");
}

// ------------------------------------------------------------------ schema and CLI

#[test]
fn published_json_schema_matches_the_code() {
    let committed =
        std::fs::read_to_string(root().join("docs/script.schema.json")).unwrap_or_default();
    let generated = Script::json_schema();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(root().join("docs/script.schema.json"), &generated).unwrap();
        return;
    }
    assert!(
        committed == generated,
        "docs/script.schema.json is stale: run `vaultcall script schema > docs/script.schema.json`"
    );
    let o = common::vaultcall(&["script", "schema"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), generated);
}

#[test]
fn examples_validate_and_have_at_least_ten_nodes() {
    for key in ["card-repayment-reminder", "loan-follow-up"] {
        let p = root().join(format!("packaging/scripts/{key}.toml"));
        let o = common::vaultcall(&["script", "validate", p.to_str().unwrap()]);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stdout)
        );
        let s = example(key);
        assert!(s.nodes.len() >= 10);
        assert!(s.nodes.iter().any(|n| n.kind == NodeKind::Knowledge));
        assert!(s.nodes.iter().any(|n| n.kind == NodeKind::Transfer));
        assert!(!s.grader.rules.is_empty());
    }
}

#[test]
fn simulate_transcript_prints_json_and_usage_errors_exit_64() {
    let script = root().join("packaging/scripts/card-repayment-reminder.toml");
    let t = root().join("tests/scripts/card-repayment-reminder/c01_knowledge_then_promise.txt");
    let o = common::vaultcall(&[
        "script",
        "simulate",
        script.to_str().unwrap(),
        "--transcript",
        t.to_str().unwrap(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["outcome"]["grade"]["level"], "A");
    assert_eq!(v["outcome"]["end"], "completed");
    assert!(v["events"].as_array().unwrap().len() > 10);
    // --vars overrides the transcript's own "# vars:" header.
    let with_vars = |transcript: &Path| {
        common::vaultcall(&[
            "script",
            "simulate",
            script.to_str().unwrap(),
            "--vars",
            "name=张先生",
            "--transcript",
            transcript.to_str().unwrap(),
        ])
    };
    assert_eq!(with_vars(&t).status.code(), Some(0));
    // A missing required variable is a usage error naming it.
    let empty = tempfile::NamedTempFile::new().unwrap();
    let o = with_vars(empty.path());
    assert_eq!(o.status.code(), Some(64));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("'amount' is required"), "{err}");
    assert!(!err.contains("张先生"), "values are not echoed: {err}");
    let o = common::vaultcall(&[
        "script",
        "simulate",
        script.to_str().unwrap(),
        "--vars",
        "name",
    ]);
    assert_eq!(o.status.code(), Some(64));
}

#[test]
fn interactive_console_shows_node_intent_tags_and_level() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let script = root().join("packaging/scripts/card-repayment-reminder.toml");
    let mut child = Command::new(common::BIN)
        .args([
            "script",
            "simulate",
            script.to_str().unwrap(),
            "--vars",
            "name=张先生,amount=3200,due_date=2026-12-05,card_tail=8861",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all("是我\n/bogus\n我已经还了\n".as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}");
    for want in [
        "机器人 [opening",
        "意图：肯定（affirm）",
        "规则：",
        "标签：已还款",
        "评级：A级",
        "原因：A级：标签'已还款'",
        "unknown command",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
}

fn cli_config(dir: &Path) -> PathBuf {
    let p = dir.join("vaultcall.toml");
    std::fs::write(&p, format!("[paths]\ndata_dir = \"{}\"\n", dir.display())).unwrap();
    p
}

#[test]
fn import_publish_list_export_lifecycle() {
    let d = tempfile::tempdir().unwrap();
    let cfg = cli_config(d.path());
    let cfg = cfg.to_str().unwrap();
    let script = root().join("packaging/scripts/loan-follow-up.toml");
    let s = script.to_str().unwrap();
    let run = |args: &[&str]| {
        let mut a = args.to_vec();
        a.extend(["--config", cfg]);
        let o = common::vaultcall(&a);
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&["script", "import", s]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("loan-follow-up draft version 1"), "{out}");
    let (_, out, _) = run(&["script", "import", s]);
    assert!(out.contains("already has this content"), "{out}");
    let (code, out, _) = run(&["script", "publish", "loan-follow-up"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("version 1 published"), "{out}");
    let (code, _, err) = run(&["script", "publish", "loan-follow-up"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no draft"), "{err}");
    // An edited copy becomes draft version 2; export gives back exactly what was imported.
    let edited = d.path().join("edited.toml");
    let text = std::fs::read_to_string(&script).unwrap();
    let text2 = text.replace("感谢您的接听，祝您生活愉快，再见！", "感谢您的接听，再见！");
    std::fs::write(&edited, &text2).unwrap();
    let (code, out, _) = run(&["script", "import", edited.to_str().unwrap()]);
    assert_eq!(code, Some(0));
    assert!(out.contains("draft version 2"), "{out}");
    let (_, list, _) = run(&["script", "list"]);
    assert!(
        list.contains("published") && list.contains("draft"),
        "{list}"
    );
    let (_, v1, _) = run(&["script", "export", "loan-follow-up"]);
    assert_eq!(v1, text, "default export is the published version");
    let (_, v2, _) = run(&["script", "export", "loan-follow-up", "--version", "2"]);
    assert_eq!(v2, text2);
    let (code, _, _) = run(&["script", "export", "loan-follow-up", "--version", "9"]);
    assert_eq!(code, Some(1));
    // An invalid script is refused with 78 and stored nowhere.
    let bad = d.path().join("bad.toml");
    std::fs::write(
        &bad,
        text.replace("goto = \"thanks_end\"", "goto = \"nowhere\"")
            .replace("next = \"thanks_end\"", "next = \"nowhere\""),
    )
    .unwrap();
    let (code, out, _) = run(&["script", "import", bad.to_str().unwrap()]);
    assert_eq!(code, Some(78));
    assert!(out.contains("[missing_node]"), "{out}");
    // Every change is in the audit log.
    assert_eq!(
        script_audit_entries(&d.path().join("vaultcall.db")),
        3,
        "import, publish, import"
    );
}

/// Script entries in the audit log, read through the library's store.
fn script_audit_entries(db: &Path) -> i64 {
    let store =
        vaultcall::store::Store::open(db, &vaultcall::config::Config::default().store, 0).unwrap();
    let n = store
        .read(|c| {
            Ok(c.query_row(
                "SELECT count(*) FROM audit_log WHERE action LIKE 'script.%'",
                [],
                |r| r.get(0),
            )?)
        })
        .unwrap();
    store.close();
    n
}
