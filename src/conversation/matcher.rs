//! Intent matching: what the customer said → which intent, with a confidence and the rule that
//! matched, kept for the record.
//!
//! An utterance is normalised ([`super::normalize`]), cut into words by jieba with the default
//! dictionary plus the script's words and every keyword, and split into clauses at punctuation.
//! Keyword rules look for whole words (a keyword of two or more characters also matches inside
//! a longer word), and a keyword counts as *negated* when a negation word stands right before
//! it in the same clause ("不需要", "没有逾期", "不太需要") or the word itself starts with one
//! ("不需要" cut as one word). Negated keywords do not match ordinary rules; rules with
//! `negated = true` match only them.
//!
//! [`IntentClassifier`] is the interface the call flow uses; [`KeywordMatcher`] implements it
//! with the script's rules. A model-based classifier can implement it later; the machine only
//! sees hits with confidences and rule descriptions.

use std::fmt;

use jieba_rs::Jieba;
use regex::Regex;
use serde::Serialize;

use super::normalize::{core_phrase, is_clause_break, is_punct, normalize};

/// Words that negate the keyword right after them.
const NEGATORS: &[&str] = &[
    "不", "没", "没有", "别", "不要", "未", "无", "非", "不用", "不想", "不会", "不是", "不太",
    "不再", "并不", "从不", "从没", "不能", "绝不", "甭", "毫无", "无需", "不必", "不需",
];

/// Words that may stand between a negation and its keyword ("不太需要", "没有什么逾期").
const DEGREE_WORDS: &[&str] = &[
    "太", "很", "怎么", "什么", "大", "再", "是", "有", "用", "想", "会", "能", "一定", "真的",
    "需", "要", "多", "任何",
];

/// A word of an utterance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Word {
    /// The word (normalised).
    pub text: String,
    /// Which clause it is in (0-based).
    pub clause: u32,
}

/// An utterance prepared for matching.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Utterance {
    /// The normalised text.
    pub normalized: String,
    /// The text reduced for exact comparison (no punctuation, no trailing particles).
    pub core: String,
    /// Words without punctuation, in order.
    pub words: Vec<Word>,
}

/// Cuts utterances into words with jieba and a custom dictionary.
#[derive(Clone)]
pub struct Tokenizer {
    jieba: Jieba,
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Tokenizer")
    }
}

impl Tokenizer {
    /// The default dictionary plus `words` (normalised; kept whole when cutting).
    pub fn new<'a>(words: impl IntoIterator<Item = &'a str>) -> Self {
        let mut jieba = Jieba::new();
        for w in words {
            let w = normalize(w);
            let w = w.trim();
            if w.chars().count() >= 2 && !w.chars().any(is_punct) {
                // Frequency high enough that the word wins over splits of it.
                let f = jieba.suggest_freq(w).max(2000);
                jieba.add_word(w, Some(f), None);
            }
        }
        Self { jieba }
    }

    /// Normalises and cuts `raw`.
    pub fn utterance(&self, raw: &str) -> Utterance {
        let normalized = normalize(raw);
        let core = core_phrase(&normalized);
        let mut words = Vec::new();
        let mut clause = 0u32;
        for t in self.jieba.cut(&normalized, true) {
            if t.word.chars().any(is_clause_break) {
                clause += 1;
            }
            if t.word.chars().all(is_punct) {
                continue;
            }
            words.push(Word {
                text: t.word.to_owned(),
                clause,
            });
        }
        Utterance {
            normalized,
            core,
            words,
        }
    }
}

/// A recognised intent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IntentHit {
    /// Index of the intent in the script.
    pub intent: usize,
    /// 0–1.
    pub confidence: f32,
    /// The rule that matched, e.g. `rules[1] any:办理`.
    pub rule: String,
}

/// Recognises intents in an utterance. The call flow asks it about the intents that apply at
/// the current point (node branches, knowledge and global intents) and picks among the hits by
/// priority; implementations only say what they recognise and how sure they are.
pub trait IntentClassifier: fmt::Debug + Send + Sync {
    /// The candidates (intent indices) recognised in `u`, each at most once.
    fn classify(&self, u: &Utterance, candidates: &[usize]) -> Vec<IntentHit>;
}

/// One compiled rule.
#[derive(Debug, Clone)]
pub struct KeywordRule {
    /// Any of these (normalised).
    pub any: Vec<String>,
    /// All of these.
    pub all: Vec<String>,
    /// The core phrase is one of these.
    pub exact: Vec<String>,
    /// Regex on the normalised text.
    pub regex: Option<Regex>,
    /// Vetoes.
    pub not: Vec<String>,
    /// Match negated keywords only.
    pub negated: bool,
    /// Fixed confidence.
    pub confidence: Option<f32>,
}

/// The rules of one intent.
#[derive(Debug, Clone)]
pub struct KeywordIntent {
    /// Alternatives.
    pub rules: Vec<KeywordRule>,
}

/// The keyword/regex classifier built from a script's intents.
#[derive(Debug, Clone)]
pub struct KeywordMatcher {
    /// Indexed like the script's intents.
    pub intents: Vec<KeywordIntent>,
}

impl IntentClassifier for KeywordMatcher {
    fn classify(&self, u: &Utterance, candidates: &[usize]) -> Vec<IntentHit> {
        let mut hits = Vec::new();
        for &i in candidates {
            if hits.iter().any(|h: &IntentHit| h.intent == i) {
                continue;
            }
            let Some(intent) = self.intents.get(i) else {
                continue;
            };
            let best = intent
                .rules
                .iter()
                .enumerate()
                .filter_map(|(n, r)| {
                    r.check(u)
                        .map(|(c, what)| (c, format!("rules[{n}] {what}")))
                })
                .fold(None::<(f32, String)>, |acc, x| match acc {
                    Some(a) if a.0 >= x.0 => Some(a),
                    _ => Some(x),
                });
            if let Some((confidence, rule)) = best {
                hits.push(IntentHit {
                    intent: i,
                    confidence,
                    rule,
                });
            }
        }
        hits
    }
}

/// Where a keyword occurs: plainly and/or negated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Occurrence {
    /// Occurs without a negation.
    pub plain: bool,
    /// Occurs negated.
    pub negated: bool,
}

fn is_negator(w: &str) -> bool {
    NEGATORS.contains(&w)
}

/// Whether the word before position `i` (same clause) negates it. An A-not-A question
/// ("要不要办理", "是不是本人", "需要不需要") is not a negation.
fn negated_before(words: &[Word], i: usize) -> bool {
    let clause = words[i].clause;
    let at = |j: Option<usize>| j.and_then(|j| words.get(j)).filter(|w| w.clause == clause);
    let neg_at = match (at(i.checked_sub(1)), at(i.checked_sub(2))) {
        (Some(p), _) if is_negator(&p.text) => i - 1,
        (Some(p), Some(pp)) if DEGREE_WORDS.contains(&p.text.as_str()) && is_negator(&pp.text) => {
            i - 2
        }
        _ => return false,
    };
    let neg = words[neg_at].text.as_str();
    let rest = neg.trim_start_matches(['不', '没']);
    match at(neg_at.checked_sub(1)) {
        Some(before) => {
            !(before.text == words[i].text || (!rest.is_empty() && before.text == rest))
        }
        None => true,
    }
}

/// Finds `kw` (normalised) among the words of `u`.
pub fn occurrence(u: &Utterance, kw: &str) -> Occurrence {
    let mut occ = Occurrence::default();
    if kw.is_empty() {
        return occ;
    }
    let long = kw.chars().count() >= 2;
    let words = &u.words;
    for i in 0..words.len() {
        // A run of whole words spelling the keyword.
        let mut acc = String::new();
        let mut whole = false;
        for w in &words[i..] {
            if w.clause != words[i].clause {
                break;
            }
            acc.push_str(&w.text);
            if acc.len() >= kw.len() {
                whole = acc == kw;
                break;
            }
        }
        let inside = if whole {
            Some("")
        } else if let Some(n) = NEGATORS
            .iter()
            .find(|n| words[i].text.strip_prefix(**n) == Some(kw))
        {
            // A negation and the keyword cut as one word: "不是", "没有", "不要".
            Some(*n)
        } else if long {
            // Inside a longer word: "还款日" for "还款"; what precedes it may negate it.
            words[i].text.find(kw).map(|at| &words[i].text[..at])
        } else {
            None
        };
        let Some(prefix) = inside else { continue };
        let neg = if prefix.is_empty() {
            negated_before(words, i)
        } else {
            NEGATORS.iter().any(|n| prefix.ends_with(n))
        };
        if neg {
            occ.negated = true;
        } else {
            occ.plain = true;
        }
    }
    occ
}

impl KeywordRule {
    /// Whether the rule matches; the confidence and what matched.
    pub fn check(&self, u: &Utterance) -> Option<(f32, String)> {
        let found = |kw: &str| {
            let o = occurrence(u, kw);
            if self.negated { o.negated } else { o.plain }
        };
        if self.not.iter().any(|kw| occurrence(u, kw).plain) {
            return None;
        }
        let neg = if self.negated { "negated " } else { "" };
        let mut parts: Vec<(f32, String)> = Vec::new();
        if !self.exact.is_empty() {
            let p = self.exact.iter().find(|p| **p == u.core)?;
            parts.push((1.0, format!("exact:{p}")));
        }
        if !self.all.is_empty() {
            if !self.all.iter().all(|k| found(k)) {
                return None;
            }
            parts.push((0.9, format!("{neg}all:{}", self.all.join("+"))));
        }
        if !self.any.is_empty() {
            let k = self.any.iter().find(|k| found(k))?;
            let total = u.core.chars().count().max(1) as f32;
            let cover = (k.chars().count() as f32 / total).min(1.0);
            parts.push((0.6 + 0.35 * cover, format!("{neg}any:{k}")));
        }
        if let Some(re) = &self.regex {
            if !re.is_match(&u.normalized) {
                return None;
            }
            parts.push((0.9, format!("regex:{}", re.as_str())));
        }
        let conf = parts.iter().map(|p| p.0).fold(0.0f32, f32::max);
        let what = parts.into_iter().map(|p| p.1).collect::<Vec<_>>().join(" ");
        if what.is_empty() {
            return None;
        }
        Some((self.confidence.unwrap_or(conf).clamp(0.0, 1.0), what))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    fn tok() -> &'static Tokenizer {
        static T: OnceLock<Tokenizer> = OnceLock::new();
        T.get_or_init(|| Tokenizer::new(["逾期", "需要", "办理", "分期还款", "本人", "手续费"]))
    }

    fn rule(any: &[&str]) -> KeywordRule {
        KeywordRule {
            any: any.iter().map(|s| normalize(s)).collect(),
            all: vec![],
            exact: vec![],
            regex: None,
            not: vec![],
            negated: false,
            confidence: None,
        }
    }

    fn hit(r: &KeywordRule, text: &str) -> bool {
        r.check(&tok().utterance(text)).is_some()
    }

    #[test]
    fn negation_is_not_the_keyword() {
        let need = rule(&["需要"]);
        assert!(hit(&need, "我需要"));
        assert!(hit(&need, "需要的，你说吧"));
        assert!(!hit(&need, "不需要"));
        assert!(!hit(&need, "我不太需要"));
        assert!(!hit(&need, "真的不需要了谢谢"));
        let overdue = rule(&["逾期"]);
        assert!(!hit(&overdue, "我没有逾期"));
        assert!(!hit(&overdue, "没逾期啊"));
        assert!(hit(&overdue, "逾期了几天"));
        // A negation in another clause does not reach the keyword.
        assert!(hit(&need, "不是，我需要"));
        // A-not-A questions are not negations.
        assert!(hit(&rule(&["办理"]), "要不要办理"));
        assert!(hit(&need, "你需要不需要"));
        // "不知道" is not a negation of what follows.
        assert!(hit(&need, "我不知道需要多少"));
    }

    #[test]
    fn negated_rules_match_only_negations() {
        let mut r = rule(&["需要"]);
        r.negated = true;
        assert!(hit(&r, "不需要"));
        assert!(hit(&r, "我们不需要这个"));
        assert!(!hit(&r, "需要"));
    }

    #[test]
    fn single_characters_match_whole_words_only() {
        let yes = rule(&["是"]);
        assert!(hit(&yes, "是"));
        assert!(hit(&yes, "对，是我"));
        assert!(!hit(&yes, "但是"));
        assert!(!hit(&yes, "不是"));
        let mut neg_yes = rule(&["是"]);
        neg_yes.negated = true;
        assert!(
            hit(&neg_yes, "不是"),
            "negation and keyword cut as one word"
        );
    }

    #[test]
    fn all_exact_regex_not() {
        let u = |t: &str| tok().utterance(t);
        let mut r = rule(&[]);
        r.all = vec!["我".into(), "本人".into()];
        assert!(r.check(&u("我就是本人")).is_some());
        assert!(r.check(&u("本人不在")).is_none());
        let mut r = rule(&[]);
        r.exact = vec!["是的".into()];
        let (c, what) = r.check(&u("嗯，是的啊。")).unwrap();
        assert_eq!((c, what.as_str()), (1.0, "exact:是的"));
        assert!(r.check(&u("是的但我没钱")).is_none());
        let mut r = rule(&[]);
        r.regex = Some(Regex::new(r"(\d+)号").unwrap());
        assert!(
            r.check(&u("十五号还")).is_some(),
            "numerals are normalised first"
        );
        let mut r = rule(&["办理"]);
        r.not = vec!["怎么".into()];
        assert!(r.check(&u("可以办理")).is_some());
        assert!(r.check(&u("怎么办理")).is_none());
    }

    #[test]
    fn normalisation_applies_to_utterances() {
        let fee = rule(&["手续费"]);
        assert!(hit(&fee, "手續費多少"), "traditional characters");
        let mut r = rule(&[]);
        r.exact = vec!["好的".into()];
        assert!(
            r.check(&tok().utterance("好的！")).is_some(),
            "full-width punctuation"
        );
    }

    #[test]
    fn confidence_grows_with_coverage_and_best_rule_is_reported() {
        let m = KeywordMatcher {
            intents: vec![KeywordIntent {
                rules: vec![rule(&["办理"]), {
                    let mut r = rule(&[]);
                    r.exact = vec!["办理".into()];
                    r
                }],
            }],
        };
        let short = m.classify(&tok().utterance("办理"), &[0]);
        assert_eq!(short[0].rule, "rules[1] exact:办理");
        assert_eq!(short[0].confidence, 1.0);
        let long = m.classify(&tok().utterance("那我考虑一下再说要不要办理吧"), &[0]);
        assert_eq!(long[0].rule, "rules[0] any:办理");
        assert!(long[0].confidence < 0.8, "{}", long[0].confidence);
        assert!(m.classify(&tok().utterance("你好"), &[0]).is_empty());
    }
}
