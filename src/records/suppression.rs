//! The suppression (do-not-call) list as an operable feature (docs/vault.md §12).
//!
//! A number on the list is never dialled (`Records::may_dial`) and never becomes a data subject
//! again (`Records::ensure_subject`). Entries are keyed by the number's subject hash, so the list
//! holds no number; sources are an erasure, a customer's do-not-call request, the call script's
//! suppress action, or an operator's decision. Only re-recorded consent lifts an entry, and
//! lifting never brings data back: an erased subject stays shredded, and the next call gives
//! them a fresh data key. Every addition, check and lift is appended to the audit log in the
//! transaction that makes it.

use serde_json::json;

use super::{Records, RecordsError};
use crate::ids::SubjectKey;
use crate::store::{StoreError, audit, erasure, subjects};
use crate::vault::phone::E164;

/// Why a number is on the suppression list. The names are those of the database, the admin
/// API and the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SuppressionSource {
    /// The data subject was erased (added by the erasure itself).
    Erasure,
    /// The customer asked not to be called again (do-not-call).
    CustomerRequest,
    /// The call script's suppress action (the customer said so during a call).
    Script,
    /// An operator's or compliance officer's decision.
    Operator,
}

impl SuppressionSource {
    /// Every source, in the order counts are shown.
    pub const ALL: [Self; 4] = [
        Self::Erasure,
        Self::CustomerRequest,
        Self::Script,
        Self::Operator,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Erasure => "erasure",
            Self::CustomerRequest => "customer_request",
            Self::Script => "script",
            Self::Operator => "operator",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Whether a person may add entries of this source by hand (API, CLI). Erasure entries
    /// come only with an erasure, script entries only from a call.
    pub fn manual(self) -> bool {
        match self {
            Self::CustomerRequest | Self::Operator => true,
            Self::Erasure | Self::Script => false,
        }
    }
}

/// Who asks, for the audit log.
#[derive(Debug, Clone, Copy)]
pub struct Requester<'a> {
    /// Token id, `cli` or `system`.
    pub actor: &'a str,
    /// The token's role.
    pub role: Option<&'a str>,
    /// `api`, `cli` or `call`.
    pub via: &'static str,
}

/// A [`Requester`] that can move into a store job.
struct OwnedRequester {
    actor: String,
    role: Option<String>,
    via: &'static str,
}

impl Requester<'_> {
    fn to_owned_requester(self) -> OwnedRequester {
        OwnedRequester {
            actor: self.actor.to_owned(),
            role: self.role.map(str::to_owned),
            via: self.via,
        }
    }
}

impl OwnedRequester {
    fn borrow(&self) -> Requester<'_> {
        Requester {
            actor: &self.actor,
            role: self.role.as_deref(),
            via: self.via,
        }
    }
}

/// An entry of the suppression list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suppression {
    /// Why.
    pub source: SuppressionSource,
    /// Free text without personal data.
    pub reason: Option<String>,
    /// When it was added.
    pub created_at_ms: i64,
}

/// The result of [`Records::suppress`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suppressed {
    /// The number's subject hash.
    pub subject: SubjectKey,
    /// Whether this call added the entry (false: the number was on the list already).
    pub added: bool,
    /// The entry now on the list (the first one if it existed).
    pub entry: Suppression,
}

/// The most characters of a reason.
pub const MAX_REASON_CHARS: usize = 500;
/// The most characters of a consent reference.
pub const MAX_CONSENT_REF_CHARS: usize = 128;

fn entry(row: subjects::SuppressionRow) -> Result<Suppression, RecordsError> {
    Ok(Suppression {
        source: SuppressionSource::parse(&row.source)
            .ok_or(RecordsError::Inconsistent("suppression source"))?,
        reason: row.reason,
        created_at_ms: row.created_at_ms,
    })
}

/// Whether `text` contains `number`, however it is spelled (separators and full-width digits
/// ignored): its last eight digits are enough to identify a person, so they are what is looked
/// for.
fn mentions(text: &str, number: &E164) -> bool {
    let digits: String = text
        .chars()
        .filter_map(|c| match c {
            '0'..='9' => Some(c),
            '０'..='９' => char::from_digit(c as u32 - '０' as u32, 10),
            _ => None,
        })
        .collect();
    let n = number.as_str().trim_start_matches('+');
    let tail = &n[n.len().saturating_sub(8)..];
    digits.contains(tail)
}

fn check_text(
    text: &str,
    max: usize,
    number: &E164,
    what: &'static str,
) -> Result<(), RecordsError> {
    if text.chars().count() > max || text.chars().any(char::is_control) {
        return Err(RecordsError::Invalid(what));
    }
    if mentions(text, number) {
        return Err(RecordsError::Invalid(
            "the text must not contain the phone number (it is stored in clear)",
        ));
    }
    Ok(())
}

fn audit_entry(
    c: &rusqlite::Connection,
    by: &Requester<'_>,
    action: &str,
    subject: &SubjectKey,
    result: &str,
    detail: serde_json::Value,
    now: i64,
) -> Result<(), StoreError> {
    audit::append(
        c,
        &audit::NewEntry {
            at_ms: now,
            actor: by.actor,
            role: by.role,
            action,
            object: Some(&format!("subject:{}", subject.to_hex())),
            result,
            detail,
        },
    )
    .map(|_| ())
}

impl Records {
    /// The suppression entry of a number, if it is on the list (no audit entry: for the
    /// dialer and other internal callers).
    pub fn suppression(&self, number: &E164) -> Result<Option<Suppression>, RecordsError> {
        let h = self.subject_key(number).0;
        self.store
            .read(move |c| subjects::suppression(c, &h))?
            .map(entry)
            .transpose()
    }

    /// Whether the number is on the suppression list.
    pub fn is_suppressed(&self, number: &E164) -> Result<bool, RecordsError> {
        let h = self.subject_key(number).0;
        Ok(self.store.read(move |c| subjects::is_suppressed(c, &h))?)
    }

    /// Puts a number on the suppression list (idempotent: an existing entry is kept as it was
    /// and reported with `added: false`). `reason` is stored in clear: at most
    /// [`MAX_REASON_CHARS`] characters, no control characters, and never the number itself.
    /// Audited as `suppression.add`, in the same transaction.
    pub fn suppress(
        &self,
        number: &E164,
        source: SuppressionSource,
        reason: Option<&str>,
        by: &Requester<'_>,
    ) -> Result<Suppressed, RecordsError> {
        let reason = reason.map(str::trim).filter(|r| !r.is_empty());
        if let Some(r) = reason {
            check_text(
                r,
                MAX_REASON_CHARS,
                number,
                "reason: at most 500 characters, no control characters",
            )?;
        }
        let subject = self.subject_key(number);
        let (h, reason, now) = (subject.0, reason.map(str::to_owned), self.now_ms());
        let (who, via) = (by.to_owned_requester(), by.via);
        let (added, row) = self.store.write(move |c| {
            let added = subjects::suppress(c, &h, source.as_str(), reason.as_deref(), now)?;
            let row = subjects::suppression(c, &h)?.ok_or(StoreError::NotFound)?;
            let by = who.borrow();
            audit_entry(
                c,
                &by,
                "suppression.add",
                &SubjectKey(h),
                "ok",
                json!({"source": source.as_str(), "added": added, "listed_source": row.source, "via": via}),
                now,
            )?;
            Ok((added, row))
        })?;
        Ok(Suppressed {
            subject,
            added,
            entry: entry(row)?,
        })
    }

    /// Looks a number up for a person (API, CLI), audited as `suppression.check` with the
    /// answer — a check tells whether someone asked not to be called or was erased.
    pub fn check_suppression(
        &self,
        number: &E164,
        by: &Requester<'_>,
    ) -> Result<Option<Suppression>, RecordsError> {
        let subject = self.subject_key(number);
        let (h, now) = (subject.0, self.now_ms());
        let (who, via) = (by.to_owned_requester(), by.via);
        let row = self.store.write(move |c| {
            let row = subjects::suppression(c, &h)?;
            let by = who.borrow();
            audit_entry(
                c,
                &by,
                "suppression.check",
                &SubjectKey(h),
                "ok",
                json!({"suppressed": row.is_some(), "via": via}),
                now,
            )?;
            Ok(row)
        })?;
        row.map(entry).transpose()
    }

    /// Takes a number off the suppression list because the customer's consent was recorded
    /// again; `consent_ref` names where (1–128 characters, no personal data; it goes to the
    /// audit log). Returns the entry removed, or `None` if the number was not on the list
    /// (audited as `failed`). Nothing else changes: the data of an erased subject stays
    /// destroyed, and their next call makes a fresh data key ([`Records::ensure_subject`]).
    /// Refused while an erasure of the number is unfinished (it would re-suppress it, and its
    /// file step could remove recordings made in between).
    pub fn lift_suppression(
        &self,
        number: &E164,
        consent_ref: &str,
        by: &Requester<'_>,
    ) -> Result<Option<Suppression>, RecordsError> {
        let consent_ref = consent_ref.trim();
        if consent_ref.is_empty() {
            return Err(RecordsError::Invalid(
                "consent_ref: lifting a suppression needs the reference of the re-recorded consent",
            ));
        }
        check_text(
            consent_ref,
            MAX_CONSENT_REF_CHARS,
            number,
            "consent_ref: 1 to 128 characters, no control characters",
        )?;
        let subject = self.subject_key(number);
        let (h, consent, now) = (subject.0, consent_ref.to_owned(), self.now_ms());
        let (who, via) = (by.to_owned_requester(), by.via);
        let row = self.store.write_with(move |c| -> Result<_, RecordsError> {
            if erasure::unfinished_for(c, &h)? {
                return Err(RecordsError::ErasureInProgress);
            }
            let erased = subjects::by_hash(c, &h)?.is_some_and(|s| s.wrapped_key.is_none());
            let row = subjects::lift(c, &h)?;
            let by = who.borrow();
            let detail = match &row {
                Some(r) => json!({
                    "consent_ref": consent,
                    "source": r.source,
                    "suppressed_at_ms": r.created_at_ms,
                    "subject_key_destroyed": erased,
                    "via": via,
                }),
                None => json!({"consent_ref": consent, "error": "not_suppressed", "via": via}),
            };
            let result = if row.is_some() { "ok" } else { "failed" };
            audit_entry(
                c,
                &by,
                "suppression.lift",
                &SubjectKey(h),
                result,
                detail,
                now,
            )?;
            Ok(row)
        })?;
        row.map(entry).transpose()
    }

    /// How many numbers the list holds per source, every source included (0 if none).
    pub fn suppression_counts(&self) -> Result<Vec<(SuppressionSource, i64)>, RecordsError> {
        let rows = self.store.read(subjects::suppression_counts)?;
        let mut out: Vec<(SuppressionSource, i64)> =
            SuppressionSource::ALL.iter().map(|s| (*s, 0)).collect();
        for (name, n) in rows {
            let s = SuppressionSource::parse(&name)
                .ok_or(RecordsError::Inconsistent("suppression source"))?;
            if let Some(slot) = out.iter_mut().find(|(x, _)| *x == s) {
                slot.1 = n;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::{StoreConfig, VaultConfig};
    use crate::store::Store;
    use crate::time::SystemClock;
    use crate::vault::MasterKey;
    use crate::vault::format::{ContentType, Expected, FileCipher};
    use crate::vault::keys::DataKey;
    use crate::vault::stream::read_header;

    const PHONE: &str = "138 1234 5678";

    fn open(dir: &std::path::Path) -> Records {
        let store = Store::open(&dir.join("t.db"), &StoreConfig::default(), 1).unwrap();
        Records::open(
            store,
            dir,
            &MasterKey::from_bytes([5; 32]),
            &VaultConfig::default(),
            Arc::new(SystemClock),
        )
        .unwrap()
    }

    const CLI: Requester<'static> = Requester {
        actor: "cli",
        role: None,
        via: "cli",
    };

    fn audit(r: &Records) -> Vec<(String, Option<String>, String, String)> {
        r.store()
            .read(|c| {
                let mut st = c.prepare(
                    "SELECT action, object, result, detail_json FROM audit_log
                     WHERE action LIKE 'suppression.%' ORDER BY id",
                )?;
                let rows = st
                    .query_map([], |x| Ok((x.get(0)?, x.get(1)?, x.get(2)?, x.get(3)?)))?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rows)
            })
            .unwrap()
    }

    #[test]
    fn sources_round_trip_and_only_two_are_manual() {
        for s in SuppressionSource::ALL {
            assert_eq!(SuppressionSource::parse(s.as_str()), Some(s));
        }
        assert_eq!(SuppressionSource::parse("do_not_call"), None);
        let manual: Vec<_> = SuppressionSource::ALL
            .into_iter()
            .filter(|s| s.manual())
            .collect();
        assert_eq!(
            manual,
            [
                SuppressionSource::CustomerRequest,
                SuppressionSource::Operator
            ]
        );
    }

    #[test]
    fn number_in_text_is_found_in_any_spelling() {
        let n = crate::vault::phone::normalize(PHONE, "86").unwrap();
        for t in [
            "13812345678",
            "call 138-1234-5678 never",
            "+86 138 1234 5678",
            "１３８１２３４５６７８",
            "12345678",
        ] {
            assert!(mentions(t, &n), "{t}");
        }
        for t in ["DPO-2026-117", "asked on the call of 2026-03-01", ""] {
            assert!(!mentions(t, &n), "{t}");
        }
    }

    #[test]
    fn add_check_lift_and_dial() {
        let d = tempfile::tempdir().unwrap();
        let r = open(d.path());
        let n = r.normalize(PHONE).unwrap();
        let same = r.normalize("+86 138-1234-5678").unwrap();
        assert!(r.may_dial(&n).unwrap());
        assert_eq!(r.check_suppression(&n, &CLI).unwrap(), None);

        let a = r
            .suppress(
                &n,
                SuppressionSource::CustomerRequest,
                Some("asked on the call"),
                &CLI,
            )
            .unwrap();
        assert!(a.added);
        assert_eq!(a.subject, r.subject_key(&n));
        // Idempotent, however the number is written; the first entry stays.
        let b = r
            .suppress(&same, SuppressionSource::Operator, None, &CLI)
            .unwrap();
        assert!(!b.added);
        assert_eq!(b.entry, a.entry);
        assert_eq!(b.entry.source, SuppressionSource::CustomerRequest);
        assert!(r.is_suppressed(&n).unwrap());
        assert!(!r.may_dial(&same).unwrap());
        assert!(matches!(
            r.ensure_subject(&n),
            Err(RecordsError::Suppressed)
        ));
        assert_eq!(
            r.check_suppression(&same, &CLI).unwrap().map(|s| s.source),
            Some(SuppressionSource::CustomerRequest)
        );
        let counts = r.suppression_counts().unwrap();
        assert_eq!(counts.len(), 4);
        assert!(counts.contains(&(SuppressionSource::CustomerRequest, 1)));
        assert!(counts.contains(&(SuppressionSource::Erasure, 0)));

        // Consent is required to lift; then the number may be dialled again.
        for bad in ["", "   ", "a\nb"] {
            assert!(matches!(
                r.lift_suppression(&n, bad, &CLI),
                Err(RecordsError::Invalid(_))
            ));
        }
        assert!(matches!(
            r.lift_suppression(&n, &"x".repeat(129), &CLI),
            Err(RecordsError::Invalid(_))
        ));
        let lifted = r
            .lift_suppression(&n, "CONSENT-2026-0042", &CLI)
            .unwrap()
            .unwrap();
        assert_eq!(lifted.source, SuppressionSource::CustomerRequest);
        assert!(r.may_dial(&n).unwrap());
        assert_eq!(
            r.lift_suppression(&n, "CONSENT-2026-0042", &CLI).unwrap(),
            None
        );
        r.ensure_subject(&n).unwrap();

        // Everything is audited under the subject hash, never the number.
        let log = audit(&r);
        let object = format!("subject:{}", r.subject_key(&n).to_hex());
        let actions: Vec<(&str, &str)> = log
            .iter()
            .map(|(a, _, res, _)| (a.as_str(), res.as_str()))
            .collect();
        assert_eq!(
            actions,
            [
                ("suppression.check", "ok"),
                ("suppression.add", "ok"),
                ("suppression.add", "ok"),
                ("suppression.check", "ok"),
                ("suppression.lift", "ok"),
                ("suppression.lift", "failed"),
            ]
        );
        for (_, o, _, detail) in &log {
            assert_eq!(o.as_deref(), Some(object.as_str()));
            assert!(!detail.contains("1381234") && !detail.contains("12345678"));
        }
        assert!(log[4].3.contains("CONSENT-2026-0042"));
        assert!(log[2].3.contains("\"added\":false"));
        r.store().clone().close();
    }

    #[test]
    fn reason_must_not_hold_the_number() {
        let d = tempfile::tempdir().unwrap();
        let r = open(d.path());
        let n = r.normalize(PHONE).unwrap();
        for bad in ["customer 13812345678 asked", "x\u{7}", &"y".repeat(501)] {
            assert!(
                matches!(
                    r.suppress(&n, SuppressionSource::Operator, Some(bad), &CLI),
                    Err(RecordsError::Invalid(_))
                ),
                "{bad}"
            );
        }
        assert!(r.may_dial(&n).unwrap());
        assert!(matches!(
            r.lift_suppression(&n, "consent for 138 1234 5678", &CLI),
            Err(RecordsError::Invalid(_))
        ));
        r.store().clone().close();
    }

    #[test]
    fn lifting_an_erasure_rekeys_and_old_files_stay_undecryptable() {
        let d = tempfile::tempdir().unwrap();
        let r = open(d.path());
        let n = r.normalize(PHONE).unwrap();
        let s = r.ensure_subject(&n).unwrap();
        let old_key = DataKey::from_parts(s.data_key().id().to_owned(), *s.data_key().expose());
        let call = r.start_call(&s, None).unwrap();
        let mut rec = r.start_recording(&s, call).unwrap();
        rec.append_frame(&[1; 160], &[2; 160]).unwrap();
        let old_id = rec.id();
        rec.finish().unwrap();
        let row = r
            .store()
            .read(move |c| crate::store::calls::recording(c, old_id))
            .unwrap()
            .unwrap();
        // A file backup taken before the erasure.
        let backup = d.path().join("backup.vcv");
        std::fs::copy(d.path().join(&row.path), &backup).unwrap();
        let file_id: [u8; 16] = row.file_id.clone().unwrap().try_into().unwrap();
        drop(s);

        r.erase(&super::super::ErasureRequest {
            target: super::super::ErasureTarget::Phone(n.clone()),
            ticket: "DPO-1".into(),
            reason: "customer request".into(),
            requested_by: "cli".into(),
            role: None,
            source: "cli",
        })
        .unwrap();
        assert_eq!(
            r.suppression(&n).unwrap().map(|s| s.source),
            Some(SuppressionSource::Erasure)
        );
        let lifted = r.lift_suppression(&n, "CONSENT-7", &CLI).unwrap().unwrap();
        assert_eq!(lifted.source, SuppressionSource::Erasure);
        // The lift is recorded as lifting the suppression of an erased subject.
        let log = audit(&r);
        assert!(
            log.last()
                .unwrap()
                .3
                .contains("\"subject_key_destroyed\":true")
        );
        // Still shredded: nothing came back.
        let tomb = r
            .store()
            .read({
                let h = r.subject_key(&n).0;
                move |c| subjects::by_hash(c, &h)
            })
            .unwrap()
            .unwrap();
        assert!(tomb.wrapped_key.is_none() && tomb.phone_enc.is_none());
        assert!(matches!(
            r.open_playback(old_id),
            Err(RecordsError::NotFound(_))
        ));

        // The next call makes a fresh data key on the same subject row.
        let fresh = r.ensure_subject(&n).unwrap();
        assert_eq!(fresh.id, tomb.id);
        assert_ne!(fresh.data_key().id(), old_key.id());
        assert_ne!(fresh.data_key().expose(), old_key.expose());
        r.start_call(&fresh, None).unwrap();

        // The backup copy of the old file does not open with the new key — neither as it is
        // (key id binding) nor with the header's key id forced (authentication).
        let expect = Expected {
            subject: fresh.key.0,
            file_id: Some(file_id),
            content_type: ContentType::CallAudio,
        };
        let header = read_header(&mut std::fs::File::open(&backup).unwrap()).unwrap();
        assert!(FileCipher::open(fresh.data_key(), &header, &expect).is_err());
        let forged = DataKey::from_parts(old_key.id().to_owned(), *fresh.data_key().expose());
        assert!(FileCipher::open(&forged, &header, &expect).is_err());
        // The old key would have opened it: the file is intact, only its key is gone.
        assert!(FileCipher::open(&old_key, &header, &expect).is_ok());
        drop(fresh);
        r.store().clone().close();
    }

    #[test]
    fn lift_is_refused_while_an_erasure_is_unfinished() {
        let d = tempfile::tempdir().unwrap();
        let r = open(d.path());
        let n = r.normalize(PHONE).unwrap();
        drop(r.ensure_subject(&n).unwrap());
        let id = r
            .file_erasure(&super::super::ErasureRequest {
                target: super::super::ErasureTarget::Phone(n.clone()),
                ticket: "DPO-2".into(),
                reason: "customer request".into(),
                requested_by: "cli".into(),
                role: None,
                source: "cli",
            })
            .unwrap();
        r.erasure_step(id).unwrap();
        assert!(!r.may_dial(&n).unwrap());
        assert!(matches!(
            r.lift_suppression(&n, "CONSENT-8", &CLI),
            Err(RecordsError::ErasureInProgress)
        ));
        r.resume_erasures().unwrap();
        assert!(r.lift_suppression(&n, "CONSENT-8", &CLI).unwrap().is_some());
        r.store().clone().close();
    }
}
