//! Hotword correction: business terms of a task or script (产品名, 分期, 账单日…) that the
//! recogniser writes with the wrong characters are put back when a stretch of the transcript
//! sounds like them — compared by pinyin, with the usual confusions of telephone Mandarin
//! (zh/z, ch/c, sh/s, n/l, f/h, an/ang, en/eng, in/ing) counted as near misses. Every
//! replacement is returned as a [`Correction`] so it can be recorded.

use std::collections::HashMap;

use super::Correction;

/// Per-character readings (toneless pinyin syllables, first = most common), from the
/// generated `zh/chars.tsv`.
#[derive(Debug, Default, Clone)]
pub struct Pinyin {
    readings: HashMap<char, Vec<String>>,
}

impl Pinyin {
    /// Parses `chars.tsv` (`char TAB reading,reading…`, tone digits dropped here).
    pub fn from_tsv(text: &str) -> Self {
        let mut readings = HashMap::new();
        for line in text.lines() {
            let Some((c, rs)) = line.split_once('\t') else {
                continue;
            };
            let Some(c) = c.chars().next() else { continue };
            let mut v: Vec<String> = Vec::new();
            for r in rs.split(',') {
                let base = r.trim_end_matches(|c: char| c.is_ascii_digit()).to_owned();
                if !base.is_empty() && !v.contains(&base) {
                    v.push(base);
                }
            }
            readings.insert(c, v);
        }
        Self { readings }
    }

    /// The readings of `c` (empty for non-Chinese characters).
    pub fn of(&self, c: char) -> &[String] {
        self.readings.get(&c).map_or(&[], Vec::as_slice)
    }
}

const INITIALS: [&str; 23] = [
    "zh", "ch", "sh", "b", "p", "m", "f", "d", "t", "n", "l", "g", "k", "h", "j", "q", "x", "r",
    "z", "c", "s", "y", "w",
];

fn split(s: &str) -> (&str, &str) {
    for i in INITIALS {
        if let Some(rest) = s.strip_prefix(i) {
            return (i, rest);
        }
    }
    ("", s)
}

fn near(a: &str, b: &str, pairs: &[(&str, &str)]) -> bool {
    pairs
        .iter()
        .any(|(x, y)| (a == *x && b == *y) || (a == *y && b == *x))
}

/// Similarity of two toneless syllables: 1 equal, 0.5 per matching half (initial, final),
/// 0.4 for a near miss of a half.
pub fn syllable_similarity(a: &str, b: &str) -> f64 {
    if a == b {
        return 1.0;
    }
    let ((ia, fa), (ib, fb)) = (split(a), split(b));
    let ini = if ia == ib {
        0.5
    } else if near(
        ia,
        ib,
        &[
            ("zh", "z"),
            ("ch", "c"),
            ("sh", "s"),
            ("n", "l"),
            ("f", "h"),
            ("r", "l"),
        ],
    ) {
        0.4
    } else {
        0.0
    };
    let fin = if fa == fb {
        0.5
    } else if near(
        fa,
        fb,
        &[
            ("an", "ang"),
            ("en", "eng"),
            ("in", "ing"),
            ("ian", "iang"),
            ("uan", "uang"),
        ],
    ) {
        0.4
    } else {
        0.0
    };
    ini + fin
}

/// A list of hotwords.
#[derive(Debug, Clone, Default)]
pub struct Hotwords {
    words: Vec<Vec<char>>,
    threshold: f64,
}

impl Hotwords {
    /// Hotwords of at least two Chinese characters; shorter ones would match everywhere.
    pub fn new(words: &[String], threshold: f64) -> Self {
        let mut w: Vec<Vec<char>> = words
            .iter()
            .map(|s| s.trim().chars().collect::<Vec<char>>())
            .filter(|c| c.len() >= 2)
            .collect();
        // Longer hotwords first, so 信用卡分期 wins over 分期.
        w.sort_by_key(|c| std::cmp::Reverse(c.len()));
        w.dedup();
        Self {
            words: w,
            threshold,
        }
    }

    /// Parses a hotword file: one term per line, `#` comments.
    pub fn parse_file(text: &str, threshold: f64) -> Self {
        let words: Vec<String> = text
            .lines()
            .map(|l| l.split('#').next().unwrap_or("").trim().to_owned())
            .filter(|l| !l.is_empty())
            .collect();
        Self::new(&words, threshold)
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// How many hotwords are in use.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    fn score(window: &[char], word: &[char], py: &Pinyin) -> Option<f64> {
        // Short hotwords need every syllable to sound the same (or nearly: one half a near
        // miss); otherwise 话是 would become 挂失.
        let min_per_char = if word.len() <= 3 { 0.9 } else { 0.5 };
        similarity(window, word, py, min_per_char)
    }

    /// Replaces stretches that sound like a hotword (score ≥ threshold, not already the
    /// hotword). Returns the new text and the corrections, in text order.
    pub fn correct(&self, text: &str, py: &Pinyin) -> (String, Vec<Correction>) {
        let mut chars: Vec<char> = text.chars().collect();
        let mut fixed = vec![false; chars.len()];
        let mut corrections = Vec::new();
        for word in &self.words {
            let n = word.len();
            let mut i = 0;
            while i + n <= chars.len() {
                let window = &chars[i..i + n];
                if window == word.as_slice() {
                    fixed[i..i + n].iter_mut().for_each(|f| *f = true);
                    i += n;
                    continue;
                }
                if fixed[i..i + n].iter().any(|f| *f) {
                    i += 1;
                    continue;
                }
                match Self::score(window, word, py) {
                    Some(s) if s >= self.threshold => {
                        corrections.push(Correction {
                            heard: window.iter().collect(),
                            hotword: word.iter().collect(),
                            score: (s * 1000.0).round() / 1000.0,
                            at: i,
                        });
                        chars.splice(i..i + n, word.iter().copied());
                        fixed[i..i + n].iter_mut().for_each(|f| *f = true);
                        i += n;
                    }
                    _ => i += 1,
                }
            }
        }
        corrections.sort_by_key(|c| c.at);
        (chars.into_iter().collect(), corrections)
    }
}

/// Pinyin similarity (0..1) of two equally long character strings: per character 1 when
/// equal, else the best [`syllable_similarity`] between the heard character's common reading
/// and any reading of the wanted one (a recogniser writes a character for its common sound;
/// rare readings would make unrelated words match). `None` when a character has no reading
/// (not Chinese) or one pair of characters scores below `min_per_char`.
pub fn similarity(window: &[char], word: &[char], py: &Pinyin, min_per_char: f64) -> Option<f64> {
    if window.len() != word.len() || word.is_empty() {
        return None;
    }
    let mut total = 0.0;
    for (a, b) in window.iter().zip(word) {
        if a == b {
            total += 1.0;
            continue;
        }
        let (ra, rb) = (py.of(*a), py.of(*b));
        if ra.is_empty() || rb.is_empty() {
            return None;
        }
        let best = rb
            .iter()
            .map(|y| syllable_similarity(&ra[0], y))
            .fold(0.0, f64::max);
        if best < min_per_char {
            return None;
        }
        total += best;
    }
    Some(total / word.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn py() -> Pinyin {
        Pinyin::from_tsv(
            "招\tzhao1\n商\tshang1\n银\tyin2\n行\txing2,hang2\n朝\tchao2,zhao1\n上\tshang4\n\
             分\tfen1\n期\tqi1\n份\tfen4\n其\tqi2\n还\thai2,huan2\n款\tkuan3\n环\thuan2\n宽\tkuan1\n\
             我\two3\n想\txiang3\n办\tban4\n理\tli3\n用\tyong4\n卡\tka3\n信\txin4\n心\txin1\n",
        )
    }

    #[test]
    fn sound_alikes_become_the_hotword_and_are_recorded() {
        let h = Hotwords::new(&["招商银行".into(), "分期".into(), "还款".into()], 0.75);
        let (t, c) = h.correct("我想办理朝上银行的份其", &py());
        assert_eq!(t, "我想办理招商银行的分期");
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!(c[0].heard, "朝上银行");
        assert_eq!(c[0].hotword, "招商银行");
        assert!(c[0].score >= 0.75);
        let (t, c) = h.correct("环宽", &py());
        assert_eq!((t.as_str(), c.len()), ("还款", 1));
    }

    #[test]
    fn unrelated_text_and_exact_hotwords_are_left_alone() {
        let h = Hotwords::new(&["信用卡".into(), "分期".into()], 0.75);
        let (t, c) = h.correct("我想办理信用卡分期", &py());
        assert_eq!(t, "我想办理信用卡分期");
        assert!(c.is_empty());
        let (t, c) = h.correct("我想理理", &py());
        assert_eq!(t, "我想理理");
        assert!(c.is_empty());
        assert!(
            Hotwords::parse_file("# terms\n分期 # instalments\n\n卡\n", 0.8)
                .words
                .len()
                == 1
        );
    }

    #[test]
    fn near_misses_score_between() {
        assert_eq!(syllable_similarity("zhao", "zhao"), 1.0);
        assert!((syllable_similarity("zhao", "chao") - 0.5).abs() < 1e-9);
        assert!((syllable_similarity("shang", "san") - 0.8).abs() < 1e-9);
        assert_eq!(syllable_similarity("ba", "qi"), 0.0);
    }
}
