//! The speech engine in the daemon and the operator commands, with the real models (after
//! `make models`): models verified at start (a tampered file or a missing library is exit 78,
//! one line), `vaultcall say` and `vaultcall transcribe` end to end.
#![allow(clippy::disallowed_methods)] // tests drive the real binary in real time

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{BIN, Daemon, test_config};

fn models() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/out");
    assert!(
        d.join("whisper-base/encoder.int8.onnx").exists(),
        "models missing: run `make models` first"
    );
    d
}

fn run(dir: &Path, config: &str, args: &[&str]) -> std::process::Output {
    let cfg = dir.join("vaultcall.toml");
    std::fs::write(&cfg, config).unwrap();
    Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(&cfg)
        .env_remove("VAULTCALL_CONFIG")
        .env_remove("STATE_DIRECTORY")
        .current_dir(dir)
        .output()
        .unwrap()
}

fn serve_exit(dir: &Path, config: &str) -> (Option<i32>, String) {
    let o = run(dir, config, &["serve"]);
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn speech_section(model_dir: &Path, extra: &str) -> String {
    format!(
        "[speech]\nenabled = true\nmodel_dir = \"{}\"\n{extra}\n",
        model_dir.display()
    )
}

/// A copy of the model directory: links to the real files, except one altered copy.
fn tampered_models(dir: &Path) -> PathBuf {
    let src = models();
    let dst = dir.join("models");
    for sub in ["whisper-base", "kokoro/voices", "zh", "clips"] {
        std::fs::create_dir_all(dst.join(sub)).unwrap();
    }
    for e in walk(&src) {
        let rel = e.strip_prefix(&src).unwrap();
        std::os::unix::fs::symlink(&e, dst.join(rel)).unwrap();
    }
    // Same length, one byte different.
    let target = dst.join("whisper-base/config.json");
    let mut b = std::fs::read(&target).unwrap();
    std::fs::remove_file(&target).unwrap();
    let i = b.iter().position(|c| *c == b'5').unwrap();
    b[i] = b'6';
    std::fs::write(&target, b).unwrap();
    dst
}

fn walk(d: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(d).unwrap().flatten() {
        if e.path().is_dir() {
            v.extend(walk(&e.path()));
        } else {
            v.push(e.path());
        }
    }
    v
}

#[test]
fn daemon_with_speech_starts_and_refuses_a_tampered_model_with_78() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let good = test_config(dir, "", &speech_section(&models(), ""));
    let mut d = Daemon::start_in(dir, &good);
    let m = d.get("/metrics", None).text();
    assert!(m.contains("vaultcall_asr_queue_depth 0"), "{m}");
    assert!(m.contains("vaultcall_asr_refused 0"), "{m}");
    d.stop();
    assert!(
        d.log_text().contains("speech models verified and loaded"),
        "{}",
        d.log_text()
    );
    let bad = test_config(dir, "", &speech_section(&tampered_models(dir), ""));
    let (code, err) = serve_exit(dir, &bad);
    assert_eq!(code, Some(78), "{err}");
    assert!(
        err.contains("config.json") && err.contains("differs"),
        "{err}"
    );
}

#[test]
fn missing_onnxruntime_library_is_exit_78_not_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cfg = test_config(
        dir,
        "",
        &speech_section(
            &models(),
            "onnxruntime_library = \"/nonexistent/libonnxruntime.so.1.31.1\"",
        ),
    );
    let (code, err) = serve_exit(dir, &cfg);
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("ONNX Runtime library"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // Not a library at all: also 78.
    let fake = dir.join("libfake.so");
    std::fs::write(&fake, b"not a shared object").unwrap();
    let cfg = test_config(
        dir,
        "",
        &speech_section(
            &models(),
            &format!("onnxruntime_library = \"{}\"", fake.display()),
        ),
    );
    let (code, err) = serve_exit(dir, &cfg);
    assert_eq!(code, Some(78), "{err}");
    let last = err.trim_end().lines().last().unwrap_or_default();
    assert!(last.starts_with("vaultcall: ONNX Runtime library"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn say_then_transcribe_round_trip_with_history_and_per_file_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cfg = format!(
        "[paths]\ndata_dir = \"{}\"\n[speech]\nmodel_dir = \"{}\"\n",
        dir.join("var").display(),
        models().display()
    );
    let wav = dir.join("prompt.wav");
    let o = run(
        dir,
        &cfg,
        &[
            "say",
            "您好，请问是王先生吗？",
            "--voice",
            "zf_xiaobei",
            "-o",
            wav.to_str().unwrap(),
            "--rate",
            "8000",
        ],
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let w = vaultcall::media::resample::read_wav(&std::fs::read(&wav).unwrap()).unwrap();
    assert_eq!((w.rate, w.channels), (8000, 1));
    assert!(w.samples.len() > 8000, "{}", w.samples.len());
    // A stereo recording: the customer (left) says the prompt, the right leg is silent.
    let stereo: Vec<i16> = w.samples.iter().flat_map(|s| [*s, 0]).collect();
    let rec = dir.join("call.wav");
    std::fs::write(
        &rec,
        vaultcall::media::resample::wav_bytes(8000, 2, &stereo),
    )
    .unwrap();
    let hw = dir.join("hotwords.txt");
    std::fs::write(&hw, "王先生\n").unwrap();
    let out = dir.join("out");
    let o = run(
        dir,
        &cfg,
        &[
            "transcribe",
            "--hotwords",
            hw.to_str().unwrap(),
            "--format",
            "json",
            "--out",
            out.to_str().unwrap(),
            rec.to_str().unwrap(),
            dir.join("missing.wav").to_str().unwrap(),
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("missing.wav"), "{err}");
    assert!(err.contains("1 of 2 files transcribed"), "{err}");
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("call.json")).unwrap()).unwrap();
    let segs = j["segments"].as_array().unwrap();
    assert_eq!(segs.len(), 1, "{j}");
    let text = segs[0]["text"].as_str().unwrap();
    let (e, n) = vaultcall::speech::asr::cer("您好请问是王先生吗", text);
    assert!(e * 100 <= n * 25, "{text}");
    assert!(segs[0]["end"].as_f64().unwrap() > segs[0]["start"].as_f64().unwrap());
    // The history: both files, the failure with its reason, no transcript text.
    let db = rusqlite::Connection::open(dir.join("var/vaultcall.db")).unwrap();
    let rows: Vec<(String, String, i64)> = db
        .prepare("SELECT file_name, status, segments FROM transcriptions ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[0].1.as_str(), rows[0].2), ("ok", 1));
    assert_eq!(rows[1].1, "error");
    let dump: String = db
        .query_row(
            "SELECT group_concat(quote(transcriptions.error) || file_name) FROM transcriptions",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(!dump.contains("先生"), "{dump}");
}
