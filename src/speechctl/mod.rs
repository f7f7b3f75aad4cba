//! `vaultcall transcribe` and `vaultcall say` (shell): the speech engine for operators.
//!
//! `transcribe` is for quality inspection of recordings: each WAV (8 or 16 kHz or any other
//! rate, mono, or stereo with the customer on the left) is split into utterances by the VAD,
//! the utterances are decoded (in batches), and the transcript with per-segment times goes to
//! `--out DIR` (one file per recording) or stdout. A file that cannot be read or decoded is
//! reported and the batch goes on. Each file is recorded in the `transcriptions` table
//! (settings, counts, timings — not the text, which is personal data).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

pub mod bench;

use crate::app::{self, Failure};
use crate::config::{AsrPrecision, Config};
use crate::media::resample::{Wav, left_channel, read_wav, resample, wav_bytes};
use crate::speech::asr::hotwords::Hotwords;
use crate::speech::asr::{PostProcess, Transcript, post_process};
use crate::speech::stream::to_16k;
use crate::speech::vad::{WebRtcVad, segment};
use crate::speech::worker::{AsrEngine, TtsEngine};
use crate::store::transcriptions::{TranscriptionRow, insert};
use crate::time::{Clock, SystemClock, unix_ms};

/// Output format of `transcribe`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON document per recording.
    Json,
    /// `file,segment,start,end,text,corrections` rows.
    Csv,
}

/// `transcribe` arguments.
#[derive(Debug, Clone)]
pub struct TranscribeArgs {
    /// The recordings.
    pub files: Vec<PathBuf>,
    /// Hotword file (one term per line).
    pub hotwords: Option<PathBuf>,
    /// ITN on or off (default: `speech.asr.itn`).
    pub itn: Option<bool>,
    /// Output format.
    pub format: Format,
    /// Output directory (default: stdout).
    pub out: Option<PathBuf>,
}

/// One recognised segment.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Segment {
    /// Start, seconds from the beginning of the file.
    pub start: f64,
    /// End, seconds.
    pub end: f64,
    /// The transcript.
    #[serde(flatten)]
    pub transcript: Transcript,
    /// Decode time of its batch, seconds.
    pub decode_secs: f64,
}

/// One recording's result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FileResult {
    /// The file.
    pub file: String,
    /// Audio length, seconds.
    pub duration: f64,
    /// Sample rate and channels of the input.
    pub rate: u32,
    /// Channels of the input (stereo: the left one, the customer, is transcribed).
    pub channels: u16,
    /// Segments in order.
    pub segments: Vec<Segment>,
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

fn data_dir(cfg: &Config) -> PathBuf {
    cfg.resolve_paths(&|k| std::env::var(k).ok()).data_dir
}

/// Transcribes one file.
pub fn transcribe_file(
    engine: &AsrEngine,
    cfg: &Config,
    post: &PostProcess,
    name: &str,
    bytes: &[u8],
) -> Result<FileResult, String> {
    let w: Wav = read_wav(bytes).map_err(|e| e.to_string())?;
    let customer = if w.channels == 2 {
        left_channel(&w)
    } else {
        w.samples.clone()
    };
    let at8k = resample(&customer, w.rate, 8000);
    let duration = customer.len() as f64 / f64::from(w.rate);
    let segs = segment(
        WebRtcVad::new(cfg.speech.vad.aggressiveness),
        &cfg.speech.vad,
        &at8k,
    );
    // 16 kHz input is decoded from the original samples, not the telephone-band copy.
    let audio_16k = |start: Duration, end: Duration, audio_8k: &[i16]| -> Vec<f32> {
        if w.rate == 16_000 {
            let pre = Duration::from_millis(u64::from(cfg.speech.vad.pre_roll_ms));
            let a = (start.saturating_sub(pre).as_secs_f64() * 16_000.0) as usize;
            let b = ((end.as_secs_f64() + 0.3) * 16_000.0) as usize;
            customer[a.min(customer.len())..b.min(customer.len())]
                .iter()
                .map(|s| f32::from(*s) / 32768.0)
                .collect()
        } else {
            to_16k(audio_8k)
        }
    };
    // Submit in groups the queue can take, so the workers batch them.
    let mut segments = Vec::new();
    for chunk in segs.chunks(cfg.speech.asr.queue.clamp(1, 32)) {
        let mut pending = Vec::new();
        for (start, end, audio) in chunk {
            let rx = engine
                .submit(audio_16k(*start, *end, audio))
                .map_err(|e| e.to_string())?;
            pending.push((*start, *end, rx));
        }
        for (start, end, rx) in pending {
            let raw = rx
                .recv()
                .map_err(|_| "the recogniser stopped".to_owned())?
                .map_err(|e| e.to_string())?;
            segments.push(Segment {
                start: secs(start),
                end: secs(end),
                decode_secs: secs(raw.decode_time),
                transcript: post_process(&raw, post, &engine.pinyin),
            });
        }
    }
    Ok(FileResult {
        file: name.to_owned(),
        duration: (duration * 1000.0).round() / 1000.0,
        rate: w.rate,
        channels: w.channels,
        segments,
    })
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// CSV rows of one result (with a header when `header`).
pub fn to_csv(r: &FileResult, header: bool) -> String {
    let mut out = String::new();
    if header {
        out.push_str("file,segment,start,end,text,raw,corrections\n");
    }
    for (i, s) in r.segments.iter().enumerate() {
        let corr: Vec<String> = s
            .transcript
            .corrections
            .iter()
            .map(|c| format!("{}→{}", c.heard, c.hotword))
            .collect();
        out.push_str(&format!(
            "{},{},{:.3},{:.3},{},{},{}\n",
            csv_field(&r.file),
            i + 1,
            s.start,
            s.end,
            csv_field(&s.transcript.text),
            csv_field(&s.transcript.raw),
            csv_field(&corr.join(";"))
        ));
    }
    out
}

/// `vaultcall transcribe`.
pub fn transcribe_cmd(cfg: &Config, args: &TranscribeArgs) -> Result<String, Failure> {
    if args.files.is_empty() {
        return Err(Failure {
            code: app::exit::USAGE,
            message: "transcribe: no files given".into(),
        });
    }
    let hotwords = match &args.hotwords {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| Failure::config(format!("hotword file {}: {e}", p.display())))?;
            Hotwords::parse_file(&text, cfg.speech.asr.hotword_threshold)
        }
        None => Hotwords::default(),
    };
    let n_hotwords = args
        .hotwords
        .as_ref()
        .map_or(0, |_| hotwords_count(&hotwords));
    let post = PostProcess {
        itn: args.itn.unwrap_or(cfg.speech.asr.itn),
        hotwords,
    };
    let dir = data_dir(cfg);
    crate::fs::ensure_private_dir(&dir).map_err(|e| {
        Failure::runtime(format!(
            "cannot create data directory {}: {e}",
            dir.display()
        ))
    })?;
    let store = app::open_store(cfg)?;
    let engine = AsrEngine::load(&cfg.speech, &dir)?;
    if let Some(out) = &args.out {
        crate::fs::ensure_private_dir(out)
            .map_err(|e| Failure::runtime(format!("cannot create {}: {e}", out.display())))?;
    }
    let clock = SystemClock;
    let mut run = [0u8; 6];
    aws_lc_rs::rand::fill(&mut run)
        .map_err(|_| Failure::runtime("random number generator failed"))?;
    let run_id = hex::encode(run);
    let bar = indicatif::ProgressBar::new(args.files.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} files, {elapsed} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut stdout_text = String::new();
    let mut failed = Vec::new();
    let precision = match cfg.speech.asr.precision {
        AsrPrecision::Fp32 => "fp32",
        AsrPrecision::Int8 => "int8",
    };
    for (i, path) in args.files.iter().enumerate() {
        let name = path.display().to_string();
        let bytes = std::fs::read(path);
        let sha = bytes
            .as_ref()
            .ok()
            .map(|b| hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b)));
        let t0 = clock.mono();
        let result = bytes
            .map_err(|e| e.to_string())
            .and_then(|b| transcribe_file(&engine, cfg, &post, &name, &b));
        let took = clock.mono().saturating_duration_since(t0);
        let mut row = TranscriptionRow {
            run_id: run_id.clone(),
            created_at_ms: unix_ms(clock.wall()),
            file_name: name.clone(),
            file_sha256: sha,
            status: "ok".into(),
            error: None,
            audio_ms: 0,
            segments: 0,
            corrections: 0,
            decode_ms: took.as_millis() as i64,
            precision: precision.into(),
            itn: post.itn,
            hotwords: n_hotwords as i64,
            output_path: None,
        };
        match result {
            Ok(r) => {
                row.audio_ms = (r.duration * 1000.0) as i64;
                row.segments = r.segments.len() as i64;
                row.corrections = r
                    .segments
                    .iter()
                    .map(|s| s.transcript.corrections.len() as i64)
                    .sum();
                let text = match args.format {
                    Format::Json => serde_json::to_string_pretty(&r)
                        .map(|s| s + "\n")
                        .unwrap_or_default(),
                    Format::Csv => to_csv(&r, args.out.is_some() || i == 0),
                };
                match &args.out {
                    Some(dir) => {
                        let ext = match args.format {
                            Format::Json => "json",
                            Format::Csv => "csv",
                        };
                        let stem = path.file_stem().map_or_else(
                            || format!("file{i}"),
                            |s| s.to_string_lossy().into_owned(),
                        );
                        let out = dir.join(format!("{stem}.{ext}"));
                        match std::fs::write(&out, text) {
                            Ok(()) => row.output_path = Some(out.display().to_string()),
                            Err(e) => {
                                row.status = "error".into();
                                row.error = Some(format!("cannot write {}: {e}", out.display()));
                            }
                        }
                    }
                    None => stdout_text.push_str(&text),
                }
            }
            Err(e) => {
                row.status = "error".into();
                row.error = Some(e);
            }
        }
        if let Some(e) = &row.error {
            note(&bar, &format!("vaultcall: {name}: {e}"));
            failed.push(name.clone());
        }
        let r2 = row.clone();
        if let Err(e) = store.write(move |c| insert(c, &r2)) {
            note(
                &bar,
                &format!("vaultcall: cannot record {name} in the history: {e}"),
            );
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    store.close();
    let summary = format!(
        "transcribe run {run_id}: {} of {} files transcribed{}",
        args.files.len() - failed.len(),
        args.files.len(),
        args.out
            .as_ref()
            .map_or(String::new(), |d| format!(" into {}", d.display()))
    );
    if failed.is_empty() {
        if args.out.is_some() {
            Ok(summary + "\n")
        } else {
            eprintln!("{summary}");
            Ok(stdout_text)
        }
    } else {
        print!("{stdout_text}");
        let _ = std::io::stdout().flush();
        Err(Failure::runtime(format!(
            "{summary}; {} failed (listed above)",
            failed.len()
        )))
    }
}

/// A line on stderr that does not tear the progress bar (which is hidden when stderr is not
/// a terminal, and then drops its own messages).
fn note(bar: &indicatif::ProgressBar, line: &str) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}

fn hotwords_count(h: &Hotwords) -> usize {
    h.len()
}

/// `vaultcall say` arguments (doc comments are its help).
#[derive(Debug, Clone, clap::Args)]
pub struct SayArgs {
    /// The text.
    pub text: String,
    /// Voice (default: speech.tts.voice).
    #[arg(long)]
    pub voice: Option<String>,
    /// Output WAV file.
    #[arg(short = 'o', long = "out")]
    pub out: PathBuf,
    /// Sample rate of the file (8000 for the phone).
    #[arg(long, default_value_t = 24_000)]
    pub rate: u32,
    /// Speaking rate (default: speech.tts.speed).
    #[arg(long)]
    pub speed: Option<f64>,
    /// Also print the pinyin (after normalisation and tone sandhi) and Kokoro phonemes.
    #[arg(long)]
    pub show_pinyin: bool,
}

/// `vaultcall say`.
pub fn say_cmd(cfg: &Config, a: &SayArgs) -> Result<String, Failure> {
    let rate = a.rate;
    if !(8000..=48_000).contains(&rate) {
        return Err(Failure {
            code: app::exit::USAGE,
            message: format!("--rate {rate}: allowed 8000 to 48000"),
        });
    }
    let dir = data_dir(cfg);
    let engine = TtsEngine::load(&cfg.speech, &dir, None)?;
    let voice = a.voice.as_deref().unwrap_or(&cfg.speech.tts.voice);
    let speed = a.speed.unwrap_or(cfg.speech.tts.speed);
    let (pcm, stats) = engine
        .synthesize(&a.text, voice, speed, rate)
        .map_err(|e| match e {
            crate::speech::onnx::SpeechError::Input(m) => Failure {
                code: app::exit::USAGE,
                message: m,
            },
            other => Failure::from(other),
        })?;
    let out = &a.out;
    std::fs::write(out, wav_bytes(rate, 1, &pcm))
        .map_err(|e| Failure::runtime(format!("cannot write {}: {e}", out.display())))?;
    let mut report = String::new();
    if a.show_pinyin {
        report.push_str(&format!(
            "pinyin: {}\nphonemes: {}\n",
            engine.frontend().pinyin(&a.text),
            engine.frontend().phonemes(&a.text)
        ));
    }
    report.push_str(&format!(
        "{}: {:.2} s at {rate} Hz, voice {voice}, {} clauses, first audio after {} ms, synthesis {} ms (RTF {:.2})\n",
        out.display(),
        stats.audio_secs,
        stats.clauses,
        stats.first_audio.as_millis(),
        stats.total.as_millis(),
        stats.total.as_secs_f64() / stats.audio_secs.max(1e-9)
    ));
    Ok(report)
}
