//! The Mandarin text front end for Kokoro: text → readable Chinese → words → pinyin → phonemes.
//!
//! 1. [`normalize`]: amounts (3500元 → 三千五百元, ¥12.50 → 十二元五角), percentages
//!    (5.5% → 百分之五点五), dates (2025年3月5日, 2025-03-05), clock times (15:30 → 十五点三十分),
//!    digit-by-digit reading of card and phone tails (尾号6832 → 尾号六八三二) and long digit
//!    strings (phone numbers with 幺 for 1), other numbers as cardinals, Latin letters spelled out
//!    (APP → A P P, read with their Mandarin letter names).
//! 2. Segmentation with jieba (plus the banking words below).
//! 3. Readings: the banking polyphone lexicon first (还款 huán, 银行 háng, 行长 háng zhǎng,
//!    长期 cháng…), then pypinyin's phrase dictionary (forward maximum matching inside a word),
//!    then per-character readings; context rules for a lone 还 (还 + amount → huán).
//! 4. Tone sandhi: 3-3 (你好 → ní hǎo), 一 (一定 yí, 一天 yì, 看一看 neutral, digits and
//!    ordinals keep yī), 不 (不是 bú, 去不去 neutral).
//! 5. Pinyin → Kokoro phonemes from the generated table (misaki's rules), words separated by
//!    spaces, Chinese punctuation mapped to Kokoro's.
//!
//! The tables come from `make models` (`zh/chars.tsv`, `zh/phrases.tsv`, `zh/pinyin_ipa.tsv`).

use std::collections::HashMap;

use jieba_rs::Jieba;

/// Bumped whenever the front end's output for a text can change (part of the prompt cache key).
pub const VERSION: &str = "zh-frontend-1";

/// Readings for banking words that pypinyin gets wrong or leaves ambiguous.
const BANKING: &[(&str, &str)] = &[
    ("还款", "huan2 kuan3"),
    ("还钱", "huan2 qian2"),
    ("还清", "huan2 qing1"),
    ("还贷", "huan2 dai4"),
    ("还本", "huan2 ben3"),
    ("还息", "huan2 xi1"),
    ("归还", "gui1 huan2"),
    ("偿还", "chang2 huan2"),
    ("退还", "tui4 huan2"),
    ("还款日", "huan2 kuan3 ri4"),
    ("还款额", "huan2 kuan3 e2"),
    ("最低还款额", "zui4 di1 huan2 kuan3 e2"),
    ("银行", "yin2 hang2"),
    ("行长", "hang2 zhang3"),
    ("支行", "zhi1 hang2"),
    ("分行", "fen1 hang2"),
    ("总行", "zong3 hang2"),
    ("我行", "wo3 hang2"),
    ("本行", "ben3 hang2"),
    ("贵行", "gui4 hang2"),
    ("行号", "hang2 hao4"),
    ("长期", "chang2 qi1"),
    ("长短", "chang2 duan3"),
    ("增长", "zeng1 zhang3"),
    ("账单", "zhang4 dan1"),
    ("账单日", "zhang4 dan1 ri4"),
    ("利率", "li4 lv4"),
    ("汇率", "hui4 lv4"),
    ("费率", "fei4 lv4"),
    ("年利率", "nian2 li4 lv4"),
    ("逾期", "yu2 qi1"),
    ("分期", "fen1 qi1"),
    ("信用卡", "xin4 yong4 ka3"),
    ("额度", "e2 du4"),
    ("调整", "tiao2 zheng3"),
    ("数额", "shu4 e2"),
    ("转账", "zhuan3 zhang4"),
    ("还有", "hai2 you3"),
    ("还是", "hai2 shi4"),
];

/// Characters whose most common reading in bank calls differs from pypinyin's first one.
const CHAR_DEFAULTS: &[(char, &str)] = &[('长', "chang2"), ('还', "hai2"), ('行', "xing2")];

/// Mandarin names of Latin letters, as pinyin syllables.
fn letter(c: char) -> &'static str {
    match c.to_ascii_uppercase() {
        'A' => "ei1",
        'B' => "bi4",
        'C' => "xi1",
        'D' => "di4",
        'E' => "yi4",
        'F' => "ai2 fu1",
        'G' => "ji4",
        'H' => "ai1 qi1",
        'I' => "ai4",
        'J' => "jie4",
        'K' => "kai1",
        'L' => "ai2 lou5",
        'M' => "ai2 mu5",
        'N' => "en1",
        'O' => "ou1",
        'P' => "pi4",
        'Q' => "qiu1",
        'R' => "a4",
        'S' => "ai2 si1",
        'T' => "ti4",
        'U' => "you1",
        'V' => "wei1",
        'W' => "da2 bu5 liu5",
        'X' => "ai2 ke4 si1",
        'Y' => "wai4",
        _ => "zei4",
    }
}

const DIGITS: [char; 10] = ['零', '一', '二', '三', '四', '五', '六', '七', '八', '九'];

/// A non-negative integer read as a cardinal (3500 → 三千五百, 3050 → 三千零五十,
/// 12 → 十二, 20000 → 两万).
pub fn cardinal(n: u64) -> String {
    if n == 0 {
        return "零".into();
    }
    fn below_10k(n: u64, leading: bool) -> String {
        let units = ['千', '百', '十'];
        let divs = [1000, 100, 10];
        let mut s = String::new();
        let mut zero = false;
        let mut rest = n;
        for (u, d) in units.iter().zip(divs) {
            let q = rest / d;
            rest %= d;
            if q == 0 {
                if !s.is_empty() {
                    zero = true;
                }
                continue;
            }
            if zero {
                s.push('零');
                zero = false;
            }
            if !(leading && s.is_empty() && q == 1 && d == 10) {
                s.push(if q == 2 && s.is_empty() && d >= 1000 {
                    '两'
                } else {
                    DIGITS[q as usize]
                });
            }
            s.push(*u);
        }
        if rest > 0 {
            if zero {
                s.push('零');
            }
            s.push(DIGITS[rest as usize]);
        }
        s
    }
    let mut groups = Vec::new();
    let mut m = n;
    while m > 0 {
        groups.push(m % 10_000);
        m /= 10_000;
    }
    let names = ["", "万", "亿", "万亿"];
    let mut s = String::new();
    let mut pending_zero = false;
    for (i, g) in groups.iter().enumerate().rev() {
        if *g == 0 {
            pending_zero = !s.is_empty();
            continue;
        }
        if (pending_zero || (*g < 1000 && !s.is_empty())) && !s.is_empty() {
            s.push('零');
        }
        pending_zero = false;
        let mut part = below_10k(*g, s.is_empty());
        if *g == 2 && i > 0 && s.is_empty() {
            part = "两".into();
        }
        s.push_str(&part);
        s.push_str(names[i.min(3)]);
    }
    s
}

/// Digits read one by one (`phone`: 1 as 幺, as on the phone).
pub fn digit_by_digit(digits: &str, phone: bool) -> String {
    digits
        .chars()
        .filter_map(|c| c.to_digit(10))
        .map(|d| {
            if phone && d == 1 {
                '幺'
            } else {
                DIGITS[d as usize]
            }
        })
        .collect()
}

fn decimal_digits(d: &str) -> String {
    d.chars()
        .filter_map(|c| c.to_digit(10))
        .map(|x| DIGITS[x as usize])
        .collect()
}

/// Words before which a digit string is read digit by digit (尾号6832, 卡号…).
const DIGIT_CONTEXT: &[&str] = &[
    "尾号",
    "末四位",
    "后四位",
    "卡号",
    "账号",
    "号码",
    "电话",
    "手机",
    "验证码",
    "工号",
    "编号",
    "客服",
    "热线",
    "拨打",
    "致电",
    "回拨",
    "拨",
];

/// Step 1 (see the module documentation). The result holds Chinese, punctuation and spelled
/// letters only.
pub fn normalize(text: &str) -> String {
    // Full-width forms to ASCII, and thousands separators dropped.
    let t: String = text
        .chars()
        .map(|c| match c {
            '\u{FF10}'..='\u{FF19}' | '\u{FF21}'..='\u{FF3A}' | '\u{FF41}'..='\u{FF5A}' => {
                char::from_u32(c as u32 - 0xFEE0).unwrap_or(c)
            }
            '％' => '%',
            '￥' => '¥',
            _ => c,
        })
        .collect();
    let chars: Vec<char> = t.chars().collect();
    let mut out = String::with_capacity(t.len() * 2);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '¥' && chars.get(i + 1).is_some_and(char::is_ascii_digit) {
            let (num, end) = take_number(&chars, i + 1);
            out.push_str(&amount(&num));
            i = end;
            if chars.get(i) == Some(&'元') {
                i += 1;
            }
            continue;
        }
        if c.is_ascii_digit() {
            let (num, end) = take_number(&chars, i);
            let next = chars.get(end).copied();
            let before: String = out
                .chars()
                .rev()
                .take(4)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            let digits_only: String = num.chars().filter(char::is_ascii_digit).collect();
            // Clock time 15:30.
            if matches!(next, Some(':') | Some('：'))
                && chars.get(end + 1).is_some_and(char::is_ascii_digit)
            {
                let (min, mend) = take_number(&chars, end + 1);
                if let (Ok(h), Ok(m)) = (num.parse::<u64>(), min.parse::<u64>())
                    && h <= 24
                    && m < 60
                {
                    out.push_str(&cardinal(h));
                    out.push('点');
                    if m > 0 {
                        if m < 10 {
                            out.push('零');
                        }
                        out.push_str(&cardinal(m));
                        out.push('分');
                    }
                    i = mend;
                    continue;
                }
            }
            // Dates 2025-03-05 or 2025/3/5.
            if digits_only.len() == 4
                && matches!(next, Some('-') | Some('/'))
                && let Some((mo, d, dend)) = date_tail(&chars, end + 1)
            {
                out.push_str(&digit_by_digit(&num, false));
                out.push('年');
                out.push_str(&cardinal(mo));
                out.push('月');
                out.push_str(&cardinal(d));
                out.push('日');
                i = dend;
                continue;
            }
            if next == Some('%') {
                out.push_str("百分之");
                out.push_str(&decimal_reading(&num));
                i = end + 1;
                continue;
            }
            if matches!(next, Some('元') | Some('块')) {
                out.push_str(&amount(&num));
                i = end + 1;
                continue;
            }
            if next == Some('年') && digits_only.len() == 4 && !num.contains('.') {
                out.push_str(&digit_by_digit(&num, false));
                i = end;
                continue;
            }
            let context_digits = DIGIT_CONTEXT.iter().any(|w| before.ends_with(w));
            if context_digits || digits_only.len() >= 7 || num.starts_with('0') && num.len() > 1 {
                let phone = digits_only.len() == 11
                    || before.ends_with("电话")
                    || before.ends_with("热线")
                    || before.ends_with("手机");
                out.push_str(&digit_by_digit(&num, phone));
                i = end;
                continue;
            }
            out.push_str(&decimal_reading(&num));
            i = end;
            continue;
        }
        if c.is_ascii_alphabetic() {
            out.push(' ');
            out.push(c.to_ascii_uppercase());
            out.push(' ');
            i += 1;
            continue;
        }
        out.push(c);
        i += 1;
    }
    out
}

fn take_number(chars: &[char], i: usize) -> (String, usize) {
    let mut j = i;
    let mut s = String::new();
    while j < chars.len() {
        let c = chars[j];
        if c.is_ascii_digit() {
            s.push(c);
        } else if c == ',' && chars.get(j + 1).is_some_and(char::is_ascii_digit) && !s.is_empty() {
            // 3,500: a thousands separator (dropped).
        } else if c == '.' && chars.get(j + 1).is_some_and(char::is_ascii_digit) && !s.contains('.')
        {
            s.push('.');
        } else {
            break;
        }
        j += 1;
    }
    (s, j)
}

fn date_tail(chars: &[char], i: usize) -> Option<(u64, u64, usize)> {
    let (mo, e1) = take_number(chars, i);
    if !matches!(chars.get(e1), Some('-') | Some('/')) {
        return None;
    }
    let (d, e2) = take_number(chars, e1 + 1);
    let (mo, d) = (mo.parse::<u64>().ok()?, d.parse::<u64>().ok()?);
    ((1..=12).contains(&mo) && (1..=31).contains(&d)).then_some((mo, d, e2))
}

/// 12.5 → 十二点五; 3500 → 三千五百.
fn decimal_reading(num: &str) -> String {
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    let mut s = int
        .parse::<u64>()
        .map_or_else(|_| digit_by_digit(int, false), cardinal);
    if !frac.is_empty() {
        s.push('点');
        s.push_str(&decimal_digits(frac));
    }
    s
}

/// 3500 → 三千五百元; 12.50 → 十二元五角; 0.05 → 五分.
fn amount(num: &str) -> String {
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    let yuan = int.parse::<u64>().unwrap_or(0);
    let mut f = frac.chars().filter_map(|c| c.to_digit(10));
    let (jiao, fen) = (f.next().unwrap_or(0), f.next().unwrap_or(0));
    let mut s = String::new();
    if yuan > 0 || (jiao == 0 && fen == 0) {
        s.push_str(&cardinal(yuan));
        s.push('元');
    }
    if jiao > 0 {
        s.push(DIGITS[jiao as usize]);
        s.push('角');
    }
    if fen > 0 {
        if jiao == 0 && yuan > 0 {
            s.push('零');
        }
        s.push(DIGITS[fen as usize]);
        s.push('分');
    }
    s
}

/// One syllable with its tone (1–5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Syllable {
    /// Toneless pinyin (`v` for ü, as in the tables).
    pub base: String,
    /// 1–4, 5 = neutral.
    pub tone: u8,
    /// The character it reads.
    pub han: char,
}

impl Syllable {
    fn parse(s: &str, han: char) -> Option<Self> {
        let tone = s.chars().last()?.to_digit(10)? as u8;
        Some(Self {
            base: s[..s.len() - 1].to_owned(),
            tone,
            han,
        })
    }

    /// `base` + tone digit.
    pub fn tone3(&self) -> String {
        format!("{}{}", self.base, self.tone)
    }
}

/// A piece of the analysed text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// A Chinese word.
    Word(Vec<Syllable>),
    /// A spelled-out Latin letter (its letter name, read as syllables).
    Letter(Vec<Syllable>),
    /// Punctuation or a space, already in Kokoro's alphabet (", ", ". ", …).
    Punct(String),
}

/// The generated tables.
#[derive(Debug, Default)]
pub struct Lexicon {
    phrases: HashMap<String, Vec<String>>,
    chars: HashMap<char, String>,
    ipa: HashMap<String, String>,
    longest: usize,
}

impl Lexicon {
    /// Parses `chars.tsv`, `phrases.tsv` and `pinyin_ipa.tsv`; the banking lexicon is laid
    /// over them.
    pub fn from_tsv(chars: &str, phrases: &str, ipa: &str) -> Self {
        let mut lex = Self::default();
        for line in chars.lines() {
            if let Some((c, rs)) = line.split_once('\t')
                && let Some(c) = c.chars().next()
            {
                lex.chars
                    .insert(c, rs.split(',').next().unwrap_or_default().to_owned());
            }
        }
        for (c, r) in CHAR_DEFAULTS {
            lex.chars.insert(*c, (*r).to_owned());
        }
        for line in phrases.lines() {
            if let Some((w, rs)) = line.split_once('\t') {
                lex.insert_phrase(w, rs);
            }
        }
        for (w, rs) in BANKING {
            lex.insert_phrase(w, rs);
        }
        for line in ipa.lines() {
            if let Some((s, p)) = line.split_once('\t') {
                lex.ipa.insert(s.to_owned(), p.to_owned());
            }
        }
        lex
    }

    fn insert_phrase(&mut self, w: &str, rs: &str) {
        let v: Vec<String> = rs.split_whitespace().map(str::to_owned).collect();
        let n = w.chars().count();
        if v.len() == n {
            self.longest = self.longest.max(n);
            self.phrases.insert(w.to_owned(), v);
        }
    }

    /// Readings of a word: whole-word entry, else forward maximum matching over the phrase
    /// dictionary, else per character. Characters without a reading are left out.
    fn readings(&self, word: &[char]) -> Vec<Syllable> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < word.len() {
            let mut matched = false;
            for len in (2..=self.longest.min(word.len() - i)).rev() {
                let w: String = word[i..i + len].iter().collect();
                if let Some(rs) = self.phrases.get(&w) {
                    for (r, c) in rs.iter().zip(&word[i..i + len]) {
                        out.extend(Syllable::parse(r, *c));
                    }
                    i += len;
                    matched = true;
                    break;
                }
            }
            if !matched {
                if let Some(r) = self.chars.get(&word[i]) {
                    out.extend(Syllable::parse(r, word[i]));
                }
                i += 1;
            }
        }
        out
    }

    /// Kokoro phonemes of a syllable (tone 5 falls back to the toneless form).
    pub fn phonemes(&self, s: &Syllable) -> Option<&str> {
        self.ipa.get(&s.tone3()).map(String::as_str)
    }
}

fn is_han(c: char) -> bool {
    ('\u{4E00}'..='\u{9FFF}').contains(&c) || ('\u{3400}'..='\u{4DBF}').contains(&c)
}

fn punct(c: char) -> Option<&'static str> {
    Some(match c {
        '，' | ',' | '、' => ", ",
        '。' | '．' | '.' => ". ",
        '！' | '!' => "! ",
        '？' | '?' => "? ",
        '：' | ':' => ": ",
        '；' | ';' => "; ",
        '…' => "… ",
        '—' | '-' => "— ",
        _ => return None,
    })
}

/// The front end: jieba plus the tables.
pub struct FrontEnd {
    jieba: Jieba,
    lex: Lexicon,
}

impl std::fmt::Debug for FrontEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrontEnd").finish_non_exhaustive()
    }
}

impl FrontEnd {
    /// Builds the front end; banking words are added to jieba's dictionary.
    pub fn new(lex: Lexicon) -> Self {
        let mut jieba = Jieba::new();
        for (w, _) in BANKING {
            let f = jieba.suggest_freq(w).max(3000);
            jieba.add_word(w, Some(f), None);
        }
        Self { jieba, lex }
    }

    /// The lexicon.
    pub fn lexicon(&self) -> &Lexicon {
        &self.lex
    }

    /// Steps 1–4: normalised text analysed into words with sandhi applied.
    pub fn analyse(&self, text: &str) -> Vec<Piece> {
        let norm = normalize(text);
        let mut pieces = Vec::new();
        let mut digit_words = Vec::new(); // indices of words read digit by digit (keep 一 as yī)
        let chars: Vec<char> = norm.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if is_han(c) {
                let mut j = i;
                while j < chars.len() && is_han(chars[j]) {
                    j += 1;
                }
                let run: String = chars[i..j].iter().collect();
                for w in self.jieba.cut(&run, true) {
                    let wc: Vec<char> = w.word.chars().collect();
                    let syl = self.lex.readings(&wc);
                    if !syl.is_empty() {
                        if wc.len() >= 3 && wc.iter().all(|c| DIGITS.contains(c) || *c == '幺') {
                            digit_words.push(pieces.len());
                        }
                        pieces.push(Piece::Word(syl));
                    }
                }
                i = j;
            } else if c.is_ascii_uppercase() {
                let syl = letter(c)
                    .split(' ')
                    .filter_map(|s| Syllable::parse(s, c))
                    .collect();
                pieces.push(Piece::Letter(syl));
                i += 1;
            } else if let Some(p) = punct(c) {
                pieces.push(Piece::Punct(p.to_owned()));
                i += 1;
            } else {
                i += 1;
            }
        }
        context_readings(&mut pieces);
        sandhi(&mut pieces, &digit_words);
        pieces
    }

    /// Steps 1–5: Kokoro's phoneme string for `text`.
    pub fn phonemes(&self, text: &str) -> String {
        let mut out = String::new();
        for p in self.analyse(text) {
            match p {
                Piece::Word(s) | Piece::Letter(s) => {
                    if !out.is_empty() && !out.ends_with(' ') {
                        out.push(' ');
                    }
                    for syl in &s {
                        if let Some(ph) = self.lex.phonemes(syl) {
                            out.push_str(ph);
                        }
                    }
                }
                Piece::Punct(p) => {
                    while out.ends_with(' ') {
                        out.pop();
                    }
                    out.push_str(&p);
                }
            }
        }
        out.trim().to_owned()
    }

    /// The text's pinyin (tone3, sandhi applied), words separated by spaces: for tests and
    /// for operators checking a prompt.
    pub fn pinyin(&self, text: &str) -> String {
        self.analyse(text)
            .iter()
            .filter_map(|p| match p {
                Piece::Word(s) | Piece::Letter(s) => {
                    Some(s.iter().map(Syllable::tone3).collect::<Vec<_>>().join(" "))
                }
                Piece::Punct(_) => None,
            })
            .collect::<Vec<_>>()
            .join(" | ")
    }
}

/// A lone 还 before an amount or 钱/款 reads huán (您需要还3500元).
fn context_readings(pieces: &mut [Piece]) {
    for i in 0..pieces.len() {
        let next_is_amount = match pieces.get(i + 1) {
            Some(Piece::Word(s)) => s.first().is_some_and(|x| {
                DIGITS.contains(&x.han) || "两十百千万幺钱款清上给完了".contains(x.han)
            }),
            _ => false,
        };
        if let Some(Piece::Word(s)) = pieces.get_mut(i)
            && s.len() == 1
            && s[0].han == '还'
            && next_is_amount
        {
            s[0].base = "huan".into();
            s[0].tone = 2;
        }
    }
}

/// Tone sandhi over the whole sentence (see the module documentation).
fn sandhi(pieces: &mut [Piece], digit_words: &[usize]) {
    // Flatten word syllables with word boundaries, keeping a way back.
    let mut flat: Vec<(usize, usize)> = Vec::new();
    for (wi, p) in pieces.iter().enumerate() {
        if let Piece::Word(s) = p {
            for si in 0..s.len() {
                flat.push((wi, si));
            }
        } else {
            flat.push((usize::MAX, 0)); // a break
        }
    }
    let get = |pieces: &[Piece], k: usize| -> Option<Syllable> {
        let (wi, si) = *flat.get(k)?;
        match pieces.get(wi)? {
            Piece::Word(s) => s.get(si).cloned(),
            _ => None,
        }
    };
    let word_len = |pieces: &[Piece], wi: usize| match pieces.get(wi) {
        Some(Piece::Word(s)) => s.len(),
        _ => 0,
    };
    // 一 and 不.
    #[allow(clippy::needless_range_loop)] // k also indexes neighbours through `get`
    for k in 0..flat.len() {
        let Some(cur) = get(pieces, k) else { continue };
        let (wi, si) = flat[k];
        if !matches!(cur.han, '一' | '不') || digit_words.contains(&wi) {
            continue;
        }
        let prev = k.checked_sub(1).and_then(|p| get(pieces, p));
        let next = get(pieces, k + 1);
        let new_tone = match (&prev, &next) {
            // 看一看, 去不去: neutral between a reduplication.
            (Some(p), Some(n)) if p.han == n.han && p.han != cur.han => Some(5),
            // 第一, 一 at the end, 一 in a number (十一, 一百 stays handled below).
            _ if cur.han == '一'
                && (prev
                    .as_ref()
                    .is_some_and(|p| p.han == '第' || p.han == '十')
                    || next.is_none()
                    || next
                        .as_ref()
                        .is_some_and(|n| DIGITS.contains(&n.han) && n.han != '一')) =>
            {
                None
            }
            (_, Some(n)) if n.tone == 4 => Some(2),
            (_, Some(n)) if cur.han == '一' && (1..=3).contains(&n.tone) => Some(4),
            _ => None,
        };
        if let Some(t) = new_tone
            && let Some(Piece::Word(s)) = pieces.get_mut(wi)
        {
            s[si].tone = t;
        }
    }
    // 3-3: a third tone before a third tone becomes second, inside a word and across a
    // boundary after a one-syllable word (我也, 很好); runs are handled right to left.
    for k in (0..flat.len()).rev() {
        let (wi, si) = flat[k];
        let (Some(cur), Some(next)) = (get(pieces, k), get(pieces, k + 1)) else {
            continue;
        };
        if cur.tone != 3 || next.tone != 3 {
            continue;
        }
        let same_word = flat[k + 1].0 == wi;
        if same_word || word_len(pieces, wi) == 1 || word_len(pieces, flat[k + 1].0) == 1 {
            if let Some(Piece::Word(s)) = pieces.get_mut(wi) {
                s[si].tone = 2;
            }
        }
    }
}

/// Splits text into clauses for clause-by-clause synthesis: at sentence and clause
/// punctuation, very short clauses (under 4 characters) merged with the next.
pub fn clauses(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut cur = String::new();
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        cur.push(c);
        // "3,500": a thousands separator, not a clause break.
        let ascii_comma = c == ',' && !chars.get(i + 1).is_some_and(char::is_ascii_digit);
        if matches!(c, '。' | '！' | '？' | '；' | '，' | '!' | '?' | ';' | '\n') || ascii_comma
        {
            let count = cur.chars().filter(|c| !c.is_whitespace()).count();
            if count >= 4 {
                out.push(std::mem::take(&mut cur).trim().to_owned());
            }
        }
    }
    let rest = cur.trim();
    if !rest.is_empty() {
        match out.last_mut() {
            Some(last) if rest.chars().count() < 3 => last.push_str(rest),
            _ => out.push(rest.to_owned()),
        }
    }
    out.retain(|c| !c.is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cardinals() {
        for (n, s) in [
            (0, "零"),
            (7, "七"),
            (10, "十"),
            (12, "十二"),
            (20, "二十"),
            (105, "一百零五"),
            (110, "一百一十"),
            (3500, "三千五百"),
            (3050, "三千零五十"),
            (2000, "两千"),
            (20000, "两万"),
            (12000, "一万两千"),
            (100_005, "十万零五"),
            (1_005_000, "一百万五千"),
            (50_000_000, "五千万"),
            (200_000_000, "两亿"),
        ] {
            assert_eq!(cardinal(n), s, "{n}");
        }
    }

    #[test]
    fn normalisation_of_numbers_letters_and_tails() {
        for (text, read) in [
            ("本期应还3500元", "本期应还三千五百元"),
            ("¥12.50", "十二元五角"),
            ("共计3,500.05元", "共计三千五百元零五分"),
            ("年利率5.5%", "年利率百分之五点五"),
            ("请于2025年3月5日前", "请于二零二五年三月五日前"),
            ("到期日2025-03-05", "到期日二零二五年三月五日"),
            ("下午15:30", "下午十五点三十分"),
            ("9:05", "九点零五分"),
            ("尾号6832的信用卡", "尾号六八三二的信用卡"),
            ("请拨打95555", "请拨打九五五五五"),
            ("手机13812345678", "手机幺三八幺二三四五六七八"),
            ("第12期", "第十二期"),
        ] {
            assert_eq!(normalize(text), read, "{text}");
        }
        assert_eq!(normalize("APP"), " A  P  P ");
    }

    #[test]
    fn clauses_split_at_punctuation_and_merge_short_ones() {
        assert_eq!(
            clauses("您好，我是招商银行的客服。请问是张先生吗？"),
            vec!["您好，我是招商银行的客服。", "请问是张先生吗？"]
        );
        assert_eq!(
            clauses("您本期账单3,500元，最低还款额350元。"),
            vec!["您本期账单3,500元，", "最低还款额350元。"]
        );
        assert_eq!(clauses("好的"), vec!["好的"]);
    }
}
