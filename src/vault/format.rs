//! The chunked AEAD file format of the vault, version 1 (specified for auditors in
//! docs/vault.md). Pure: bytes in, bytes out; the streaming readers and writers are in
//! [`super::stream`].
//!
//! ```text
//! header  magic "VCVAULT\0" · version 1 · content type · header length · file id (16) ·
//!         subject hash (32) · key id length · key id · created_at_ms · header tag (16)
//! chunk i u32 length L · AES-256-GCM(file key, nonce(i, last), plaintext, aad = header) (L bytes)
//! ```
//! The file key is HKDF-SHA-256 of the subject's data key with the file id as salt and the
//! content type and subject hash in the info, so every file has its own key and a chunk moved
//! from another file (of the same or another subject) does not authenticate. Nonces are derived
//! from the chunk index and a final-chunk flag, so dropping, reordering or truncating chunks is
//! detected, and the header is authenticated by its own tag and as the AAD of every chunk.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::hkdf;
use zeroize::Zeroizing;

use super::keys::DataKey;

/// First eight bytes of every vault file.
pub const MAGIC: [u8; 8] = *b"VCVAULT\0";
/// The format version this code writes and reads.
pub const VERSION: u8 = 1;
/// AES-GCM tag length.
pub const TAG_LEN: usize = 16;
/// Largest plaintext in one chunk (1 MiB); readers refuse longer chunks before allocating.
pub const MAX_CHUNK_PLAINTEXT: usize = 1 << 20;
/// Longest key id.
pub const MAX_KEY_ID_LEN: usize = 64;
/// Bytes of the fixed part of the header before the key id.
const FIXED_BEFORE_KEY_ID: usize = 8 + 1 + 1 + 2 + 16 + 32 + 1;
/// HKDF info prefix for file keys.
const FILE_KEY_INFO: &[u8] = b"vaultcall-file-v1";

/// Nonce kinds (first byte of the nonce).
const NONCE_CHUNK: u8 = 0x00;
const NONCE_FINAL: u8 = 0x01;
const NONCE_HEADER: u8 = 0x02;

/// What a file holds; fixes how its plaintext is interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContentType {
    /// Call recording: signed 16-bit little-endian PCM, 8 kHz, 2 channels interleaved
    /// (left = customer, right = robot).
    CallAudio,
    /// Call transcript: UTF-8 JSON Lines, one turn per line (and per chunk).
    Transcript,
    /// A cached, personalised prompt: signed 16-bit little-endian PCM, 8 kHz, mono.
    PromptAudio,
}

impl ContentType {
    /// The byte stored in the header.
    pub fn code(self) -> u8 {
        match self {
            Self::CallAudio => 1,
            Self::Transcript => 2,
            Self::PromptAudio => 3,
        }
    }

    /// From the header byte.
    pub fn from_code(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::CallAudio),
            2 => Some(Self::Transcript),
            3 => Some(Self::PromptAudio),
            _ => None,
        }
    }

    /// File name prefix in the subject's shard directory.
    pub fn file_prefix(self) -> &'static str {
        match self {
            Self::CallAudio => "rec",
            Self::Transcript => "txt",
            Self::PromptAudio => "prm",
        }
    }
}

/// Why a vault file (or a part of one) was refused. Every variant but `Io` means the bytes are
/// not what vaultcall wrote: corruption or tampering.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// Reading or writing the underlying file failed.
    #[error("vault file I/O: {0}")]
    Io(#[from] std::io::Error),
    /// Not a vault file (magic) or a version this build does not read.
    #[error("not a vault file of a supported version")]
    NotVaultFile,
    /// The header is shorter than it says, or a field is out of range.
    #[error("malformed header: {0}")]
    MalformedHeader(&'static str),
    /// The header names a different subject, file, key or content type than expected.
    #[error("the file is bound to a different {0} than the one it was opened for")]
    Binding(&'static str),
    /// The header tag does not authenticate (header edited, or wrong key).
    #[error("header authentication failed (edited header or wrong key)")]
    HeaderTag,
    /// A chunk does not authenticate at its position: flipped bits, chunks dropped, reordered
    /// or taken from another file.
    #[error("chunk {index} failed authentication (modified, moved or from another file)")]
    Chunk {
        /// Position of the chunk (0-based).
        index: u64,
    },
    /// A chunk length field is out of range.
    #[error("chunk {index} has an invalid length")]
    ChunkLength {
        /// Position of the chunk.
        index: u64,
    },
    /// The file ends without a final chunk although it was finished.
    #[error("file truncated after {complete_chunks} complete chunks (no final chunk)")]
    Truncated {
        /// Chunks that did authenticate.
        complete_chunks: u64,
    },
    /// Bytes follow the final chunk.
    #[error("data after the final chunk")]
    TrailingData,
    /// Plaintext too long for one chunk (our own misuse).
    #[error("chunk plaintext longer than {MAX_CHUNK_PLAINTEXT} bytes")]
    ChunkTooLong,
    /// The sealing primitive failed (cannot happen with valid lengths).
    #[error("AEAD sealing failed")]
    Seal,
}

/// The header fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// What the file holds.
    pub content_type: ContentType,
    /// Random per file; HKDF salt of the file key and part of the file name.
    pub file_id: [u8; 16],
    /// The data subject's keyed hash.
    pub subject: [u8; 32],
    /// Id of the subject's data key.
    pub key_id: String,
    /// When the file was created (ms since the Unix epoch).
    pub created_at_ms: i64,
}

impl Header {
    /// Length of the encoded header, tag included.
    pub fn encoded_len(&self) -> usize {
        FIXED_BEFORE_KEY_ID + self.key_id.len() + 8 + TAG_LEN
    }

    fn encode_untagged(&self) -> Result<Vec<u8>, FormatError> {
        if self.key_id.is_empty() || self.key_id.len() > MAX_KEY_ID_LEN || !self.key_id.is_ascii() {
            return Err(FormatError::MalformedHeader("key id"));
        }
        let total = self.encoded_len();
        let mut b = Vec::with_capacity(total);
        b.extend_from_slice(&MAGIC);
        b.push(VERSION);
        b.push(self.content_type.code());
        b.extend_from_slice(&(total as u16).to_be_bytes());
        b.extend_from_slice(&self.file_id);
        b.extend_from_slice(&self.subject);
        b.push(self.key_id.len() as u8);
        b.extend_from_slice(self.key_id.as_bytes());
        b.extend_from_slice(&self.created_at_ms.to_be_bytes());
        Ok(b)
    }

    /// How many header bytes to read, from the first 12 bytes of a file.
    pub fn declared_len(prefix: &[u8; 12]) -> Result<usize, FormatError> {
        if prefix[..8] != MAGIC || prefix[8] != VERSION {
            return Err(FormatError::NotVaultFile);
        }
        let len = usize::from(u16::from_be_bytes([prefix[10], prefix[11]]));
        let min = FIXED_BEFORE_KEY_ID + 1 + 8 + TAG_LEN;
        let max = FIXED_BEFORE_KEY_ID + MAX_KEY_ID_LEN + 8 + TAG_LEN;
        if !(min..=max).contains(&len) {
            return Err(FormatError::MalformedHeader("header length"));
        }
        Ok(len)
    }

    /// Parses a complete header (tag not yet checked; see [`FileCipher::open`]).
    pub fn parse(bytes: &[u8]) -> Result<Self, FormatError> {
        let prefix: &[u8; 12] = bytes
            .get(..12)
            .and_then(|p| p.try_into().ok())
            .ok_or(FormatError::NotVaultFile)?;
        let len = Self::declared_len(prefix)?;
        if bytes.len() != len {
            return Err(FormatError::MalformedHeader("header length"));
        }
        let content_type =
            ContentType::from_code(bytes[9]).ok_or(FormatError::MalformedHeader("content type"))?;
        let mut file_id = [0u8; 16];
        file_id.copy_from_slice(&bytes[12..28]);
        let mut subject = [0u8; 32];
        subject.copy_from_slice(&bytes[28..60]);
        let k = usize::from(bytes[60]);
        if k == 0 || k > MAX_KEY_ID_LEN || FIXED_BEFORE_KEY_ID + k + 8 + TAG_LEN != len {
            return Err(FormatError::MalformedHeader("key id length"));
        }
        let key_id = std::str::from_utf8(&bytes[61..61 + k])
            .ok()
            .filter(|s| s.is_ascii())
            .ok_or(FormatError::MalformedHeader("key id"))?
            .to_owned();
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&bytes[61 + k..69 + k]);
        Ok(Self {
            content_type,
            file_id,
            subject,
            key_id,
            created_at_ms: i64::from_be_bytes(ts),
        })
    }
}

/// The 12-byte nonce of chunk `index` (or of the header tag).
pub fn nonce(kind: u8, index: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[0] = kind;
    n[4..].copy_from_slice(&index.to_be_bytes());
    n
}

struct Len32;
impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

/// The per-file key: HKDF-SHA-256(ikm = data key, salt = file id,
/// info = "vaultcall-file-v1" ‖ content type ‖ subject hash).
pub fn file_key(
    data_key: &DataKey,
    file_id: &[u8; 16],
    content_type: ContentType,
    subject: &[u8; 32],
) -> Zeroizing<[u8; 32]> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, file_id).extract(data_key.expose());
    let ct = [content_type.code()];
    let info: [&[u8]; 3] = [FILE_KEY_INFO, &ct, subject];
    let mut out = Zeroizing::new([0u8; 32]);
    prk.expand(&info, Len32)
        .and_then(|okm| okm.fill(&mut out[..]))
        .expect("32-byte HKDF output is always valid");
    out
}

/// Seals and opens the chunks of one file. Holds the file key inside aws-lc, which wipes it
/// when the cipher is dropped.
pub struct FileCipher {
    key: LessSafeKey,
    header: Vec<u8>,
    parsed: Header,
}

impl std::fmt::Debug for FileCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileCipher")
            .field("content_type", &self.parsed.content_type)
            .finish_non_exhaustive()
    }
}

fn aead_key(bytes: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, bytes).expect("a 32-byte key is valid for AES-256-GCM"),
    )
}

impl FileCipher {
    /// A cipher for a new file: encodes the header and computes its tag.
    pub fn create(data_key: &DataKey, header: Header) -> Result<Self, FormatError> {
        if header.key_id != data_key.id() {
            return Err(FormatError::Binding("key"));
        }
        let fk = file_key(
            data_key,
            &header.file_id,
            header.content_type,
            &header.subject,
        );
        let key = aead_key(&fk);
        let mut bytes = header.encode_untagged()?;
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce(NONCE_HEADER, 0)),
                Aad::from(&bytes[..]),
                &mut [],
            )
            .map_err(|_| FormatError::Seal)?;
        bytes.extend_from_slice(tag.as_ref());
        Ok(Self {
            key,
            header: bytes,
            parsed: header,
        })
    }

    /// Checks a parsed header against what the caller expects (from the database), derives the
    /// file key and verifies the header tag.
    pub fn open(
        data_key: &DataKey,
        header_bytes: &[u8],
        expect: &Expected,
    ) -> Result<Self, FormatError> {
        let h = Header::parse(header_bytes)?;
        if h.subject != expect.subject {
            return Err(FormatError::Binding("subject"));
        }
        if let Some(fid) = expect.file_id
            && h.file_id != fid
        {
            return Err(FormatError::Binding("file"));
        }
        if h.content_type != expect.content_type {
            return Err(FormatError::Binding("content type"));
        }
        if h.key_id != data_key.id() {
            return Err(FormatError::Binding("key"));
        }
        let fk = file_key(data_key, &h.file_id, h.content_type, &h.subject);
        let key = aead_key(&fk);
        let split = header_bytes.len() - TAG_LEN;
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&header_bytes[split..]);
        key.open_in_place(
            Nonce::assume_unique_for_key(nonce(NONCE_HEADER, 0)),
            Aad::from(&header_bytes[..split]),
            &mut tag,
        )
        .map_err(|_| FormatError::HeaderTag)?;
        Ok(Self {
            key,
            header: header_bytes.to_vec(),
            parsed: h,
        })
    }

    /// The encoded header, tag included (written first; the AAD of every chunk).
    pub fn header_bytes(&self) -> &[u8] {
        &self.header
    }

    /// The header fields.
    pub fn header(&self) -> &Header {
        &self.parsed
    }

    /// Encrypts `buf` in place (plaintext in, ciphertext ‖ tag out) as chunk `index`.
    pub fn seal_chunk(&self, index: u64, last: bool, buf: &mut Vec<u8>) -> Result<(), FormatError> {
        if buf.len() > MAX_CHUNK_PLAINTEXT {
            return Err(FormatError::ChunkTooLong);
        }
        let kind = if last { NONCE_FINAL } else { NONCE_CHUNK };
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce(kind, index)),
                Aad::from(&self.header[..]),
                buf,
            )
            .map_err(|_| FormatError::Seal)
    }

    /// Decrypts chunk `index` (ciphertext ‖ tag) in place; on success `buf` holds the
    /// plaintext. On failure `buf` is left unusable.
    pub fn open_chunk(&self, index: u64, last: bool, buf: &mut Vec<u8>) -> Result<(), FormatError> {
        let kind = if last { NONCE_FINAL } else { NONCE_CHUNK };
        let n = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce(kind, index)),
                Aad::from(&self.header[..]),
                &mut buf[..],
            )
            .map_err(|_| FormatError::Chunk { index })?
            .len();
        buf.truncate(n);
        Ok(())
    }
}

/// What the database says a file must be; checked against its header before decrypting.
#[derive(Debug, Clone)]
pub struct Expected {
    /// The subject the file belongs to.
    pub subject: [u8; 32],
    /// The file id recorded for it (None only for files found by walking a directory).
    pub file_id: Option<[u8; 16]>,
    /// The content type recorded for it.
    pub content_type: ContentType,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dk(id: &str, b: u8) -> DataKey {
        DataKey::from_parts(id.to_owned(), [b; 32])
    }

    fn header(subject: u8) -> Header {
        Header {
            content_type: ContentType::CallAudio,
            file_id: [9; 16],
            subject: [subject; 32],
            key_id: "dk-test".into(),
            created_at_ms: 1_700_000_000_000,
        }
    }

    fn expect(h: &Header) -> Expected {
        Expected {
            subject: h.subject,
            file_id: Some(h.file_id),
            content_type: h.content_type,
        }
    }

    #[test]
    fn header_round_trips_and_length_is_declared() {
        let h = header(1);
        let c = FileCipher::create(&dk("dk-test", 1), h.clone()).unwrap();
        let bytes = c.header_bytes();
        assert_eq!(bytes.len(), h.encoded_len());
        let prefix: [u8; 12] = bytes[..12].try_into().unwrap();
        assert_eq!(Header::declared_len(&prefix).unwrap(), bytes.len());
        assert_eq!(Header::parse(bytes).unwrap(), h);
        let opened = FileCipher::open(&dk("dk-test", 1), bytes, &expect(&h)).unwrap();
        assert_eq!(opened.header(), &h);
    }

    #[test]
    fn chunks_round_trip_only_at_their_position_and_flag() {
        let k = dk("dk-test", 1);
        let c = FileCipher::create(&k, header(1)).unwrap();
        let mut buf = b"hello".to_vec();
        c.seal_chunk(3, false, &mut buf).unwrap();
        assert_eq!(buf.len(), 5 + TAG_LEN);
        for (i, last) in [(2, false), (4, false), (3, true)] {
            let mut b = buf.clone();
            assert!(c.open_chunk(i, last, &mut b).is_err(), "{i} {last}");
        }
        c.open_chunk(3, false, &mut buf).unwrap();
        assert_eq!(buf, b"hello");
    }

    #[test]
    fn every_header_byte_is_protected() {
        let k = dk("dk-test", 1);
        let h = header(1);
        let c = FileCipher::create(&k, h.clone()).unwrap();
        for i in 0..c.header_bytes().len() {
            let mut b = c.header_bytes().to_vec();
            b[i] ^= 0x01;
            assert!(
                FileCipher::open(&k, &b, &expect(&h)).is_err(),
                "edit at header byte {i} not detected"
            );
        }
    }

    #[test]
    fn wrong_subject_file_key_or_type_is_refused() {
        let h = header(1);
        let c = FileCipher::create(&dk("dk-test", 1), h.clone()).unwrap();
        let b = c.header_bytes();
        let mut e = expect(&h);
        e.subject = [2; 32];
        assert!(matches!(
            FileCipher::open(&dk("dk-test", 1), b, &e),
            Err(FormatError::Binding("subject"))
        ));
        let mut e = expect(&h);
        e.file_id = Some([8; 16]);
        assert!(matches!(
            FileCipher::open(&dk("dk-test", 1), b, &e),
            Err(FormatError::Binding("file"))
        ));
        let mut e = expect(&h);
        e.content_type = ContentType::Transcript;
        assert!(FileCipher::open(&dk("dk-test", 1), b, &e).is_err());
        // Same key id, different key bytes: the tag does not verify.
        assert!(matches!(
            FileCipher::open(&dk("dk-test", 2), b, &expect(&h)),
            Err(FormatError::HeaderTag)
        ));
        assert!(matches!(
            FileCipher::open(&dk("dk-other", 1), b, &expect(&h)),
            Err(FormatError::Binding("key"))
        ));
    }

    #[test]
    fn file_keys_differ_per_file_subject_and_type() {
        let k = dk("dk-test", 1);
        let a = file_key(&k, &[1; 16], ContentType::CallAudio, &[1; 32]);
        assert_ne!(
            *a,
            *file_key(&k, &[2; 16], ContentType::CallAudio, &[1; 32])
        );
        assert_ne!(
            *a,
            *file_key(&k, &[1; 16], ContentType::Transcript, &[1; 32])
        );
        assert_ne!(
            *a,
            *file_key(&k, &[1; 16], ContentType::CallAudio, &[2; 32])
        );
    }

    #[test]
    fn nonce_layout() {
        assert_eq!(
            nonce(NONCE_FINAL, 0x0102),
            [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2]
        );
    }
}
