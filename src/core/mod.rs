//! The sans-IO core: no sockets, files, runtime or clock. Time is an input.

pub mod audio;
pub mod lifecycle;
pub mod media;
pub mod resample;
pub mod vad;
