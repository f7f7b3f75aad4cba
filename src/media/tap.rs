//! Taps: the decoded 8 kHz PCM of both directions, frame by frame, for consumers (speech
//! recognition, recording), and the recording sink.
//!
//! The session produces one [`TapFrame`] per frame tick holding what was played out from the
//! customer (after the jitter buffer) and what the robot sent in that same tick, so both
//! directions are aligned by construction. Delivery to consumers is the shell's job
//! (`runtime::rtp_io`): a bounded drop-oldest queue per session, counted, so that a slow
//! consumer loses its oldest frames and never holds up the media path.
//!
//! Recording goes through the [`RecordingSink`] trait. [`WavSink`] writes a stereo 16-bit WAV
//! (left customer, right robot); the vault issue replaces it with an encrypted sink behind the
//! same trait. Frames that never reached the sink (dropped by a lagging queue) are filled with
//! silence from their frame index, so the recording keeps real time.

use std::io::{Seek, SeekFrom, Write};

/// Sample rate of every tap and recording.
pub const SAMPLE_RATE: u32 = 8000;
/// Longest gap a sink fills with silence in one go (60 s); a larger jump in frame index is
/// treated as a restart of the index, not as a minute of missing audio.
pub const MAX_GAP_FILL_FRAMES: u64 = 3000;

/// One frame tick of both directions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapFrame {
    /// Frame index on the session's clock (0 at the session start; one per ptime).
    pub index: u64,
    /// What the customer said, as played out of the jitter buffer (silence when nothing came).
    pub customer: Vec<i16>,
    /// What the robot sent (silence between prompts and during DTMF events).
    pub robot: Vec<i16>,
    /// Whether `customer` holds received audio (not concealment or silence).
    pub customer_audio: bool,
}

/// Why a sink failed.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Writing the underlying file failed.
    #[error("recording write failed: {0}")]
    Io(#[from] std::io::Error),
    /// The recording passed the 4 GiB a WAV header can describe.
    #[error("recording exceeds the WAV size limit")]
    TooLarge,
    /// `finish` was called twice or a frame came after it (our misuse).
    #[error("recording already finished")]
    Finished,
}

/// What a finished recording holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct RecordingSummary {
    /// Samples per channel.
    pub samples: u64,
    /// Frames written from taps.
    pub frames: u64,
    /// Frames filled with silence because they never arrived.
    pub gap_frames: u64,
}

impl RecordingSummary {
    /// Length in milliseconds.
    pub fn duration_ms(&self) -> u64 {
        self.samples * 1000 / u64::from(SAMPLE_RATE)
    }
}

/// Where a call's recording goes. Implementations must not assume frames arrive without gaps.
pub trait RecordingSink: Send {
    /// Appends one frame.
    fn write_frame(&mut self, frame: &TapFrame) -> Result<(), SinkError>;
    /// Completes the recording (headers, flush); no frame may follow.
    fn finish(&mut self) -> Result<RecordingSummary, SinkError>;
}

const WAV_HEADER_LEN: u64 = 44;

/// A stereo 16-bit PCM WAV writer: left channel customer, right channel robot.
#[derive(Debug)]
pub struct WavSink<W: Write + Seek + Send> {
    out: W,
    next_index: Option<u64>,
    summary: RecordingSummary,
    finished: bool,
    buf: Vec<u8>,
}

impl<W: Write + Seek + Send> WavSink<W> {
    /// Starts a recording: writes a header with placeholder sizes.
    pub fn new(mut out: W) -> Result<Self, SinkError> {
        out.write_all(&wav_header(0))?;
        Ok(Self {
            out,
            next_index: None,
            summary: RecordingSummary::default(),
            finished: false,
            buf: Vec::with_capacity(4 * 480),
        })
    }

    /// The writer back (after `finish`), for tests and for closing files explicitly.
    pub fn into_inner(self) -> W {
        self.out
    }

    fn write_stereo(&mut self, left: &[i16], right: &[i16]) -> Result<(), SinkError> {
        let n = left.len().max(right.len());
        let bytes = (self.summary.samples + n as u64) * 4;
        if bytes > u64::from(u32::MAX) - WAV_HEADER_LEN {
            return Err(SinkError::TooLarge);
        }
        self.buf.clear();
        for i in 0..n {
            let l = left.get(i).copied().unwrap_or(0);
            let r = right.get(i).copied().unwrap_or(0);
            self.buf.extend_from_slice(&l.to_le_bytes());
            self.buf.extend_from_slice(&r.to_le_bytes());
        }
        self.out.write_all(&self.buf)?;
        self.summary.samples += n as u64;
        Ok(())
    }
}

impl<W: Write + Seek + Send> RecordingSink for WavSink<W> {
    fn write_frame(&mut self, frame: &TapFrame) -> Result<(), SinkError> {
        if self.finished {
            return Err(SinkError::Finished);
        }
        if let Some(next) = self.next_index {
            if frame.index < next {
                return Ok(()); // already written (a repeat); never rewind the timeline
            }
            let gap = frame.index - next;
            if gap <= MAX_GAP_FILL_FRAMES {
                let silence = vec![0i16; frame.customer.len().max(frame.robot.len())];
                for _ in 0..gap {
                    self.write_stereo(&silence, &silence)?;
                    self.summary.gap_frames += 1;
                }
            }
        }
        self.write_stereo(&frame.customer, &frame.robot)?;
        self.summary.frames += 1;
        self.next_index = Some(frame.index + 1);
        Ok(())
    }

    fn finish(&mut self) -> Result<RecordingSummary, SinkError> {
        if self.finished {
            return Err(SinkError::Finished);
        }
        self.finished = true;
        let data = u32::try_from(self.summary.samples * 4).map_err(|_| SinkError::TooLarge)?;
        self.out.seek(SeekFrom::Start(0))?;
        self.out.write_all(&wav_header(data))?;
        self.out.seek(SeekFrom::End(0))?;
        self.out.flush()?;
        Ok(self.summary)
    }
}

/// The 44-octet RIFF/WAVE header of a stereo 16-bit 8 kHz PCM file with `data_len` octets.
fn wav_header(data_len: u32) -> [u8; 44] {
    crate::wav::header(SAMPLE_RATE, 2, data_len)
}

/// Reads back a stereo 16-bit WAV written by [`WavSink`]: `(left, right)`. For tests and tools;
/// accepts only the exact layout this module writes.
pub fn read_wav_stereo(bytes: &[u8]) -> Option<(Vec<i16>, Vec<i16>)> {
    let h = bytes.get(..44)?;
    if &h[0..4] != b"RIFF" || &h[8..12] != b"WAVE" || &h[36..40] != b"data" {
        return None;
    }
    if u16::from_le_bytes([h[22], h[23]]) != 2 || u16::from_le_bytes([h[34], h[35]]) != 16 {
        return None;
    }
    let len = u32::from_le_bytes([h[40], h[41], h[42], h[43]]) as usize;
    let data = bytes.get(44..44 + len)?;
    let mut l = Vec::with_capacity(len / 4);
    let mut r = Vec::with_capacity(len / 4);
    for c in data.chunks_exact(4) {
        l.push(i16::from_le_bytes([c[0], c[1]]));
        r.push(i16::from_le_bytes([c[2], c[3]]));
    }
    Some((l, r))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn frame(index: u64, c: i16, r: i16) -> TapFrame {
        TapFrame {
            index,
            customer: vec![c; 160],
            robot: vec![r; 160],
            customer_audio: true,
        }
    }

    #[test]
    fn wav_is_stereo_customer_left_robot_right_with_gaps_filled() {
        let mut s = WavSink::new(Cursor::new(Vec::new())).unwrap();
        s.write_frame(&frame(10, 1, -1)).unwrap();
        s.write_frame(&frame(11, 2, -2)).unwrap();
        s.write_frame(&frame(14, 3, -3)).unwrap(); // 12 and 13 were dropped upstream
        s.write_frame(&frame(11, 9, 9)).unwrap(); // a repeat: ignored
        let sum = s.finish().unwrap();
        assert_eq!(
            sum,
            RecordingSummary {
                samples: 5 * 160,
                frames: 3,
                gap_frames: 2
            }
        );
        assert_eq!(sum.duration_ms(), 100);
        assert!(matches!(s.finish(), Err(SinkError::Finished)));
        let bytes = s.into_inner().into_inner();
        assert_eq!(bytes.len(), 44 + 5 * 160 * 4);
        assert_eq!(&bytes[0..4], b"RIFF");
        assert_eq!(
            u32::from_le_bytes(bytes[4..8].try_into().unwrap()),
            36 + 3200
        );
        assert_eq!(u32::from_le_bytes(bytes[24..28].try_into().unwrap()), 8000);
        let (l, r) = read_wav_stereo(&bytes).unwrap();
        assert_eq!(l.len(), 800);
        assert_eq!((l[0], r[0]), (1, -1));
        assert_eq!((l[160], r[160]), (2, -2));
        assert_eq!((l[320], r[479]), (0, 0));
        assert_eq!((l[640], r[799]), (3, -3));
    }

    #[test]
    fn a_wild_index_jump_is_not_filled() {
        let mut s = WavSink::new(Cursor::new(Vec::new())).unwrap();
        s.write_frame(&frame(0, 1, 1)).unwrap();
        s.write_frame(&frame(1_000_000, 1, 1)).unwrap();
        assert_eq!(s.finish().unwrap().samples, 320);
    }
}
