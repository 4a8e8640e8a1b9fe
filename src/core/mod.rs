//! The sans-IO core: no sockets, files, runtime or clock. Time is an input.

pub mod audio;
pub mod backlog;
pub mod lifecycle;
pub mod media;
/// A 48→16 kHz decimator; the live path decodes Opus at 16 kHz directly, so only
/// tests that turn 48 kHz audio into VAD input use it.
#[cfg(test)]
pub(crate) mod resample;
pub mod vad;
