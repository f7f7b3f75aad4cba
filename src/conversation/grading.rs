//! Grading: the level (A/B/C/D, names and colours from the script) a call gets, decided by the
//! first grading rule whose condition holds over the call's facts, with the rule's name and a
//! human-readable reason stored with the call ("A级：命中'同意办理'且通话≥30秒").

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::expr::{self, Expr};
use super::script::EndReason;

/// What is known about a call when it ends: the facts grading rules are written over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallFacts {
    /// Customer turns handled (speech, key presses, silences).
    pub rounds: u32,
    /// Seconds from answer to end.
    pub duration_secs: u32,
    /// Sum of node and branch scores.
    pub score: i32,
    /// Turns whose intent is a refusal.
    pub refusals: u32,
    /// Silences.
    pub no_inputs: u32,
    /// Turns not understood.
    pub no_matches: u32,
    /// Turns in which the customer spoke or pressed a key.
    pub customer_turns: u32,
    /// Knowledge answers given.
    pub knowledge: u32,
    /// Why the call ended.
    pub end: EndReason,
    /// Intents recognised, with how often.
    pub intents: BTreeMap<String, u32>,
    /// Call tags.
    pub tags: BTreeSet<String>,
    /// Nodes passed through.
    pub visited: BTreeSet<String>,
    /// Variables filled during the call.
    pub captured: BTreeSet<String>,
}

/// A level as configured in the script.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LevelInfo {
    /// Identifier (`A`).
    pub id: String,
    /// Display name (`A级`).
    pub name: String,
    /// Meaning (`有意向`).
    pub label: String,
    /// Display colour.
    pub color: Option<String>,
}

/// A compiled grading rule.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledRule {
    /// Rule name.
    pub name: String,
    /// Index into the levels.
    pub level: usize,
    /// The condition.
    pub when: Expr,
    /// The reason text without the level prefix.
    pub reason: String,
}

/// The grading of a script, ready to apply.
#[derive(Debug, Clone, PartialEq)]
pub struct Grader {
    /// Levels, best first.
    pub levels: Vec<LevelInfo>,
    /// Level given when no rule matches.
    pub default_level: usize,
    /// Rules in order.
    pub rules: Vec<CompiledRule>,
}

/// The grade of one call, as stored with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Grade {
    /// Level id (`A`).
    pub level: String,
    /// Level name (`A级`).
    pub level_name: String,
    /// Level meaning (`有意向`).
    pub level_label: String,
    /// Level colour.
    pub color: Option<String>,
    /// The rule that decided it; `None` when the default level applied.
    pub rule: Option<String>,
    /// Human-readable reason, e.g. "A级：命中'同意办理'且通话≥30秒".
    pub reason: String,
}

impl Grader {
    /// Grades a call: the first rule whose condition holds decides.
    pub fn grade(&self, facts: &CallFacts) -> Grade {
        let hit = self.rules.iter().find(|r| expr::eval(&r.when, facts));
        let (idx, rule, why) = match hit {
            Some(r) => (r.level, Some(r.name.clone()), r.reason.clone()),
            None => (self.default_level, None, "未命中任何规则".to_owned()),
        };
        let fallback = LevelInfo {
            id: "?".into(),
            name: "?".into(),
            label: String::new(),
            color: None,
        };
        // Compilation checks every index; the fallback only keeps this total.
        let level = self.levels.get(idx).unwrap_or(&fallback);
        Grade {
            level: level.id.clone(),
            level_name: level.name.clone(),
            level_label: level.label.clone(),
            color: level.color.clone(),
            rule,
            reason: format!("{}：{why}", level.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(id: &str, name: &str) -> LevelInfo {
        LevelInfo {
            id: id.into(),
            name: name.into(),
            label: String::new(),
            color: Some("#2e7d32".into()),
        }
    }

    fn grader() -> Grader {
        let rule = |name: &str, level: usize, when: &str, reason: &str| CompiledRule {
            name: name.into(),
            level,
            when: expr::parse(when).unwrap(),
            reason: reason.into(),
        };
        Grader {
            levels: vec![level("A", "A级"), level("B", "B级"), level("D", "D级")],
            default_level: 1,
            rules: vec![
                rule(
                    "agree_long",
                    0,
                    "hit('agree') and duration >= 30",
                    "命中'同意办理'且通话≥30秒",
                ),
                rule(
                    "refused",
                    2,
                    "refusals >= 1 or end == 'refused'",
                    "客户拒绝",
                ),
            ],
        }
    }

    fn facts(duration: u32, agree: bool, refusals: u32) -> CallFacts {
        let mut intents = BTreeMap::new();
        if agree {
            intents.insert("agree".to_owned(), 1);
        }
        CallFacts {
            rounds: 3,
            duration_secs: duration,
            score: 0,
            refusals,
            no_inputs: 0,
            no_matches: 0,
            customer_turns: 3,
            knowledge: 0,
            end: EndReason::Completed,
            intents,
            tags: BTreeSet::new(),
            visited: BTreeSet::new(),
            captured: BTreeSet::new(),
        }
    }

    #[test]
    fn first_matching_rule_wins_with_reason() {
        let g = grader().grade(&facts(45, true, 1));
        assert_eq!(g.level, "A");
        assert_eq!(g.rule.as_deref(), Some("agree_long"));
        assert_eq!(g.reason, "A级：命中'同意办理'且通话≥30秒");
        assert_eq!(g.color.as_deref(), Some("#2e7d32"));
    }

    #[test]
    fn later_rules_and_default() {
        let g = grader().grade(&facts(20, true, 1));
        assert_eq!(
            (g.level.as_str(), g.rule.as_deref()),
            ("D", Some("refused"))
        );
        let g = grader().grade(&facts(20, true, 0));
        assert_eq!(g.level, "B");
        assert_eq!(g.rule, None);
        assert_eq!(g.reason, "B级：未命中任何规则");
    }
}
