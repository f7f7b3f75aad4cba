//! The records service in-process against a real database and data directory: erasure (and
//! its resumption after a crash between steps), suppression, retention, the prompt store,
//! playback of finished and interrupted files, and master-key rotation interrupted midway.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use vaultcall::config::{RetentionConfig, StoreConfig, VaultConfig};
use vaultcall::ids::{CallId, RecordingId};
use vaultcall::records::{ErasureRequest, ErasureTarget, Records, RecordsError, rotation};
use vaultcall::store::Store;
use vaultcall::store::erasure::ErasureState;
use vaultcall::time::{Clock, ManualClock, SystemClock, unix_ms};
use vaultcall::vault::MasterKey;
use vaultcall::vault::receipt;
use vaultcall::vault::stream::TranscriptLine;

const PHONE: &str = "138 1234 5678";

fn open_at(dir: &Path, master: &MasterKey, clock: Arc<dyn Clock>) -> Records {
    let store = Store::open(&dir.join("vaultcall.db"), &StoreConfig::default(), 1).unwrap();
    Records::open(store, dir, master, &VaultConfig::default(), clock).unwrap()
}

fn open(dir: &Path, master: &MasterKey) -> Records {
    open_at(dir, master, Arc::new(SystemClock))
}

fn close(r: Records) {
    r.store().clone().close();
}

/// A call with 2 s of audio and two turns; returns (call, audio id, transcript id).
fn call(r: &Records, phone: &str) -> (CallId, RecordingId, RecordingId) {
    let s = r.ensure_subject(&r.normalize(phone).unwrap()).unwrap();
    let call = r.start_call(&s, None).unwrap();
    let mut t = r.start_transcript(&s, call).unwrap();
    for (seq, text) in [(1, "您好，请问是张伟先生吗"), (2, "是的，我下周还款")] {
        t.append_turn(
            &TranscriptLine {
                seq,
                speaker: if seq == 1 { "robot" } else { "customer" }.into(),
                start_ms: u64::from(seq) * 1000,
                end_ms: u64::from(seq) * 1000 + 800,
                text: text.into(),
            },
            Some("greet"),
        )
        .unwrap();
    }
    let tid = t.id();
    t.finish().unwrap();
    let mut rec = r.start_recording(&s, call).unwrap();
    let side: Vec<i16> = (0..160).collect();
    for _ in 0..100 {
        rec.append_frame(&side, &side).unwrap();
    }
    let aid = rec.id();
    rec.finish().unwrap();
    (call, aid, tid)
}

fn read_all(r: &Records, id: RecordingId) -> Result<Vec<u8>, RecordsError> {
    let mut p = r.open_playback(id)?;
    let mut out = Vec::new();
    p.stream.read_to_end(&mut out).unwrap();
    assert_eq!(out.len() as u64, p.len);
    Ok(out)
}

fn request(phone: &str, ticket: &str, r: &Records) -> ErasureRequest {
    ErasureRequest {
        target: ErasureTarget::Phone(r.normalize(phone).unwrap()),
        ticket: ticket.into(),
        reason: "customer asked to be forgotten".into(),
        requested_by: "cli".into(),
        role: None,
        source: "cli",
    }
}

#[test]
fn erasure_destroys_everything_of_one_subject_only_and_is_idempotent() {
    let d = tempfile::tempdir().unwrap();
    let master = MasterKey::from_bytes([7; 32]);
    let r = open(d.path(), &master);
    let (_, a1, t1) = call(&r, PHONE);
    let (_, _, _) = call(&r, "+86 13812345678");
    let (_, other_audio, _) = call(&r, "139 0000 1111");
    let s = r.ensure_subject(&r.normalize(PHONE).unwrap()).unwrap();
    r.add_task_number(1, &s, &json!({"name": "张伟", "amount": "3,280.00"}))
        .unwrap_err(); // no task 1 yet: foreign key
    r.store()
        .write(|c| {
            c.execute("INSERT INTO tasks (id, name, status, created_at_ms, updated_at_ms) VALUES (1, 't', 'draft', 1, 1)", [])?;
            Ok(())
        })
        .unwrap();
    r.add_task_number(1, &s, &json!({"name": "张伟", "amount": "3,280.00"}))
        .unwrap();
    assert!(r.put_prompt(&s, "张伟先生，您好", &[1, 2, 3]).unwrap());
    assert!(!r.put_prompt(&s, "张伟先生，您好", &[1, 2, 3]).unwrap());
    assert_eq!(
        r.get_prompt(&s, "张伟先生，您好").unwrap(),
        Some(vec![1, 2, 3])
    );
    // Before: everything reads back.
    let wav = read_all(&r, a1).unwrap();
    assert_eq!(&wav[..4], b"RIFF");
    assert_eq!(wav.len(), 44 + 2 * 32_000);
    let text = String::from_utf8(read_all(&r, t1).unwrap()).unwrap();
    assert!(text.contains("张伟先生"), "{text}");
    assert_eq!(
        r.subject_number(&s).unwrap().unwrap().as_str(),
        "+8613812345678"
    );
    drop(s);

    let out = r.erase(&request(PHONE, "DPO-1", &r)).unwrap();
    assert!(out.created);
    let (_, pk) = r.receipt_public_key();
    let rec = receipt::verify(out.receipt_file.as_bytes(), &pk).unwrap();
    assert_eq!(
        rec["deleted"],
        json!({"calls": 2, "turns": 4, "recordings": 2, "transcripts": 2, "task_numbers": 1, "files": 5})
    );
    assert_eq!(rec["subject_state_before"], "active");
    assert_eq!(rec["keys_destroyed"].as_array().unwrap().len(), 1);
    // Gone, and suppressed: the number cannot become a subject again.
    assert!(matches!(
        r.open_playback(a1),
        Err(RecordsError::NotFound(_))
    ));
    let n = r.normalize("0086-138-1234-5678").unwrap();
    assert!(!r.may_dial(&n).unwrap());
    assert!(matches!(
        r.ensure_subject(&n),
        Err(RecordsError::Suppressed)
    ));
    // The other subject is untouched.
    assert_eq!(read_all(&r, other_audio).unwrap().len(), 44 + 2 * 32_000);
    assert!(r.may_dial(&r.normalize("13900001111").unwrap()).unwrap());
    // Idempotent: same ticket gives the same receipt; a new ticket finds nothing left.
    let again = r.erase(&request(PHONE, "DPO-1", &r)).unwrap();
    assert!(!again.created);
    assert_eq!(again.receipt_file, out.receipt_file);
    let second = r.erase(&request(PHONE, "DPO-2", &r)).unwrap();
    let rec2 = receipt::verify(second.receipt_file.as_bytes(), &pk).unwrap();
    assert_eq!(rec2["subject_state_before"], "already_erased");
    assert_eq!(rec2["deleted"]["calls"], 0);
    assert_eq!(rec2["keys_destroyed"], json!([]));
    // A number never seen is still suppressed, with an empty receipt.
    let unknown = r.erase(&request("137 0000 0000", "DPO-3", &r)).unwrap();
    let rec3 = receipt::verify(unknown.receipt_file.as_bytes(), &pk).unwrap();
    assert_eq!(rec3["subject_state_before"], "unknown");
    assert!(!r.may_dial(&r.normalize("13700000000").unwrap()).unwrap());
    // Bad requests.
    let mut bad = request(PHONE, "", &r);
    assert!(matches!(r.erase(&bad), Err(RecordsError::Invalid(_))));
    bad.ticket = "x".into();
    bad.target = ErasureTarget::SubjectId(999);
    assert!(matches!(r.erase(&bad), Err(RecordsError::NotFound(_))));
    close(r);
}

#[test]
fn an_erasure_interrupted_after_each_step_resumes_at_the_next_start() {
    for stop_after in [0, 1, 2] {
        let d = tempfile::tempdir().unwrap();
        let master = MasterKey::from_bytes([8; 32]);
        let r = open(d.path(), &master);
        for _ in 0..3 {
            call(&r, PHONE);
        }
        let req = request(PHONE, "T-1", &r);
        let id = r.file_erasure(&req).unwrap();
        for _ in 0..stop_after {
            r.erasure_step(id).unwrap();
        }
        let state = r
            .store()
            .read(move |c| vaultcall::store::erasure::by_id(c, id))
            .unwrap()
            .unwrap()
            .state;
        let expected = [
            ErasureState::Pending,
            ErasureState::KeyDestroyed,
            ErasureState::FilesDeleted,
        ][stop_after];
        assert_eq!(state, expected);
        // "Crash": drop everything, reopen.
        close(r);
        let r = open(d.path(), &master);
        if stop_after >= 1 {
            // The key is gone already: nothing of the subject can be read any more.
            let n = r.normalize(PHONE).unwrap();
            assert!(matches!(
                r.ensure_subject(&n),
                Err(RecordsError::Suppressed)
            ));
        }
        assert_eq!(r.resume_erasures().unwrap(), 1);
        assert_eq!(r.resume_erasures().unwrap(), 0);
        let out = r.erase(&req).unwrap();
        assert!(!out.created);
        let (_, pk) = r.receipt_public_key();
        let rec = receipt::verify(out.receipt_file.as_bytes(), &pk).unwrap();
        assert_eq!(rec["deleted"]["calls"], 3, "stopped after {stop_after}");
        assert_eq!(rec["deleted"]["turns"], 6);
        assert_eq!(rec["deleted"]["files"], 6);
        let left: i64 = r
            .store()
            .read(|c| Ok(c.query_row("SELECT count(*) FROM calls", [], |x| x.get(0))?))
            .unwrap();
        assert_eq!(left, 0);
        close(r);
    }
}

#[test]
fn an_interrupted_recording_plays_up_to_its_last_complete_chunk() {
    let d = tempfile::tempdir().unwrap();
    let master = MasterKey::from_bytes([9; 32]);
    let r = open(d.path(), &master);
    let s = r.ensure_subject(&r.normalize(PHONE).unwrap()).unwrap();
    let call = r.start_call(&s, None).unwrap();
    let mut rec = r.start_recording(&s, call).unwrap();
    let side = vec![5i16; 160];
    for _ in 0..130 {
        rec.append_frame(&side, &side).unwrap();
    }
    let id = rec.id();
    // Dropped without finish, as if the process died: 2 whole seconds were sealed.
    drop(rec);
    let wav = read_all(&r, id).unwrap();
    assert_eq!(wav.len(), 44 + 2 * 32_000);
    // Marked complete (as a finished file would be), the same bytes are refused: truncated.
    r.store()
        .write(move |c| {
            c.execute("UPDATE recordings SET complete = 1 WHERE id = ?1", [id.0])?;
            Ok(())
        })
        .unwrap();
    assert!(matches!(r.open_playback(id), Err(RecordsError::Format(_))));
    close(r);
}

#[test]
fn files_swapped_between_subjects_or_calls_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let master = MasterKey::from_bytes([10; 32]);
    let r = open(d.path(), &master);
    let (_, a, _) = call(&r, PHONE);
    let (_, a2, _) = call(&r, PHONE);
    let (_, b, _) = call(&r, "139 0000 1111");
    let path = |id: RecordingId| {
        let row = r
            .store()
            .read(move |c| vaultcall::store::calls::recording(c, id))
            .unwrap()
            .unwrap();
        d.path().join(row.path)
    };
    let (pa, pa2, pb) = (path(a), path(a2), path(b));
    let (orig_a, orig_b) = (std::fs::read(&pa).unwrap(), std::fs::read(&pb).unwrap());
    std::fs::write(&pa, &orig_b).unwrap();
    assert!(matches!(r.open_playback(a), Err(RecordsError::Format(_))));
    std::fs::write(&pa, std::fs::read(&pa2).unwrap()).unwrap();
    assert!(matches!(r.open_playback(a), Err(RecordsError::Format(_))));
    std::fs::write(&pa, &orig_a).unwrap();
    read_all(&r, a).unwrap();
    // A database row pointed elsewhere is refused before any file is opened.
    r.store()
        .write(move |c| {
            c.execute(
                "UPDATE recordings SET path = 'vault/../../etc/passwd' WHERE id = ?1",
                [a.0],
            )?;
            Ok(())
        })
        .unwrap();
    assert!(matches!(
        r.open_playback(a),
        Err(RecordsError::Inconsistent(_))
    ));
    close(r);
}

#[test]
fn retention_deletes_by_class_and_shreds_subjects_left_without_data() {
    let d = tempfile::tempdir().unwrap();
    let master = MasterKey::from_bytes([11; 32]);
    let now = SystemClock.wall();
    let old = ManualClock::new(now - Duration::from_secs(200 * 86_400));
    let r = open_at(d.path(), &master, Arc::new(old));
    let (_, old_audio, old_text) = call(&r, PHONE);
    let old_key_id = r
        .ensure_subject(&r.normalize(PHONE).unwrap())
        .unwrap()
        .data_key()
        .id()
        .to_owned();
    close(r);
    let r = open(d.path(), &master);
    let (_, new_audio, new_text) = call(&r, "139 0000 1111");
    let cfg = RetentionConfig {
        recordings_days: 90,
        transcripts_days: 180,
        call_metadata_days: 365,
    };
    let rep = r.retention_sweep(&cfg, unix_ms(now)).unwrap();
    assert_eq!((rep.recordings, rep.transcripts, rep.turn_texts), (1, 1, 2));
    assert_eq!((rep.calls, rep.subjects_shredded), (0, 0));
    assert!(matches!(
        r.open_playback(old_audio),
        Err(RecordsError::NotFound(_))
    ));
    assert!(matches!(
        r.open_playback(old_text),
        Err(RecordsError::NotFound(_))
    ));
    read_all(&r, new_audio).unwrap();
    read_all(&r, new_text).unwrap();
    // 200 days on, the old call (400 days) loses its metadata and its subject's key; the newer
    // call (200 days) loses its audio and transcript but keeps its row.
    let later = unix_ms(now) + 200 * 86_400_000;
    let rep = r.retention_sweep(&cfg, later).unwrap();
    assert_eq!((rep.recordings, rep.transcripts, rep.turn_texts), (1, 1, 2));
    assert_eq!((rep.calls, rep.turns, rep.subjects_shredded), (1, 2, 1));
    assert!(matches!(
        r.open_playback(new_audio),
        Err(RecordsError::NotFound(_))
    ));
    // Retention forgets; it does not suppress: called again, the number gets a fresh key.
    assert!(r.may_dial(&r.normalize(PHONE).unwrap()).unwrap());
    let again = r.ensure_subject(&r.normalize(PHONE).unwrap()).unwrap();
    assert_ne!(again.data_key().id(), old_key_id);
    drop(again);
    let audited: i64 = r
        .store()
        .read(|c| {
            Ok(c.query_row(
                "SELECT count(*) FROM audit_log WHERE action = 'retention.sweep'",
                [],
                |x| x.get(0),
            )?)
        })
        .unwrap();
    assert_eq!(audited, 2);
    // Nothing expires with every period at 0.
    let (_, new_audio, _) = call(&r, "139 0000 2222");
    let keep = RetentionConfig {
        recordings_days: 0,
        transcripts_days: 0,
        call_metadata_days: 0,
    };
    let rep = r
        .retention_sweep(&keep, later + 10_000 * 86_400_000)
        .unwrap();
    assert_eq!(rep, Default::default());
    read_all(&r, new_audio).unwrap();
    close(r);
}

#[test]
fn rotation_interrupted_midway_resumes_and_keeps_everything_readable() {
    let d = tempfile::tempdir().unwrap();
    let old = MasterKey::from_bytes([12; 32]);
    let new = MasterKey::from_bytes([13; 32]);
    let r = open(d.path(), &old);
    let mut files = Vec::new();
    for i in 0..7 {
        files.push(call(&r, &format!("138 0000 00{i:02}")).1);
    }
    let signed = r.erase(&request("138 0000 0000", "T-9", &r)).unwrap();
    let (kid, pk) = r.receipt_public_key();
    let store = r.store().clone();
    drop(r);
    let id = rotation::start(&store, &old, &new, 1).unwrap();
    // Two batches of two, then "interrupted".
    let n = rotation::rewrap(&store, id, &old, &new, 2, Some(2), &mut |_, _| {}).unwrap();
    assert_eq!(n, 2 + 4, "appliance keys and two batches");
    store.close();
    // Neither key opens the database while the rotation is open.
    for k in [&old, &new] {
        let s = Store::open(&d.path().join("vaultcall.db"), &StoreConfig::default(), 1).unwrap();
        let e = Records::open(
            s.clone(),
            d.path(),
            k,
            &VaultConfig::default(),
            Arc::new(SystemClock),
        )
        .unwrap_err();
        assert!(matches!(e, RecordsError::RotationInProgress { .. }), "{e}");
        s.close();
    }
    let store = Store::open(&d.path().join("vaultcall.db"), &StoreConfig::default(), 1).unwrap();
    assert_eq!(
        rotation::plan(&store, old.id()).unwrap(),
        rotation::Plan::Continue {
            id,
            new_master_key_id: new.id().into()
        }
    );
    rotation::rewrap(&store, id, &old, &new, 2, None, &mut |_, _| {}).unwrap();
    assert_eq!(rotation::remaining(&store, new.id()).unwrap(), 0);
    rotation::finish(&store, id, 2).unwrap();
    store.close();
    // The old key no longer opens it; the new one does, with the same receipt key.
    let s = Store::open(&d.path().join("vaultcall.db"), &StoreConfig::default(), 1).unwrap();
    let e = Records::open(
        s.clone(),
        d.path(),
        &old,
        &VaultConfig::default(),
        Arc::new(SystemClock),
    )
    .unwrap_err();
    assert!(matches!(e, RecordsError::MasterKeyMismatch { .. }), "{e}");
    s.close();
    let r = open(d.path(), &new);
    assert_eq!(r.receipt_public_key(), (kid, pk));
    receipt::verify(signed.receipt_file.as_bytes(), &pk).unwrap();
    for f in &files[1..] {
        assert_eq!(read_all(&r, *f).unwrap().len(), 44 + 2 * 32_000);
    }
    // Same subject hashes: the erased number is still suppressed.
    assert!(!r.may_dial(&r.normalize("13800000000").unwrap()).unwrap());
    close(r);
}
