//! Inverse text normalisation of a transcript: spoken numbers back to digits, so that
//! 三千五百元 reads 3500元, 百分之五 reads 5%, 下午三点十五分 reads 下午3:15 and a card tail
//! 六八三二 (or 幺三八…) reads 6832.
//!
//! Built on the script engine's numeral conversion ([`crate::conversation::normalize::numerals`]),
//! which already handles place values, digit runs, dates and counters; this module adds the
//! forms that matter in a transcript: percentages, clock times, decimals, and 幺 for 1 in
//! digit strings.

use crate::conversation::normalize::{digit_value, numerals};

fn is_numeral(c: char) -> bool {
    digit_value(c).is_some()
        || matches!(
            c,
            '十' | '百' | '千' | '万' | '亿' | '拾' | '佰' | '仟' | '幺'
        )
}

/// A numeral run as digits, or `None` when it is not a number.
fn number(run: &str) -> Option<String> {
    let run = run.replace('幺', "一");
    let mut cs = run.chars();
    if let (Some(c), None) = (cs.next(), cs.next()) {
        return digit_value(c).map(|d| d.to_string());
    }
    let d = numerals(&run);
    d.chars().all(|c| c.is_ascii_digit()).then_some(d)
}

/// Applies the rules above; text without numerals is returned unchanged.
pub fn apply(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        // 百分之X → X%.
        if chars[i..].starts_with(&['百', '分', '之']) {
            let (run, end) = take_number(&chars, i + 3);
            if let Some(n) = run.as_deref().and_then(number) {
                let (dec, end) = decimal_part(&chars, end);
                out.push_str(&n);
                out.push_str(&dec);
                out.push('%');
                i = end;
                continue;
            }
        }
        if is_numeral(chars[i]) || chars[i].is_ascii_digit() {
            let (run, end) = take_number(&chars, i);
            let Some(run) = run else {
                out.push(chars[i]);
                i += 1;
                continue;
            };
            let n = if run.chars().all(|c| c.is_ascii_digit()) {
                Some(run.clone())
            } else {
                number(&run)
            };
            // Clock time: X点Y分 → X:YY, X点半 → X:30.
            if let Some(h) = &n
                && chars.get(end) == Some(&'点')
                && h.parse::<u32>().is_ok_and(|h| h <= 24)
            {
                if chars.get(end + 1) == Some(&'半') {
                    out.push_str(&format!("{h}:30"));
                    i = end + 2;
                    continue;
                }
                let (m, mend) = take_number(&chars, end + 1);
                if let Some(m) = m.as_deref().and_then(|m| {
                    if m.chars().all(|c| c.is_ascii_digit()) {
                        Some(m.to_owned())
                    } else {
                        number(m)
                    }
                }) && chars.get(mend) == Some(&'分')
                    && m.parse::<u32>().is_ok_and(|m| m < 60)
                {
                    out.push_str(&format!("{h}:{:02}", m.parse::<u32>().unwrap_or(0)));
                    i = mend + 1;
                    continue;
                }
                // Decimal: 三点五 → 3.5 (digits after 点 not followed by 分).
                let (dec, dend) = decimal_part(&chars, end);
                if !dec.is_empty() {
                    out.push_str(h);
                    out.push_str(&dec);
                    i = dend;
                    continue;
                }
            }
            // Everything else: the script engine's rules (counters, single numerals in words).
            // The next character decides for a lone numeral (三月 → 3月, 一下 stays).
            let run = run.replace('幺', "一");
            let converted = match chars.get(end) {
                Some(nc) => {
                    let with = numerals(&format!("{run}{nc}"));
                    with.strip_suffix(*nc)
                        .map_or_else(|| numerals(&run), str::to_owned)
                }
                None => numerals(&run),
            };
            out.push_str(&converted);
            i = end;
            continue;
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// The numeral or ASCII digit run starting at `i` (`None` if empty).
fn take_number(chars: &[char], i: usize) -> (Option<String>, usize) {
    let mut j = i;
    while j < chars.len() && (is_numeral(chars[j]) || chars[j].is_ascii_digit()) {
        j += 1;
    }
    if j == i {
        (None, i)
    } else {
        (Some(chars[i..j].iter().collect()), j)
    }
}

/// ".5" for 点五 at `i` (digits read one by one), else empty.
fn decimal_part(chars: &[char], i: usize) -> (String, usize) {
    if chars.get(i) != Some(&'点') {
        return (String::new(), i);
    }
    let mut j = i + 1;
    let mut s = String::from(".");
    while let Some(c) = chars.get(j) {
        match digit_value(*c).or(if *c == '幺' { Some(1) } else { None }) {
            Some(d) => s.push(char::from(b'0' + d as u8)),
            None if c.is_ascii_digit() => s.push(*c),
            None => break,
        }
        j += 1;
    }
    if s.len() == 1 || chars.get(j) == Some(&'分') {
        (String::new(), i)
    } else {
        (s, j)
    }
}

#[cfg(test)]
mod tests {
    use super::apply;

    #[test]
    fn amounts_dates_percent_times_digits() {
        for (spoken, written) in [
            ("三千五百元", "3500元"),
            ("我这个月还三千五百元", "我这个月还3500元"),
            ("一万两千块", "12000块"),
            ("三月十五号还款", "3月15号还款"),
            ("二零二五年六月一日", "2025年6月1日"),
            ("年利率百分之五点五", "年利率5.5%"),
            ("百分之十八", "18%"),
            ("下午三点十五分打给我", "下午3:15打给我"),
            ("明天三点半", "明天3:30"),
            ("尾号六八三二", "尾号6832"),
            ("幺三八幺二三四五六七八", "13812345678"),
            ("利息是零点五", "利息是0.5"),
            ("我等一下再说", "我等一下再说"),
            ("十分感谢", "十分感谢"),
            ("已经还了3500元", "已经还了3500元"),
        ] {
            assert_eq!(apply(spoken), written, "{spoken}");
        }
    }
}
