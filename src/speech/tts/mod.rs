//! Speech synthesis cores: the Mandarin text front end ([`frontend`]), Kokoro's input
//! encoding and voices, and the audio after the model (silence trimming, 24 kHz → 8 kHz).
//! The session itself runs in [`crate::speech::worker`].

pub mod frontend;

use std::collections::HashMap;

/// Kokoro's output rate.
pub const MODEL_RATE: u32 = 24_000;
/// The phone network's rate.
pub const PHONE_RATE: u32 = 8000;
/// Most phoneme ids per model call (the voice tables have 510 rows).
pub const MAX_IDS: usize = 510;
/// Floats per style vector.
pub const STYLE_DIM: usize = 256;

/// The Mandarin voices (Kokoro v1.0); `zf_xiaoni` is the least intelligible on the phone.
pub const VOICES: &[&str] = &[
    "zf_xiaobei",
    "zf_xiaoni",
    "zf_xiaoxiao",
    "zf_xiaoyi",
    "zm_yunjian",
    "zm_yunxi",
    "zm_yunxia",
    "zm_yunyang",
];

/// Other voices loaded with the models: the English one speaks the English tail of carrier
/// announcements in the test set (from phonemes; the text front end is Mandarin only).
pub const EXTRA_VOICES: &[&str] = &["af_heart"];

/// Symbols → ids (`vocab.json`).
#[derive(Debug, Clone)]
pub struct Vocab(HashMap<char, i64>);

impl Vocab {
    /// Parses `vocab.json` (`{"vocab": {"a": 43, …}}`).
    pub fn from_json(text: &str) -> Result<Self, String> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let map = v["vocab"].as_object().ok_or("vocab.json: no vocab")?;
        let mut out = HashMap::new();
        for (k, id) in map {
            let mut cs = k.chars();
            if let (Some(c), None, Some(id)) = (cs.next(), cs.next(), id.as_i64()) {
                out.insert(c, id);
            }
        }
        Ok(Self(out))
    }

    /// Ids of a phoneme string's symbols; symbols outside the vocabulary are skipped.
    pub fn encode(&self, phonemes: &str) -> Vec<i64> {
        phonemes
            .chars()
            .filter_map(|c| self.0.get(&c).copied())
            .collect()
    }

    /// Whether `c` is a symbol of the vocabulary.
    pub fn contains(&self, c: char) -> bool {
        self.0.contains_key(&c)
    }
}

/// A voice: 510 style vectors, one per input length.
#[derive(Debug, Clone)]
pub struct Voice {
    rows: Vec<f32>,
}

impl Voice {
    /// Parses a voice file (raw little-endian float32, 510 × 1 × 256).
    pub fn from_bytes(b: &[u8]) -> Result<Self, String> {
        if b.len() != MAX_IDS * STYLE_DIM * 4 {
            return Err(format!(
                "voice file has {} bytes, expected {}",
                b.len(),
                MAX_IDS * STYLE_DIM * 4
            ));
        }
        Ok(Self {
            rows: b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        })
    }

    /// The style vector for an input of `n` phoneme ids.
    pub fn style(&self, n: usize) -> &[f32] {
        let i = n.min(MAX_IDS - 1);
        &self.rows[i * STYLE_DIM..(i + 1) * STYLE_DIM]
    }
}

/// The model's `tokens` input: 0, ids…, 0 (ids cut at [`MAX_IDS`] − 2).
pub fn model_tokens(ids: &[i64]) -> Vec<i64> {
    let mut t = Vec::with_capacity(ids.len() + 2);
    t.push(0);
    t.extend_from_slice(&ids[..ids.len().min(MAX_IDS - 2)]);
    t.push(0);
    t
}

/// Cuts leading and trailing silence (below −45 dBFS in 10 ms windows), keeping `margin_ms`
/// on each side.
pub fn trim_silence(audio: &[f32], rate: u32, margin_ms: u32) -> &[f32] {
    let win = (rate / 100) as usize;
    if audio.len() < win {
        return audio;
    }
    let threshold = 10f32.powf(-45.0 / 20.0);
    let loud = |w: &[f32]| {
        let e = w.iter().map(|x| x * x).sum::<f32>() / w.len() as f32;
        e.sqrt() > threshold
    };
    let windows: Vec<&[f32]> = audio.chunks(win).collect();
    let Some(first) = windows.iter().position(|w| loud(w)) else {
        return &audio[..0];
    };
    let last = windows.iter().rposition(|w| loud(w)).unwrap_or(first);
    let margin = (rate * margin_ms / 1000) as usize;
    let start = (first * win).saturating_sub(margin);
    let end = ((last + 1) * win + margin).min(audio.len());
    &audio[start..end]
}

/// Float audio to 16-bit PCM at `to` Hz (through the media engine's band-limited resampler).
pub fn to_pcm(audio: &[f32], rate: u32, to: u32) -> Vec<i16> {
    let pcm: Vec<i16> = audio
        .iter()
        .map(|x| (x * 32767.0).round().clamp(-32768.0, 32767.0) as i16)
        .collect();
    crate::media::resample::resample(&pcm, rate, to)
}

/// The prompt cache key: what was said, by whom, how fast, with which model and front end.
pub fn cache_key(text: &str, voice: &str, speed: f64, model_sha256: &str) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for part in [
        text.as_bytes(),
        voice.as_bytes(),
        format!("{speed:.3}").as_bytes(),
        model_sha256.as_bytes(),
        frontend::VERSION.as_bytes(),
    ] {
        ctx.update(&(part.len() as u64).to_le_bytes());
        ctx.update(part);
    }
    hex::encode(ctx.finish().as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimming_keeps_the_sound_and_a_margin() {
        let mut a = vec![0f32; 24_000];
        for (i, x) in a.iter_mut().enumerate().skip(9600).take(4800) {
            *x = 0.3 * (i as f32 * 0.05).sin();
        }
        let t = trim_silence(&a, 24_000, 50);
        assert!(
            (t.len() as i64 - (4800 + 2 * 1200)).abs() <= 480,
            "{}",
            t.len()
        );
        assert!(trim_silence(&[0.0; 1000], 24_000, 50).is_empty());
    }

    #[test]
    fn tokens_are_padded_and_cut() {
        assert_eq!(model_tokens(&[5, 6]), vec![0, 5, 6, 0]);
        assert_eq!(model_tokens(&vec![1; 600]).len(), MAX_IDS);
    }

    #[test]
    fn cache_keys_differ_by_every_part() {
        let k = cache_key("您好", "zf_xiaobei", 1.0, "abc");
        assert_eq!(k.len(), 64);
        assert_ne!(k, cache_key("您好", "zf_xiaoyi", 1.0, "abc"));
        assert_ne!(k, cache_key("您好", "zf_xiaobei", 1.1, "abc"));
        assert_ne!(k, cache_key("您好", "zf_xiaobei", 1.0, "abd"));
        assert_ne!(k, cache_key("您好。", "zf_xiaobei", 1.0, "abc"));
    }
}
