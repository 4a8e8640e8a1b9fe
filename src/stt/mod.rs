//! The speech-to-text seam.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

/// One transcribed stretch, times relative to the start of the audio given.
#[derive(Clone, PartialEq)]
pub struct SttSegment {
    /// Start, ms from the start of the submitted audio.
    pub start_ms: u64,
    /// End, ms from the start of the submitted audio.
    pub end_ms: u64,
    /// Text. Personal data: never logged.
    pub text: String,
}

impl fmt::Debug for SttSegment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SttSegment")
            .field("start_ms", &self.start_ms)
            .field("end_ms", &self.end_ms)
            .field("text", &"<redacted>")
            .finish()
    }
}

/// Why a transcription failed.
#[derive(Debug, thiserror::Error)]
pub enum SttError {
    /// Worth retrying (timeouts, 5xx, 429, connection errors).
    #[error("{0}")]
    Transient(String),
    /// Retrying will not help (bad model, 4xx, bad configuration).
    #[error("{0}")]
    Permanent(String),
}

/// A speech-to-text engine.
#[async_trait]
pub trait SttProvider: Send + Sync {
    /// Provider name for the transcript's `provider` field ("embedded", "openai").
    fn name(&self) -> &str;
    /// Model name for the transcript's `model` field.
    fn model(&self) -> &str;
    /// Transcribes one utterance of 16 kHz mono samples in [-1, 1].
    async fn transcribe(&self, samples: Arc<[f32]>) -> Result<Vec<SttSegment>, SttError>;
}

#[cfg(feature = "whisper")]
pub mod mel;
pub mod openai;
pub mod retry;
pub mod serve;
pub mod text;
pub mod wav;
#[cfg(feature = "whisper")]
pub mod whisper;
