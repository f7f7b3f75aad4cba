//! Speech recognition cores: Whisper's token rules and text, and what happens to a transcript
//! after decoding (Traditional → Simplified, inverse text normalisation, hotwords).
//!
//! The ONNX sessions run in [`crate::speech::worker`]; this module decides, from each step's
//! logits, which token comes next and when to stop.

pub mod hotwords;
pub mod itn;

use std::collections::HashMap;

use crate::conversation::normalize::to_simplified;

/// `<|endoftext|>`.
pub const EOT: u32 = 50257;
/// `<|startoftranscript|>`.
pub const SOT: u32 = 50258;
/// `<|zh|>`.
pub const LANG_ZH: u32 = 50260;
/// `<|transcribe|>`.
pub const TRANSCRIBE: u32 = 50359;
/// `<|notimestamps|>`.
pub const NO_TIMESTAMPS: u32 = 50363;
/// First timestamp token; every id from here on is masked.
pub const FIRST_TIMESTAMP: u32 = 50364;
/// The space token, masked at the first step (with EOT) so a transcript does not start empty.
pub const SPACE: u32 = 220;
/// The decoder's prompt: start, Chinese, transcribe, no timestamps.
pub const PROMPT: [u32; 4] = [SOT, LANG_ZH, TRANSCRIBE, NO_TIMESTAMPS];
/// Decoder positions (the prompt included).
pub const MAX_POSITIONS: usize = 448;

/// Why the decoder stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// End of text.
    Eot,
    /// The token cap for the audio length was reached.
    Length,
    /// A repeated n-gram (Whisper looping); the repeats were dropped.
    Repetition,
}

/// Token rules from `config.json` and the vocabulary from `tokenizer.json`.
#[derive(Debug)]
pub struct Tokenizer {
    /// id → bytes of the token (byte-level BPE undone).
    pieces: Vec<Vec<u8>>,
    suppress: Vec<u32>,
}

/// GPT-2's byte ↔ printable-character table: bytes that are printable map to themselves,
/// the rest to 256 + n in order.
fn byte_decoder() -> HashMap<char, u8> {
    let mut printable: Vec<u32> = (u32::from(b'!')..=u32::from(b'~'))
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut map: HashMap<char, u8> = printable
        .iter()
        .map(|&b| (char::from_u32(b).unwrap_or('\0'), b as u8))
        .collect();
    let mut n = 0;
    for b in 0u32..256 {
        if !printable.contains(&b) {
            printable.push(b);
            if let Some(c) = char::from_u32(256 + n) {
                map.insert(c, b as u8);
            }
            n += 1;
        }
    }
    map
}

impl Tokenizer {
    /// Parses `tokenizer.json` and `config.json` (their texts).
    pub fn from_json(tokenizer_json: &str, config_json: &str) -> Result<Self, String> {
        let t: serde_json::Value =
            serde_json::from_str(tokenizer_json).map_err(|e| format!("tokenizer.json: {e}"))?;
        let vocab = t["model"]["vocab"]
            .as_object()
            .ok_or("tokenizer.json: no model.vocab")?;
        let dec = byte_decoder();
        let mut pieces: Vec<Vec<u8>> = Vec::new();
        let mut put = |id: usize, bytes: Vec<u8>| {
            if pieces.len() <= id {
                pieces.resize(id + 1, Vec::new());
            }
            pieces[id] = bytes;
        };
        for (tok, id) in vocab {
            let id = id.as_u64().ok_or("tokenizer.json: bad id")? as usize;
            let bytes: Option<Vec<u8>> = tok.chars().map(|c| dec.get(&c).copied()).collect();
            put(id, bytes.unwrap_or_default());
        }
        if let Some(added) = t["added_tokens"].as_array() {
            for a in added {
                if let Some(id) = a["id"].as_u64() {
                    // Special tokens never reach the text.
                    put(id as usize, Vec::new());
                }
            }
        }
        let c: serde_json::Value =
            serde_json::from_str(config_json).map_err(|e| format!("config.json: {e}"))?;
        let suppress = c["suppress_ids"]
            .as_array()
            .ok_or("config.json: no suppress_ids")?
            .iter()
            .filter_map(|v| v.as_u64().map(|x| x as u32))
            .collect();
        if pieces.len() <= NO_TIMESTAMPS as usize {
            return Err(format!("tokenizer.json: only {} tokens", pieces.len()));
        }
        Ok(Self { pieces, suppress })
    }

    /// The text of ordinary tokens (special tokens are skipped; invalid UTF-8 is replaced).
    pub fn decode(&self, tokens: &[u32]) -> String {
        let bytes: Vec<u8> = tokens
            .iter()
            .filter(|t| **t < EOT)
            .flat_map(|t| self.pieces.get(*t as usize).cloned().unwrap_or_default())
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Masks what may not come next: `suppress_ids`, every timestamp and special token but
    /// EOT, and at the first step also the space and EOT.
    pub fn mask(&self, logits: &mut [f32], first_step: bool) {
        for &id in &self.suppress {
            if let Some(l) = logits.get_mut(id as usize) {
                *l = f32::NEG_INFINITY;
            }
        }
        for l in logits.iter_mut().skip(EOT as usize + 1) {
            *l = f32::NEG_INFINITY;
        }
        if first_step {
            for id in [SPACE, EOT] {
                if let Some(l) = logits.get_mut(id as usize) {
                    *l = f32::NEG_INFINITY;
                }
            }
        }
    }
}

/// One hypothesis of a beam.
#[derive(Debug, Clone)]
struct Hyp {
    tokens: Vec<u32>,
    logp: f64,
}

/// One sequence's beam-search state (Whisper's beam search: each live hypothesis proposes its
/// best `width + 1` next tokens, the best `width` non-final candidates live on; a candidate
/// that ends — end of text, a loop, the length cap — is kept as finished; decoding stops when
/// `width` hypotheses have finished or none is live; the finished hypothesis with the best
/// mean log-probability per token wins).
///
/// The worker runs `width` decoder rows per utterance. After each step, row `j` continues
/// hypothesis `j` of [`Beam::step`]'s answer, whose KV cache is that of the row it came from.
#[derive(Debug, Clone)]
pub struct Beam {
    width: usize,
    cap: usize,
    live: Vec<Hyp>,
    finished: Vec<(Hyp, StopReason)>,
}

impl Beam {
    /// A search of `width` hypotheses for `audio_secs` of speech: at most `per_second` tokens
    /// per second of audio, plus 10 (width 1 is greedy decoding).
    pub fn new(width: usize, audio_secs: f64, per_second: usize) -> Self {
        let width = width.max(1);
        let cap = ((audio_secs * per_second as f64).ceil() as usize + 10)
            .min(MAX_POSITIONS - PROMPT.len() - 1);
        Self {
            width,
            cap,
            live: vec![Hyp {
                tokens: Vec::new(),
                logp: 0.0,
            }],
            finished: Vec::new(),
        }
    }

    /// Takes this step's logits, `width` rows of `vocab` (masked and normalised in place; only
    /// the rows of live hypotheses are read). Returns, for each of the `width` rows of the next
    /// step, the row whose cache it continues and the token to feed — or `None` once stopped.
    pub fn step(
        &mut self,
        tok: &Tokenizer,
        logits: &mut [f32],
        vocab: usize,
    ) -> Option<Vec<(usize, u32)>> {
        if self.live.is_empty() {
            return None;
        }
        let mut cand: Vec<(f64, usize, u32)> = Vec::new();
        for (i, h) in self.live.iter().enumerate() {
            let Some(row) = logits.get_mut(i * vocab..(i + 1) * vocab) else {
                break;
            };
            tok.mask(row, h.tokens.is_empty());
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            if !max.is_finite() {
                continue;
            }
            // Greedy (one row) needs only the ranking, not normalised scores.
            let lse = if self.width == 1 {
                0.0
            } else {
                f64::from(max)
                    + row
                        .iter()
                        .map(|x| f64::from(x - max).exp())
                        .sum::<f64>()
                        .ln()
            };
            for t in top_k(row, self.width + 1) {
                cand.push((h.logp + f64::from(row[t as usize]) - lse, i, t));
            }
        }
        cand.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut next: Vec<Hyp> = Vec::with_capacity(self.width);
        let mut parents = Vec::with_capacity(self.width);
        for (logp, i, t) in cand {
            if next.len() >= self.width || self.finished.len() >= self.width {
                break;
            }
            let mut tokens = self.live[i].tokens.clone();
            if t == EOT {
                self.finished.push((Hyp { tokens, logp }, StopReason::Eot));
                continue;
            }
            tokens.push(t);
            if let Some(keep) = repetition(&tokens) {
                tokens.truncate(keep);
                self.finished
                    .push((Hyp { tokens, logp }, StopReason::Repetition));
                continue;
            }
            if tokens.len() >= self.cap {
                self.finished
                    .push((Hyp { tokens, logp }, StopReason::Length));
                continue;
            }
            // The same text reached from two rows: keep the better (first) one.
            if next.iter().any(|h| h.tokens == tokens) {
                continue;
            }
            next.push(Hyp { tokens, logp });
            parents.push((i, t));
        }
        if self.finished.len() >= self.width || next.is_empty() {
            self.live.clear();
            return None;
        }
        self.live = next;
        // Unused rows repeat the last hypothesis (their output is never read).
        let last = *parents.last().unwrap_or(&(0, EOT));
        parents.resize(self.width, last);
        Some(parents)
    }

    /// Whether decoding has stopped.
    pub fn stopped(&self) -> bool {
        self.live.is_empty()
    }

    /// The result: the finished hypothesis with the best mean log-probability per token (the
    /// live ones if none finished), with why it stopped.
    pub fn result(&self) -> (Vec<u32>, StopReason) {
        let score = |h: &Hyp| h.logp / h.tokens.len().max(1) as f64;
        let best = self
            .finished
            .iter()
            .max_by(|a, b| score(&a.0).total_cmp(&score(&b.0)))
            .map(|(h, r)| (h.tokens.clone(), *r));
        best.or_else(|| {
            self.live
                .iter()
                .max_by(|a, b| score(a).total_cmp(&score(b)))
                .map(|h| (h.tokens.clone(), StopReason::Length))
        })
        .unwrap_or((Vec::new(), StopReason::Length))
    }
}

/// The indices of the `k` largest values (finite only), best first.
fn top_k(v: &[f32], k: usize) -> Vec<u32> {
    let mut best: Vec<(f32, u32)> = Vec::with_capacity(k + 1);
    for (i, &x) in v.iter().enumerate() {
        if !x.is_finite() || (best.len() == k && x <= best[k - 1].0) {
            continue;
        }
        let pos = best.partition_point(|(y, _)| *y >= x);
        best.insert(pos, (x, i as u32));
        best.truncate(k);
    }
    best.into_iter().map(|(_, i)| i).collect()
}

/// Whisper's loops: the tail is an n-gram (1 ≤ n ≤ 12) repeated so often that it is not
/// speech — a single token more than 6 times, longer n-grams 3 times in a row. Returns how
/// many tokens to keep (the text up to and including the first occurrence).
pub fn repetition(tokens: &[u32]) -> Option<usize> {
    let len = tokens.len();
    for n in 1..=12usize {
        let times = if n == 1 { 7 } else { 3 };
        if len < n * times {
            continue;
        }
        let tail = &tokens[len - n..];
        if n > 1 && tail.iter().all(|t| *t == tail[0]) {
            continue; // one token repeated: the n = 1 rule decides
        }
        if (1..times).all(|k| &tokens[len - (k + 1) * n..len - k * n] == tail) {
            return Some(len - (times - 1) * n);
        }
    }
    None
}

/// What the decoder produced for one utterance, before post-processing.
#[derive(Debug, Clone, PartialEq)]
pub struct RawTranscript {
    /// The decoded text (as the model wrote it).
    pub text: String,
    /// Tokens, prompt excluded.
    pub tokens: Vec<u32>,
    /// Why decoding stopped.
    pub stop: StopReason,
    /// Encoder + decoder time.
    pub decode_time: std::time::Duration,
    /// How many utterances shared the batch.
    pub batch: usize,
}

/// A hotword correction: what was heard, what it became, and why.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Correction {
    /// The text that was replaced.
    pub heard: String,
    /// The hotword put in its place.
    pub hotword: String,
    /// Pinyin similarity 0..1.
    pub score: f64,
    /// Character offset in the text before the correction.
    pub at: usize,
}

/// Post-processing settings.
#[derive(Debug, Clone)]
pub struct PostProcess {
    /// Inverse text normalisation on or off.
    pub itn: bool,
    /// Business terms to correct towards (per task or script).
    pub hotwords: hotwords::Hotwords,
}

/// A finished transcript.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Transcript {
    /// Final text (Simplified, normalised, corrected).
    pub text: String,
    /// The model's text before post-processing.
    pub raw: String,
    /// Hotword corrections applied.
    pub corrections: Vec<Correction>,
    /// Why decoding stopped.
    pub stop: StopReason,
}

/// Simplified script, ITN, hotwords — in that order (hotwords see digits, not numerals).
pub fn post_process(
    raw: &RawTranscript,
    pp: &PostProcess,
    pinyin: &hotwords::Pinyin,
) -> Transcript {
    let mut text = to_simplified(raw.text.trim());
    if pp.itn {
        text = itn::apply(&text);
    }
    let (text, corrections) = pp.hotwords.correct(&text, pinyin);
    Transcript {
        text,
        raw: raw.text.clone(),
        corrections,
        stop: raw.stop,
    }
}

/// Character error rate: edit distance over characters, punctuation and spaces ignored, per
/// reference character.
pub fn cer(reference: &str, hypothesis: &str) -> (usize, usize) {
    let clean = |s: &str| -> Vec<char> {
        crate::conversation::normalize::normalize(s)
            .chars()
            .filter(|c| !crate::conversation::normalize::is_punct(*c))
            .collect()
    };
    let (r, h) = (clean(reference), clean(hypothesis));
    let mut prev: Vec<usize> = (0..=h.len()).collect();
    for (i, rc) in r.iter().enumerate() {
        let mut cur = vec![i + 1; h.len() + 1];
        for (j, hc) in h.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(rc != hc))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    (prev[h.len()], r.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repetition_guard_trims_loops() {
        assert_eq!(repetition(&[1, 2, 3, 4]), None);
        assert_eq!(repetition(&[9, 5, 6, 5, 6, 5, 6]), Some(3));
        assert_eq!(repetition(&[7; 7]), Some(1));
        assert_eq!(repetition(&[7; 6]), None);
        assert_eq!(repetition(&[1, 2, 3, 1, 2, 3]), None);
    }

    #[test]
    fn greedy_masks_and_caps() {
        let tok = Tokenizer {
            pieces: vec![Vec::new(); 51865],
            suppress: vec![5],
        };
        let mut g = Beam::new(1, 0.0, 12);
        assert_eq!(g.cap, 10);
        let mut logits = vec![0f32; 51865];
        logits[EOT as usize] = 10.0;
        logits[SPACE as usize] = 9.0;
        logits[5] = 8.0;
        logits[100] = 1.0;
        // First step: EOT and space are masked, suppressed 5 too.
        assert_eq!(
            g.step(&tok, &mut logits.clone(), 51865),
            Some(vec![(0, 100)])
        );
        // Later: EOT wins.
        assert_eq!(g.step(&tok, &mut logits.clone(), 51865), None);
        assert_eq!(g.result(), (vec![100], StopReason::Eot));
        let mut g = Beam::new(1, 0.0, 12);
        let mut l = vec![0f32; 51865];
        l[FIRST_TIMESTAMP as usize + 3] = 99.0;
        l[42] = 1.0;
        for i in 0..10 {
            let mut x = l.clone();
            x[42 + i] = 2.0;
            let r = g.step(&tok, &mut x, 51865);
            assert_eq!(r.is_some(), i < 9, "{i}");
        }
        assert!(g.stopped());
        let (tokens, why) = g.result();
        assert_eq!((tokens.len(), why), (10, StopReason::Length));
    }

    /// Rows of `vocab` logits: -100 everywhere but the given log-probabilities.
    fn rows(vocab: usize, rows: &[&[(u32, f64)]]) -> Vec<f32> {
        let mut out = vec![-100f32; vocab * rows.len()];
        for (r, probs) in rows.iter().enumerate() {
            for (t, p) in *probs {
                out[r * vocab + *t as usize] = p.ln() as f32;
            }
        }
        out
    }

    #[test]
    fn beam_search_finds_the_likelier_sequence_greedy_misses() {
        let v = 51865;
        let tok = Tokenizer {
            pieces: vec![Vec::new(); v],
            suppress: Vec::new(),
        };
        let (a, b, c, d, e, f, g) = (100, 200, 300, 400, 500, 600, 700);
        let mut beam = Beam::new(2, 1.0, 12);
        // Step 1 (both rows hold the prompt; only the first is read): A 0.6, B 0.4.
        let sel = beam.step(&tok, &mut rows(v, &[&[(a, 0.6), (b, 0.4)], &[]]), v);
        assert_eq!(sel, Some(vec![(0, a), (0, b)]));
        // Step 2: after A no end in sight; after B the end is likely (0.4 × 0.9 = 0.36).
        let sel = beam.step(
            &tok,
            &mut rows(
                v,
                &[&[(c, 0.3), (d, 0.3), (e, 0.4)], &[(EOT, 0.9), (f, 0.1)]],
            ),
            v,
        );
        // B+EOT finished; A+E (0.24) and A+C (0.18) live on, both from row 0.
        assert_eq!(sel, Some(vec![(0, e), (0, c)]));
        // Step 3: A+E ends (0.12): two finished, the search stops.
        let sel = beam.step(
            &tok,
            &mut rows(v, &[&[(EOT, 0.5), (g, 0.5)], &[(EOT, 0.5), (g, 0.5)]]),
            v,
        );
        assert_eq!(sel, None);
        // Mean log-probability: B (ln 0.36 / 1) beats A E (ln 0.12 / 2); greedy says A E.
        assert_eq!(beam.result(), (vec![b], StopReason::Eot));
    }

    #[test]
    fn cer_counts_edits_without_punctuation() {
        assert_eq!(cer("对，这就是我。", "对这就是我"), (0, 5));
        assert_eq!(cer("太乙真人", "太以真人"), (1, 4));
        assert_eq!(cer("還款", "还款"), (0, 2));
        assert_eq!(cer("abc", ""), (3, 3));
    }
}
