//! meetbot: a meeting-bot worker that joins a meeting, transcribes every
//! participant, keeps audio only as an encrypted ephemeral recording, commits
//! the transcript and destroys the recording with a hash-chained receipt.
//!
//! See ARCHITECTURE.md for the map.
// Only `secmem` (mlock/madvise/mmap for secret buffers) may use `unsafe`.
#![deny(unsafe_code)]

pub mod audit;
pub mod audit_chain;
pub mod azure;
pub mod bench;
pub mod benchcmd;
pub mod bot;
pub mod cli;
pub mod config;
pub mod core;
pub mod fleet;
pub mod netguard;
pub mod pii;
pub mod platform;
pub mod recording;
pub mod secmem;
pub mod status;
pub mod store;
pub mod stt;
pub mod transcript;
pub mod webhook;
