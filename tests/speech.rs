//! The speech engine with the real models (after `make models`): recognition of real and
//! synthesised Mandarin through the telephone path, the text front end on its tables, the
//! announcement classifier on synthesised carrier announcements, streaming recognition.
//! These tests fail (they do not skip) when the models are missing: `make test` builds them.
#![allow(clippy::disallowed_methods)] // tests may read the clock

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use vaultcall::config::{AsrPrecision, SpeechConfig};
use vaultcall::media::g711;
use vaultcall::media::resample::{read_wav, resample, to_mono};
use vaultcall::speech::asr::hotwords::{Hotwords, Pinyin};
use vaultcall::speech::asr::{PostProcess, cer, post_process};
use vaultcall::speech::stream::{AsrStream, StreamOutput, to_16k};
use vaultcall::speech::tts::frontend::{FrontEnd, Lexicon};
use vaultcall::speech::vad::{Endpointer, FRAME, WebRtcVad};
use vaultcall::speech::worker::{AsrEngine, TtsEngine};

fn models() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/out");
    assert!(
        d.join("whisper-base/encoder.int8.onnx").exists(),
        "models missing: run `make models` first"
    );
    d
}

fn cfg() -> SpeechConfig {
    let mut c = SpeechConfig {
        model_dir: Some(models()),
        ..SpeechConfig::default()
    };
    c.asr.precision = AsrPrecision::Int8;
    c
}

fn asr() -> &'static AsrEngine {
    static E: OnceLock<AsrEngine> = OnceLock::new();
    E.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        AsrEngine::load(&cfg(), d.path()).expect("ASR loads")
    })
}

fn tts() -> &'static TtsEngine {
    static E: OnceLock<TtsEngine> = OnceLock::new();
    E.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        TtsEngine::load(&cfg(), d.path(), None).expect("TTS loads")
    })
}

fn pp() -> PostProcess {
    PostProcess {
        itn: true,
        hotwords: Hotwords::default(),
    }
}

/// The telephone channel: 8 kHz (band-limited), A-law both ways.
fn phone(pcm_8k: &[i16]) -> Vec<i16> {
    pcm_8k
        .iter()
        .map(|s| g711::alaw_to_linear(g711::linear_to_alaw(*s)))
        .collect()
}

fn recognise(pcm_8k: &[i16]) -> String {
    let raw = asr().transcribe(to_16k(pcm_8k)).expect("decode");
    post_process(&raw, &pp(), &asr().pinyin).text
}

#[test]
fn real_recording_is_recognised_at_16k_and_through_g711() {
    let dir = models();
    let bytes = std::fs::read(dir.join("clips/basic_ref_zh.wav")).unwrap();
    let reference = std::fs::read_to_string(dir.join("clips/basic_ref_zh.txt")).unwrap();
    let w = read_wav(&bytes).unwrap();
    let mono = to_mono(&w);
    let at16: Vec<f32> = resample(&mono, w.rate, 16_000)
        .into_iter()
        .map(|s| f32::from(s) / 32768.0)
        .collect();
    let raw = asr().transcribe(at16).unwrap();
    let text = post_process(&raw, &pp(), &asr().pinyin).text;
    let (e, n) = cer(&reference, &text);
    assert!(
        e * 100 <= n * 25,
        "16 kHz: {text:?} vs {reference:?}: {e}/{n}"
    );
    let tel = recognise(&phone(&resample(&mono, w.rate, 8000)));
    let (e, n) = cer(&reference, &tel);
    assert!(e * 100 <= n * 30, "telephone: {tel:?}: {e}/{n}");
}

#[test]
fn synthesised_bank_sentence_survives_the_phone_with_cer_at_most_15_percent() {
    let sentence = "您好，这里是招商银行信用卡中心，您本期账单还没有还款，请尽快处理。";
    let (pcm, stats) = tts().synthesize(sentence, "zf_xiaobei", 1.0, 8000).unwrap();
    assert!(stats.audio_secs > 2.0 && stats.clauses >= 2, "{stats:?}");
    let text = recognise(&phone(&pcm));
    let (e, n) = cer(sentence, &text);
    assert!(e * 100 <= n * 15, "{text:?}: {e}/{n}");
}

#[test]
fn batched_decoding_gives_the_same_text_as_one_by_one() {
    let a = tts()
        .synthesize("我现在不方便，晚点再打给我。", "zm_yunjian", 1.0, 8000)
        .unwrap()
        .0;
    let b = tts()
        .synthesize("好的，我明天就还。", "zf_xiaoyi", 1.0, 8000)
        .unwrap()
        .0;
    let single_a = asr().transcribe(to_16k(&a)).unwrap().text;
    let single_b = asr().transcribe(to_16k(&b)).unwrap().text;
    // Submitted together: the worker batches whatever waits.
    let ra = asr().submit(to_16k(&a)).unwrap();
    let rb = asr().submit(to_16k(&b)).unwrap();
    let (ba, bb) = (ra.recv().unwrap().unwrap(), rb.recv().unwrap().unwrap());
    let (e, n) = cer(&single_a, &ba.text);
    assert!(e * 10 <= n, "{single_a:?} vs batched {:?}", ba.text);
    let (e, n) = cer(&single_b, &bb.text);
    assert!(e * 10 <= n, "{single_b:?} vs batched {:?}", bb.text);
}

#[test]
fn beam_search_decodes_a_batch_with_the_real_model() {
    let mut c = cfg();
    c.asr.beam_size = 3;
    let d = tempfile::tempdir().unwrap();
    let beam = AsrEngine::load(&c, d.path()).expect("ASR loads");
    let sentences = ["您好，这里是招商银行信用卡中心。", "好的，我明天就还。"];
    let audio: Vec<Vec<i16>> = sentences
        .iter()
        .map(|s| phone(&tts().synthesize(s, "zm_yunjian", 1.0, 8000).unwrap().0))
        .collect();
    // Submitted together: one batch of two utterances × three rows each, caches reordered.
    let rx: Vec<_> = audio
        .iter()
        .map(|a| beam.submit(to_16k(a)).unwrap())
        .collect();
    for (s, r) in sentences.iter().zip(rx) {
        let raw = r.recv().unwrap().unwrap();
        let text = post_process(&raw, &pp(), &beam.pinyin).text;
        let (e, n) = cer(s, &text);
        assert!(e * 100 <= n * 20, "{s} -> {text:?}: {e}/{n}");
    }
}

#[test]
fn streaming_emits_speech_started_and_utterances_with_times() {
    let one = tts()
        .synthesize("我已经还过了。", "zf_xiaobei", 1.0, 8000)
        .unwrap()
        .0;
    let two = tts()
        .synthesize("请不要再打了。", "zm_yunxi", 1.0, 8000)
        .unwrap()
        .0;
    let mut audio = vec![0i16; 8000];
    audio.extend(&one);
    audio.extend(vec![0i16; 8000]);
    audio.extend(&two);
    audio.extend(vec![0i16; 8000]);
    let audio = phone(&audio);
    let c = cfg();
    let mut s = AsrStream::new(
        Endpointer::new(WebRtcVad::new(c.vad.aggressiveness), c.vad.clone()),
        pp(),
        asr().pinyin.clone(),
    );
    let mut started = Vec::new();
    let mut utterances = Vec::new();
    let mut drive = |s: &mut AsrStream<WebRtcVad>| {
        while let Some(out) = s.poll_output() {
            match out {
                StreamOutput::SpeechStarted { at } => started.push(at),
                StreamOutput::Decode(req) => {
                    let r = asr()
                        .transcribe(req.audio_16k.clone())
                        .map_err(|e| e.to_string());
                    s.handle_decoded(req.id, r);
                }
                StreamOutput::Utterance(u) => utterances.push(u),
                StreamOutput::DecodeFailed { reason, .. } => panic!("{reason}"),
            }
        }
    };
    for f in audio.chunks(FRAME) {
        s.push_frame(f);
        drive(&mut s);
    }
    s.finish();
    drive(&mut s);
    assert_eq!(started.len(), 2, "{started:?}");
    assert_eq!(utterances.len(), 2, "{utterances:?}");
    assert!(
        started[0].as_millis() >= 900 && started[0].as_millis() <= 1400,
        "{started:?}"
    );
    let u = &utterances[0];
    assert!(u.end > u.start && u.decode_time.as_millis() > 0);
    let (e, n) = cer("我已经还过了", &u.transcript.text);
    assert!(e * 100 <= n * 34, "{:?}", u.transcript);
    let (e, n) = cer("请不要再打了", &utterances[1].transcript.text);
    assert!(e * 100 <= n * 34, "{:?}", utterances[1].transcript);
}

fn frontend() -> &'static FrontEnd {
    static F: OnceLock<FrontEnd> = OnceLock::new();
    F.get_or_init(|| {
        let d = models().join("zh");
        let r = |n: &str| std::fs::read_to_string(d.join(n)).unwrap();
        FrontEnd::new(Lexicon::from_tsv(
            &r("chars.tsv"),
            &r("phrases.tsv"),
            &r("pinyin_ipa.tsv"),
        ))
    })
}

#[test]
fn g2p_polyphones_and_tone_sandhi_on_bank_sentences() {
    for (text, pinyin) in [
        ("请按时还款", "qing3 | an4 shi2 | huan2 kuan3"),
        (
            "您还需要还3500元",
            "nin2 | hai2 | xu1 yao4 | huan2 | san1 qian1 wu2 bai3 | yuan2",
        ),
        ("银行行长", "yin2 hang2 hang2 zhang3"),
        ("长期有效", "chang2 qi1 you3 xiao4"),
        ("你好", "ni2 hao3"),
        ("我也很好", "wo2 | ye3 | hen2 | hao3"),
        ("一定", "yi2 ding4"),
        ("一天", "yi4 tian1"),
        ("第一", "di4 yi1"),
        ("看一看", "kan4 yi5 kan4"),
        ("不是", "bu2 shi4"),
        ("不行", "bu4 xing2"),
        ("尾号6832", "wei3 hao4 | liu4 ba1 | san1 | er4"),
    ] {
        let got = frontend().pinyin(text);
        assert_eq!(got, pinyin, "{text}");
    }
}

#[test]
fn phonemes_are_kokoro_symbols_with_tone_arrows() {
    let ph = frontend().phonemes("您好，请按时还款。");
    assert!(ph.contains("xwa↗n"), "{ph}");
    assert!(ph.contains(", "), "{ph}");
    assert!(ph.ends_with('.'), "{ph}");
    let ph = frontend().phonemes("下载APP");
    assert!(ph.chars().filter(|c| *c == ' ').count() >= 3, "{ph}");
}

#[test]
fn announcements_synthesised_with_several_voices_are_classified() {
    use vaultcall::speech::announce::{Class, Classifier};
    let c = Classifier::new(&[]);
    // Each announcement in two voices (female and male), with the English tail.
    let set = [
        (
            "您好，您拨打的号码是空号，请查证后再拨。",
            Class::EmptyNumber,
            ["zf_xiaobei", "zm_yunjian"],
        ),
        (
            "您拨打的电话已关机。",
            Class::PoweredOff,
            ["zf_xiaoyi", "zm_yunjian"],
        ),
        (
            "您拨打的电话已停机。",
            Class::Suspended,
            ["zf_xiaoyi", "zm_yunyang"],
        ),
        (
            "您拨打的用户已欠费。",
            Class::Arrears,
            ["zf_xiaoxiao", "zm_yunxi"],
        ),
        (
            "您拨打的电话暂时无法接通，请稍后再拨。",
            Class::Unreachable,
            ["zf_xiaoxiao", "zm_yunxia"],
        ),
        (
            "您拨打的电话正在通话中，请稍后再拨。",
            Class::Busy,
            ["zf_xiaobei", "zm_yunyang"],
        ),
        (
            "您拨打的用户已设置呼入限制。",
            Class::CallInRestricted,
            ["zf_xiaobei", "zm_yunxi"],
        ),
        (
            "喂，您好，请问有什么事？",
            Class::Other,
            ["zf_xiaoyi", "zm_yunxia"],
        ),
    ];
    let english = english_tail();
    let mut wrong = Vec::new();
    let mut total = 0;
    for (text, class, voices) in set {
        for voice in voices {
            total += 1;
            let mut pcm = tts().synthesize(text, voice, 1.0, 8000).unwrap().0;
            pcm.extend(vec![0i16; 2400]);
            pcm.extend(&english);
            // The classifier reads the transcript before ITN (暂时 must not become digits).
            let raw = asr().transcribe(to_16k(&phone(&pcm))).unwrap();
            let heard = raw.text;
            let got = c.classify(&heard, Some(&asr().pinyin));
            if got.class != class {
                wrong.push(format!(
                    "{text} ({voice}) heard {heard:?} → {:?}",
                    got.class
                ));
            }
        }
    }
    // The bar: at least 15 of the 16 (the misses are the recogniser mishearing a synthetic
    // voice through G.711; docs/benchmarks.md lists them).
    eprintln!(
        "announcement test set: {} of {total} right; misses: {wrong:#?}",
        total - wrong.len()
    );
    assert!(wrong.len() <= 1, "{wrong:#?}");
}

/// "Sorry, the number you dialed is not available." — phonemes written out for Kokoro's
/// English voice (the Mandarin front end does not speak English).
fn english_tail() -> Vec<i16> {
    static A: OnceLock<Arc<Vec<i16>>> = OnceLock::new();
    A.get_or_init(|| {
        Arc::new(
            tts()
                .synthesize_phonemes(
                    "sˈɑɹi, ðə nˈʌmbəɹ ju dˈIld ɪz nˈɑt əvˈAləbᵊl.",
                    "af_heart",
                    1.0,
                    8000,
                )
                .unwrap(),
        )
    })
    .to_vec()
}

#[test]
fn pinyin_table_covers_the_front_end() {
    let p = Pinyin::from_tsv(&std::fs::read_to_string(models().join("zh/chars.tsv")).unwrap());
    assert_eq!(p.of('行'), ["xing", "hang", "heng"]);
}

#[test]
fn cuda_request_on_a_cpu_build_falls_back_to_the_cpu() {
    use vaultcall::speech::onnx::Placed;
    let mut c = cfg();
    c.execution_provider = "cuda:0".into();
    let d = tempfile::tempdir().unwrap();
    let e = AsrEngine::load(&c, d.path()).expect("falls back instead of failing");
    assert_eq!(e.placed, Placed::Cpu);
    let pcm = tts()
        .synthesize("好的。", "zf_xiaobei", 1.0, 8000)
        .unwrap()
        .0;
    assert!(!e.transcribe(to_16k(&pcm)).unwrap().text.is_empty());
}

#[test]
fn synthesis_is_clause_by_clause_and_stops_on_barge_in() {
    use vaultcall::speech::onnx::SpeechError;
    use vaultcall::speech::worker::Cancel;
    let text = "您好，这里是银行信用卡中心。您本期账单已经出来了，请您按时还款。如有疑问，请拨打客服热线。";
    let cancel = Cancel::new();
    let mut chunks = Vec::new();
    let r = tts().speak(text, "zf_xiaoyi", 1.0, 8000, &cancel, &mut |pcm| {
        chunks.push(pcm.len());
        cancel.cancel(); // the customer starts talking during the first clause
    });
    assert!(matches!(r, Err(SpeechError::Cancelled)), "{r:?}");
    assert_eq!(chunks.len(), 1, "only the first clause was played");
    let (_, stats) = tts().synthesize(text, "zf_xiaoyi", 1.0, 8000).unwrap();
    assert!(stats.clauses >= 4, "{stats:?}");
    assert!(stats.first_audio < stats.total, "{stats:?}");
}

#[test]
fn prompts_come_from_the_cache_the_second_time() {
    let d = tempfile::tempdir().unwrap();
    let e = TtsEngine::load(&cfg(), d.path(), Some(d.path().join("prompts"))).unwrap();
    let (a, hit) = e.prompt("请问您现在方便吗？", "zm_yunjian", 1.0).unwrap();
    assert!(!hit);
    let (b, hit) = e.prompt("请问您现在方便吗？", "zm_yunjian", 1.0).unwrap();
    assert!(hit);
    assert_eq!(a, b);
    let n = e
        .presynthesize(&[
            ("请问您现在方便吗？".into(), "zm_yunjian".into()),
            ("好的，再见。".into(), "zm_yunjian".into()),
        ])
        .unwrap();
    assert_eq!(n, 1, "only the new prompt is synthesised");
}

#[test]
fn hotwords_leave_unrelated_words_alone_with_the_real_readings() {
    let p = Pinyin::from_tsv(&std::fs::read_to_string(models().join("zh/chars.tsv")).unwrap());
    let h = Hotwords::new(
        &["还款".into(), "挂失".into(), "分期".into(), "账单".into()],
        0.75,
    );
    for text in [
        "不需要谢谢",
        "可以提高额度吗",
        "你们的客服电话是多少",
        "一共是一万二千元对吧",
    ] {
        let (t, c) = h.correct(text, &p);
        assert_eq!(t, text, "{c:?}");
    }
    let (t, c) = h.correct("怎么开通自动环款", &p);
    assert_eq!(t, "怎么开通自动还款", "{c:?}");
}
