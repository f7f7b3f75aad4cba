//! Text normalisation applied alike to what the customer said and to every keyword, phrase and
//! regex subject, so that rules match however the ASR (or the author) wrote it:
//!
//! 1. full-width forms → half-width (`１２３ＡＢＣ，` → `123abc,`), ideographic space → space;
//! 2. ASCII letters → lower case;
//! 3. Traditional → Simplified Chinese (`還款` → `还款`);
//! 4. Chinese numerals → Arabic digits where they are numbers: runs with a place value
//!    (`三千二百` → `3200`, `十五号` → `15号`, `一万五` → `15000`), runs of two or more digits
//!    (`二零二五` → `2025`) and a single numeral before a counter or unit (`两天` → `2天`,
//!    `三号` → `3号`). Other single numerals stay (`一下`, `统一`), so words keep their shape.

/// Normalises `text` (see the module documentation).
pub fn normalize(text: &str) -> String {
    let mut s = String::with_capacity(text.len());
    for c in text.chars() {
        let c = match c {
            '\u{3000}' => ' ',
            '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
            _ => c,
        };
        s.push(c.to_ascii_lowercase());
    }
    numerals(&to_simplified(&s))
}

/// Traditional → Simplified Chinese, character by character (the table the script engine and
/// the speech recogniser share).
pub fn to_simplified(text: &str) -> String {
    simplet2s::convert(text)
}

/// Characters that end a clause: negation does not reach across them.
pub fn is_clause_break(c: char) -> bool {
    matches!(
        c,
        ',' | '.'
            | '?'
            | '!'
            | ';'
            | ':'
            | '，'
            | '。'
            | '？'
            | '！'
            | '；'
            | '：'
            | '、'
            | '…'
            | '\n'
    )
}

/// Whether `c` is punctuation or white space (dropped before exact comparison and from tokens).
pub fn is_punct(c: char) -> bool {
    c.is_whitespace()
        || is_clause_break(c)
        || c.is_ascii_punctuation()
        || matches!(
            c,
            '“' | '”' | '‘' | '’' | '（' | '）' | '《' | '》' | '～' | '—' | '·'
        )
}

/// The utterance reduced for exact comparison: no punctuation or spaces, no leading or
/// trailing modal particles ("嗯，是的啊" → "是的").
pub fn core_phrase(normalized: &str) -> String {
    let mut t: String = normalized.chars().filter(|c| !is_punct(*c)).collect();
    const PARTICLES: &[char] = &['啊', '呀', '吧', '呢', '哦', '嘛', '啦', '哈', '噢', '喔'];
    const FILLERS: &[&str] = &["嗯嗯", "嗯", "呃", "额", "那个"];
    loop {
        let before = t.len();
        while let Some(c) = t.chars().last() {
            if PARTICLES.contains(&c) && t.chars().count() > 1 {
                t.pop();
            } else {
                break;
            }
        }
        for f in FILLERS {
            if t.len() > f.len()
                && let Some(rest) = t.strip_prefix(f)
            {
                t = rest.to_owned();
            }
        }
        if t.len() == before {
            return t;
        }
    }
}

/// The value of a Chinese digit (零〇一二两三…九 and their financial forms).
pub fn digit_value(c: char) -> Option<u64> {
    Some(match c {
        '零' | '〇' => 0,
        '一' | '壹' => 1,
        '二' | '两' | '贰' => 2,
        '三' | '叁' => 3,
        '四' | '肆' => 4,
        '五' | '伍' => 5,
        '六' | '陆' => 6,
        '七' | '柒' => 7,
        '八' | '捌' => 8,
        '九' | '玖' => 9,
        _ => return None,
    })
}

fn unit_value(c: char) -> Option<u64> {
    Some(match c {
        '十' | '拾' => 10,
        '百' | '佰' => 100,
        '千' | '仟' => 1000,
        '万' => 10_000,
        '亿' => 100_000_000,
        _ => return None,
    })
}

/// Characters after which a lone numeral is a number ("三号", "两天", "五千块").
fn is_counter(c: char) -> bool {
    matches!(
        c,
        '号' | '日'
            | '月'
            | '年'
            | '元'
            | '块'
            | '天'
            | '周'
            | '个'
            | '期'
            | '次'
            | '岁'
            | '毛'
            | '角'
            | '倍'
            | '笔'
            | '张'
            | '位'
            | '%'
    )
}

/// Replaces numeral runs by digits (step 4 of the module documentation); the speech
/// recogniser's inverse text normalisation builds on it.
pub fn numerals(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        let start = i;
        while i < chars.len() && (digit_value(chars[i]).is_some() || unit_value(chars[i]).is_some())
        {
            i += 1;
        }
        if start == i {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        let run = &chars[start..i];
        let has_unit = run.iter().any(|c| unit_value(*c).is_some());
        let next_is_counter = chars.get(i).is_some_and(|c| is_counter(*c));
        // A lone "十/百/千/万" is usually part of a word ("十分", "万一"); a lone digit only
        // counts before a counter.
        // A number starts with a digit or 十 ("万一" is a word, not 11000).
        let starts_like_a_number = digit_value(run[0]).is_some() || matches!(run[0], '十' | '拾');
        let convert = if !starts_like_a_number {
            false
        } else if run.len() == 1 {
            next_is_counter
        } else {
            has_unit || run.iter().all(|c| digit_value(*c).is_some())
        };
        match convert.then(|| value(run)).flatten() {
            Some(v) => out.push_str(&v),
            None => out.extend(run),
        }
    }
    out
}

/// The digits a numeral run stands for, or `None` if it is not a well-formed number.
fn value(run: &[char]) -> Option<String> {
    if !run.iter().any(|c| unit_value(*c).is_some()) {
        // Digit by digit: 二零二五 → 2025.
        return run
            .iter()
            .map(|c| digit_value(*c).map(|d| char::from(b'0' + d as u8)))
            .collect();
    }
    let mut total: u64 = 0; // completed 万/亿 groups
    let mut section: u64 = 0; // below 万
    let mut digit: Option<u64> = None;
    let mut last_unit: u64 = 0;
    for &c in run {
        if let Some(d) = digit_value(c) {
            if matches!(digit, Some(x) if x != 0) && d != 0 {
                return None; // "三四" inside a place-value number
            }
            digit = Some(d);
        } else if let Some(u) = unit_value(c) {
            if u >= 10_000 {
                let part = section + digit.take().unwrap_or(0);
                total = total.checked_add(part.max(1).checked_mul(u)?)?;
                section = 0;
                last_unit = u;
            } else {
                let d = digit.take().unwrap_or(1); // "十五" = 1×10 + 5
                section = section.checked_add(d.checked_mul(u)?)?;
                last_unit = u;
            }
        }
    }
    // A trailing digit after a unit abbreviates the next place: 一万五 = 15000, 三千二 = 3200.
    if let Some(d) = digit {
        let implied = match last_unit {
            10_000 | 100_000_000 if section == 0 => last_unit / 10,
            1000 => 100,
            100 => 10,
            _ => 1,
        };
        let ends_with_zero_gap = run.len() >= 2 && digit_value(run[run.len() - 2]) == Some(0);
        section += d * if ends_with_zero_gap { 1 } else { implied };
    }
    Some(total.checked_add(section)?.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn width_case_and_traditional() {
        assert_eq!(normalize("ＡＢＣ１２３，"), "abc123,");
        assert_eq!(normalize("我要還款"), "我要还款");
        assert_eq!(normalize("這個費用是多少"), "这个费用是多少");
        assert_eq!(normalize("VIP　客戶"), "vip 客户");
    }

    #[test]
    fn numerals_become_digits_where_they_are_numbers() {
        assert_eq!(normalize("三千二百元"), "3200元");
        assert_eq!(normalize("三千二"), "3200");
        assert_eq!(normalize("十五号"), "15号");
        assert_eq!(normalize("二十号还"), "20号还");
        assert_eq!(normalize("一万五"), "15000");
        assert_eq!(normalize("一千零五十"), "1050");
        assert_eq!(normalize("两天以后"), "2天以后");
        assert_eq!(normalize("二零二五年三月"), "2025年3月");
        assert_eq!(normalize("一百零八"), "108");
        assert_eq!(normalize("三万二千"), "32000");
        assert_eq!(normalize("五千块"), "5000块");
    }

    #[test]
    fn words_with_numerals_keep_their_shape() {
        assert_eq!(normalize("等一下"), "等一下");
        assert_eq!(normalize("统一"), "统一");
        assert_eq!(normalize("万一"), "万一");
        assert_eq!(normalize("一千零五"), "1005");
        assert_eq!(normalize("十分感谢"), "十分感谢");
    }

    #[test]
    fn core_phrase_strips_particles_and_punctuation() {
        assert_eq!(core_phrase(&normalize("嗯，是的啊！")), "是的");
        assert_eq!(core_phrase("对呀"), "对");
        assert_eq!(core_phrase("啊"), "啊");
    }
}
