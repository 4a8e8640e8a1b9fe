//! Janus VideoRoom platform: `janus+ws://host:port/<room>?pin=…` and `janus+wss://…`.
//!
//! - [`url`] parses and validates the meeting URL.
//! - [`signalling`] is the sans-IO VideoRoom state machine (session, publisher handle that
//!   joins without publishing, one subscriber handle for every audio stream, renegotiation,
//!   keepalives, timeouts, error mapping).
//! - [`ws`] is the thin tokio shell: WebSocket (`janus-protocol`, rustls for `wss`) plus timer
//!   plus a command channel driving the state machine.

pub mod signalling;
// TODO(integrator): `pub mod transport;` — the webrtc-rs media transport (answer(offer) →
// answer SDP, RTP per mid) lives on another branch.
// pub mod transport;
pub mod url;
pub mod ws;
