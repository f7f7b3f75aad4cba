//! The data subjects' records: the vault's encryption and files composed with the store's rows.
//! Shell code (file and database I/O); the crypto and the file format are in [`crate::vault`],
//! the queries in [`crate::store`].
//!
//! [`Records`] is the one handle the rest of the appliance uses to keep personal data:
//! - subjects: a phone number becomes a data subject (keyed hash, encrypted number, own data
//!   key wrapped by the master key); a suppressed number cannot become one again;
//! - writing: [`LiveRecording`] (the media tap of a call) and [`LiveTranscript`] write
//!   encrypted files as the call goes; cached personalised prompts are vault files too;
//! - reading: [`Records::open_playback`] decrypts a file as a stream for the admin API;
//! - [`erasure`], [`retention`] and [`rotation`] destroy and re-wrap keys;
//! - [`suppression`]: the do-not-call list (add, check, lift on re-recorded consent).

pub mod cli;
pub mod erasure;
pub mod retention;
pub mod rotation;
pub mod suppression;

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use zeroize::Zeroizing;

use crate::config::VaultConfig;
use crate::ids::{CallId, RecordingId, SubjectKey};
use crate::store::{Store, StoreError, calls, subjects};
use crate::time::{Clock, unix_ms};
use crate::vault::format::{ContentType, Expected, FileCipher, FormatError, Header};
use crate::vault::keys::{DataKey, KeyError, KeyWrapper, LookupKey, WrapContext, random};
use crate::vault::phone::{E164, PhoneError, normalize};
use crate::vault::receipt::{ReceiptError, ReceiptSigner, receipt_key_id};
use crate::vault::stream::{
    AUDIO_CHUNK, EncryptedReader, EncryptedWriter, FileSummary, Mode, PlaintextStream, ReadState,
    RecordingError, RecordingWriter, TranscriptLine, TranscriptWriter, read_header, scan_layout,
    wav_header,
};
use crate::vault::{MasterKey, files};

pub use erasure::{ErasureHook, ErasureOutcome, ErasureRequest, ErasureTarget, HookError};
pub use suppression::{Requester, Suppressed, Suppression, SuppressionSource};

/// Purpose names of the appliance keys.
pub const LOOKUP_KEY: &str = "subject_lookup";
/// Purpose name of the receipt-signing key.
pub const SIGNING_KEY: &str = "receipt_signing";

/// Why a records operation failed, grouped by blame.
#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A key did not unwrap or a field did not decrypt (wrong master key or modified rows).
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A vault file is corrupt or tampered with.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// Signing a receipt failed.
    #[error(transparent)]
    Receipt(#[from] ReceiptError),
    /// The caller's phone number is not usable.
    #[error(transparent)]
    Phone(#[from] PhoneError),
    /// A vault file or directory could not be read, written or removed.
    #[error("vault file system error while {what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The number is on the suppression list (erased or do-not-call).
    #[error("this number is on the suppression list and must not be called or recorded")]
    Suppressed,
    /// An erasure of this number has not finished yet (it resumes at the next start).
    #[error(
        "an erasure of this number has not finished yet; it completes at the daemon's next start"
    )]
    ErasureInProgress,
    /// The subject's data key has been destroyed; their data is gone.
    #[error("the data subject was erased; their data key no longer exists")]
    Shredded,
    /// No such object.
    #[error("no such {0}")]
    NotFound(&'static str),
    /// A stored path or row does not match what the vault would have written.
    #[error("the database record of this file is inconsistent ({0}); refusing to open it")]
    Inconsistent(&'static str),
    /// Keys in the database are wrapped by another master key than the one loaded.
    #[error(
        "the loaded master key is {loaded}, but {count} key(s) in the database are wrapped by {others}; load the right key, or finish the rotation with `vaultcall keys rotate`"
    )]
    MasterKeyMismatch {
        /// The loaded key's id.
        loaded: String,
        /// Keys wrapped by others.
        count: i64,
        /// Which others.
        others: String,
    },
    /// A master-key rotation has not finished.
    #[error(
        "a master-key rotation from {old} to {new} has not finished; run `vaultcall keys rotate --new-key FILE` again with the new key file to complete it"
    )]
    RotationInProgress {
        /// Key being replaced.
        old: String,
        /// Replacement.
        new: String,
    },
    /// A request value is out of range (our caller's input).
    #[error("{0}")]
    Invalid(&'static str),
    /// An erasure hook failed.
    #[error("erasure hook {name} failed: {message}")]
    Hook {
        /// The hook.
        name: &'static str,
        /// What it said (no personal data).
        message: String,
    },
    /// Writing a recording failed.
    #[error(transparent)]
    Recording(#[from] RecordingError),
}

impl RecordsError {
    fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        move |source| Self::Io { what, source }
    }
}

/// A data subject with their data key in memory (wiped when dropped).
#[derive(Debug)]
pub struct Subject {
    /// Row id.
    pub id: i64,
    /// Keyed hash of the number.
    pub key: SubjectKey,
    data_key: DataKey,
}

impl Subject {
    /// The subject's data key.
    pub fn data_key(&self) -> &DataKey {
        &self.data_key
    }
}

/// The records service. Cheap to share (`Arc`); every method is blocking (database commits,
/// file syncs) and belongs on a blocking thread, not a tokio worker.
pub struct Records {
    store: Store,
    data_dir: PathBuf,
    wrapper: KeyWrapper,
    lookup: LookupKey,
    signer: Arc<ReceiptSigner>,
    default_cc: String,
    clock: Arc<dyn Clock>,
    hooks: Vec<Arc<dyn ErasureHook>>,
    /// One erasure at a time per process (steps are idempotent across processes anyway).
    erase_lock: Mutex<()>,
}

impl std::fmt::Debug for Records {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Records")
            .field("master_key", &self.wrapper.master_key_id())
            .field("receipt_key", &self.signer.key_id())
            .finish_non_exhaustive()
    }
}

/// Unwraps an appliance key row.
fn unwrap_appliance(
    wrapper: &KeyWrapper,
    row: &subjects::ApplianceKeyRow,
) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    wrapper.unwrap(
        WrapContext::Appliance {
            purpose: &row.purpose,
            key_id: &row.key_id,
        },
        &row.wrapped_secret,
    )
}

/// Makes the appliance keys that do not exist yet (first start).
fn create_appliance_keys(
    store: &Store,
    wrapper: &KeyWrapper,
    now_ms: i64,
) -> Result<(), RecordsError> {
    let lookup_secret = Zeroizing::new(random::<32>()?);
    let lookup_id = format!("lk-{}", hex::encode(random::<8>()?));
    let seed = Zeroizing::new(random::<32>()?);
    let signer = ReceiptSigner::from_seed(&seed)?;
    let rows = [
        subjects::ApplianceKeyRow {
            purpose: LOOKUP_KEY.into(),
            wrapped_secret: wrapper.wrap(
                WrapContext::Appliance {
                    purpose: LOOKUP_KEY,
                    key_id: &lookup_id,
                },
                &lookup_secret,
            )?,
            key_id: lookup_id,
            public_key: None,
            master_key_id: wrapper.master_key_id().into(),
            created_at_ms: now_ms,
        },
        subjects::ApplianceKeyRow {
            purpose: SIGNING_KEY.into(),
            key_id: signer.key_id().into(),
            public_key: Some(signer.public_key().to_vec()),
            wrapped_secret: wrapper.wrap(
                WrapContext::Appliance {
                    purpose: SIGNING_KEY,
                    key_id: signer.key_id(),
                },
                &seed,
            )?,
            master_key_id: wrapper.master_key_id().into(),
            created_at_ms: now_ms,
        },
    ];
    store.write(move |c| {
        let mut made = Vec::new();
        for r in &rows {
            if subjects::insert_appliance_key(c, r)? {
                made.push(r.purpose.clone());
            }
        }
        if !made.is_empty() {
            crate::store::audit::append(
                c,
                &crate::store::audit::NewEntry {
                    at_ms: now_ms,
                    actor: "system",
                    role: None,
                    action: "keys.create",
                    object: None,
                    result: "ok",
                    detail: serde_json::json!({"purposes": made}),
                },
            )?;
        }
        Ok(())
    })?;
    Ok(())
}

/// Checks that no rotation is open and every wrapped key belongs to `master`.
pub fn check_master_key(store: &Store, master_key_id: &str) -> Result<(), RecordsError> {
    let id = master_key_id.to_owned();
    let (open, others, by) = store.read(move |c| {
        Ok((
            subjects::open_rotation(c)?,
            subjects::count_wrapped_by_other(c, &id)?,
            subjects::wrapping_master_keys(c)?,
        ))
    })?;
    if let Some(r) = open {
        return Err(RecordsError::RotationInProgress {
            old: r.old_master_key_id,
            new: r.new_master_key_id,
        });
    }
    if others > 0 {
        let names: Vec<String> = by
            .into_iter()
            .filter(|(k, _)| k != master_key_id)
            .map(|(k, n)| format!("{k} ({n})"))
            .collect();
        return Err(RecordsError::MasterKeyMismatch {
            loaded: master_key_id.to_owned(),
            count: others,
            others: names.join(", "),
        });
    }
    Ok(())
}

/// The receipt-verification public key stored in the database (no master key needed).
pub fn stored_receipt_public_key(store: &Store) -> Result<Option<[u8; 32]>, RecordsError> {
    let rows = store.read(subjects::appliance_keys)?;
    Ok(rows
        .into_iter()
        .find(|r| r.purpose == SIGNING_KEY)
        .and_then(|r| r.public_key)
        .and_then(|p| <[u8; 32]>::try_from(p).ok()))
}

impl Records {
    /// Opens the records service: checks the master key against the database, creates the
    /// appliance keys on first start and unwraps them.
    pub fn open(
        store: Store,
        data_dir: &Path,
        master: &MasterKey,
        cfg: &VaultConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, RecordsError> {
        let wrapper = KeyWrapper::new(master);
        check_master_key(&store, master.id())?;
        let mut rows = store.read(subjects::appliance_keys)?;
        if rows.len() < 2 {
            create_appliance_keys(&store, &wrapper, unix_ms(clock.wall()))?;
            rows = store.read(subjects::appliance_keys)?;
        }
        let find = |p: &str| {
            rows.iter()
                .find(|r| r.purpose == p)
                .ok_or(RecordsError::Inconsistent("appliance key missing"))
        };
        let lookup = LookupKey::new(&*unwrap_appliance(&wrapper, find(LOOKUP_KEY)?)?);
        let signing = find(SIGNING_KEY)?;
        let signer = ReceiptSigner::from_seed(&unwrap_appliance(&wrapper, signing)?)?;
        if signing.key_id != signer.key_id()
            || signing.public_key.as_deref() != Some(&signer.public_key()[..])
        {
            return Err(RecordsError::Inconsistent("receipt key id"));
        }
        crate::fs::ensure_private_dir(&data_dir.join(files::VAULT_DIR))
            .map_err(RecordsError::io("creating the vault directory"))?;
        Ok(Self {
            store,
            data_dir: data_dir.to_owned(),
            wrapper,
            lookup,
            signer: Arc::new(signer),
            default_cc: cfg.default_country_code.clone(),
            clock,
            hooks: Vec::new(),
            erase_lock: Mutex::new(()),
        })
    }

    /// Registers a hook that erasure calls for state held outside the vault and the database
    /// (the prompt cache's in-memory index, when it lands). Call before sharing the handle.
    pub fn add_erasure_hook(&mut self, hook: Arc<dyn ErasureHook>) {
        self.hooks.push(hook);
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The key for log redaction tags (stable across master-key rotations).
    pub fn redaction_key(&self) -> &[u8; 32] {
        self.lookup.redaction_key()
    }

    /// The receipt-verification key id and public key.
    pub fn receipt_public_key(&self) -> (String, [u8; 32]) {
        (self.signer.key_id().to_owned(), self.signer.public_key())
    }

    fn now_ms(&self) -> i64 {
        unix_ms(self.clock.wall())
    }

    /// Normalises a number with the configured default country code.
    pub fn normalize(&self, raw: &str) -> Result<E164, RecordsError> {
        Ok(normalize(raw, &self.default_cc)?)
    }

    /// The keyed hash of a number.
    pub fn subject_key(&self, number: &E164) -> SubjectKey {
        self.lookup.subject_key(number)
    }

    /// Whether the dialer may call this number (not on the suppression list). The dialer calls
    /// this right before every attempt.
    pub fn may_dial(&self, number: &E164) -> Result<bool, RecordsError> {
        Ok(!self.is_suppressed(number)?)
    }

    /// The subject for a number, created with a new data key if needed. Refuses suppressed
    /// numbers: nothing is recorded for a number that asked to be forgotten.
    pub fn ensure_subject(&self, number: &E164) -> Result<Subject, RecordsError> {
        let key = self.subject_key(number);
        let h = key.0;
        let (suppressed, row) = self
            .store
            .read(move |c| Ok((subjects::is_suppressed(c, &h)?, subjects::by_hash(c, &h)?)))?;
        if suppressed {
            return Err(RecordsError::Suppressed);
        }
        if let Some(r) = &row
            && let Some(w) = &r.wrapped_key
        {
            let data_key = self.wrapper.unwrap_data_key(&key, &r.key_id, w)?;
            return Ok(Subject {
                id: r.id,
                key,
                data_key,
            });
        }
        let data_key = DataKey::generate()?;
        let wrapped = self.wrapper.wrap(
            WrapContext::DataKey {
                subject: &key,
                key_id: data_key.id(),
            },
            data_key.expose(),
        )?;
        let phone_enc = data_key.seal_field(
            &format!("data_subjects.phone_enc|{}", key.to_hex()),
            number.as_str().as_bytes(),
        )?;
        let (key_id, master, now) = (
            data_key.id().to_owned(),
            self.wrapper.master_key_id().to_owned(),
            self.now_ms(),
        );
        let tombstone = row.map(|r| r.id);
        let res = self
            .store
            .write_with(move |c| -> Result<Option<i64>, RecordsError> {
                if subjects::is_suppressed(c, &h)? {
                    return Err(RecordsError::Suppressed);
                }
                let rec = subjects::KeyRecord {
                    subject_hash: &h,
                    phone_enc: &phone_enc,
                    key_id: &key_id,
                    wrapped_key: &wrapped,
                    master_key_id: &master,
                    now_ms: now,
                };
                match (tombstone, subjects::by_hash(c, &h)?) {
                    // Another thread made it meanwhile: use theirs.
                    (_, Some(r)) if r.wrapped_key.is_some() => Ok(None),
                    (Some(id), Some(_)) => Ok(subjects::rekey_shredded(c, id, &rec)?.then_some(id)),
                    (_, _) => Ok(Some(subjects::insert(c, &rec)?)),
                }
            })?;
        match res {
            Some(id) => Ok(Subject { id, key, data_key }),
            None => self.ensure_subject(number),
        }
    }

    /// The subject with this id, with their data key.
    pub fn subject_by_id(&self, id: i64) -> Result<Subject, RecordsError> {
        let row = self
            .store
            .read(move |c| subjects::by_id(c, id))?
            .ok_or(RecordsError::NotFound("data subject"))?;
        self.subject_from_row(&row)
    }

    fn subject_from_row(&self, row: &subjects::SubjectRow) -> Result<Subject, RecordsError> {
        let key = SubjectKey(row.subject_hash);
        let w = row.wrapped_key.as_ref().ok_or(RecordsError::Shredded)?;
        let data_key = self.wrapper.unwrap_data_key(&key, &row.key_id, w)?;
        Ok(Subject {
            id: row.id,
            key,
            data_key,
        })
    }

    /// The subject's number, decrypted (for display to a permitted role).
    pub fn subject_number(&self, subject: &Subject) -> Result<Option<E164>, RecordsError> {
        let id = subject.id;
        let Some(row) = self.store.read(move |c| subjects::by_id(c, id))? else {
            return Ok(None);
        };
        let Some(enc) = row.phone_enc else {
            return Ok(None);
        };
        let plain = subject.data_key.open_field(
            &format!("data_subjects.phone_enc|{}", subject.key.to_hex()),
            &enc,
        )?;
        let text = std::str::from_utf8(&plain).map_err(|_| KeyError::Field)?;
        Ok(Some(normalize(text, &self.default_cc)?))
    }

    /// Records a call attempt for a subject (the call layer will own richer call rows).
    pub fn start_call(
        &self,
        subject: &Subject,
        trunk: Option<&str>,
    ) -> Result<CallId, RecordsError> {
        let (sid, trunk, now) = (subject.id, trunk.map(str::to_owned), self.now_ms());
        Ok(self.store.write(move |c| {
            calls::insert_call(
                c,
                &calls::NewCall {
                    subject_id: sid,
                    trunk: trunk.as_deref(),
                    started_at_ms: now,
                    ..calls::NewCall::default()
                },
            )
        })?)
    }

    /// Adds a subject to a task with their script variables (name, amount, …) encrypted.
    pub fn add_task_number(
        &self,
        task_id: i64,
        subject: &Subject,
        variables: &Value,
    ) -> Result<i64, RecordsError> {
        let plain = Zeroizing::new(variables.to_string());
        let enc = subject.data_key.seal_field(
            &format!(
                "task_numbers.variables_enc|task={task_id}|subject={}",
                subject.id
            ),
            plain.as_bytes(),
        )?;
        let (sid, now) = (subject.id, self.now_ms());
        Ok(self
            .store
            .write(move |c| calls::insert_task_number(c, task_id, sid, &enc, now))?)
    }

    fn new_file(
        &self,
        subject: &Subject,
        call: CallId,
        content_type: ContentType,
    ) -> Result<(RecordingId, File, PathBuf, FileCipher), RecordsError> {
        let file_id: [u8; 16] = random()?;
        let rel = files::file_path(&subject.key, content_type, &hex::encode(file_id));
        let now = self.now_ms();
        let header = Header {
            content_type,
            file_id,
            subject: subject.key.0,
            key_id: subject.data_key.id().to_owned(),
            created_at_ms: now,
        };
        let cipher = FileCipher::create(&subject.data_key, header)?;
        let kind = match content_type {
            ContentType::CallAudio => "audio",
            ContentType::Transcript => "transcript",
            ContentType::PromptAudio => {
                return Err(RecordsError::Invalid("prompts are not call files"));
            }
        };
        let (path, key_id, sid) = (
            rel.to_string_lossy().into_owned(),
            subject.data_key.id().to_owned(),
            subject.id,
        );
        let id = self.store.write(move |c| {
            calls::insert_recording(
                c,
                &calls::NewRecording {
                    call_id: call,
                    subject_id: sid,
                    kind,
                    path: &path,
                    key_id: &key_id,
                    file_id: &file_id,
                    content_type: content_type.code(),
                    created_at_ms: now,
                },
            )
        })?;
        let abs = self.data_dir.join(&rel);
        let file = files::create_new(&abs).map_err(RecordsError::io("creating a vault file"))?;
        Ok((id, file, abs, cipher))
    }

    /// Starts the encrypted recording of a call (stereo, left customer, right robot).
    pub fn start_recording(
        &self,
        subject: &Subject,
        call: CallId,
    ) -> Result<LiveRecording, RecordsError> {
        let (id, file, abs, cipher) = self.new_file(subject, call, ContentType::CallAudio)?;
        Ok(LiveRecording {
            id,
            abs,
            writer: RecordingWriter::new(EncryptedWriter::new(file, cipher, AUDIO_CHUNK)?),
            store: self.store.clone(),
        })
    }

    /// Starts the encrypted transcript of a call.
    pub fn start_transcript(
        &self,
        subject: &Subject,
        call: CallId,
    ) -> Result<LiveTranscript, RecordsError> {
        let (id, file, abs, cipher) = self.new_file(subject, call, ContentType::Transcript)?;
        Ok(LiveTranscript {
            id,
            call,
            abs,
            writer: TranscriptWriter::new(EncryptedWriter::new(file, cipher, 64 * 1024)?),
            field_key: DataKey::from_parts(
                subject.data_key.id().to_owned(),
                *subject.data_key.expose(),
            ),
            store: self.store.clone(),
        })
    }

    /// Stores a personalised prompt (TTS audio of a text with the subject's name or amounts)
    /// in the subject's vault directory, encrypted under their key, named by a keyed hash of
    /// its text. This is where the prompt cache keeps anything personal, so that erasure and
    /// crypto-shredding reach it. Returns false if it was cached already.
    pub fn put_prompt(
        &self,
        subject: &Subject,
        text: &str,
        pcm: &[i16],
    ) -> Result<bool, RecordsError> {
        let name = subject.data_key.prompt_name(text);
        let rel = files::file_path(&subject.key, ContentType::PromptAudio, &name);
        let abs = self.data_dir.join(&rel);
        let file = match files::create_new(&abs) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(RecordsError::io("creating a prompt file")(e)),
        };
        let mut file_id = [0u8; 16];
        hex::decode_to_slice(&name, &mut file_id)
            .map_err(|_| RecordsError::Inconsistent("prompt name"))?;
        let cipher = FileCipher::create(
            &subject.data_key,
            Header {
                content_type: ContentType::PromptAudio,
                file_id,
                subject: subject.key.0,
                key_id: subject.data_key.id().to_owned(),
                created_at_ms: self.now_ms(),
            },
        )?;
        let mut w = EncryptedWriter::new(file, cipher, AUDIO_CHUNK)?;
        let mut bytes = Zeroizing::new(Vec::with_capacity(pcm.len() * 2));
        for s in pcm {
            bytes.extend_from_slice(&s.to_le_bytes());
        }
        w.write_plain(&bytes)?;
        let (f, _) = w.finish()?;
        files::sync_file(&f, &abs).map_err(RecordsError::io("syncing a prompt file"))?;
        Ok(true)
    }

    /// A cached personalised prompt, if present.
    pub fn get_prompt(
        &self,
        subject: &Subject,
        text: &str,
    ) -> Result<Option<Vec<i16>>, RecordsError> {
        let name = subject.data_key.prompt_name(text);
        let abs = self.data_dir.join(files::file_path(
            &subject.key,
            ContentType::PromptAudio,
            &name,
        ));
        let mut f = match File::open(&abs) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(RecordsError::io("opening a prompt file")(e)),
        };
        let mut file_id = [0u8; 16];
        hex::decode_to_slice(&name, &mut file_id)
            .map_err(|_| RecordsError::Inconsistent("prompt name"))?;
        let h = read_header(&mut f)?;
        let cipher = FileCipher::open(
            &subject.data_key,
            &h,
            &Expected {
                subject: subject.key.0,
                file_id: Some(file_id),
                content_type: ContentType::PromptAudio,
            },
        )?;
        let mut r = EncryptedReader::new(f, cipher, Mode::Strict);
        let mut out = Vec::new();
        while let Some(chunk) = r.next_chunk()? {
            out.extend(
                chunk
                    .chunks_exact(2)
                    .map(|b| i16::from_le_bytes([b[0], b[1]])),
            );
        }
        Ok(Some(out))
    }

    /// Opens a recording or transcript for streaming playback: checks the row against the
    /// file's header, verifies the last chunk, and returns a stream that decrypts as it is
    /// read. Nothing is written to disk.
    pub fn open_playback(&self, id: RecordingId) -> Result<Playback, RecordsError> {
        let row = self
            .store
            .read(move |c| calls::recording(c, id))?
            .ok_or(RecordsError::NotFound("recording"))?;
        let sid = row
            .subject_id
            .ok_or(RecordsError::Inconsistent("no subject"))?;
        let subject_row = self
            .store
            .read(move |c| subjects::by_id(c, sid))?
            .ok_or(RecordsError::Inconsistent("unknown subject"))?;
        let subject = self.subject_from_row(&subject_row)?;
        let content_type = row
            .content_type
            .and_then(|c| u8::try_from(c).ok())
            .and_then(ContentType::from_code)
            .ok_or(RecordsError::Inconsistent("content type"))?;
        let file_id: [u8; 16] = row
            .file_id
            .as_deref()
            .and_then(|f| f.try_into().ok())
            .ok_or(RecordsError::Inconsistent("file id"))?;
        let rel = files::file_path(&subject.key, content_type, &hex::encode(file_id));
        if Path::new(&row.path) != rel || !files::is_vault_path(&rel) {
            return Err(RecordsError::Inconsistent("path"));
        }
        let abs = self.data_dir.join(&rel);
        let open = |what| File::open(&abs).map_err(RecordsError::io(what));
        let layout = scan_layout(open("opening a vault file")?)?;
        let mode = if row.complete {
            Mode::Strict
        } else {
            Mode::Lenient
        };
        if mode == Mode::Strict && layout.torn_bytes != 0 {
            return Err(FormatError::Truncated {
                complete_chunks: layout.chunk_plaintext.len() as u64,
            }
            .into());
        }
        let expect = Expected {
            subject: subject.key.0,
            file_id: Some(file_id),
            content_type,
        };
        // Check the header and the last chunk before anything is streamed, so a truncated or
        // damaged end is refused up front rather than cutting the response short.
        let mut f = open("opening a vault file")?;
        let h = read_header(&mut f)?;
        let cipher = FileCipher::open(&subject.data_key, &h, &expect)?;
        if let Some(last) = layout.chunk_plaintext.len().checked_sub(1) {
            let offset = layout.header_len
                + layout.chunk_plaintext[..last]
                    .iter()
                    .map(|n| 4 + 16 + u64::from(*n))
                    .sum::<u64>();
            f.seek(SeekFrom::Start(offset))
                .map_err(RecordsError::io("seeking in a vault file"))?;
            let mut tail = EncryptedReader::new(
                &mut f,
                FileCipher::open(&subject.data_key, &h, &expect)?,
                Mode::Lenient,
            )
            .starting_at(last as u64);
            let got = tail.next_chunk()?.is_some();
            if !got || (mode == Mode::Strict && tail.state() != ReadState::Complete) {
                return Err(FormatError::Truncated {
                    complete_chunks: last as u64,
                }
                .into());
            }
        } else if mode == Mode::Strict {
            return Err(FormatError::Truncated { complete_chunks: 0 }.into());
        }
        f.seek(SeekFrom::Start(layout.header_len))
            .map_err(RecordsError::io("seeking in a vault file"))?;
        let plain_len = layout.plaintext_len();
        let prefix = match content_type {
            ContentType::CallAudio => wav_header(2, u32::try_from(plain_len).unwrap_or(u32::MAX)),
            ContentType::PromptAudio => wav_header(1, u32::try_from(plain_len).unwrap_or(u32::MAX)),
            ContentType::Transcript => Vec::new(),
        };
        let len = prefix.len() as u64 + plain_len;
        Ok(Playback {
            recording: row,
            content_type,
            len,
            stream: PlaintextStream::new(prefix, EncryptedReader::new(f, cipher, mode)),
        })
    }
}

/// A decrypting stream of one vault file, for the admin API.
pub struct Playback {
    /// The file's row.
    pub recording: calls::RecordingRow,
    /// What it holds.
    pub content_type: ContentType,
    /// Bytes the stream will yield (WAV header included for audio).
    pub len: u64,
    /// The plaintext.
    pub stream: PlaintextStream<File>,
}

impl std::fmt::Debug for Playback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Playback")
            .field("recording", &self.recording.id)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// The recording tap of a live call. `append_frame` costs one page-cache write per second of
/// audio; `finish` seals the last chunk, syncs the file and marks the row complete.
pub struct LiveRecording {
    id: RecordingId,
    abs: PathBuf,
    writer: RecordingWriter<File>,
    store: Store,
}

impl std::fmt::Debug for LiveRecording {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveRecording")
            .field("id", &self.id)
            .field("writer", &self.writer)
            .finish()
    }
}

impl LiveRecording {
    /// The recording's id.
    pub fn id(&self) -> RecordingId {
        self.id
    }

    /// Appends one frame: customer (left) and robot (right) samples, equal lengths.
    pub fn append_frame(&mut self, customer: &[i16], robot: &[i16]) -> Result<(), RecordsError> {
        Ok(self.writer.append_frame(customer, robot)?)
    }

    /// Chunks sealed and written so far.
    pub fn chunks(&self) -> u64 {
        self.writer.chunks()
    }

    /// Makes what is written so far durable (for a caller that wants a bound on loss at power
    /// failure, from a blocking thread).
    pub fn sync(&mut self) -> Result<(), RecordsError> {
        self.writer
            .sink_mut()
            .sync_data()
            .map_err(RecordsError::io("syncing a recording"))
    }

    /// Seals the final chunk, syncs, and marks the row complete.
    pub fn finish(self) -> Result<FileSummary, RecordsError> {
        let duration = self.writer.duration_ms();
        let (file, summary) = self.writer.finish()?;
        files::sync_file(&file, &self.abs).map_err(RecordsError::io("syncing a recording"))?;
        let (id, bytes) = (self.id, summary.file_bytes);
        self.store
            .write(move |c| calls::finish_recording(c, id, bytes, Some(duration)))?;
        Ok(summary)
    }
}

/// The transcript of a live call: each turn goes to the encrypted transcript file (one chunk
/// per turn) and to the `turns` table (text sealed under the subject's key).
pub struct LiveTranscript {
    id: RecordingId,
    call: CallId,
    abs: PathBuf,
    writer: TranscriptWriter<File>,
    field_key: DataKey,
    store: Store,
}

impl std::fmt::Debug for LiveTranscript {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveTranscript")
            .field("id", &self.id)
            .field("writer", &self.writer)
            .finish_non_exhaustive()
    }
}

/// The sealing context of a turn's text.
pub fn turn_context(call: CallId, seq: u32) -> String {
    format!("turns.text_enc|call={call}|seq={seq}")
}

impl LiveTranscript {
    /// The transcript file's id.
    pub fn id(&self) -> RecordingId {
        self.id
    }

    /// Records a turn (file and row).
    pub fn append_turn(
        &mut self,
        line: &TranscriptLine,
        node: Option<&str>,
    ) -> Result<(), RecordsError> {
        self.writer.append_turn(line)?;
        let enc = self
            .field_key
            .seal_field(&turn_context(self.call, line.seq), line.text.as_bytes())?;
        let (call, seq, speaker, node, start, end) = (
            self.call,
            line.seq,
            line.speaker.clone(),
            node.map(str::to_owned),
            line.start_ms,
            line.end_ms,
        );
        self.store.write(move |c| {
            calls::insert_turn(
                c,
                &calls::NewTurn {
                    call_id: call,
                    seq,
                    speaker: &speaker,
                    node: node.as_deref(),
                    start_ms: start,
                    end_ms: end,
                    text_enc: &enc,
                },
            )
        })?;
        Ok(())
    }

    /// Seals the final chunk, syncs, and marks the row complete.
    pub fn finish(self) -> Result<FileSummary, RecordsError> {
        let (file, summary) = self.writer.finish()?;
        files::sync_file(&file, &self.abs).map_err(RecordsError::io("syncing a transcript"))?;
        let (id, bytes) = (self.id, summary.file_bytes);
        self.store
            .write(move |c| calls::finish_recording(c, id, bytes, None))?;
        Ok(summary)
    }
}

/// The id of the receipt key for a public key (re-exported for the CLI).
pub fn receipt_key_id_of(public: &[u8; 32]) -> String {
    receipt_key_id(public)
}
