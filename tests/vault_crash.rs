//! A writer process killed mid-recording: the file decrypts up to its last complete chunk, the
//! audio is exactly what was written, and the daemon serves it (as incomplete) — while the same
//! bytes claimed as a finished file are refused as truncated.
#![allow(clippy::disallowed_methods)] // tests drive real processes in real time

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use common::{BIN, Daemon};

#[test]
fn sigkill_mid_recording_leaves_a_file_readable_to_its_last_complete_chunk() {
    let mut d = Daemon::start("", "");
    let admin = d.bootstrap();
    let op = d.token(&admin, "operator");
    // A real-time writer: one 20 ms frame every 20 ms, a sealed chunk every second.
    let mut child = Command::new(BIN)
        .args(["dev", "record", "--config"])
        .arg(&d.config)
        .args(["--seconds", "120", "--pace-ms", "20", "--turns", "2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"+86 139 8765 4321\n")
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let id: i64 = first
        .strip_prefix("recording ")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
    for line in lines.by_ref() {
        if line.unwrap() == "chunk 3" {
            break;
        }
    }
    // Mid-file, between (or during) chunk writes.
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success());

    let r = d.get(&format!("/api/v1/recordings/{id}/content"), Some(&op));
    assert_eq!(r.status, 200, "{}", r.text());
    let pcm = &r.body[44..];
    let seconds = pcm.len() / 32_000;
    assert!(
        pcm.len() % 32_000 == 0 && (3..120).contains(&seconds),
        "{} bytes of audio",
        pcm.len()
    );
    // Exactly the signal `dev record` wrote, from the first sample to the last.
    let (mut cust, mut robot) = (vec![0i16; 160], vec![0i16; 160]);
    for (f, frame) in pcm.chunks_exact(640).enumerate() {
        vaultcall::records::cli::synth_frame(f as u64, &mut cust, &mut robot);
        for i in 0..160 {
            let l = i16::from_le_bytes([frame[4 * i], frame[4 * i + 1]]);
            let rr = i16::from_le_bytes([frame[4 * i + 2], frame[4 * i + 3]]);
            assert_eq!((l, rr), (cust[i], robot[i]), "frame {f} sample {i}");
        }
    }
    // The transcript, finished before the audio started, is complete.
    let list = d.get("/api/v1/calls/1/recordings", Some(&op)).json();
    let rows = list["recordings"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 2, "{list}");
    assert!(
        rows.iter()
            .any(|x| x["kind"] == "transcript" && x["complete"] == true)
    );
    assert!(
        rows.iter()
            .any(|x| x["kind"] == "audio" && x["complete"] == false)
    );
    // Had the database said the file was finished, the same bytes would be a truncation.
    let conn = rusqlite::Connection::open(d.db_path()).unwrap();
    conn.execute("UPDATE recordings SET complete = 1 WHERE id = ?1", [id])
        .unwrap();
    drop(conn);
    let r = d.get(&format!("/api/v1/recordings/{id}/content"), Some(&op));
    assert_eq!(r.status, 500);
    assert_eq!(r.json()["error"]["code"], "integrity");
    d.stop();
}
