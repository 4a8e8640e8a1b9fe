//! Janus VideoRoom platform (media side for now).

pub mod jitter;
pub mod transport;
