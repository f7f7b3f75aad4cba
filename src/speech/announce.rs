//! Early-media announcement classifier: what the carrier's recording says before an answer
//! (您拨打的号码是空号 / 已关机 / 已停机 / 已欠费 / 暂时无法接通 / 正在通话中 / 已设置呼入限制…,
//! usually followed by "Sorry, the number you dialed…") decides the call's status code without
//! waiting for a SIP final response that often says nothing useful (183 then 480 or 503).
//!
//! Classification runs on the ASR transcript with keyword rules: the operator's rules from
//! `[[speech.announcements.rules]]` first, then the built-in ones below. Both the transcript
//! and the keywords are converted to Simplified characters with punctuation removed (numerals
//! stay as written: "暂时无法" must not become digits). When no keyword occurs as written, a stretch that sounds like one
//! (pinyin similarity ≥ 0.75, as for hotwords) counts: the recogniser often hears 空号 as
//! 恐厚 or 关机 as 关键 on a noisy line. Each class maps to a status code through
//! [`crate::sip::outcome::Ending::Announcement`].

use crate::config::AnnouncementRule;
use crate::conversation::normalize::to_simplified;
use crate::sip::outcome::{Ending, StatusCode};
use crate::speech::asr::hotwords::{Pinyin, similarity};

/// What an announcement says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// 空号: the number does not exist.
    EmptyNumber,
    /// 关机: the phone is off.
    PoweredOff,
    /// 停机: the line is suspended.
    Suspended,
    /// 欠费: suspended for arrears.
    Arrears,
    /// 无法接通 / 不在服务区: cannot be reached now.
    Unreachable,
    /// 正在通话中: busy.
    Busy,
    /// 呼入限制: the callee does not accept calls.
    CallInRestricted,
    /// An announcement we do not know (or not one at all).
    Other,
}

impl Class {
    /// Config names, in [`Class`] order.
    pub const NAMES: &'static [&'static str] = &[
        "empty_number",
        "powered_off",
        "suspended",
        "arrears",
        "unreachable",
        "busy",
        "call_in_restricted",
        "other",
    ];

    /// Parses a config name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "empty_number" => Self::EmptyNumber,
            "powered_off" => Self::PoweredOff,
            "suspended" => Self::Suspended,
            "arrears" => Self::Arrears,
            "unreachable" => Self::Unreachable,
            "busy" => Self::Busy,
            "call_in_restricted" => Self::CallInRestricted,
            "other" => Self::Other,
            _ => return None,
        })
    }

    /// The call status code (docs/status-codes.md); `None` for [`Class::Other`], which leaves
    /// the outcome to SIP.
    pub fn status_code(self) -> Option<StatusCode> {
        match self {
            Self::EmptyNumber => Some(StatusCode::EmptyNumber),
            Self::PoweredOff | Self::Unreachable => Some(StatusCode::PoweredOff),
            Self::Suspended => Some(StatusCode::Suspended),
            Self::Arrears => Some(StatusCode::Arrears),
            Self::Busy => Some(StatusCode::Busy),
            Self::CallInRestricted => Some(StatusCode::CallInRestricted),
            Self::Other => None,
        }
    }

    /// The call's ending when the robot hangs up on this announcement.
    pub fn ending(self) -> Option<Ending> {
        self.status_code().map(Ending::Announcement)
    }
}

/// Built-in keywords, most specific first (欠费 before 停机: "因欠费已停机" is arrears).
const BUILT_IN: &[(Class, &[&str])] = &[
    (
        Class::EmptyNumber,
        &["空号", "号码不存在", "不存在", "查证后再拨", "核对后再拨"],
    ),
    (Class::Arrears, &["欠费"]),
    (Class::Suspended, &["停机", "已暂停服务", "暂停服务"]),
    (Class::PoweredOff, &["关机"]),
    (
        Class::CallInRestricted,
        &["呼入限制", "限制呼入", "拒绝接听", "设置了呼入"],
    ),
    (Class::Busy, &["正在通话", "通话中", "用户忙", "占线"]),
    (
        Class::Unreachable,
        &["无法接通", "不在服务区", "暂时无法", "不能接通", "无人接听"],
    ),
];

/// Lowest pinyin similarity at which a keyword counts as heard.
pub const FUZZY_THRESHOLD: f64 = 0.75;

/// The classifier: operator rules then built-in ones.
#[derive(Debug, Clone)]
pub struct Classifier {
    rules: Vec<(Class, Vec<String>)>,
}

/// A decision with the keyword that made it (for the call record).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Decision {
    /// The class.
    pub class: Class,
    /// The matching keyword (normalised); empty for [`Class::Other`].
    pub keyword: String,
}

impl Classifier {
    /// Operator rules (validated by the config) before the built-in ones.
    pub fn new(operator: &[AnnouncementRule]) -> Self {
        let mut rules: Vec<(Class, Vec<String>)> = operator
            .iter()
            .filter_map(|r| {
                Some((
                    Class::parse(&r.class)?,
                    r.keywords
                        .iter()
                        .map(|k| strip(&to_simplified(k)))
                        .collect(),
                ))
            })
            .collect();
        rules.extend(
            BUILT_IN
                .iter()
                .map(|(c, ks)| (*c, ks.iter().map(|k| (*k).to_owned()).collect())),
        );
        Self { rules }
    }

    /// Classifies a transcript: a keyword as written first, else the keyword that sounds
    /// most alike (when `pinyin` is given).
    pub fn classify(&self, transcript: &str, pinyin: Option<&Pinyin>) -> Decision {
        let t = strip(&to_simplified(transcript));
        for (class, keywords) in &self.rules {
            if let Some(k) = keywords
                .iter()
                .find(|k| !k.is_empty() && t.contains(k.as_str()))
            {
                return Decision {
                    class: *class,
                    keyword: k.clone(),
                };
            }
        }
        let chars: Vec<char> = t.chars().collect();
        let mut best: Option<(f64, Class, &String)> = None;
        if let Some(py) = pinyin {
            for (class, keywords) in &self.rules {
                for k in keywords {
                    let kc: Vec<char> = k.chars().collect();
                    if kc.len() < 2 || kc.len() > chars.len() {
                        continue;
                    }
                    for w in chars.windows(kc.len()) {
                        if let Some(s) = similarity(w, &kc, py, 0.5)
                            && s >= FUZZY_THRESHOLD
                            && best.is_none_or(|(b, _, _)| s > b)
                        {
                            best = Some((s, *class, k));
                        }
                    }
                }
            }
        }
        match best {
            Some((_, class, k)) => Decision {
                class,
                keyword: k.clone(),
            },
            None => Decision {
                class: Class::Other,
                keyword: String::new(),
            },
        }
    }
}

fn strip(s: &str) -> String {
    s.chars()
        .filter(|c| !crate::conversation::normalize::is_punct(*c))
        .map(|c| match c.to_digit(10) {
            // Whisper writes numbers it thinks it heard as digits ("暂时" → "15"); spelled
            // back as characters they can still sound like a keyword.
            Some(d) => ['零', '一', '二', '三', '四', '五', '六', '七', '八', '九'][d as usize],
            None => c.to_ascii_lowercase(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typical_announcements() {
        let c = Classifier::new(&[]);
        for (text, class) in [
            (
                "您好，您拨打的号码是空号，请查证后再拨。Sorry, the number you dialed does not exist.",
                Class::EmptyNumber,
            ),
            ("您拨打的电话已关机。", Class::PoweredOff),
            ("您拨打的电话已停机", Class::Suspended),
            ("您拨打的用户因欠费已停机", Class::Arrears),
            ("您拨打的电话暂时无法接通，请稍后再拨", Class::Unreachable),
            ("您拨打的电话正在通话中，请稍后再拨", Class::Busy),
            ("您拨打的用户已设置呼入限制", Class::CallInRestricted),
            ("喂，你好", Class::Other),
        ] {
            assert_eq!(c.classify(text, None).class, class, "{text}");
        }
    }

    #[test]
    fn operator_rules_come_first_and_map_to_codes() {
        let c = Classifier::new(&[AnnouncementRule {
            class: "busy".into(),
            keywords: vec!["線路忙".into()],
        }]);
        let d = c.classify("对不起，线路忙，请稍后再拨", None);
        assert_eq!(d.class, Class::Busy);
        assert_eq!(d.keyword, "线路忙");
        assert_eq!(Class::Arrears.status_code(), Some(StatusCode::Arrears));
        assert_eq!(Class::Other.ending(), None);
        assert_eq!(
            Class::EmptyNumber.ending(),
            Some(Ending::Announcement(StatusCode::EmptyNumber))
        );
        let py = Pinyin::from_tsv("恐\tkong3\n空\tkong1,kong4\n厚\thou4\n号\thao4,hao2\n");
        assert_eq!(
            c.classify("您拨打的号码是恐厚", Some(&py)).class,
            Class::EmptyNumber
        );
        for n in Class::NAMES {
            assert!(Class::parse(n).is_some());
        }
    }
}
