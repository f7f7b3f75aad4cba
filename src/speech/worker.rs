//! Worker threads that own the ONNX sessions (shell).
//!
//! [`AsrEngine`]: `speech.asr.workers` threads, each with an encoder and a decoder session,
//! fed through one bounded queue (`speech.asr.queue`; a full queue refuses at once rather than
//! letting latency grow). A worker takes one request, then whatever else is waiting up to
//! `speech.asr.max_batch`, and decodes them as one batch: the audio is padded to the longest
//! (silence, which Whisper is trained on), encoded together, and decoded in lockstep — every
//! sequence starts from the same prompt, so all share one cache length; a finished sequence
//! is fed end-of-text until the batch is done.
//!
//! [`TtsEngine`]: `speech.tts.workers` threads with a Kokoro session each; a sentence is cut into
//! clauses and each clause is a job, so the first clause's audio is ready while the rest is
//! still being synthesised, and a cancelled request (barge-in) stops between clauses.
//! [`PromptCache`] keeps synthesised prompts as 8 kHz PCM on disk by content hash.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use ort::session::Session;
use ort::value::Tensor;

use super::asr::hotwords::Pinyin;
use super::asr::{Beam, PROMPT, RawTranscript, Tokenizer};
use super::mel::{HOP, MAX_FRAMES, MelFrontEnd, N_MELS};
use super::onnx::{self, ExecutionProvider, Placed, SessionOptions, SpeechError};
use super::tts::frontend::{FrontEnd, Lexicon, clauses};
use super::tts::{self, Vocab, Voice};
use crate::config::{AsrPrecision, SpeechConfig};
use crate::time::{Clock, SystemClock};

/// Files the recogniser needs, for a precision.
pub fn asr_files(p: AsrPrecision) -> Vec<&'static str> {
    let (enc, dec) = match p {
        AsrPrecision::Fp32 => ("whisper-base/encoder.onnx", "whisper-base/decoder.onnx"),
        AsrPrecision::Int8 => (
            "whisper-base/encoder.int8.onnx",
            "whisper-base/decoder.int8.onnx",
        ),
    };
    vec![
        enc,
        dec,
        "whisper-base/tokenizer.json",
        "whisper-base/config.json",
        "zh/chars.tsv",
    ]
}

/// Files the synthesiser needs.
pub fn tts_files() -> Vec<String> {
    let mut v: Vec<String> = [
        "kokoro/kokoro-v1.0.int8.onnx",
        "kokoro/vocab.json",
        "zh/chars.tsv",
        "zh/phrases.tsv",
        "zh/pinyin_ipa.tsv",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    v.extend(
        tts::VOICES
            .iter()
            .chain(tts::EXTRA_VOICES)
            .map(|n| format!("kokoro/voices/{n}.bin")),
    );
    v
}

/// Where verified digests are remembered between starts.
pub fn digest_cache(data_dir: &Path) -> PathBuf {
    data_dir.join("model-digests.json")
}

/// Verifies `files` and loads the ONNX Runtime library (exit 78 material on failure).
pub fn prepare(
    cfg: &SpeechConfig,
    data_dir: &Path,
    files: &[&str],
) -> Result<PathBuf, SpeechError> {
    let dir = onnx::model_dir(cfg);
    let cache = digest_cache(data_dir);
    let cache = data_dir.exists().then_some(cache.as_path());
    onnx::verify_models(&dir, files, cfg.verify_models, cache)?;
    onnx::init_runtime(&onnx::library_path(cfg))?;
    Ok(dir)
}

fn provider(cfg: &SpeechConfig) -> ExecutionProvider {
    ExecutionProvider::parse(&cfg.execution_provider).unwrap_or(ExecutionProvider::Cpu)
}

fn mono() -> std::time::Instant {
    SystemClock.mono()
}

type Reply<T> = SyncSender<Result<T, SpeechError>>;

struct AsrJob {
    audio: Vec<f32>,
    reply: Reply<RawTranscript>,
}

/// Counters of an engine (exported as metrics by the daemon).
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests completed.
    pub done: AtomicU64,
    /// Requests refused because the queue was full.
    pub refused: AtomicU64,
    /// Batches run.
    pub batches: AtomicU64,
    /// Requests queued or being decoded now.
    pub queued: AtomicU64,
}

/// The speech recogniser's worker pool (see the module documentation).
pub struct AsrEngine {
    tx: Option<SyncSender<AsrJob>>,
    workers: Vec<JoinHandle<()>>,
    /// Pinyin readings for hotword correction.
    pub pinyin: Arc<Pinyin>,
    /// Where the sessions run.
    pub placed: Placed,
    /// Counters.
    pub counters: Arc<Counters>,
    per_second: usize,
}

impl std::fmt::Debug for AsrEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsrEngine")
            .field("workers", &self.workers.len())
            .field("placed", &self.placed)
            .finish()
    }
}

struct AsrWorker {
    encoder: Session,
    decoder: Session,
    tokenizer: Arc<Tokenizer>,
    mel: MelFrontEnd,
    max_batch: usize,
    per_second: usize,
    /// Shortest encoder window in mel frames (`speech.asr.min_window_ms`).
    min_frames: usize,
    /// Beam width (`speech.asr.beam_size`; 1 = greedy).
    beam: usize,
}

impl AsrEngine {
    /// Verifies the model files, loads ONNX Runtime and starts the workers.
    pub fn load(cfg: &SpeechConfig, data_dir: &Path) -> Result<Self, SpeechError> {
        let files = asr_files(cfg.asr.precision);
        let dir = prepare(cfg, data_dir, &files)?;
        let encoder = onnx::read(&dir, files[0])?;
        let decoder = onnx::read(&dir, files[1])?;
        let tokenizer = Arc::new(
            Tokenizer::from_json(
                &onnx::read_text(&dir, files[2])?,
                &onnx::read_text(&dir, files[3])?,
            )
            .map_err(|m| SpeechError::Model {
                path: dir.join(files[2]),
                message: m,
            })?,
        );
        let pinyin = Arc::new(Pinyin::from_tsv(&onnx::read_text(&dir, files[4])?));
        let opts = SessionOptions {
            threads: cfg.asr.threads_per_session,
            provider: provider(cfg),
        };
        let (tx, rx) = sync_channel::<AsrJob>(cfg.asr.queue);
        let rx = Arc::new(Mutex::new(rx));
        let counters = Arc::new(Counters::default());
        let mut workers = Vec::new();
        let mut placed = Placed::Cpu;
        for i in 0..cfg.asr.workers {
            let (enc, p) = onnx::session("whisper-encoder", &encoder, opts)?;
            let (dec, _) = onnx::session("whisper-decoder", &decoder, opts)?;
            placed = p;
            let mut w = AsrWorker {
                encoder: enc,
                decoder: dec,
                tokenizer: tokenizer.clone(),
                mel: MelFrontEnd::new(),
                max_batch: cfg.asr.max_batch,
                per_second: cfg.asr.max_tokens_per_second,
                min_frames: cfg.asr.min_window_ms as usize / 10,
                beam: cfg.asr.beam_size,
            };
            let rx = rx.clone();
            let counters = counters.clone();
            let h = std::thread::Builder::new()
                .name(format!("vc-asr-{i}"))
                .spawn(move || w.run(&rx, &counters))
                .map_err(|e| SpeechError::Runtime(format!("cannot start an ASR worker: {e}")))?;
            workers.push(h);
        }
        log::info!(workers = cfg.asr.workers, precision:? = cfg.asr.precision, placed:? = placed; "speech recogniser ready");
        Ok(Self {
            tx: Some(tx),
            workers,
            pinyin,
            placed,
            counters,
            per_second: cfg.asr.max_tokens_per_second,
        })
    }

    /// Queues a decode of 16 kHz audio (−1..1, at most 30 s; longer audio is cut). Returns at
    /// once; the result arrives on the receiver. A full queue is [`SpeechError::Busy`].
    pub fn submit(
        &self,
        audio_16k: Vec<f32>,
    ) -> Result<Receiver<Result<RawTranscript, SpeechError>>, SpeechError> {
        if audio_16k.is_empty() {
            return Err(SpeechError::Input("empty utterance".into()));
        }
        let (reply, rx) = sync_channel(1);
        let tx = self.tx.as_ref().ok_or(SpeechError::Stopped)?;
        match tx.try_send(AsrJob {
            audio: audio_16k,
            reply,
        }) {
            Ok(()) => {
                self.counters.queued.fetch_add(1, Ordering::Relaxed);
                Ok(rx)
            }
            Err(TrySendError::Full(_)) => {
                self.counters.refused.fetch_add(1, Ordering::Relaxed);
                Err(SpeechError::Busy)
            }
            Err(TrySendError::Disconnected(_)) => Err(SpeechError::Stopped),
        }
    }

    /// Decodes 16 kHz audio and waits for the result.
    pub fn transcribe(&self, audio_16k: Vec<f32>) -> Result<RawTranscript, SpeechError> {
        self.submit(audio_16k)?
            .recv()
            .map_err(|_| SpeechError::Stopped)?
    }

    /// Token cap per second of audio in use.
    pub fn tokens_per_second(&self) -> usize {
        self.per_second
    }
}

impl Drop for AsrEngine {
    fn drop(&mut self) {
        self.tx = None;
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

fn tensor_f32(shape: Vec<i64>, data: Vec<f32>) -> Result<Tensor<f32>, SpeechError> {
    Tensor::from_array((shape, data)).map_err(SpeechError::from)
}

fn tensor_i64(shape: Vec<i64>, data: Vec<i64>) -> Result<Tensor<i64>, SpeechError> {
    Tensor::from_array((shape, data)).map_err(SpeechError::from)
}

fn extract(
    outputs: &ort::session::SessionOutputs<'_>,
    name: &str,
) -> Result<(Vec<i64>, Vec<f32>), SpeechError> {
    let v = outputs
        .get(name)
        .ok_or_else(|| SpeechError::Runtime(format!("model has no output {name}")))?;
    let (shape, data) = v.try_extract_tensor::<f32>()?;
    Ok((shape.iter().copied().collect(), data.to_vec()))
}

/// Encoder frames for `samples` of 16 kHz audio: at least 1 s of silence after the speech,
/// rounded up to whole seconds (similar lengths batch well), at least `min_frames`, at most
/// 30 s. Whisper was trained on 30 s windows: on windows of little more than the utterance it
/// often repeats the whole utterance or mishears it (dev set, telephone: CER 20.0 % with 0.5 s
/// of padding, 14.7 % with a 5 s floor; docs/benchmarks.md).
pub fn encoder_frames(samples: usize, min_frames: usize) -> usize {
    let frames = samples / HOP;
    (frames + 100)
        .div_ceil(100)
        .saturating_mul(100)
        .max(min_frames)
        .min(MAX_FRAMES)
}

impl AsrWorker {
    fn run(&mut self, rx: &Mutex<Receiver<AsrJob>>, counters: &Counters) {
        loop {
            let mut jobs = Vec::new();
            {
                let Ok(guard) = rx.lock() else { return };
                match guard.recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => return,
                }
                while jobs.len() < self.max_batch {
                    match guard.try_recv() {
                        Ok(j) => jobs.push(j),
                        Err(_) => break,
                    }
                }
            }
            let t0 = mono();
            let audio: Vec<&[f32]> = jobs.iter().map(|j| j.audio.as_slice()).collect();
            let result = self.decode_batch(&audio);
            let took = mono().saturating_duration_since(t0);
            counters.batches.fetch_add(1, Ordering::Relaxed);
            counters
                .queued
                .fetch_sub(jobs.len() as u64, Ordering::Relaxed);
            match result {
                Ok(outs) => {
                    let batch = jobs.len();
                    for (job, (tokens, stop)) in jobs.into_iter().zip(outs) {
                        let text = self.tokenizer.decode(&tokens);
                        counters.done.fetch_add(1, Ordering::Relaxed);
                        let _ = job.reply.send(Ok(RawTranscript {
                            text,
                            tokens,
                            stop,
                            decode_time: took,
                            batch,
                        }));
                    }
                }
                Err(e) => {
                    log::error!(reason:% = e; "speech recognition batch failed");
                    for job in jobs {
                        let _ = job.reply.send(Err(SpeechError::Runtime(e.to_string())));
                    }
                }
            }
        }
    }

    /// Encodes and greedily decodes a batch; one (tokens, stop reason) per input.
    fn decode_batch(
        &mut self,
        audio: &[&[f32]],
    ) -> Result<Vec<(Vec<u32>, super::asr::StopReason)>, SpeechError> {
        let b = audio.len();
        let frames = audio
            .iter()
            .map(|a| encoder_frames(a.len(), self.min_frames))
            .max()
            .unwrap_or(100);
        let mut mel = vec![0f32; b * N_MELS * frames];
        for (i, a) in audio.iter().enumerate() {
            let mut padded = a[..a.len().min(frames * HOP)].to_vec();
            padded.resize(frames * HOP, 0.0);
            let (m, f) = self.mel.compute(&padded);
            debug_assert_eq!(f, frames);
            mel[i * N_MELS * frames..(i + 1) * N_MELS * frames].copy_from_slice(&m);
        }
        let mel = tensor_f32(vec![b as i64, N_MELS as i64, frames as i64], mel)?;
        let enc = self.encoder.run(ort::inputs!["mel" => mel])?;
        let (ck_shape, ck) = extract(&enc, "cross_k")?;
        let (cv_shape, cv) = extract(&enc, "cross_v")?;
        drop(enc);
        let w = self.beam.max(1);
        let rows = b * w;
        // Each utterance's rows share its cross-attention K/V.
        let (ck, cv, ck_shape, cv_shape) = if w > 1 {
            let parent: Vec<usize> = (0..b).flat_map(|u| std::iter::repeat_n(u, w)).collect();
            let grow = |mut s: Vec<i64>| {
                s[1] = rows as i64;
                s
            };
            (
                gather_rows(&ck, &ck_shape, &parent),
                gather_rows(&cv, &cv_shape, &parent),
                grow(ck_shape),
                grow(cv_shape),
            )
        } else {
            (ck, cv, ck_shape, cv_shape)
        };
        let cross_k = tensor_f32(ck_shape.clone(), ck)?;
        let cross_v = tensor_f32(cv_shape, cv)?;
        let layers = ck_shape[0];
        let heads = ck_shape[2];
        let dh = ck_shape[4];
        let mut search: Vec<Beam> = audio
            .iter()
            .map(|a| Beam::new(w, a.len() as f64 / 16_000.0, self.per_second))
            .collect();
        let mut tokens: Vec<i64> = (0..rows)
            .flat_map(|_| PROMPT.iter().map(|t| i64::from(*t)))
            .collect();
        let mut n_new = PROMPT.len();
        let mut offset = 0i64;
        let mut cache_shape = vec![layers, rows as i64, heads, 0, dh];
        let mut self_k: Vec<f32> = Vec::new();
        let mut self_v: Vec<f32> = Vec::new();
        loop {
            let outs = self.decoder.run(ort::inputs![
                "tokens" => tensor_i64(vec![rows as i64, n_new as i64], std::mem::take(&mut tokens))?,
                "offset" => tensor_i64(vec![1], vec![offset])?,
                "self_k" => tensor_f32(cache_shape.clone(), std::mem::take(&mut self_k))?,
                "self_v" => tensor_f32(cache_shape.clone(), std::mem::take(&mut self_v))?,
                "cross_k" => cross_k.view(),
                "cross_v" => cross_v.view(),
            ])?;
            let (lshape, mut logits) = extract(&outs, "logits")?;
            let (kshape, k) = extract(&outs, "new_self_k")?;
            let (_, v) = extract(&outs, "new_self_v")?;
            drop(outs);
            offset += n_new as i64;
            let vocab = lshape[1] as usize;
            let mut next = vec![i64::from(super::asr::EOT); rows];
            let mut parent: Vec<usize> = (0..rows).collect();
            for (u, s) in search.iter_mut().enumerate() {
                let block = &mut logits[u * w * vocab..(u + 1) * w * vocab];
                if let Some(sel) = s.step(&self.tokenizer, block, vocab) {
                    for (j, (p, t)) in sel.into_iter().enumerate() {
                        parent[u * w + j] = u * w + p;
                        next[u * w + j] = i64::from(t);
                    }
                }
            }
            if search.iter().all(Beam::stopped) || offset as usize + 1 >= super::asr::MAX_POSITIONS
            {
                break;
            }
            tokens = next;
            n_new = 1;
            if w > 1 {
                self_k = gather_rows(&k, &kshape, &parent);
                self_v = gather_rows(&v, &kshape, &parent);
            } else {
                self_k = k;
                self_v = v;
            }
            cache_shape = kshape;
        }
        Ok(search.iter().map(Beam::result).collect())
    }
}

/// Rows of a `[layers, rows, …]` tensor picked by `parent` (row `r` of the result is row
/// `parent[r]` of `data`, in every layer).
fn gather_rows(data: &[f32], shape: &[i64], parent: &[usize]) -> Vec<f32> {
    let layers = shape[0] as usize;
    let rows = shape[1] as usize;
    let per = data.len() / (layers * rows).max(1);
    let mut out = Vec::with_capacity(layers * parent.len() * per);
    for l in 0..layers {
        for &p in parent {
            let s = (l * rows + p) * per;
            out.extend_from_slice(&data[s..s + per]);
        }
    }
    out
}

/// A flag a speaker sets to stop a synthesis (barge-in).
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// A new, unset flag.
    pub fn new() -> Self {
        Self::default()
    }
    /// Stops the synthesis at the next clause boundary.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
    /// Whether it was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

struct TtsJob {
    ids: Vec<i64>,
    voice: Arc<Voice>,
    speed: f32,
    cancel: Cancel,
    reply: Reply<Vec<f32>>,
}

/// Timing of one synthesis.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SpeakStats {
    /// From the call to the first clause's audio.
    pub first_audio: Duration,
    /// The whole synthesis.
    pub total: Duration,
    /// Seconds of audio produced.
    pub audio_secs: f64,
    /// Clauses synthesised.
    pub clauses: usize,
}

/// The speech synthesiser (see the module documentation).
pub struct TtsEngine {
    tx: Option<SyncSender<TtsJob>>,
    workers: Vec<JoinHandle<()>>,
    frontend: Arc<FrontEnd>,
    vocab: Vocab,
    voices: HashMap<String, Arc<Voice>>,
    model_sha256: String,
    /// Default voice and speed.
    pub voice: String,
    /// Default speed.
    pub speed: f64,
    /// Where the session runs.
    pub placed: Placed,
    cache: Option<PromptCache>,
}

impl std::fmt::Debug for TtsEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TtsEngine")
            .field("workers", &self.workers.len())
            .finish()
    }
}

impl TtsEngine {
    /// Verifies the model files, loads ONNX Runtime, the front end and the voices, and starts
    /// the workers. `cache_dir` enables the prompt cache.
    pub fn load(
        cfg: &SpeechConfig,
        data_dir: &Path,
        cache_dir: Option<PathBuf>,
    ) -> Result<Self, SpeechError> {
        let files = tts_files();
        let refs: Vec<&str> = files.iter().map(String::as_str).collect();
        let dir = prepare(cfg, data_dir, &refs)?;
        let model = onnx::read(&dir, &files[0])?;
        let vocab = Vocab::from_json(&onnx::read_text(&dir, &files[1])?).map_err(|m| {
            SpeechError::Model {
                path: dir.join(&files[1]),
                message: m,
            }
        })?;
        let lex = Lexicon::from_tsv(
            &onnx::read_text(&dir, &files[2])?,
            &onnx::read_text(&dir, &files[3])?,
            &onnx::read_text(&dir, &files[4])?,
        );
        let frontend = Arc::new(FrontEnd::new(lex));
        let mut voices = HashMap::new();
        for name in tts::VOICES.iter().chain(tts::EXTRA_VOICES) {
            let rel = format!("kokoro/voices/{name}.bin");
            let v =
                Voice::from_bytes(&onnx::read(&dir, &rel)?).map_err(|m| SpeechError::Model {
                    path: dir.join(&rel),
                    message: m,
                })?;
            voices.insert((*name).to_owned(), Arc::new(v));
        }
        let model_sha256 = onnx::manifest()
            .into_iter()
            .find(|f| f.path == files[0])
            .map(|f| f.sha256)
            .unwrap_or_default();
        let opts = SessionOptions {
            threads: cfg.tts.threads_per_session,
            provider: provider(cfg),
        };
        let (tx, rx) = sync_channel::<TtsJob>(cfg.tts.queue);
        let rx = Arc::new(Mutex::new(rx));
        let mut workers = Vec::new();
        let mut placed = Placed::Cpu;
        for i in 0..cfg.tts.workers {
            let (mut session, p) = onnx::session("kokoro", &model, opts)?;
            placed = p;
            let rx = rx.clone();
            let h = std::thread::Builder::new()
                .name(format!("vc-tts-{i}"))
                .spawn(move || tts_worker(&mut session, &rx))
                .map_err(|e| SpeechError::Runtime(format!("cannot start a TTS worker: {e}")))?;
            workers.push(h);
        }
        let cache = cache_dir.map(|d| PromptCache::new(d, cfg.tts.cache_max_mib << 20));
        Ok(Self {
            tx: Some(tx),
            workers,
            frontend,
            vocab,
            voices,
            model_sha256,
            voice: cfg.tts.voice.clone(),
            speed: cfg.tts.speed,
            placed,
            cache,
        })
    }

    /// The front end (for checking what a prompt will sound like).
    pub fn frontend(&self) -> &FrontEnd {
        &self.frontend
    }

    fn voice(&self, name: &str) -> Result<Arc<Voice>, SpeechError> {
        self.voices.get(name).cloned().ok_or_else(|| {
            SpeechError::Input(format!(
                "unknown voice {name:?}; allowed: {}",
                tts::VOICES.join(", ")
            ))
        })
    }

    /// Queues one clause's phonemes; the 24 kHz audio comes back on the receiver.
    fn queue_clause(
        &self,
        phonemes: &str,
        voice: &Arc<Voice>,
        speed: f64,
        cancel: &Cancel,
    ) -> Result<Receiver<Result<Vec<f32>, SpeechError>>, SpeechError> {
        let ids = self.vocab.encode(phonemes);
        let (reply, rx) = sync_channel(1);
        let tx = self.tx.as_ref().ok_or(SpeechError::Stopped)?;
        tx.try_send(TtsJob {
            ids,
            voice: voice.clone(),
            speed: speed as f32,
            cancel: cancel.clone(),
            reply,
        })
        .map_err(|e| match e {
            TrySendError::Full(_) => SpeechError::Busy,
            TrySendError::Disconnected(_) => SpeechError::Stopped,
        })?;
        Ok(rx)
    }

    /// Synthesises `text` clause by clause at `rate` Hz, handing each clause's PCM to `sink`
    /// as soon as it is ready (with a pause after it). All clauses are queued at once, so with
    /// several workers they are synthesised in parallel; `cancel` stops the rest.
    pub fn speak(
        &self,
        text: &str,
        voice: &str,
        speed: f64,
        rate: u32,
        cancel: &Cancel,
        sink: &mut dyn FnMut(Vec<i16>),
    ) -> Result<SpeakStats, SpeechError> {
        let t0 = mono();
        let v = self.voice(voice)?;
        let parts: Vec<(String, u32)> = clauses(text)
            .into_iter()
            .flat_map(|c| {
                let pause = if c.ends_with(['。', '！', '？', '.', '!', '?']) {
                    300
                } else {
                    150
                };
                let ph = self.frontend.phonemes(&c);
                split_ids(&ph, tts::MAX_IDS - 12)
                    .into_iter()
                    .map(move |p| (p, pause))
                    .collect::<Vec<_>>()
            })
            .filter(|(p, _)| !p.trim().is_empty())
            .collect();
        if parts.is_empty() {
            return Err(SpeechError::Input("nothing to say".into()));
        }
        let mut pending = std::collections::VecDeque::new();
        let mut stats = SpeakStats::default();
        let mut queued = 0;
        while queued < parts.len() || !pending.is_empty() {
            if cancel.is_cancelled() {
                return Err(SpeechError::Cancelled);
            }
            // Keep a few clauses queued ahead, not the whole text (fairness between calls).
            while queued < parts.len() && pending.len() < 3 {
                let (p, pause) = &parts[queued];
                pending.push_back((self.queue_clause(p, &v, speed, cancel)?, *pause));
                queued += 1;
            }
            let Some((rx, pause)) = pending.pop_front() else {
                break;
            };
            let audio = rx.recv().map_err(|_| SpeechError::Stopped)??;
            if cancel.is_cancelled() {
                return Err(SpeechError::Cancelled);
            }
            let trimmed = tts::trim_silence(&audio, tts::MODEL_RATE, 40);
            let mut pcm = tts::to_pcm(trimmed, tts::MODEL_RATE, rate);
            pcm.extend(std::iter::repeat_n(0i16, (rate * pause / 1000) as usize));
            stats.audio_secs += pcm.len() as f64 / f64::from(rate);
            if stats.clauses == 0 {
                stats.first_audio = mono().saturating_duration_since(t0);
            }
            stats.clauses += 1;
            sink(pcm);
        }
        stats.total = mono().saturating_duration_since(t0);
        Ok(stats)
    }

    /// The whole of `text` at `rate` Hz.
    pub fn synthesize(
        &self,
        text: &str,
        voice: &str,
        speed: f64,
        rate: u32,
    ) -> Result<(Vec<i16>, SpeakStats), SpeechError> {
        let mut out = Vec::new();
        let stats = self.speak(text, voice, speed, rate, &Cancel::new(), &mut |p| {
            out.extend(p)
        })?;
        Ok((out, stats))
    }

    /// Synthesises a phoneme string as it is (no text front end), trimmed, at `rate` Hz.
    pub fn synthesize_phonemes(
        &self,
        phonemes: &str,
        voice: &str,
        speed: f64,
        rate: u32,
    ) -> Result<Vec<i16>, SpeechError> {
        let v = self.voice(voice)?;
        let audio = self
            .queue_clause(phonemes, &v, speed, &Cancel::new())?
            .recv()
            .map_err(|_| SpeechError::Stopped)??;
        Ok(tts::to_pcm(
            tts::trim_silence(&audio, tts::MODEL_RATE, 40),
            tts::MODEL_RATE,
            rate,
        ))
    }

    /// A prompt as 8 kHz PCM: from the prompt cache, or synthesised and stored there.
    pub fn prompt(
        &self,
        text: &str,
        voice: &str,
        speed: f64,
    ) -> Result<(Arc<Vec<i16>>, bool), SpeechError> {
        let key = tts::cache_key(text, voice, speed, &self.model_sha256);
        if let Some(c) = &self.cache
            && let Some(pcm) = c.get(&key)
        {
            return Ok((Arc::new(pcm), true));
        }
        let (pcm, _) = self.synthesize(text, voice, speed, tts::PHONE_RATE)?;
        if let Some(c) = &self.cache
            && let Err(e) = c.put(&key, &pcm)
        {
            log::warn!(reason:% = e; "cannot store a synthesised prompt in the cache");
        }
        Ok((Arc::new(pcm), false))
    }

    /// Synthesises every prompt not yet cached (script publication, start-up). Returns how
    /// many were synthesised.
    pub fn presynthesize(&self, prompts: &[(String, String)]) -> Result<usize, SpeechError> {
        let mut n = 0;
        for (text, voice) in prompts {
            if !self.prompt(text, voice, self.speed)?.1 {
                n += 1;
            }
        }
        Ok(n)
    }
}

impl Drop for TtsEngine {
    fn drop(&mut self) {
        self.tx = None;
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

/// Splits a phoneme string at spaces into pieces of at most `max` symbols.
fn split_ids(ph: &str, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for word in ph.split(' ') {
        if cur.chars().count() + word.chars().count() + 1 > max && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(word);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn tts_worker(session: &mut Session, rx: &Mutex<Receiver<TtsJob>>) {
    loop {
        let job = {
            let Ok(guard) = rx.lock() else { return };
            match guard.recv() {
                Ok(j) => j,
                Err(_) => return,
            }
        };
        if job.cancel.is_cancelled() {
            let _ = job.reply.send(Err(SpeechError::Cancelled));
            continue;
        }
        let r = run_kokoro(session, &job);
        let _ = job.reply.send(r);
    }
}

fn run_kokoro(session: &mut Session, job: &TtsJob) -> Result<Vec<f32>, SpeechError> {
    let tokens = tts::model_tokens(&job.ids);
    let n = tokens.len() as i64;
    let style = job
        .voice
        .style(job.ids.len().min(tts::MAX_IDS - 2))
        .to_vec();
    let out = session.run(ort::inputs![
        "tokens" => tensor_i64(vec![1, n], tokens)?,
        "style" => tensor_f32(vec![1, tts::STYLE_DIM as i64], style)?,
        "speed" => tensor_f32(vec![1], vec![job.speed])?,
    ])?;
    let (_, audio) = extract(&out, "audio")?;
    Ok(audio)
}

/// Synthesised prompts on disk: `<dir>/<2 hex>/<sha256>.pcm`, raw 16-bit little-endian 8 kHz
/// mono. Written atomically; the oldest entries (by modification time, refreshed on use) are
/// removed when the directory grows past its cap.
#[derive(Debug)]
pub struct PromptCache {
    dir: PathBuf,
    cap_bytes: u64,
}

impl PromptCache {
    /// A cache in `dir` (created on first use) of at most `cap_bytes`.
    pub fn new(dir: PathBuf, cap_bytes: u64) -> Self {
        Self { dir, cap_bytes }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir
            .join(&key[..2.min(key.len())])
            .join(format!("{key}.pcm"))
    }

    /// The PCM stored under `key`.
    pub fn get(&self, key: &str) -> Option<Vec<i16>> {
        let p = self.path(key);
        let bytes = std::fs::read(&p).ok()?;
        if let Ok(f) = std::fs::File::options().write(true).open(&p) {
            let _ = f.set_modified(SystemClock.wall());
        }
        Some(
            bytes
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]))
                .collect(),
        )
    }

    /// Stores `pcm` under `key`, then trims the cache to its cap.
    pub fn put(&self, key: &str, pcm: &[i16]) -> std::io::Result<()> {
        let p = self.path(key);
        if let Some(parent) = p.parent() {
            crate::fs::ensure_private_dir(parent)?;
        }
        let tmp = p.with_extension("tmp");
        let bytes: Vec<u8> = pcm.iter().flat_map(|s| s.to_le_bytes()).collect();
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, &p)?;
        self.trim()
    }

    fn trim(&self) -> std::io::Result<()> {
        let mut files = Vec::new();
        let mut total = 0u64;
        for sub in std::fs::read_dir(&self.dir)?.flatten() {
            if let Ok(rd) = std::fs::read_dir(sub.path()) {
                for f in rd.flatten() {
                    if let Ok(m) = f.metadata() {
                        total += m.len();
                        files.push((m.modified().ok(), m.len(), f.path()));
                    }
                }
            }
        }
        if total <= self.cap_bytes {
            return Ok(());
        }
        files.sort_by_key(|(t, _, _)| *t);
        for (_, len, path) in files {
            if total <= self.cap_bytes * 9 / 10 {
                break;
            }
            std::fs::remove_file(&path)?;
            total = total.saturating_sub(len);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoder_frames_pad_and_round() {
        assert_eq!(encoder_frames(16_000, 0), 200);
        assert_eq!(encoder_frames(32_160, 0), 400);
        assert_eq!(encoder_frames(1, 0), 100);
        assert_eq!(encoder_frames(16_000, 1000), 1000);
        assert_eq!(encoder_frames(16_000 * 12, 1000), 1300);
        assert_eq!(encoder_frames(16_000 * 40, 1000), MAX_FRAMES);
    }

    #[test]
    fn prompt_cache_round_trip_and_cap() {
        let dir = tempfile::tempdir().unwrap();
        let c = PromptCache::new(dir.path().join("pc"), 3000);
        let key = tts::cache_key("您好", "zf_xiaobei", 1.0, "x");
        assert!(c.get(&key).is_none());
        c.put(&key, &[1, -2, 3]).unwrap();
        assert_eq!(c.get(&key), Some(vec![1, -2, 3]));
        for i in 0..5 {
            let k = tts::cache_key(&format!("{i}"), "zf_xiaobei", 1.0, "x");
            c.put(&k, &[0i16; 500]).unwrap();
        }
        let total: u64 = std::fs::read_dir(dir.path().join("pc"))
            .unwrap()
            .flatten()
            .flat_map(|d| std::fs::read_dir(d.path()).unwrap().flatten())
            .map(|f| f.metadata().unwrap().len())
            .sum();
        assert!(total <= 3000, "{total}");
    }

    #[test]
    fn long_phonemes_are_split_at_spaces() {
        let p = split_ids("ab cd ef gh", 5);
        assert_eq!(p, vec!["ab cd", "ef gh"]);
    }
}
