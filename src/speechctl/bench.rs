//! `vaultcall bench-speech` (hidden): the speech quality and speed benchmarks of
//! docs/benchmarks.md. Prints Markdown tables; every figure comes from this run.
//!
//! Quality: the dev set (`devset.txt`, 104 utterances of the kind customers say) synthesised
//! round-robin with six voices, recognised at 16 kHz and as telephone audio (300–3400 Hz band,
//! 8 kHz, A-law), plus the real recordings from `make models`; CER per condition.
//! Speed: decode time of 1, 2 and 5 s utterances (fp32 and int8, medians of 5), utterances per
//! second with 1, 4 and 16 concurrent streams, TTS real-time factor and time to first audio,
//! model load time and resident memory.

use std::fmt::Write as _;
use std::time::Duration;

use crate::app::Failure;
use crate::config::{AsrPrecision, Config};
use crate::media::g711;
use crate::media::resample::{read_wav, resample, to_mono};
use crate::speech::asr::{PostProcess, cer, post_process};
use crate::speech::onnx;
use crate::speech::worker::{AsrEngine, TtsEngine};
use crate::time::{Clock, SystemClock};

/// The dev set, one utterance per line.
pub const DEVSET: &str = include_str!("devset.txt");

/// Generic business terms of a bank-call script, as a task would configure them (not taken
/// from the dev set's sentences one by one).
pub const BANK_HOTWORDS: &[&str] = &[
    "还款",
    "账单",
    "账单日",
    "还款日",
    "分期",
    "逾期",
    "征信",
    "额度",
    "利率",
    "利息",
    "手续费",
    "违约金",
    "信用卡",
    "年费",
    "积分",
    "挂失",
    "冻结",
    "人工客服",
    "最低还款额",
    "自动还款",
    "停息挂账",
    "号码",
    "验证码",
];

/// Voices of the dev set (zf_xiaoni left out: it is the least intelligible on the phone).
const VOICES: &[&str] = &[
    "zf_xiaobei",
    "zm_yunjian",
    "zf_xiaoyi",
    "zm_yunxi",
    "zf_xiaoxiao",
    "zm_yunyang",
];

fn utterances() -> Vec<&'static str> {
    DEVSET
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// A 2nd-order high-pass (RBJ biquad) at `fc` Hz: the telephone band's lower edge.
fn high_pass(x: &[i16], rate: u32, fc: f64) -> Vec<i16> {
    let w0 = 2.0 * std::f64::consts::PI * fc / f64::from(rate);
    let alpha = w0.sin() / (2.0 * std::f64::consts::FRAC_1_SQRT_2);
    let cos = w0.cos();
    let (b0, b1, b2) = ((1.0 + cos) / 2.0, -(1.0 + cos), (1.0 + cos) / 2.0);
    let (a0, a1, a2) = (1.0 + alpha, -2.0 * cos, 1.0 - alpha);
    let (mut x1, mut x2, mut y1, mut y2) = (0.0, 0.0, 0.0, 0.0);
    x.iter()
        .map(|&s| {
            let s = f64::from(s);
            let y = (b0 * s + b1 * x1 + b2 * x2 - a1 * y1 - a2 * y2) / a0;
            (x2, x1, y2, y1) = (x1, s, y1, y);
            y.round().clamp(-32768.0, 32767.0) as i16
        })
        .collect()
}

/// The telephone channel from any rate: 300–3400 Hz, 8 kHz, A-law both ways.
pub fn telephone(pcm: &[i16], rate: u32) -> Vec<i16> {
    let at8 = resample(pcm, rate, 8000);
    high_pass(&at8, 8000, 300.0)
        .into_iter()
        .map(|s| g711::alaw_to_linear(g711::linear_to_alaw(s)))
        .collect()
}

fn f32_16k(pcm: &[i16], rate: u32) -> Vec<f32> {
    resample(pcm, rate, 16_000)
        .into_iter()
        .map(|s| f32::from(s) / 32768.0)
        .collect()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

struct Cer {
    errors: usize,
    chars: usize,
}

impl Cer {
    fn add(&mut self, reference: &str, hyp: &str) {
        let (e, n) = cer(reference, hyp);
        self.errors += e;
        self.chars += n;
    }
    fn pct(&self) -> f64 {
        100.0 * self.errors as f64 / self.chars.max(1) as f64
    }
}

/// Runs the benchmarks and returns the report.
pub fn run(cfg: &Config, only: Option<&str>, limit: Option<usize>) -> Result<String, Failure> {
    let clock = SystemClock;
    let data = tempfile_dir()?;
    let want = |part: &str| only.is_none_or(|o| o.split(',').any(|p| p == part));
    let mut out = String::new();
    let rss0 = rss_mib();
    let t = clock.mono();
    let tts = TtsEngine::load(&cfg.speech, data.path(), None)?;
    let tts_load = clock.mono().saturating_duration_since(t);
    let rss_tts = rss_mib();
    let mut engines = Vec::new();
    for p in [AsrPrecision::Int8, AsrPrecision::Fp32] {
        let mut c = cfg.speech.clone();
        c.asr.precision = p;
        let r0 = rss_mib();
        let t = clock.mono();
        let e = AsrEngine::load(&c, data.path())?;
        engines.push((
            p,
            e,
            clock.mono().saturating_duration_since(t),
            rss_mib() - r0,
        ));
    }
    let _ = writeln!(
        out,
        "## Load\n\n| what | load time | resident memory added |\n|---|---:|---:|\n\
         | Kokoro TTS (int8, 9 voices, lexicon) | {} ms | {:.0} MiB |",
        tts_load.as_millis(),
        rss_tts - rss0
    );
    for (p, _, t, m) in &engines {
        let _ = writeln!(
            out,
            "| Whisper base {p:?} (1 worker) | {} ms | {m:.0} MiB |",
            t.as_millis()
        );
    }
    let _ = writeln!(
        out,
        "\nProcess resident memory with all loaded: {:.0} MiB.\n",
        rss_mib()
    );

    // The dev set audio (24 kHz from Kokoro), synthesised once.
    let mut set = utterances();
    if let Some(n) = limit {
        set.truncate(n);
    }
    // Speaking rate of the dev set's voices (VAULTCALL_BENCH_SPEED; default 1.0).
    let speed = std::env::var("VAULTCALL_BENCH_SPEED")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(1.0);
    let mut clips = Vec::new();
    for (i, u) in set.iter().enumerate() {
        let voice = VOICES[i % VOICES.len()];
        let (pcm, _) = tts.synthesize(u, voice, speed, 24_000)?;
        clips.push((*u, voice, pcm));
    }
    let pp = PostProcess {
        itn: false,
        hotwords: Default::default(),
    };
    let pp_hot = PostProcess {
        itn: false,
        hotwords: crate::speech::asr::hotwords::Hotwords::new(
            &BANK_HOTWORDS
                .iter()
                .map(|s| (*s).to_owned())
                .collect::<Vec<_>>(),
            cfg.speech.asr.hotword_threshold,
        ),
    };
    if want("quality") {
        let _ = writeln!(
            out,
            "## Quality (CER, characters; punctuation ignored, numbers normalised on both sides)\n\n\
             {} utterances, voices {} round-robin.\n\n\
             | condition | precision | CER | errors / characters |\n|---|---|---:|---:|",
            clips.len(),
            VOICES.join(", ")
        );
        let mut per_voice: std::collections::BTreeMap<&str, Cer> = Default::default();
        for (p, e, _, _) in &engines {
            for cond in [
                "16 kHz",
                "telephone (G.711 A-law, 300–3400 Hz)",
                "telephone + bank hotwords",
            ] {
                let pp = if cond.ends_with("hotwords") {
                    &pp_hot
                } else {
                    &pp
                };
                let mut c = Cer {
                    errors: 0,
                    chars: 0,
                };
                for (text, voice, pcm) in &clips {
                    let audio = if cond == "16 kHz" {
                        f32_16k(pcm, 24_000)
                    } else {
                        f32_16k(&telephone(pcm, 24_000), 8000)
                    };
                    let raw = e.transcribe(audio)?;
                    let hyp = post_process(&raw, pp, &e.pinyin).text;
                    c.add(text, &hyp);
                    if std::env::var_os("VAULTCALL_BENCH_DUMP").is_some() {
                        // Operators' own dev data: printed only when asked, never logged.
                        eprintln!("{p:?}\t{cond}\t{voice}\t{text}\t{hyp}");
                    }
                    if *p == AsrPrecision::Int8 && cond.starts_with("telephone (") {
                        per_voice
                            .entry(voice)
                            .or_insert(Cer {
                                errors: 0,
                                chars: 0,
                            })
                            .add(text, &hyp);
                    }
                }
                let _ = writeln!(
                    out,
                    "| dev set, {cond} | {p:?} | {:.1} % | {} / {} |",
                    c.pct(),
                    c.errors,
                    c.chars
                );
            }
            let dir = onnx::model_dir(&cfg.speech);
            for clip in ["basic_ref_zh", "default_zh"] {
                let bytes = std::fs::read(dir.join(format!("clips/{clip}.wav")))
                    .map_err(|e| Failure::config(format!("clips/{clip}.wav: {e}")))?;
                let reference = std::fs::read_to_string(dir.join(format!("clips/{clip}.txt")))
                    .map_err(|e| Failure::config(format!("clips/{clip}.txt: {e}")))?;
                let w = read_wav(&bytes).map_err(Failure::config)?;
                let mono = to_mono(&w);
                for (cond, audio) in [
                    ("16 kHz", f32_16k(&mono, w.rate)),
                    ("telephone", f32_16k(&telephone(&mono, w.rate), 8000)),
                ] {
                    let raw = e.transcribe(audio)?;
                    let hyp = post_process(&raw, &pp, &e.pinyin).text;
                    let mut c = Cer {
                        errors: 0,
                        chars: 0,
                    };
                    c.add(&reference, &hyp);
                    let _ = writeln!(
                        out,
                        "| real clip {clip}, {cond} | {p:?} | {:.1} % | {} / {} |",
                        c.pct(),
                        c.errors,
                        c.chars
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "\nTelephone CER by voice (int8):\n\n| voice | CER |\n|---|---:|"
        );
        for (v, c) in &per_voice {
            let _ = writeln!(out, "| {v} | {:.1} % |", c.pct());
        }
        out.push('\n');
    }
    if want("speed") {
        // Speech of exactly 1, 2 and 5 s: the dev set's telephone audio joined and cut.
        let mut speech: Vec<i16> = Vec::new();
        for (_, _, pcm) in &clips {
            speech.extend(telephone(pcm, 24_000));
            if speech.len() > 8000 * 6 {
                break;
            }
        }
        let _ = writeln!(
            out,
            "## ASR decode time (one utterance alone, median of 5, telephone audio)\n\n\
             | utterance | precision | p50 decode | RTF |\n|---:|---|---:|---:|"
        );
        for secs in [1usize, 2, 5] {
            let cut = &speech[..(secs * 8000).min(speech.len())];
            let audio = f32_16k(cut, 8000);
            for (p, e, _, _) in &engines {
                let _ = e.transcribe(audio.clone())?; // warm-up
                let mut times: Vec<f64> = (0..5)
                    .map(|_| {
                        e.transcribe(audio.clone())
                            .map(|r| r.decode_time.as_secs_f64())
                    })
                    .collect::<Result<_, _>>()?;
                let m = median(&mut times);
                let _ = writeln!(
                    out,
                    "| {secs} s | {p:?} | {:.0} ms | {:.3} |",
                    m * 1000.0,
                    m / secs as f64
                );
            }
        }
        let _ = writeln!(
            out,
            "\n## ASR throughput (2 s utterances, int8, 1 worker × {} threads, batching up to {})\n\n\
             | concurrent streams | utterances/s | p50 latency | mean batch |\n|---:|---:|---:|---:|",
            cfg.speech.asr.threads_per_session, cfg.speech.asr.max_batch
        );
        let two = f32_16k(&speech[..16_000.min(speech.len())], 8000);
        let (_, e, _, _) = &engines[0];
        for streams in [1usize, 4, 16] {
            let rounds = if streams == 1 { 6 } else { 3 };
            let t0 = clock.mono();
            let mut lat = Vec::new();
            let mut batch_sum = 0usize;
            for _ in 0..rounds {
                let sent = clock.mono();
                let rxs: Vec<_> = (0..streams)
                    .map(|_| e.submit(two.clone()))
                    .collect::<Result<_, _>>()?;
                for rx in rxs {
                    let r = rx.recv().map_err(|_| Failure::runtime("ASR stopped"))??;
                    lat.push(clock.mono().saturating_duration_since(sent).as_secs_f64());
                    batch_sum += r.batch;
                }
            }
            let total = clock.mono().saturating_duration_since(t0).as_secs_f64();
            let n = rounds * streams;
            let _ = writeln!(
                out,
                "| {streams} | {:.2} | {:.0} ms | {:.1} |",
                n as f64 / total,
                median(&mut lat) * 1000.0,
                batch_sum as f64 / n as f64
            );
        }
        out.push('\n');
    }
    if want("tts") {
        let clause = "您好，我是招商银行客服"; // 10 characters + comma
        let mut first = Vec::new();
        let mut rtf = Vec::new();
        for voice in ["zf_xiaobei", "zm_yunjian", "zf_xiaoyi"] {
            for _ in 0..3 {
                let (_, s) = tts.synthesize(clause, voice, 1.0, 8000)?;
                first.push(s.first_audio.as_secs_f64());
            }
        }
        for (text, voice, _) in clips.iter().take(20) {
            let (_, s) = tts.synthesize(text, voice, 1.0, 8000)?;
            rtf.push(s.total.as_secs_f64() / s.audio_secs.max(1e-9));
        }
        let _ = writeln!(
            out,
            "## TTS (Kokoro int8, {} threads, cache miss)\n\n| measure | value |\n|---|---:|\n\
             | time to first audio, \"{clause}\" (median of 9, 3 voices) | {:.0} ms |\n\
             | real-time factor, 20 dev-set sentences (median) | {:.3} |\n",
            cfg.speech.tts.threads_per_session,
            median(&mut first) * 1000.0,
            median(&mut rtf)
        );
    }
    let _ = Duration::ZERO;
    Ok(out)
}

fn tempfile_dir() -> Result<TempDir, Failure> {
    TempDir::new()
}

/// A private scratch directory for the digest cache, removed afterwards.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> Result<Self, Failure> {
        let mut r = [0u8; 8];
        aws_lc_rs::rand::fill(&mut r)
            .map_err(|_| Failure::runtime("random number generator failed"))?;
        let p = std::env::temp_dir().join(format!("vaultcall-bench-{}", hex::encode(r)));
        crate::fs::ensure_private_dir(&p).map_err(Failure::runtime)?;
        Ok(Self(p))
    }
    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
