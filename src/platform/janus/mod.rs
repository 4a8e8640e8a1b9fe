//! Janus VideoRoom platform: `janus+ws://host:port/<room>?pin=…` and `janus+wss://…`.
//!
//! - [`url`] parses and validates the meeting URL.
//! - [`signalling`] is the sans-IO VideoRoom state machine (session, publisher handle that
//!   joins without publishing, one subscriber handle for every audio stream, renegotiation,
//!   keepalives, timeouts, error mapping).
//! - [`ws`] is the thin tokio shell: WebSocket (`janus-protocol`, rustls for `wss`) plus timer
//!   plus a command channel driving the state machine.
//! - [`transport`] is the receive-only WebRTC peer (webrtc-rs behind the `MediaTransport`
//!   seam): answers Janus's offers and delivers RTP per mid.
//! - [`candidates`] is the sans-IO filter that passes the offer's ICE candidates through the
//!   URL guard before webrtc-rs sees them.
//! - [`jitter`] is the sans-IO reorder buffer that maps RTP onto the meeting clock.
//!
//! - [`platform`] joins them into [`platform::JanusPlatform`], the [`crate::platform::MeetingPlatform`]
//!   that [`crate::platform::open`] returns for `janus+ws:` and `janus+wss:` URLs.

pub mod candidates;
pub mod jitter;
pub mod platform;
pub mod signalling;
pub mod transport;
pub mod url;
pub mod ws;
