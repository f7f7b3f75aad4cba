//! Phone-number normalisation to E.164, so that every way an operator or a CSV writes a number
//! gives the same keyed hash (the data subject's identity). Pure. The rules, with examples, are
//! in docs/vault.md ("Phone numbers"); in short:
//!
//! 1. Full-width digits and plus sign (０-９, ＋) become ASCII; a trunk "(0)" is dropped.
//! 2. Separators are removed: spaces (also U+3000 and no-break space), hyphens and dashes,
//!    dots, slashes, parentheses (ASCII and full-width).
//! 3. What remains must be digits with at most one leading `+`; anything else is refused.
//! 4. `+CC…` and `00CC…` are international. Otherwise the default country code applies: a
//!    leading trunk `0` is dropped (`010 1234 5678` → `+86 10 1234 5678`). For China (86):
//!    `86` followed by an 11-digit mobile number is taken as international; carrier IP-dialling
//!    prefixes (17951, 17911, 17909, 12593, 10193) in front of a mobile number are dropped;
//!    a national number without trunk `0` must be a mobile number (11 digits, 13–19…)
//!    or a 400/800 service number (10 digits) — a bare local number is ambiguous and refused.
//! 5. For +86, a trunk `0` written after the country code is dropped (`+86 010…`), and a
//!    mobile number (13–19…) must have exactly 11 national digits.
//! 6. The result has 8 to 15 digits after the `+` (E.164).
//!
//! Errors never contain the input (it is personal data).

use std::fmt;

use zeroize::{Zeroize, Zeroizing};

/// A normalised number, `+` and 8–15 digits. Wiped on drop; `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct E164(Zeroizing<String>);

impl E164 {
    /// The number, e.g. `+8613812345678`. Personal data: never log it (wrap in `Redacted`).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("E164(…)")
    }
}

/// Why a number was refused. Carries no part of the number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    /// Empty after removing separators.
    #[error("the phone number is empty")]
    Empty,
    /// A character that is neither a digit, a leading plus nor a separator.
    #[error("the phone number contains a character that is not a digit or a separator")]
    InvalidCharacter,
    /// Too few or too many digits for E.164.
    #[error("the phone number has {0} digits; E.164 allows 8 to 15 including the country code")]
    Length(usize),
    /// A national number that needs an area code.
    #[error("the phone number is a local number without area code; write it with the area code")]
    Ambiguous,
    /// A Chinese mobile number with the wrong number of digits.
    #[error("a Chinese mobile number has 11 digits")]
    MobileLength,
    /// The configured default country code is not 1 to 3 digits.
    #[error("the default country code must be 1 to 3 digits")]
    CountryCode,
}

const IP_PREFIXES_CN: [&str; 5] = ["17951", "17911", "17909", "12593", "10193"];

fn is_separator(c: char) -> bool {
    matches!(
        c,
        ' ' | '\t' | '\u{00A0}' | '\u{3000}' | '-' | '\u{2010}'
            ..='\u{2015}'
                | '\u{2212}'
                | '\u{FF0D}'
                | '.'
                | '/'
                | '('
                | ')'
                | '\u{FF08}'
                | '\u{FF09}'
    )
}

/// Chinese mobile numbers start with 13–19 (10 is Beijing's area code).
fn looks_cn_mobile(national: &str) -> bool {
    let b = national.as_bytes();
    b.len() >= 2 && b[0] == b'1' && (b'3'..=b'9').contains(&b[1])
}

fn is_cn_mobile(national: &str) -> bool {
    national.len() == 11 && looks_cn_mobile(national)
}

/// Normalises `input` to E.164, using `default_cc` (e.g. `"86"`) for national numbers.
pub fn normalize(input: &str, default_cc: &str) -> Result<E164, PhoneError> {
    if default_cc.is_empty()
        || default_cc.len() > 3
        || !default_cc.bytes().all(|b| b.is_ascii_digit())
        || default_cc.starts_with('0')
    {
        return Err(PhoneError::CountryCode);
    }
    // 1.–3.: ASCII digits and an optional leading '+'.
    let mut s = Zeroizing::new(String::with_capacity(input.len()));
    for c in input.trim().chars() {
        let c = match c {
            '\u{FF10}'..='\u{FF19}' => char::from(b'0' + (u32::from(c) - 0xFF10) as u8),
            '\u{FF0B}' => '+',
            other => other,
        };
        s.push(c);
    }
    let mut without_trunk = Zeroizing::new(s.replace("(0)", "").replace("（0）", ""));
    s.zeroize();
    without_trunk.retain(|c| !is_separator(c));
    let (plus, digits) = match without_trunk.strip_prefix('+') {
        Some(rest) => (true, rest),
        None => (false, without_trunk.as_str()),
    };
    if digits.is_empty() {
        return Err(PhoneError::Empty);
    }
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PhoneError::InvalidCharacter);
    }
    // 4.: international digits (country code first).
    let mut intl = Zeroizing::new(String::with_capacity(16));
    if plus {
        intl.push_str(digits);
    } else if let Some(rest) = digits.strip_prefix("00") {
        intl.push_str(rest);
    } else if default_cc == "86" {
        let mut national = digits;
        if let Some(p) = IP_PREFIXES_CN
            .iter()
            .find(|p| national.len() == p.len() + 11 && national.starts_with(*p))
        {
            national = &national[p.len()..];
        }
        if national.len() == 13 && national.starts_with("861") {
            intl.push_str(national);
        } else if let Some(rest) = national.strip_prefix('0') {
            intl.push_str("86");
            intl.push_str(rest);
        } else if is_cn_mobile(national)
            || (national.len() == 10
                && (national.starts_with("400") || national.starts_with("800")))
        {
            intl.push_str("86");
            intl.push_str(national);
        } else if looks_cn_mobile(national) && national.len() < 13 {
            return Err(PhoneError::MobileLength);
        } else {
            return Err(PhoneError::Ambiguous);
        }
    } else {
        intl.push_str(default_cc);
        intl.push_str(digits.strip_prefix('0').unwrap_or(digits));
    }
    // 5.: China specifics after the country code.
    if let Some(national) = intl.strip_prefix("86") {
        let national = national.strip_prefix('0').unwrap_or(national);
        if looks_cn_mobile(national) && !is_cn_mobile(national) {
            return Err(PhoneError::MobileLength);
        }
        let fixed = Zeroizing::new(format!("86{national}"));
        intl = fixed;
    }
    // 6.
    if !(8..=15).contains(&intl.len()) {
        return Err(PhoneError::Length(intl.len()));
    }
    let mut out = String::with_capacity(intl.len() + 1);
    out.push('+');
    out.push_str(&intl);
    Ok(E164(Zeroizing::new(out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Result<String, PhoneError> {
        normalize(s, "86").map(|e| e.as_str().to_owned())
    }

    #[test]
    fn spellings_of_one_mobile_number_agree() {
        for s in [
            "13812345678",
            "138 1234 5678",
            "138-1234-5678",
            "+86 138 1234 5678",
            "+86-138-1234-5678",
            "+8613812345678",
            "008613812345678",
            "0086 138 1234 5678",
            "8613812345678",
            "(+86) 138.1234.5678",
            "１３８１２３４５６７８",
            "＋８６ １３８－１２３４－５６７８",
            "17951 13812345678",
            "+86 (0)138 1234 5678",
            "\u{3000}138\u{00A0}1234\u{2014}5678 ",
        ] {
            assert_eq!(n(s).as_deref(), Ok("+8613812345678"), "{s:?}");
        }
    }

    #[test]
    fn landlines_and_service_numbers() {
        assert_eq!(n("010-1234-5678").unwrap(), "+861012345678");
        assert_eq!(n("+86 010 1234 5678").unwrap(), "+861012345678");
        assert_eq!(n("0755 8888 9999").unwrap(), "+8675588889999");
        assert_eq!(n("400-810-8888").unwrap(), "+864008108888");
        assert_eq!(n("+852 2123 4567").unwrap(), "+85221234567");
        assert_eq!(n("001 415 555 0100").unwrap(), "+14155550100");
    }

    #[test]
    fn bad_numbers_are_refused_without_echoing_them() {
        assert_eq!(n(""), Err(PhoneError::Empty));
        assert_eq!(n(" - "), Err(PhoneError::Empty));
        assert_eq!(n("1381234567x"), Err(PhoneError::InvalidCharacter));
        assert_eq!(n("138123456789"), Err(PhoneError::MobileLength));
        assert_eq!(n("1381234567"), Err(PhoneError::MobileLength));
        assert_eq!(n("+86 138 1234 567"), Err(PhoneError::MobileLength));
        assert_eq!(n("88889999"), Err(PhoneError::Ambiguous));
        assert_eq!(n("+1234"), Err(PhoneError::Length(4)));
        assert_eq!(n("+1234567890123456"), Err(PhoneError::Length(16)));
        assert_eq!(n("+86138++"), Err(PhoneError::InvalidCharacter));
        let e = n("1381234567x").unwrap_err().to_string();
        assert!(!e.contains("138"), "{e}");
        assert!(normalize("13812345678", "086").is_err());
    }

    #[test]
    fn other_default_country_codes() {
        assert_eq!(
            normalize("030 1234567", "49").unwrap().as_str(),
            "+49301234567"
        );
        assert_eq!(
            normalize("0086 13812345678", "49").unwrap().as_str(),
            "+8613812345678"
        );
        assert!(!format!("{:?}", normalize("13812345678", "86").unwrap()).contains("138"));
    }
}
