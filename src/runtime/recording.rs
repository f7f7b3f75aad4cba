//! The media taps' recording sink that writes through the vault: each 20 ms frame (left
//! customer, right robot) goes into the call's encrypted recording as it is produced, sealed
//! chunk by chunk, so no plaintext copy ever reaches the disk (docs/vault.md).

use crate::media::tap::{RecordingSink, RecordingSummary, SinkError, TapFrame};
use crate::records::LiveRecording;

/// A [`RecordingSink`] over a vault [`LiveRecording`].
#[derive(Debug)]
pub struct VaultSink {
    live: Option<LiveRecording>,
    frames: u64,
    samples: u64,
}

impl VaultSink {
    /// Wraps a started recording.
    pub fn new(live: LiveRecording) -> Self {
        Self {
            live: Some(live),
            frames: 0,
            samples: 0,
        }
    }
}

fn sink_err(e: impl std::fmt::Display) -> SinkError {
    SinkError::Io(std::io::Error::other(e.to_string()))
}

impl RecordingSink for VaultSink {
    fn write_frame(&mut self, frame: &TapFrame) -> Result<(), SinkError> {
        let live = self.live.as_mut().ok_or(SinkError::Finished)?;
        live.append_frame(&frame.customer, &frame.robot)
            .map_err(sink_err)?;
        self.frames += 1;
        self.samples += frame.customer.len() as u64;
        Ok(())
    }

    fn finish(&mut self) -> Result<RecordingSummary, SinkError> {
        let live = self.live.take().ok_or(SinkError::Finished)?;
        live.finish().map_err(sink_err)?;
        Ok(RecordingSummary {
            samples: self.samples,
            frames: self.frames,
            gap_frames: 0,
        })
    }
}
