//! The shell commands of the vault: `erase`, `suppression add|check|lift|stats`,
//! `verify-receipt`, `keys show-public`, `keys rotate`, `retention sweep`, and the hidden
//! `dev record` used by tests and demos.
//! Each returns the text to print or a [`Failure`] with its exit code.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use zeroize::Zeroizing;

use super::erasure::{ErasureRequest, ErasureTarget};
use super::suppression::{Requester, Suppression, SuppressionSource};
use super::{Records, RecordsError, rotation};
use crate::admin::cli::check_data_dir_owner;
use crate::app::{Failure, exit, load_master_key, open_store};
use crate::config::{Config, under};
use crate::time::{Clock, SystemClock, rfc3339_ms, unix_ms};
use crate::vault::receipt::{self, public_key_pem, receipt_key_id};
use crate::vault::{MasterKey, create_key};

impl From<RecordsError> for Failure {
    fn from(e: RecordsError) -> Self {
        match e {
            RecordsError::MasterKeyMismatch { .. } | RecordsError::RotationInProgress { .. } => {
                Failure::config(e)
            }
            RecordsError::Invalid(_) | RecordsError::Phone(_) => Failure {
                code: exit::USAGE,
                message: e.to_string(),
            },
            other => Failure::runtime(other),
        }
    }
}

fn data_dir(cfg: &Config) -> PathBuf {
    cfg.resolve_paths(&|k| std::env::var(k).ok()).data_dir
}

/// Opens the records service the way the daemon does (store, master key, appliance keys).
pub fn open_records(cfg: &Config) -> Result<Records, Failure> {
    check_data_dir_owner(cfg)?;
    let store = open_store(cfg)?;
    let master = load_master_key(cfg)?;
    let records = Records::open(
        store.clone(),
        &data_dir(cfg),
        &master,
        &cfg.vault,
        Arc::new(SystemClock),
    );
    match records {
        Ok(r) => {
            crate::telemetry::set_redaction_key(r.redaction_key());
            Ok(r)
        }
        Err(e) => {
            store.close();
            Err(e.into())
        }
    }
}

fn close(records: Records) {
    records.store().clone().close();
}

/// Reads a phone number: the argument, or one line from stdin when it is `-` (so the number
/// does not appear in the process list or shell history).
fn read_phone(arg: &str) -> Result<Zeroizing<String>, Failure> {
    if arg != "-" {
        return Ok(Zeroizing::new(arg.to_owned()));
    }
    let mut s = Zeroizing::new(String::new());
    std::io::stdin()
        .take(256)
        .read_to_string(&mut s)
        .map_err(Failure::runtime)?;
    let line = Zeroizing::new(s.lines().next().unwrap_or("").to_owned());
    Ok(line)
}

/// `vaultcall erase`.
pub fn erase(
    cfg: &Config,
    phone: Option<&str>,
    subject_id: Option<i64>,
    ticket: &str,
    reason: &str,
    receipt_out: Option<&Path>,
) -> Result<String, Failure> {
    let records = open_records(cfg)?;
    let res = (|| {
        let target = match (phone, subject_id) {
            (Some(p), None) => ErasureTarget::Phone(records.normalize(&read_phone(p)?)?),
            (None, Some(id)) => ErasureTarget::SubjectId(id),
            _ => {
                return Err(Failure {
                    code: exit::USAGE,
                    message: "give exactly one of --phone and --subject-id".into(),
                });
            }
        };
        let out = records.erase(&ErasureRequest {
            target,
            ticket: ticket.to_owned(),
            reason: reason.to_owned(),
            requested_by: "cli".into(),
            role: None,
            source: "cli",
        })?;
        match receipt_out {
            Some(path) => {
                crate::fs::write_new(path, out.receipt_file.as_bytes(), 0o600).map_err(|e| {
                    Failure::runtime(format!("cannot write {}: {e}", path.display()))
                })?;
                let deleted = &out.receipt["deleted"];
                Ok(format!(
                    "erasure {} {}: deleted {deleted}; number suppressed\nsigned receipt written to {}\n",
                    out.request_uid,
                    if out.created {
                        "done"
                    } else {
                        "(existing request for this ticket)"
                    },
                    path.display()
                ))
            }
            None => Ok(out.receipt_file),
        }
    })();
    close(records);
    res
}

/// Shell actions on the suppression list are audited with actor `cli`.
const CLI: Requester<'static> = Requester {
    actor: "cli",
    role: None,
    via: "cli",
};

fn describe(e: &Suppression) -> String {
    format!(
        "source {}, since {}{}",
        e.source.as_str(),
        rfc3339_ms(e.created_at_ms),
        e.reason
            .as_deref()
            .map(|r| format!(", reason: {r}"))
            .unwrap_or_default()
    )
}

fn usage(message: impl Into<String>) -> Failure {
    Failure {
        code: exit::USAGE,
        message: message.into(),
    }
}

/// `vaultcall suppression add`: puts a number (argument or `-` for stdin) on the
/// suppression list; idempotent.
pub fn suppression_add(
    cfg: &Config,
    phone: &str,
    source: &str,
    reason: Option<&str>,
) -> Result<String, Failure> {
    let source = SuppressionSource::parse(source)
        .filter(|s| s.manual())
        .ok_or_else(|| usage("--source: customer_request or operator"))?;
    let phone = read_phone(phone)?;
    let records = open_records(cfg)?;
    let res = (|| {
        let number = records.normalize(&phone)?;
        let out = records.suppress(&number, source, reason, &CLI)?;
        Ok(format!(
            "{} subject {} ({})\n",
            if out.added {
                "suppressed:"
            } else {
                "already suppressed:"
            },
            out.subject.to_hex(),
            describe(&out.entry)
        ))
    })();
    close(records);
    res
}

/// `vaultcall suppression check`: whether a number is on the list (exit 0 either way).
pub fn suppression_check(cfg: &Config, phone: &str) -> Result<String, Failure> {
    let phone = read_phone(phone)?;
    let records = open_records(cfg)?;
    let res = (|| {
        let number = records.normalize(&phone)?;
        let subject = records.subject_key(&number).to_hex();
        Ok(match records.check_suppression(&number, &CLI)? {
            Some(e) => format!("suppressed: subject {subject} ({})\n", describe(&e)),
            None => format!("not suppressed: subject {subject}\n"),
        })
    })();
    close(records);
    res
}

/// `vaultcall suppression lift`: takes a number off the list on re-recorded consent; exit 1
/// if it was not on it.
pub fn suppression_lift(cfg: &Config, phone: &str, consent_ref: &str) -> Result<String, Failure> {
    if consent_ref.trim().is_empty() {
        return Err(usage(
            "--consent-ref: the reference of the re-recorded consent is required",
        ));
    }
    let phone = read_phone(phone)?;
    let records = open_records(cfg)?;
    let res = (|| {
        let number = records.normalize(&phone)?;
        let subject = records.subject_key(&number).to_hex();
        match records.lift_suppression(&number, consent_ref, &CLI)? {
            Some(e) => Ok(format!(
                "lifted: subject {subject} may be called again (was {}; consent {})\n",
                describe(&e),
                consent_ref.trim()
            )),
            None => Err(Failure::runtime(format!(
                "subject {subject} is not on the suppression list; nothing lifted"
            ))),
        }
    })();
    close(records);
    res
}

/// `vaultcall suppression stats`: entries per source.
pub fn suppression_stats(cfg: &Config) -> Result<String, Failure> {
    let records = open_records(cfg)?;
    let res = records.suppression_counts();
    close(records);
    let counts = res?;
    let mut out = String::from("source            numbers\n");
    for (s, n) in &counts {
        out.push_str(&format!("{:<17} {n}\n", s.as_str()));
    }
    out.push_str(&format!(
        "{:<17} {}\n",
        "total",
        counts.iter().map(|(_, n)| n).sum::<i64>()
    ));
    Ok(out)
}

/// `vaultcall verify-receipt`.
pub fn verify_receipt(
    file: &Path,
    public_key: Option<&str>,
    cfg: Option<&Config>,
) -> Result<String, Failure> {
    let bytes = std::fs::read(file)
        .map_err(|e| Failure::runtime(format!("cannot read {}: {e}", file.display())))?;
    let trusted = match (public_key, cfg) {
        (Some(k), _) => {
            let text = if Path::new(k).is_file() {
                std::fs::read_to_string(k)
                    .map_err(|e| Failure::runtime(format!("cannot read {k}: {e}")))?
            } else {
                k.to_owned()
            };
            receipt::parse_public_key(&text).map_err(|e| Failure {
                code: exit::USAGE,
                message: e.to_string(),
            })?
        }
        (None, Some(cfg)) => {
            let store = open_store(cfg)?;
            let k = super::stored_receipt_public_key(&store);
            store.close();
            k?.ok_or_else(|| {
                Failure::runtime("this appliance has no receipt key yet; pass --public-key")
            })?
        }
        (None, None) => {
            return Err(Failure {
                code: exit::USAGE,
                message: "give --public-key (from `vaultcall keys show-public`) or --config".into(),
            });
        }
    };
    let r = receipt::verify(&bytes, &trusted)
        .map_err(|e| Failure::runtime(format!("receipt NOT valid: {e}")))?;
    Ok(format!(
        "receipt valid: {} (ticket {}) signed by {}\ndeleted: {}\nkeys destroyed: {}\nfinished at {}\n",
        r["request_id"].as_str().unwrap_or("?"),
        r["ticket"].as_str().unwrap_or("?"),
        receipt_key_id(&trusted),
        r["deleted"],
        r["keys_destroyed"],
        r["finished_at"].as_str().unwrap_or("?"),
    ))
}

/// `vaultcall keys show-public`.
pub fn show_public(cfg: &Config) -> Result<String, Failure> {
    let store = open_store(cfg)?;
    let stored = super::stored_receipt_public_key(&store);
    store.close();
    let pk = match stored? {
        Some(pk) => pk,
        None => {
            // First use: create the appliance keys (needs the master key).
            let r = open_records(cfg)?;
            let (_, pk) = r.receipt_public_key();
            close(r);
            pk
        }
    };
    Ok(format!(
        "receipt-signing key {} (Ed25519)\ned25519 {}\n{}",
        receipt_key_id(&pk),
        hex::encode(pk),
        public_key_pem(&pk)
    ))
}

fn load_key_file(path: &Path) -> Result<MasterKey, Failure> {
    MasterKey::load(path, false, None).map_err(Failure::config)
}

/// `vaultcall keys rotate`. Prints progress lines as it goes (flushed, for operators and
/// tests watching).
pub fn rotate(cfg: &Config, new_key: &Path, batch: usize) -> Result<String, Failure> {
    check_data_dir_owner(cfg)?;
    let dir = data_dir(cfg);
    let _lock = crate::fs::try_lock(&dir.join(crate::fs::DAEMON_LOCK))
        .map_err(Failure::runtime)?
        .ok_or_else(|| {
            Failure::runtime("the daemon is running; stop it (systemctl stop vaultcall) before rotating the master key")
        })?;
    // Under `systemd-run -p LoadCredential=master.key:…` the current key is the credential and
    // its source file belongs to root: the operator installs the new key there afterwards.
    let from_credential = std::env::var_os("CREDENTIALS_DIRECTORY")
        .is_some_and(|d| Path::new(&d).join(crate::vault::CREDENTIAL_NAME).exists());
    let key_path = under(&dir, &cfg.vault.master_key_file);
    let current = load_master_key(cfg)?;
    let store = open_store(cfg)?;
    let now = || unix_ms(SystemClock.wall());
    let res = (|| -> Result<String, Failure> {
        let (id, new) = match rotation::plan(&store, current.id())? {
            rotation::Plan::Finish { id } => {
                rotation::finish(&store, id, now())?;
                return Ok(format!(
                    "rotation finished: the master key is {}; all keys are wrapped by it\n",
                    current.id()
                ));
            }
            rotation::Plan::Continue {
                id,
                new_master_key_id,
            } => {
                let new = load_key_file(new_key)?;
                if new.id() != new_master_key_id {
                    return Err(Failure::config(format!(
                        "{} holds key {}, but the open rotation is to {new_master_key_id}; give that key's file",
                        new_key.display(),
                        new.id()
                    )));
                }
                (id, new)
            }
            rotation::Plan::Start => {
                if !new_key.exists() {
                    create_key(new_key).map_err(Failure::runtime)?;
                }
                let new = load_key_file(new_key)?;
                let id = rotation::start(&store, &current, &new, now())?;
                (id, new)
            }
        };
        println!("rotating master key {} -> {}", current.id(), new.id());
        let mut out = std::io::stdout();
        rotation::rewrap(
            &store,
            id,
            &current,
            &new,
            batch.max(1),
            None,
            &mut |done, total| {
                let _ = writeln!(out, "rewrapped {done}/{total}");
                let _ = out.flush();
            },
        )?;
        let left = rotation::remaining(&store, new.id())?;
        if left != 0 {
            return Err(Failure::runtime(format!(
                "{left} key(s) are still wrapped by another master key; run the command again"
            )));
        }
        if from_credential {
            rotation::finish(&store, id, now())?;
            return Ok(format!(
                "rotation finished: every key is wrapped by {new_id}; the daemon will refuse the old key {old_id} from now on.\n\
                 Install the new key as the credential's source, keeping the old one for backups made before now:\n\
                 \x20 sudo cp -p {kp} {kp}.retired-{old_id}\n\
                 \x20 sudo install -m 0600 -o root -g root {nk} {kp} && sudo shred -u {nk}\n",
                new_id = new.id(),
                old_id = current.id(),
                kp = key_path.display(),
                nk = new_key.display(),
            ));
        }
        // Every key is wrapped by the new key: install it. The old key stays next to it,
        // for restoring backups made before the rotation.
        let retired = retired_path(&key_path, current.id());
        match std::fs::hard_link(&key_path, &retired) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(Failure::runtime(format!(
                    "cannot keep the old key as {}: {e}",
                    retired.display()
                )));
            }
        }
        std::fs::rename(new_key, &key_path).map_err(|e| {
            Failure::runtime(format!(
                "cannot move {} to {}: {e} (both keys are intact; run the command again)",
                new_key.display(),
                key_path.display()
            ))
        })?;
        if let Some(parent) = key_path.parent() {
            std::fs::File::open(parent)
                .and_then(|d| d.sync_all())
                .map_err(Failure::runtime)?;
        }
        rotation::finish(&store, id, now())?;
        Ok(format!(
            "rotation finished: {} is now the master key {}\nthe old key {} was kept as {}; it is needed only to restore database backups made before now — destroy it when those backups expire\n",
            key_path.display(),
            new.id(),
            current.id(),
            retired.display()
        ))
    })();
    store.close();
    res
}

fn retired_path(key_path: &Path, old_id: &str) -> PathBuf {
    let mut name = key_path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".retired-{old_id}"));
    key_path.with_file_name(name)
}

/// `vaultcall retention sweep`: one sweep now.
pub fn retention_sweep(cfg: &Config) -> Result<String, Failure> {
    let records = open_records(cfg)?;
    let res = records.retention_sweep(&cfg.retention, unix_ms(SystemClock.wall()));
    close(records);
    let r = res?;
    Ok(format!(
        "retention sweep: {} recordings, {} transcripts, {} turn texts, {} calls ({} turns) deleted; {} subjects shredded\n",
        r.recordings, r.transcripts, r.turn_texts, r.calls, r.turns, r.subjects_shredded
    ))
}

/// Hidden `vaultcall dev record`: records a synthetic call for the number on stdin through the
/// real vault path (subject, call row, encrypted recording and transcript), printing a line per
/// sealed chunk. For the crash test and demos; audited as `dev.synthetic_call`.
pub fn dev_record(cfg: &Config, seconds: u32, pace_ms: u64, turns: u32) -> Result<String, Failure> {
    let records = open_records(cfg)?;
    let res = (|| -> Result<String, Failure> {
        let number = records.normalize(&read_phone("-")?)?;
        let subject = records.ensure_subject(&number)?;
        let call = records.start_call(&subject, Some("synthetic"))?;
        let now = unix_ms(SystemClock.wall());
        records.store().write(move |c| {
            crate::store::audit::append(
                c,
                &crate::store::audit::NewEntry {
                    at_ms: now,
                    actor: "cli",
                    role: None,
                    action: "dev.synthetic_call",
                    object: Some(&format!("call:{call}")),
                    result: "ok",
                    detail: serde_json::json!({}),
                },
            )
            .map(|_| ())
        })?;
        let mut out = std::io::stdout();
        let mut tr = records.start_transcript(&subject, call)?;
        for seq in 1..=turns {
            tr.append_turn(
                &crate::vault::stream::TranscriptLine {
                    seq,
                    speaker: if seq % 2 == 1 { "robot" } else { "customer" }.into(),
                    start_ms: u64::from(seq) * 3000,
                    end_ms: u64::from(seq) * 3000 + 2500,
                    text: format!("synthetic turn {seq}"),
                },
                None,
            )?;
        }
        tr.finish()?;
        let mut rec = records.start_recording(&subject, call)?;
        let _ = writeln!(out, "recording {} call {call}", rec.id());
        let _ = out.flush();
        let frames = u64::from(seconds) * 50;
        let (mut cust, mut robot) = (vec![0i16; 160], vec![0i16; 160]);
        let mut sealed = 0;
        for f in 0..frames {
            synth_frame(f, &mut cust, &mut robot);
            rec.append_frame(&cust, &robot)?;
            if rec.chunks() != sealed {
                sealed = rec.chunks();
                let _ = writeln!(out, "chunk {sealed}");
                let _ = out.flush();
            }
            if pace_ms > 0 {
                // A paced writer imitates a live call; it is a CLI tool, not a core.
                #[allow(clippy::disallowed_methods)]
                std::thread::sleep(std::time::Duration::from_millis(pace_ms));
            }
        }
        let s = rec.finish()?;
        Ok(format!(
            "finished {} chunks {} bytes\n",
            s.chunks, s.file_bytes
        ))
    })();
    close(records);
    res
}

/// The deterministic test signal of `dev record`: frame `f`, sample `i` of the customer side is
/// `(f * 160 + i) mod 30000`, the robot side its negation. Tests check decrypted audio against it.
pub fn synth_frame(f: u64, customer: &mut [i16], robot: &mut [i16]) {
    for (i, (c, r)) in customer.iter_mut().zip(robot.iter_mut()).enumerate() {
        let v = ((f * 160 + i as u64) % 30_000) as i16;
        *c = v;
        *r = -v;
    }
}
