//! Vault benchmarks (docs/benchmarks.md). Not timed tests: run them on purpose.
//!
//! ```text
//! cargo bench --bench vault -- encrypt   # AEAD throughput; CPU per concurrent recorded call
//! cargo bench --bench vault -- erase     # erase one subject with 1,000 calls among 1,000,000
//! ```
//! Under `cargo test --all-targets` (no `--bench` argument) this binary does nothing.
#![allow(clippy::disallowed_methods, clippy::unwrap_used)] // a benchmark reads the clock

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use vaultcall::config::{StoreConfig, Synchronous, VaultConfig};
use vaultcall::records::{ErasureRequest, ErasureTarget, Records};
use vaultcall::store::Store;
use vaultcall::time::SystemClock;
use vaultcall::vault::MasterKey;
use vaultcall::vault::format::{ContentType, FileCipher, Header};
use vaultcall::vault::keys::DataKey;
use vaultcall::vault::stream::{
    AUDIO_CHUNK, EncryptedReader, EncryptedWriter, Mode, TranscriptLine, read_header,
};

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct we pass; RUSAGE_SELF has no other preconditions.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn open(dir: &Path, sync: Synchronous) -> Records {
    let cfg = StoreConfig {
        synchronous: sync,
        ..StoreConfig::default()
    };
    let store = Store::open(&dir.join("vaultcall.db"), &cfg, 1).unwrap();
    Records::open(
        store,
        dir,
        &MasterKey::from_bytes([42; 32]),
        &VaultConfig::default(),
        Arc::new(SystemClock),
    )
    .unwrap()
}

fn encrypt() {
    // 1. Raw AEAD throughput of the file format, one core: seal and open 256 MiB in 1 s chunks.
    let dk = DataKey::generate().unwrap();
    let header = Header {
        content_type: ContentType::CallAudio,
        file_id: [1; 16],
        subject: [2; 32],
        key_id: dk.id().to_owned(),
        created_at_ms: 0,
    };
    let plain = vec![0x5au8; AUDIO_CHUNK];
    let total = 256 << 20;
    let mut seal = Vec::new();
    let mut open_ = Vec::new();
    let mut file = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let mut w = EncryptedWriter::new(
            Vec::with_capacity(total + total / 100),
            FileCipher::create(&dk, header.clone()).unwrap(),
            AUDIO_CHUNK,
        )
        .unwrap();
        for _ in 0..total / AUDIO_CHUNK {
            w.write_plain(&plain).unwrap();
        }
        let (bytes, _) = w.finish().unwrap();
        seal.push(total as f64 / t.elapsed().as_secs_f64() / 1e6);
        let t = Instant::now();
        let mut src = &bytes[..];
        let h = read_header(&mut src).unwrap();
        let exp = vaultcall::vault::format::Expected {
            subject: [2; 32],
            file_id: Some([1; 16]),
            content_type: ContentType::CallAudio,
        };
        let mut r =
            EncryptedReader::new(src, FileCipher::open(&dk, &h, &exp).unwrap(), Mode::Strict);
        let mut n = 0;
        while let Some(c) = r.next_chunk().unwrap() {
            n += c.len();
        }
        assert!(n >= total - AUDIO_CHUNK);
        open_.push(total as f64 / t.elapsed().as_secs_f64() / 1e6);
        file = bytes;
    }
    drop(file);
    println!(
        "| seal (encrypt) 256 MiB in 32,000-byte chunks, one core | {:.0} MB/s (median of 5) |",
        median(seal)
    );
    println!(
        "| open (decrypt and verify) the same | {:.0} MB/s (median of 5) |",
        median(open_)
    );

    // 2. Concurrent recorded calls through the real path (files, rows, fsync at finish):
    // CALLS calls, SECONDS of audio each, frames interleaved as a media loop would deliver
    // them, as fast as the CPU allows. Baseline in the same run: the same frames written to
    // plain files (what a WAV recorder costs).
    const CALLS: usize = 200;
    const SECONDS: usize = 60;
    let tmp = tempfile::tempdir().unwrap();
    let r = open(tmp.path(), Synchronous::Full);
    let mut live = Vec::new();
    for i in 0..CALLS {
        let s = r
            .ensure_subject(&r.normalize(&format!("1380000{i:04}")).unwrap())
            .unwrap();
        let call = r.start_call(&s, None).unwrap();
        live.push(r.start_recording(&s, call).unwrap());
    }
    let side: Vec<i16> = (0..160).map(|i| (i * 37 % 2000) as i16).collect();
    let frames = SECONDS * 50;
    let (c0, t0) = (cpu_seconds(), Instant::now());
    for _ in 0..frames {
        for rec in live.iter_mut() {
            rec.append_frame(&side, &side).unwrap();
        }
    }
    let (c_frames, t_frames) = (cpu_seconds() - c0, t0.elapsed().as_secs_f64());
    let c1 = cpu_seconds();
    for rec in live {
        rec.finish().unwrap();
    }
    let c_finish = cpu_seconds() - c1;
    r.store().clone().close();
    // Baseline: plaintext interleave and write, same sizes, same number of files.
    let base = tempfile::tempdir().unwrap();
    let mut files: Vec<std::fs::File> = (0..CALLS)
        .map(|i| std::fs::File::create(base.path().join(format!("{i}.pcm"))).unwrap())
        .collect();
    let mut bufs: Vec<Vec<u8>> = (0..CALLS)
        .map(|_| Vec::with_capacity(AUDIO_CHUNK))
        .collect();
    let (b0, bt0) = (cpu_seconds(), Instant::now());
    for _ in 0..frames {
        for (f, buf) in files.iter_mut().zip(bufs.iter_mut()) {
            for (c, r) in side.iter().zip(&side) {
                buf.extend_from_slice(&c.to_le_bytes());
                buf.extend_from_slice(&r.to_le_bytes());
            }
            if buf.len() >= AUDIO_CHUNK {
                f.write_all(buf).unwrap();
                buf.clear();
            }
        }
    }
    for f in &files {
        f.sync_all().unwrap();
    }
    let (b_cpu, b_wall) = (cpu_seconds() - b0, bt0.elapsed().as_secs_f64());
    let audio_s = (CALLS * SECONDS) as f64;
    let per_call = c_frames / audio_s;
    println!(
        "| {CALLS} concurrent calls × {SECONDS} s of stereo audio, encrypted recording | {c_frames:.2} s CPU ({t_frames:.2} s wall) for {audio_s:.0} s of audio: {:.3} % of one core per call, {:.1} µs per 20 ms frame; finishing all files {c_finish:.2} s CPU |",
        per_call * 100.0,
        c_frames / (audio_s * 50.0) * 1e6
    );
    println!(
        "| same frames written as plain PCM (baseline, same run) | {b_cpu:.2} s CPU ({b_wall:.2} s wall): {:.3} % of one core per call; encryption costs {:.1}× the plain write |",
        b_cpu / audio_s * 100.0,
        c_frames / b_cpu.max(1e-9)
    );
    println!(
        "| calls one core can record (CPU only, encrypted) | {:.0} |",
        1.0 / per_call
    );
}

fn erase() {
    const SUBJECTS: i64 = 1_000;
    const TOTAL_CALLS: i64 = 1_000_000;
    const TARGET_CALLS: usize = 1_000;
    const TURNS: u32 = 8;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Seed fast (synchronous = normal), measure with the production setting (full).
    let r = open(dir, Synchronous::Normal);
    let t = Instant::now();
    let r_store = r.store().clone();
    r_store
        .write(|c| {
            c.execute("INSERT INTO tasks (id, name, status, created_at_ms, updated_at_ms) VALUES (1, 'bench', 'running', 1, 1)", [])?;
            // Background subjects only need to exist as rows (their keys play no part here).
            let mut subj = c.prepare("INSERT INTO data_subjects (subject_hash, key_id, created_at_ms, shredded_at_ms) VALUES (?1, ?2, 1, 1)")?;
            for i in 0..SUBJECTS {
                let mut h = [0u8; 32];
                h[..8].copy_from_slice(&i.to_be_bytes());
                h[31] = 0xee;
                subj.execute(rusqlite::params![&h[..], format!("dk-{i:016x}")])?;
            }
            Ok(())
        })
        .unwrap();
    let background = TOTAL_CALLS - 3 * TARGET_CALLS as i64;
    r_store
        .write(move |c| {
            let mut call = c.prepare("INSERT INTO calls (subject_id, started_at_ms, status_code) VALUES (?1, ?2, 1)")?;
            let mut turn = c.prepare("INSERT INTO turns (call_id, seq, speaker, start_ms, end_ms, text_enc) VALUES (?1, ?2, 'customer', 0, 1, ?3)")?;
            let blob = [7u8; 48];
            for i in 0..background {
                call.execute(rusqlite::params![1 + i % SUBJECTS, 1_700_000_000_000 + i])?;
                let id = c.last_insert_rowid();
                for seq in 1..=2 {
                    turn.execute(rusqlite::params![id, seq, &blob[..]])?;
                }
            }
            Ok(())
        })
        .unwrap();
    let seed_bg = t.elapsed().as_secs_f64();
    // Three real subjects with 1,000 calls each: 8 sealed turns, a 1 s recording and a
    // transcript per call, a task number. Erasing each is one measured run.
    let t = Instant::now();
    let mut targets = Vec::new();
    for k in 0..3 {
        let phone = format!("13911{k}00000");
        let s = r.ensure_subject(&r.normalize(&phone).unwrap()).unwrap();
        r.add_task_number(1, &s, &json!({"name": "bench", "amount": "1.00"}))
            .unwrap();
        let side = vec![3i16; 160];
        for _ in 0..TARGET_CALLS {
            let call = r.start_call(&s, None).unwrap();
            let mut tr = r.start_transcript(&s, call).unwrap();
            for seq in 1..=TURNS {
                tr.append_turn(
                    &TranscriptLine {
                        seq,
                        speaker: "customer".into(),
                        start_ms: 0,
                        end_ms: 1,
                        text: "bench turn text of typical length 二十个字左右的一句话".into(),
                    },
                    None,
                )
                .unwrap();
            }
            tr.finish().unwrap();
            let mut rec = r.start_recording(&s, call).unwrap();
            for _ in 0..50 {
                rec.append_frame(&side, &side).unwrap();
            }
            rec.finish().unwrap();
        }
        targets.push(phone);
    }
    let seed_targets = t.elapsed().as_secs_f64();
    let calls: i64 = r
        .store()
        .read(|c| Ok(c.query_row("SELECT count(*) FROM calls", [], |x| x.get(0))?))
        .unwrap();
    let bytes = r.store().disk_bytes();
    r.store().clone().close();
    drop(r);
    // Measure with synchronous = full (the default), fresh process state per run.
    let r = open(dir, Synchronous::Full);
    let mut times = Vec::new();
    let mut steps: Vec<[f64; 4]> = Vec::new();
    let mut last = serde_json::Value::Null;
    for (k, phone) in targets.iter().enumerate() {
        let req = ErasureRequest {
            target: ErasureTarget::Phone(r.normalize(phone).unwrap()),
            ticket: format!("BENCH-{k}"),
            reason: "benchmark".into(),
            requested_by: "cli".into(),
            role: None,
            source: "cli",
        };
        // The same steps `erase` runs, timed one by one.
        let t = Instant::now();
        let id = r.file_erasure(&req).unwrap();
        let mut marks = [0.0; 4];
        for m in marks.iter_mut().take(3) {
            r.erasure_step(id).unwrap();
            *m = t.elapsed().as_secs_f64();
        }
        r.store().checkpoint_truncate().unwrap();
        marks[3] = t.elapsed().as_secs_f64();
        times.push(marks[3]);
        steps.push(marks);
        last = r.erase(&req).unwrap().receipt["deleted"].clone();
    }
    let mid = steps
        .iter()
        .position(|s| s[3] == median(times.clone()))
        .unwrap();
    let s = steps[mid];
    r.store().clone().close();
    // Baseline, same run and file system: removing as many plain files of the same sizes.
    let base = dir.join("baseline");
    std::fs::create_dir(&base).unwrap();
    for i in 0..2 * TARGET_CALLS {
        let mut f = std::fs::File::create(base.join(i.to_string())).unwrap();
        f.write_all(&vec![0u8; if i % 2 == 0 { 32_140 } else { 1_300 }])
            .unwrap();
        f.sync_all().unwrap();
    }
    let t = Instant::now();
    std::fs::remove_dir_all(&base).unwrap();
    let unlink = t.elapsed().as_secs_f64();
    println!(
        "| seed: {calls} calls ({background} background with 2 turns each) | {seed_bg:.1} s; 3 × {TARGET_CALLS} real calls {seed_targets:.1} s; database {:.0} MB |",
        bytes as f64 / 1e6
    );
    println!(
        "| erase one subject with {TARGET_CALLS} calls ({last}) among {calls} calls | median {:.2} s (runs: {}) |",
        median(times.clone()),
        times
            .iter()
            .map(|t| format!("{t:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "| of which (median run): data key destroyed after | {:.3} s; files removed {:.3} s; rows deleted and receipt signed {:.3} s; WAL checkpoint {:.3} s |",
        s[0],
        s[1] - s[0],
        s[2] - s[1],
        s[3] - s[2]
    );
    println!(
        "| baseline: removing {} plain files of the same sizes on the same file system | {unlink:.3} s |",
        2 * TARGET_CALLS
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    let all = !args.iter().any(|a| a == "encrypt" || a == "erase");
    if all || args.iter().any(|a| a == "encrypt") {
        encrypt();
    }
    if all || args.iter().any(|a| a == "erase") {
        erase();
    }
}
