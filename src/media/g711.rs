//! ITU-T G.711 companding: μ-law (PCMU, RTP payload type 0) and A-law (PCMA, payload type 8).
//!
//! Linear samples are 16-bit signed PCM at 8 kHz. G.711 itself is defined on 14-bit (μ-law) and
//! 13-bit (A-law) uniform PCM; the 16-bit value is that scale shifted left by 2 or 3 bits, and
//! the encoder drops those low bits from the magnitude (so the mapping is symmetric around zero).
//!
//! The structure, in G.711's own terms:
//! - **μ-law** (G.711 Table 2a): 8 segments, 16 intervals each; segment `s` covers 14-bit
//!   magnitudes `[(32 << s) - 33, (64 << s) - 33)` in steps of `2 << s`, and an interval decodes to
//!   its midpoint `((2q + 33) << s) - 33`. The character is the polarity bit (1 = positive)
//!   followed by the segment and interval bits inverted; equivalently, the word
//!   `sign(1 = negative) | segment | interval` with every bit inverted. There are two zero codes
//!   (0xFF and 0x7F).
//! - **A-law** (G.711 Table 1a): segments 0 and 1 both have step 2 over `[0, 32)` and `[32, 64)`;
//!   segment `s ≥ 1` covers 13-bit magnitudes `[16 << s, 32 << s)` in steps of `1 << s`; an
//!   interval decodes to its midpoint. The character is sign (1 = positive), segment and
//!   interval, with the even bits inverted (XOR 0x55). A-law has no zero code: ±1 (13-bit) is the
//!   smallest output.
//!
//! Decoding goes through 256-entry tables built at compile time; encoding is a few bit operations.
//! The unit tests derive the standard's tables independently (from the segment/step description
//! above, interval by interval) and check every code and every 16-bit input against them.

/// Decoded value of every μ-law code, 16-bit scale.
static ULAW_DECODE: [i16; 256] = build_ulaw_table();
/// Decoded value of every A-law code, 16-bit scale.
static ALAW_DECODE: [i16; 256] = build_alaw_table();

/// Largest 14-bit magnitude the μ-law encoder looks at: the last interval is [7903, 8159), so
/// clipping just below its top keeps the biased value inside the last segment (G.711 Table 2a).
const ULAW_CLIP: i32 = 8158;
/// μ-law bias: adding it makes every segment boundary a power of two.
const ULAW_BIAS: i32 = 33;

const fn ulaw_decode_code(code: u8) -> i16 {
    let u = !code;
    let seg = ((u >> 4) & 0x07) as i32;
    let q = (u & 0x0F) as i32;
    let mag14 = ((2 * q + ULAW_BIAS) << seg) - ULAW_BIAS;
    let v = mag14 * 4;
    // Sign bit set after inversion means negative.
    if u & 0x80 != 0 { -v as i16 } else { v as i16 }
}

const fn build_ulaw_table() -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = ulaw_decode_code(c as u8);
        c += 1;
    }
    t
}

const fn alaw_decode_code(code: u8) -> i16 {
    let a = code ^ 0x55;
    let seg = ((a >> 4) & 0x07) as i32;
    let q = (a & 0x0F) as i32;
    let mag13 = if seg == 0 {
        2 * q + 1
    } else {
        (2 * q + 33) << (seg - 1)
    };
    let v = mag13 * 8;
    // Sign bit set means positive in A-law.
    if a & 0x80 != 0 { v as i16 } else { -v as i16 }
}

const fn build_alaw_table() -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = alaw_decode_code(c as u8);
        c += 1;
    }
    t
}

/// One μ-law code to a 16-bit linear sample.
#[inline]
pub fn ulaw_to_linear(code: u8) -> i16 {
    ULAW_DECODE[usize::from(code)]
}

/// One A-law code to a 16-bit linear sample.
#[inline]
pub fn alaw_to_linear(code: u8) -> i16 {
    ALAW_DECODE[usize::from(code)]
}

/// One 16-bit linear sample to μ-law.
#[inline]
pub fn linear_to_ulaw(sample: i16) -> u8 {
    let x = i32::from(sample);
    let (sign, mag) = if x < 0 { (0x80u8, -x) } else { (0x00u8, x) };
    let mag14 = (mag >> 2).min(ULAW_CLIP) + ULAW_BIAS;
    // The biased magnitude lies in [33, 8191]; its top bit gives the segment (bit 5 → 0).
    let seg = (31 - mag14.leading_zeros()) as i32 - 5;
    let q = (mag14 >> (seg + 1)) & 0x0F;
    !(sign | ((seg as u8) << 4) | q as u8)
}

/// One 16-bit linear sample to A-law.
#[inline]
pub fn linear_to_alaw(sample: i16) -> u8 {
    let x = i32::from(sample);
    let (sign, mag) = if x < 0 { (0x00u8, -x) } else { (0x80u8, x) };
    let mag13 = (mag >> 3).min(4095);
    let (seg, q) = if mag13 < 32 {
        (0, mag13 >> 1)
    } else {
        // mag13 in [16 << s, 32 << s) for s ≥ 1.
        let s = (31 - mag13.leading_zeros()) as i32 - 4;
        (s, (mag13 >> s) & 0x0F)
    };
    (sign | ((seg as u8) << 4) | q as u8) ^ 0x55
}

/// Which G.711 law a payload uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Law {
    /// μ-law, PCMU (North America, Japan; static payload type 0).
    Ulaw,
    /// A-law, PCMA (China and Europe; static payload type 8).
    Alaw,
}

impl Law {
    /// Encodes `pcm` into `out` (cleared first), one octet per sample.
    pub fn encode(self, pcm: &[i16], out: &mut Vec<u8>) {
        out.clear();
        match self {
            Self::Ulaw => out.extend(pcm.iter().map(|&s| linear_to_ulaw(s))),
            Self::Alaw => out.extend(pcm.iter().map(|&s| linear_to_alaw(s))),
        }
    }

    /// Decodes `payload` and appends to `out`.
    pub fn decode_into(self, payload: &[u8], out: &mut Vec<i16>) {
        match self {
            Self::Ulaw => out.extend(payload.iter().map(|&c| ulaw_to_linear(c))),
            Self::Alaw => out.extend(payload.iter().map(|&c| alaw_to_linear(c))),
        }
    }

    /// The code for digital silence (+0).
    pub fn silence(self) -> u8 {
        match self {
            Self::Ulaw => linear_to_ulaw(0),
            Self::Alaw => linear_to_alaw(0),
        }
    }

    /// The SDP encoding name (RFC 3551 §6).
    pub fn encoding_name(self) -> &'static str {
        match self {
            Self::Ulaw => "PCMU",
            Self::Alaw => "PCMA",
        }
    }

    /// The static RTP payload type (RFC 3551 Table 4).
    pub fn static_payload_type(self) -> u8 {
        match self {
            Self::Ulaw => 0,
            Self::Alaw => 8,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One row of a G.711 table: the code, the input interval `[lo, hi)` on the law's own
    /// uniform scale (14-bit μ-law, 13-bit A-law) and the decoder output on that scale.
    #[derive(Debug, Clone, Copy)]
    struct Row {
        code: u8,
        lo: i32,
        hi: i32,
        out: i32,
    }

    /// G.711 Table 2a (μ-law), positive half, built interval by interval from the standard's
    /// description: the first interval of segment 1 is [0, 1) → 0, then step 2 up to 31; each
    /// later segment doubles the step; 16 intervals per segment; the output is the midpoint.
    fn ulaw_reference() -> Vec<Row> {
        let mut rows = Vec::new();
        let mut lo = -1; // segment 1 starts at the virtual decision value -1 (0 is its midpoint)
        for seg in 0..8u8 {
            let step = 2 << seg;
            for q in 0..16u8 {
                let hi = lo + step;
                // Polarity 1 (positive), then segment and interval inverted.
                let code = 0x80 | !((seg << 4) | q) & 0x7F;
                let out = lo + step / 2;
                rows.push(Row {
                    code,
                    lo: lo.max(0),
                    hi,
                    out,
                });
                lo = hi;
            }
        }
        assert_eq!(lo, 8159, "μ-law covers 14-bit magnitudes up to 8159");
        rows
    }

    /// G.711 Table 1a (A-law), positive half: segments 1 and 2 have step 2 (0..32, 32..64),
    /// each later segment doubles it; outputs are midpoints; even bits inverted.
    fn alaw_reference() -> Vec<Row> {
        let mut rows = Vec::new();
        let mut lo = 0;
        for seg in 0..8u8 {
            let step = if seg == 0 { 2 } else { 1 << seg };
            for q in 0..16u8 {
                let hi = lo + step;
                let code = (0x80 | (seg << 4) | q) ^ 0x55;
                rows.push(Row {
                    code,
                    lo,
                    hi,
                    out: lo + step / 2,
                });
                lo = hi;
            }
        }
        assert_eq!(lo, 4096, "A-law covers 13-bit magnitudes up to 4096");
        rows
    }

    /// Every row's code decodes to the table's output (× `scale` to 16 bits), and so does its
    /// negative twin to the negated output; together they cover all 256 codes.
    fn check_all_codes(rows: &[Row], decode: fn(u8) -> i16, negative: fn(u8) -> u8, scale: i32) {
        let mut seen = [false; 256];
        for r in rows {
            let neg = negative(r.code);
            assert_eq!(
                i32::from(decode(r.code)),
                r.out * scale,
                "code {:#04x}",
                r.code
            );
            assert_eq!(i32::from(decode(neg)), -r.out * scale, "code {neg:#04x}");
            seen[usize::from(r.code)] = true;
            seen[usize::from(neg)] = true;
        }
        assert!(seen.iter().all(|&s| s), "the table covers all 256 codes");
    }

    #[test]
    fn every_ulaw_code_decodes_to_the_standard_value() {
        // The negative twin has polarity bit 0.
        check_all_codes(&ulaw_reference(), ulaw_to_linear, |c| c & 0x7F, 4);
    }

    #[test]
    fn every_alaw_code_decodes_to_the_standard_value() {
        check_all_codes(&alaw_reference(), alaw_to_linear, |c| c ^ 0x80, 8);
    }

    #[test]
    fn encode_of_decode_is_identity_on_codes() {
        for c in 0..=255u8 {
            assert_eq!(linear_to_alaw(alaw_to_linear(c)), c, "A-law {c:#04x}");
            // μ-law has two zeros; negative zero (0x7F) re-encodes as positive zero (0xFF).
            let expect = if c == 0x7F { 0xFF } else { c };
            assert_eq!(linear_to_ulaw(ulaw_to_linear(c)), expect, "μ-law {c:#04x}");
        }
    }

    #[test]
    fn every_16_bit_input_lands_in_its_standard_interval() {
        let ulaw = ulaw_reference();
        let alaw = alaw_reference();
        for x in i16::MIN..=i16::MAX {
            let mag = i32::from(x).abs();
            // μ-law: the 14-bit magnitude, clipped at the top of the last interval.
            let m14 = (mag >> 2).min(8158);
            let r = ulaw.iter().find(|r| (r.lo..r.hi).contains(&m14)).unwrap();
            let code = if x < 0 { r.code & 0x7F } else { r.code };
            assert_eq!(linear_to_ulaw(x), code, "μ-law input {x}");
            let m13 = (mag >> 3).min(4095);
            let r = alaw.iter().find(|r| (r.lo..r.hi).contains(&m13)).unwrap();
            let code = if x < 0 { r.code ^ 0x80 } else { r.code };
            assert_eq!(linear_to_alaw(x), code, "A-law input {x}");
        }
    }

    #[test]
    fn known_sample_points() {
        // Silence, full scale and the smallest steps, as in the G.711 tables.
        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(ulaw_to_linear(0xFF), 0);
        assert_eq!(ulaw_to_linear(0x7F), 0);
        assert_eq!(ulaw_to_linear(0x80), 32124); // 8031 on the 14-bit scale
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
        assert_eq!(linear_to_ulaw(1000), 0xCE);
        assert_eq!(ulaw_to_linear(0xCE), 988);
        assert_eq!(linear_to_alaw(0), 0xD5);
        assert_eq!(alaw_to_linear(0xD5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        assert_eq!(alaw_to_linear(0xAA), 32256); // 4032 on the 13-bit scale
        assert_eq!(alaw_to_linear(0x2A), -32256);
        assert_eq!(linear_to_alaw(i16::MAX), 0xAA);
        assert_eq!(linear_to_alaw(i16::MIN), 0x2A);
        assert_eq!(linear_to_alaw(1000), 0xFA);
        assert_eq!(alaw_to_linear(0xFA), 1008);
        assert_eq!(Law::Ulaw.silence(), 0xFF);
        assert_eq!(Law::Alaw.silence(), 0xD5);
    }

    #[test]
    fn quantisation_error_is_within_half_a_step() {
        for x in i16::MIN..=i16::MAX {
            let e = (i32::from(ulaw_to_linear(linear_to_ulaw(x))) - i32::from(x)).abs();
            // Step 2 << seg on the 14-bit scale, ×4 on 16 bits; the top interval also clips.
            let mag = i32::from(x).abs();
            assert!(e <= (mag / 16).max(8) + 4, "μ-law {x}: error {e}");
            let e = (i32::from(alaw_to_linear(linear_to_alaw(x))) - i32::from(x)).abs();
            assert!(e <= (mag / 32).max(16) + 8, "A-law {x}: error {e}");
        }
    }
}
