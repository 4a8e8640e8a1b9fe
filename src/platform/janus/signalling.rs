//! Sans-IO Janus VideoRoom signalling for a listen-only bot.
//!
//! [`JanusSession`] speaks the Janus JSON API (checked against Janus 1.1.2's `janus.c` and
//! `janus_videoroom.c`). It never touches a socket or the clock: the shell feeds it text frames
//! ([`JanusSession::handle_message`]) and time ([`JanusSession::handle_timeout`]), then drains
//! [`JanusSession::poll_output`] and sleeps until [`JanusSession::poll_timeout`]:
//!
//! ```no_run
//! # use std::time::Instant;
//! # use meetbot::platform::janus::signalling::*;
//! # fn io(_: &str) {} fn next_frame() -> String { String::new() }
//! # let cfg: SessionConfig = todo!();
//! let mut s = JanusSession::new(cfg, Instant::now(), rand::random());
//! loop {
//!     while let Some(out) = s.poll_output() {
//!         match out {
//!             SigOutput::Transmit(text) => io(&text),
//!             SigOutput::NeedAnswer(offer) => { /* media answers; then s.answered(offer.offer_id, sdp) */ }
//!             SigOutput::Event(ev) => { /* joined, publishers, fatal, … */ }
//!         }
//!     }
//!     if s.is_closed() { break; }
//!     // select! { frame => s.handle_message(now, &frame), sleep_until(s.poll_timeout()) => s.handle_timeout(now) }
//! #   s.handle_message(Instant::now(), &next_frame());
//! }
//! ```
//!
//! ## Protocol
//!
//! | step | request | reply |
//! |---|---|---|
//! | session | `create` | `success`, `data.id` |
//! | publisher handle | `attach` videoroom | `success`, `data.id` |
//! | join | `join` ptype `publisher`, `display`, `pin` (never publishes) | `joined` + `publishers` |
//! | subscriber handle | `attach` videoroom | `success`, `data.id` |
//! | first feed | `join` ptype `subscriber`, `autoupdate:false`, `streams:[{feed,mid}]` | `attached` + `streams` + offer |
//! | more feeds | `subscribe` `streams:[{feed,mid}]` | `updated` + offer, or `updating` (offer later) |
//! | feed gone | `unsubscribe` `streams:[{feed}]` | `updated` (+ offer) |
//! | answer | `start` + jsep answer | `started` |
//! | keepalive | `keepalive` every `keepalive_interval` | `ack` |
//! | leave | `leave`, `detach` ×2, `destroy` | `success` |
//!
//! The subscriber joins with `autoupdate: false`, so renegotiation happens only in reply to the
//! session's own `subscribe`/`unsubscribe` (Janus sends an unsolicited `updated` + offer when it
//! had postponed one with `updating`). One subscriber request is in flight at a time, one feed
//! per request, so a `428 no such feed` (a publisher that left in the meantime) is attributable.
//! Only **audio** streams are subscribed.
//!
//! ## Invariants
//!
//! - Never panics on input: every field is read defensively, lists are capped, unknown
//!   `janus` types and `videoroom` events are ignored.
//! - Every request has a deadline (`request_timeout`); a missed one is [`FatalKind::RequestTimeout`].
//! - After a terminal event ([`SigEvent::Left`], [`SigEvent::Fatal`], [`SigEvent::Kicked`],
//!   [`SigEvent::RoomDestroyed`]) the session only yields the transmits already queued (a
//!   best-effort `destroy`), then `None`, and [`JanusSession::is_closed`] is true.
//! - Display names are [`Pii`]; the PIN is a [`Secret`] and appears only in the join requests.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use tracing::{debug, info, trace, warn};

use super::url::RoomId;
use crate::pii::{Pii, Secret};

/// Largest accepted signalling message, bytes.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// Largest accepted SDP offer, bytes.
pub const MAX_SDP_BYTES: usize = 256 * 1024;
/// Entries read from any one array in a Janus message (publishers, streams).
pub const MAX_LIST_ENTRIES: usize = 512;
/// Audio streams taken per publisher.
pub const MAX_AUDIO_PER_PUBLISHER: usize = 4;
/// Longest display name kept, characters (longer ones are cut).
pub const MAX_DISPLAY_CHARS: usize = 256;
/// Longest accepted mid or string id, characters.
pub const MAX_ID_CHARS: usize = 128;

/// What the session needs to know up front.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// The bot's display name in the room.
    pub display: Pii<String>,
    /// The room to join.
    pub room: RoomId,
    /// The room's PIN, if any.
    pub pin: Option<Secret<String>>,
    /// How often to send `keepalive` (Janus's default session timeout is 60 s).
    pub keepalive_interval: Duration,
    /// How long any request may wait for its final reply.
    pub request_timeout: Duration,
    /// Most publishers tracked (and subscribed to) at once; further ones are ignored.
    pub max_publishers: usize,
}

impl SessionConfig {
    /// Defaults: keepalive 25 s, request timeout 10 s, 64 publishers.
    pub fn new(display: String, room: RoomId, pin: Option<Secret<String>>) -> SessionConfig {
        SessionConfig {
            display: Pii::new(display),
            room,
            pin,
            keepalive_interval: Duration::from_secs(25),
            request_timeout: Duration::from_secs(10),
            max_publishers: 64,
        }
    }
}

/// A publisher ("feed") id: numeric, or a string in `string_ids` rooms. Echoed back to Janus
/// in the same JSON type it arrived in.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FeedId {
    /// Numeric id.
    Num(u64),
    /// String id.
    Str(String),
}

impl FeedId {
    fn from_json(v: &Value) -> Option<FeedId> {
        match v {
            Value::Number(n) => n.as_u64().filter(|&n| n > 0).map(FeedId::Num),
            Value::String(s) if !s.is_empty() && s.chars().count() <= MAX_ID_CHARS => {
                Some(FeedId::Str(s.clone()))
            }
            _ => None,
        }
    }

    fn to_json(&self) -> Value {
        match self {
            FeedId::Num(n) => Value::from(*n),
            FeedId::Str(s) => Value::from(s.as_str()),
        }
    }
}

impl fmt::Display for FeedId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FeedId::Num(n) => write!(f, "{n}"),
            FeedId::Str(s) => f.write_str(s),
        }
    }
}

/// One received audio stream of the subscription: subscriber-side `mid` ↔ publisher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamInfo {
    /// The mid of the m-line in the subscriber offer (what the media transport sees).
    pub mid: String,
    /// The publisher the stream comes from.
    pub feed_id: FeedId,
    /// The publisher's display name.
    pub display: Pii<String>,
}

/// A JSEP offer from Janus that needs an answer via [`JanusSession::answered`].
#[derive(Clone, PartialEq, Eq)]
pub struct Offer {
    /// Identifies the offer; answering an older one is refused.
    pub offer_id: u64,
    /// The SDP offer (it carries Janus's candidates and `a=end-of-candidates`).
    pub offer_sdp: String,
    /// The active audio streams this offer describes.
    pub streams: Vec<StreamInfo>,
}

impl fmt::Debug for Offer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Offer")
            .field("offer_id", &self.offer_id)
            .field("sdp_bytes", &self.offer_sdp.len())
            .field("streams", &self.streams)
            .finish()
    }
}

/// Why the session cannot go on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FatalKind {
    /// The WebSocket closed or failed.
    ConnectionLost,
    /// Janus timed the session out, or forgot it (458/459, an unexpected `detached`).
    SessionLost,
    /// A request got no final reply within `request_timeout`.
    RequestTimeout,
    /// The room does not exist (426).
    NoSuchRoom,
    /// Wrong PIN or token, or the server requires an API secret (433, 403, 470).
    Unauthorized,
    /// The room is PIN-protected and the URL has no `?pin=` (429 on join).
    PinRequired,
    /// The room has no room for another participant (432).
    RoomFull,
    /// The server does not run the VideoRoom plugin (460) or refuses sessions (472).
    Unavailable,
    /// Janus rejected a request with another error code.
    Rejected,
    /// Janus sent something the protocol does not allow (e.g. a `create` reply without an id).
    Protocol,
}

impl FatalKind {
    /// Stable snake_case name for status output.
    pub fn as_str(self) -> &'static str {
        match self {
            FatalKind::ConnectionLost => "connection_lost",
            FatalKind::SessionLost => "session_lost",
            FatalKind::RequestTimeout => "request_timeout",
            FatalKind::NoSuchRoom => "no_such_room",
            FatalKind::Unauthorized => "unauthorized",
            FatalKind::PinRequired => "pin_required",
            FatalKind::RoomFull => "room_full",
            FatalKind::Unavailable => "unavailable",
            FatalKind::Rejected => "rejected",
            FatalKind::Protocol => "protocol_error",
        }
    }

    /// Whether joining again (after a backoff) may help.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            FatalKind::ConnectionLost
                | FatalKind::SessionLost
                | FatalKind::RequestTimeout
                | FatalKind::RoomFull
                | FatalKind::Unavailable
        )
    }
}

/// Something that happened in the room or to the session.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SigEvent {
    /// The bot is in the room (the publisher-side `joined`). It follows the
    /// [`SigEvent::PublisherJoined`] of everyone already publishing, so the
    /// roster is complete when it arrives.
    Joined,
    /// A publisher is (or already was) in the room.
    PublisherJoined {
        /// Its id.
        feed_id: FeedId,
        /// Its display name.
        display: Pii<String>,
    },
    /// A publisher left (`unpublished`, `leaving`, `kicked`, or it vanished before we could
    /// subscribe).
    PublisherLeft {
        /// Its id.
        feed_id: FeedId,
    },
    /// The subscriber PeerConnection is up (`webrtcup`).
    WebrtcUp,
    /// Janus started or stopped receiving/sending a stream of the subscription (`media`).
    Media {
        /// The subscriber mid, if Janus named it.
        mid: Option<String>,
        /// Whether media flows.
        receiving: bool,
    },
    /// Janus closed the subscriber PeerConnection (`hangup`). Signalling goes on.
    Hangup {
        /// Janus's reason, shortened (e.g. "ICE failed", "DTLS alert").
        reason: String,
    },
    /// The room was destroyed (the meeting ended). Terminal.
    RoomDestroyed,
    /// The bot was kicked out of the room. Terminal.
    Kicked,
    /// [`JanusSession::leave`] finished. Terminal.
    Left,
    /// The session failed. Terminal.
    Fatal {
        /// What kind of failure.
        kind: FatalKind,
        /// A fixed, human-readable reason (no names, URLs or PINs).
        reason: String,
    },
}

/// What the shell must do next.
#[derive(Debug)]
pub enum SigOutput {
    /// Send this text frame on the WebSocket.
    Transmit(String),
    /// Answer this offer with the media transport, then call [`JanusSession::answered`].
    NeedAnswer(Offer),
    /// Report this.
    Event(SigEvent),
}

/// Why [`JanusSession::answered`] refused an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// The offer was superseded by a newer one, or already answered.
    #[error("offer {0} is not the pending offer (stale or already answered)")]
    NotPending(u64),
    /// The session is closed or not subscribed.
    #[error("the Janus session is not in a state to take an answer")]
    NotReady,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Req {
    Create,
    AttachPub,
    AttachSub,
    JoinPub,
    JoinSub(FeedId),
    Subscribe(FeedId),
    Unsubscribe,
    Start(u64),
    Keepalive,
    Leave,
    Detach,
    Destroy,
}

impl Req {
    fn name(&self) -> &'static str {
        match self {
            Req::Create => "create",
            Req::AttachPub => "attach (publisher handle)",
            Req::AttachSub => "attach (subscriber handle)",
            Req::JoinPub => "join",
            Req::JoinSub(_) => "join (subscriber)",
            Req::Subscribe(_) => "subscribe",
            Req::Unsubscribe => "unsubscribe",
            Req::Start(_) => "start",
            Req::Keepalive => "keepalive",
            Req::Leave => "leave",
            Req::Detach => "detach",
            Req::Destroy => "destroy",
        }
    }

    fn is_message(&self) -> bool {
        matches!(
            self,
            Req::JoinPub
                | Req::JoinSub(_)
                | Req::Subscribe(_)
                | Req::Unsubscribe
                | Req::Start(_)
                | Req::Leave
        )
    }

    fn is_sub_change(&self) -> bool {
        matches!(self, Req::JoinSub(_) | Req::Subscribe(_) | Req::Unsubscribe)
    }
}

#[derive(Debug)]
struct Pending {
    req: Req,
    deadline: Instant,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Creating,
    AttachingPub,
    Joining,
    Joined,
    Leaving,
    Closed,
}

#[derive(Debug)]
struct Publisher {
    display: Pii<String>,
    audio_mids: BTreeSet<String>,
}

/// The Janus VideoRoom signalling state machine. See the module docs.
pub struct JanusSession {
    cfg: SessionConfig,
    state: State,
    out: VecDeque<SigOutput>,
    txn_prefix: u32,
    txn_counter: u64,
    pending: BTreeMap<String, Pending>,
    session_id: Option<u64>,
    pub_handle: Option<u64>,
    sub_handle: Option<u64>,
    own_id: Option<FeedId>,
    private_id: Option<u64>,
    room_retried_as_string: bool,
    next_keepalive: Option<Instant>,
    leave_deadline: Option<Instant>,
    publishers: BTreeMap<FeedId, Publisher>,
    publishers_capped: bool,
    /// What the subscription asked for, per feed (publisher mids).
    requested: BTreeMap<FeedId, BTreeSet<String>>,
    /// Feeds that left and whose subscription must be dropped with `unsubscribe`.
    to_unsubscribe: BTreeSet<FeedId>,
    sub_joined: bool,
    sub_busy: bool,
    /// Active audio streams of the subscription, by subscriber mid.
    mids: BTreeMap<String, StreamInfo>,
    last_offer_id: u64,
    pending_offer: Option<u64>,
}

impl fmt::Debug for JanusSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JanusSession")
            .field("state", &self.state)
            .field("session_id", &self.session_id)
            .field("publishers", &self.publishers.len())
            .field("streams", &self.mids.len())
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl JanusSession {
    /// Starts a session: the first output is the `create` request. `seed` makes transaction
    /// ids unique across sessions (pass a random number; tests pass a constant).
    pub fn new(cfg: SessionConfig, now: Instant, seed: u64) -> JanusSession {
        let mut s = JanusSession {
            cfg,
            state: State::Creating,
            out: VecDeque::new(),
            txn_prefix: (seed ^ (seed >> 32)) as u32,
            txn_counter: 0,
            pending: BTreeMap::new(),
            session_id: None,
            pub_handle: None,
            sub_handle: None,
            own_id: None,
            private_id: None,
            room_retried_as_string: false,
            next_keepalive: None,
            leave_deadline: None,
            publishers: BTreeMap::new(),
            publishers_capped: false,
            requested: BTreeMap::new(),
            to_unsubscribe: BTreeSet::new(),
            sub_joined: false,
            sub_busy: false,
            mids: BTreeMap::new(),
            last_offer_id: 0,
            pending_offer: None,
        };
        s.send(now, Req::Create, json!({"janus": "create"}));
        s
    }

    /// The next thing to do, if any. Drain this after every input.
    pub fn poll_output(&mut self) -> Option<SigOutput> {
        self.out.pop_front()
    }

    /// When [`JanusSession::handle_timeout`] must be called next (`None` when closed).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state == State::Closed {
            return None;
        }
        let pending = self.pending.values().map(|p| p.deadline).min();
        [pending, self.next_keepalive, self.leave_deadline]
            .into_iter()
            .flatten()
            .min()
    }

    /// True once a terminal event was emitted.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// The active audio streams of the subscription, by subscriber mid.
    pub fn streams(&self) -> impl Iterator<Item = &StreamInfo> {
        self.mids.values()
    }

    /// Time passed: sends keepalives, fails requests past their deadline.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == State::Closed {
            return;
        }
        if self.state == State::Leaving {
            if self.leave_deadline.is_some_and(|d| now >= d) {
                debug!("Janus leave: no reply to destroy in time, closing anyway.");
                self.finish(SigEvent::Left);
            }
            return;
        }
        if let Some(p) = self.pending.values().find(|p| now >= p.deadline) {
            let name = p.req.name();
            self.fatal(
                FatalKind::RequestTimeout,
                format!("Janus did not answer the {name} request in time"),
            );
            return;
        }
        if let Some(at) = self.next_keepalive {
            if now >= at {
                self.send(now, Req::Keepalive, json!({"janus": "keepalive"}));
                self.next_keepalive = Some(now + self.cfg.keepalive_interval);
            }
        }
    }

    /// The WebSocket closed or failed.
    pub fn handle_disconnect(&mut self, _now: Instant) {
        match self.state {
            State::Closed => {}
            State::Leaving => self.finish(SigEvent::Left),
            _ => {
                self.out.retain(|o| !matches!(o, SigOutput::Transmit(_)));
                self.session_id = None; // nothing can be sent any more
                self.fatal(
                    FatalKind::ConnectionLost,
                    "the WebSocket to Janus closed".into(),
                );
            }
        }
    }

    /// Leaves politely: `leave`, `detach` both handles, `destroy` the session, then
    /// [`SigEvent::Left`] once Janus confirms the destroy (or `request_timeout` passes).
    pub fn leave(&mut self, now: Instant) {
        match self.state {
            State::Closed | State::Leaving => return,
            _ => {}
        }
        self.pending.clear();
        self.next_keepalive = None;
        let Some(_) = self.session_id else {
            self.finish(SigEvent::Left);
            return;
        };
        info!("Leaving the Janus room.");
        if let Some(h) = self.pub_handle {
            if matches!(self.state, State::Joined) {
                self.send_message(now, Req::Leave, h, json!({"request": "leave"}), None);
            }
        }
        for h in [self.sub_handle, self.pub_handle].into_iter().flatten() {
            self.send_to_handle(now, Req::Detach, h, json!({"janus": "detach"}));
        }
        self.send(now, Req::Destroy, json!({"janus": "destroy"}));
        self.state = State::Leaving;
        self.leave_deadline = Some(now + self.cfg.request_timeout);
    }

    /// The media transport's answer to offer `offer_id`: sends `start` with the JSEP answer.
    pub fn answered(
        &mut self,
        now: Instant,
        offer_id: u64,
        answer_sdp: String,
    ) -> Result<(), AnswerError> {
        if self.state != State::Joined {
            return Err(AnswerError::NotReady);
        }
        let Some(h) = self.sub_handle else {
            return Err(AnswerError::NotReady);
        };
        if self.pending_offer != Some(offer_id) {
            return Err(AnswerError::NotPending(offer_id));
        }
        self.pending_offer = None;
        debug!(offer_id, "Sending the subscriber answer.");
        self.send_message(
            now,
            Req::Start(offer_id),
            h,
            json!({"request": "start"}),
            Some(json!({"type": "answer", "sdp": answer_sdp})),
        );
        Ok(())
    }

    /// One text frame from Janus. Anything malformed or unexpected is ignored (logged at
    /// debug); only well-formed failures end the session.
    pub fn handle_message(&mut self, now: Instant, text: &str) {
        if matches!(self.state, State::Closed) {
            return;
        }
        if text.len() > MAX_MESSAGE_BYTES {
            warn!(bytes = text.len(), "Ignoring an oversized Janus message.");
            return;
        }
        let v: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                debug!(error = %e, "Ignoring a Janus message that is not JSON.");
                return;
            }
        };
        let Some(obj) = v.as_object() else {
            debug!("Ignoring a Janus message that is not an object.");
            return;
        };
        let Some(kind) = obj.get("janus").and_then(Value::as_str) else {
            debug!("Ignoring a Janus message without a janus type.");
            return;
        };
        if let (Some(ours), Some(theirs)) = (self.session_id, obj.get("session_id")) {
            if theirs.as_u64() != Some(ours) {
                debug!("Ignoring a Janus message for another session.");
                return;
            }
        }
        let txn = obj.get("transaction").and_then(Value::as_str);
        let sender = obj.get("sender").and_then(Value::as_u64);
        trace!(kind, has_txn = txn.is_some(), "Janus message.");
        match kind {
            "ack" => {
                if let Some(t) = txn {
                    if self.pending.get(t).is_some_and(|p| p.req == Req::Keepalive) {
                        self.pending.remove(t);
                    }
                }
            }
            "success" => {
                let Some(p) = txn.and_then(|t| self.pending.remove(t)) else {
                    return;
                };
                self.on_success(now, p.req, obj);
            }
            "error" => {
                let Some(p) = txn.and_then(|t| self.pending.remove(t)) else {
                    debug!("Ignoring a Janus error for no pending request.");
                    return;
                };
                let err = obj.get("error");
                let code = err
                    .and_then(|e| e.get("code"))
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                let reason = err
                    .and_then(|e| e.get("reason"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                self.on_error(now, p.req, code, reason);
            }
            "event" => {
                // Only plugin messages are answered by events; a core request (create,
                // attach, keepalive, …) stays pending until its own reply or deadline.
                let completes = txn
                    .filter(|t| self.pending.get(*t).is_some_and(|p| p.req.is_message()))
                    .and_then(|t| self.pending.remove(t))
                    .map(|p| p.req);
                let Some(data) = plugin_data(obj) else {
                    // A plugin event without data: at least release the request it answers.
                    if let Some(req) = completes {
                        self.release(&req);
                    }
                    return;
                };
                if let Some(code) = data.get("error_code") {
                    let code = code.as_i64().unwrap_or(0);
                    let reason = data.get("error").and_then(Value::as_str).unwrap_or("");
                    match completes {
                        Some(req) => self.on_plugin_error(now, req, code, reason),
                        None => debug!(code, "Ignoring an unsolicited VideoRoom error."),
                    }
                    return;
                }
                let jsep = obj.get("jsep");
                if sender.is_some() && sender == self.sub_handle {
                    self.on_sub_event(now, data, jsep, completes);
                } else if sender.is_some() && sender == self.pub_handle {
                    self.on_pub_event(now, data, completes);
                } else if let Some(req) = completes {
                    // A reply to one of our requests from an unexpected sender: release it so
                    // nothing waits forever, but do not act on its contents.
                    debug!("Janus event for a request came from an unknown handle.");
                    self.release(&req);
                }
            }
            "webrtcup" if self.is_sub(sender) => self.emit(SigEvent::WebrtcUp),
            "media" if self.is_sub(sender) => {
                let mid = obj.get("mid").and_then(Value::as_str).and_then(clean_id);
                let receiving = obj
                    .get("receiving")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                self.emit(SigEvent::Media { mid, receiving });
            }
            "hangup" if self.is_sub(sender) => {
                let reason = obj.get("reason").and_then(Value::as_str).unwrap_or("");
                self.emit(SigEvent::Hangup {
                    reason: clean_text(reason, 64),
                });
            }
            "detached" if self.state != State::Leaving => {
                if sender.is_some() && (sender == self.sub_handle || sender == self.pub_handle) {
                    self.fatal(
                        FatalKind::SessionLost,
                        "Janus detached one of the bot's handles".into(),
                    );
                }
            }
            "timeout" => {
                if self.session_id.is_some() && obj.get("session_id").is_some() {
                    self.session_id = None; // gone on the server: nothing to destroy
                    self.fatal(FatalKind::SessionLost, "Janus timed the session out".into());
                }
            }
            other => trace!(kind = other, "Ignoring a Janus message."),
        }
    }

    fn is_sub(&self, sender: Option<u64>) -> bool {
        sender.is_some() && sender == self.sub_handle
    }

    // ---- replies -------------------------------------------------------------------------

    fn on_success(&mut self, now: Instant, req: Req, obj: &Map<String, Value>) {
        let id = obj
            .get("data")
            .and_then(|d| d.get("id"))
            .and_then(Value::as_u64)
            .filter(|&id| id > 0);
        match req {
            Req::Create => {
                let Some(id) = id else {
                    return self.fatal(
                        FatalKind::Protocol,
                        "Janus create reply has no session id".into(),
                    );
                };
                debug!("Janus session created.");
                self.session_id = Some(id);
                self.next_keepalive = Some(now + self.cfg.keepalive_interval);
                self.state = State::AttachingPub;
                self.send(
                    now,
                    Req::AttachPub,
                    json!({"janus": "attach", "plugin": "janus.plugin.videoroom"}),
                );
            }
            Req::AttachPub => {
                let Some(id) = id else {
                    return self.fatal(
                        FatalKind::Protocol,
                        "Janus attach reply has no handle id".into(),
                    );
                };
                self.pub_handle = Some(id);
                self.state = State::Joining;
                self.send_join(now);
            }
            Req::AttachSub => {
                let Some(id) = id else {
                    return self.fatal(
                        FatalKind::Protocol,
                        "Janus attach reply has no handle id".into(),
                    );
                };
                self.sub_handle = Some(id);
                self.reconcile(now);
            }
            Req::Destroy if self.state == State::Leaving => self.finish(SigEvent::Left),
            req => {
                // A synchronous plugin reply: only errors matter for the requests we send.
                if let Some(data) = plugin_data(obj) {
                    if let Some(code) = data.get("error_code") {
                        let code = code.as_i64().unwrap_or(0);
                        let reason = data.get("error").and_then(Value::as_str).unwrap_or("");
                        return self.on_plugin_error(now, req, code, reason);
                    }
                }
                self.release(&req);
                self.reconcile(now);
            }
        }
    }

    fn on_error(&mut self, now: Instant, req: Req, code: i64, reason: &str) {
        debug!(code, reason = %Pii::new(reason), request = req.name(), "Janus error reply.");
        if self.state == State::Leaving {
            if req == Req::Destroy {
                self.finish(SigEvent::Left);
            }
            return;
        }
        if matches!(code, 458 | 459) {
            self.session_id = None;
        }
        let _ = now;
        let (kind, text) = core_error(code);
        self.fatal(
            kind,
            format!("Janus refused {}: {text} (error {code})", req.name()),
        );
    }

    fn on_plugin_error(&mut self, now: Instant, req: Req, code: i64, reason: &str) {
        debug!(code, reason = %Pii::new(reason), request = req.name(), "VideoRoom error reply.");
        if self.state == State::Leaving {
            return;
        }
        match req {
            Req::JoinPub if code == 430 && !self.room_retried_as_string => {
                // 430 on the room field: the server uses string_ids; retry with "1234".
                if let RoomId::Num(n) = self.cfg.room {
                    info!("Janus wants string room ids; retrying the join.");
                    self.room_retried_as_string = true;
                    self.cfg.room = RoomId::Str(n.to_string());
                    self.send_join(now);
                    return;
                }
                self.join_failed(code);
            }
            Req::JoinPub => self.join_failed(code),
            Req::JoinSub(feed) | Req::Subscribe(feed) if code == 428 => {
                debug!("A publisher vanished before the subscription reached it.");
                self.sub_busy = false;
                self.requested.remove(&feed);
                if self.publishers.remove(&feed).is_some() {
                    self.emit(SigEvent::PublisherLeft { feed_id: feed });
                }
                self.reconcile(now);
            }
            Req::Unsubscribe => {
                self.sub_busy = false;
                self.reconcile(now);
            }
            Req::Leave | Req::Detach | Req::Keepalive => {}
            other => {
                let (kind, text) = plugin_error(code);
                self.fatal(
                    kind,
                    format!("Janus refused {}: {text} (error {code})", other.name()),
                );
            }
        }
    }

    fn join_failed(&mut self, code: i64) {
        let (mut kind, mut text) = plugin_error(code);
        if code == 429 && self.cfg.pin.is_none() {
            kind = FatalKind::PinRequired;
            text = "the room needs a PIN (add ?pin=… to the meeting URL)";
        }
        self.fatal(
            kind,
            format!("Janus refused to let the bot join: {text} (error {code})"),
        );
    }

    /// Frees the subscriber lane when a request finishes without a usable payload.
    fn release(&mut self, req: &Req) {
        if req.is_sub_change() {
            self.sub_busy = false;
        }
    }

    // ---- events --------------------------------------------------------------------------

    fn on_pub_event(&mut self, now: Instant, data: &Map<String, Value>, completes: Option<Req>) {
        let what = data.get("videoroom").and_then(Value::as_str).unwrap_or("");
        match what {
            "joined" if self.state == State::Joining => {
                self.state = State::Joined;
                self.own_id = data.get("id").and_then(FeedId::from_json);
                self.private_id = data
                    .get("private_id")
                    .and_then(Value::as_u64)
                    .filter(|&p| p > 0);
                info!("Joined the Janus room.");
                if let Some(list) = data.get("publishers") {
                    self.add_publishers(list);
                }
                // After the roster: whoever is not announced by now is not in the room.
                self.emit(SigEvent::Joined);
                self.send(
                    now,
                    Req::AttachSub,
                    json!({"janus": "attach", "plugin": "janus.plugin.videoroom"}),
                );
            }
            "event" if self.state == State::Joined => {
                if let Some(list) = data.get("publishers") {
                    self.add_publishers(list);
                }
                for key in ["unpublished", "leaving", "kicked"] {
                    let Some(v) = data.get(key) else { continue };
                    let id = FeedId::from_json(v);
                    let is_self_ok = v.as_str() == Some("ok")
                        && !id
                            .as_ref()
                            .is_some_and(|id| self.publishers.contains_key(id));
                    if is_self_ok || (id.is_some() && id == self.own_id) {
                        if key == "leaving"
                            && data.get("reason").and_then(Value::as_str) == Some("kicked")
                        {
                            info!("The bot was kicked out of the Janus room.");
                            return self.terminate(SigEvent::Kicked);
                        }
                        if key == "kicked" {
                            return self.terminate(SigEvent::Kicked);
                        }
                        continue;
                    }
                    if let Some(id) = id {
                        self.publisher_left(id);
                    }
                }
            }
            "destroyed" => {
                info!("The Janus room was destroyed.");
                return self.terminate(SigEvent::RoomDestroyed);
            }
            _ if completes == Some(Req::JoinPub) => {
                return self.fatal(
                    FatalKind::Protocol,
                    "Janus answered the join with something other than joined".into(),
                );
            }
            _ => trace!(what, "Ignoring a publisher-handle event."),
        }
        if let Some(req) = completes {
            self.release(&req);
        }
        self.reconcile(now);
    }

    fn on_sub_event(
        &mut self,
        now: Instant,
        data: &Map<String, Value>,
        jsep: Option<&Value>,
        completes: Option<Req>,
    ) {
        let what = data.get("videoroom").and_then(Value::as_str).unwrap_or("");
        match what {
            "attached" | "updated" => {
                if what == "attached" {
                    self.sub_joined = true;
                }
                if let Some(streams) = data.get("streams").and_then(Value::as_array) {
                    self.update_streams(streams);
                }
                if let Some(offer) = jsep.and_then(parse_offer) {
                    self.last_offer_id += 1;
                    self.pending_offer = Some(self.last_offer_id);
                    debug!(
                        offer_id = self.last_offer_id,
                        streams = self.mids.len(),
                        "Janus offer."
                    );
                    self.out.push_back(SigOutput::NeedAnswer(Offer {
                        offer_id: self.last_offer_id,
                        offer_sdp: offer,
                        streams: self.mids.values().cloned().collect(),
                    }));
                }
            }
            "destroyed" => return self.terminate(SigEvent::RoomDestroyed),
            _ => trace!(what, "Subscriber-handle event."),
        }
        if let Some(req) = completes {
            self.release(&req);
        }
        self.reconcile(now);
    }

    fn add_publishers(&mut self, list: &Value) {
        let Some(list) = list.as_array() else { return };
        for p in list.iter().take(MAX_LIST_ENTRIES) {
            let Some(p) = p.as_object() else { continue };
            let Some(id) = p.get("id").and_then(FeedId::from_json) else {
                continue;
            };
            if Some(&id) == self.own_id.as_ref() {
                continue;
            }
            let mut audio_mids = BTreeSet::new();
            if let Some(streams) = p.get("streams").and_then(Value::as_array) {
                for s in streams.iter().take(MAX_LIST_ENTRIES) {
                    let Some(s) = s.as_object() else { continue };
                    let is_audio = s.get("type").and_then(Value::as_str) == Some("audio");
                    let disabled = s.get("disabled").and_then(Value::as_bool).unwrap_or(false);
                    let mid = s.get("mid").and_then(Value::as_str).and_then(clean_id);
                    if let (true, false, Some(mid)) = (is_audio, disabled, mid) {
                        if audio_mids.len() < MAX_AUDIO_PER_PUBLISHER {
                            audio_mids.insert(mid);
                        }
                    }
                }
            }
            if let Some(known) = self.publishers.get_mut(&id) {
                known.audio_mids = audio_mids;
                continue;
            }
            if self.publishers.len() >= self.cfg.max_publishers {
                if !self.publishers_capped {
                    warn!(
                        max = self.cfg.max_publishers,
                        "Too many publishers; ignoring the rest."
                    );
                    self.publishers_capped = true;
                }
                continue;
            }
            let display = p.get("display").and_then(Value::as_str).unwrap_or("");
            let display = Pii::new(clean_text(display, MAX_DISPLAY_CHARS));
            debug!(feed = %id, audio = audio_mids.len(), "Publisher joined.");
            self.publishers.insert(
                id.clone(),
                Publisher {
                    display: display.clone(),
                    audio_mids,
                },
            );
            self.emit(SigEvent::PublisherJoined {
                feed_id: id,
                display,
            });
        }
    }

    fn publisher_left(&mut self, id: FeedId) {
        if self.publishers.remove(&id).is_none() {
            return;
        }
        debug!(feed = %id, "Publisher left.");
        if self.requested.remove(&id).is_some() && self.sub_joined {
            self.to_unsubscribe.insert(id.clone());
        }
        self.emit(SigEvent::PublisherLeft { feed_id: id });
    }

    fn update_streams(&mut self, streams: &[Value]) {
        let mut mids = BTreeMap::new();
        for s in streams.iter().take(MAX_LIST_ENTRIES) {
            let Some(s) = s.as_object() else { continue };
            if s.get("type").and_then(Value::as_str) != Some("audio")
                || s.get("active").and_then(Value::as_bool) == Some(false)
            {
                continue;
            }
            let Some(mid) = s.get("mid").and_then(Value::as_str).and_then(clean_id) else {
                continue;
            };
            let Some(feed_id) = s.get("feed_id").and_then(FeedId::from_json) else {
                continue;
            };
            let display = match s.get("feed_display").and_then(Value::as_str) {
                Some(d) => Pii::new(clean_text(d, MAX_DISPLAY_CHARS)),
                None => self
                    .publishers
                    .get(&feed_id)
                    .map(|p| p.display.clone())
                    .unwrap_or_default(),
            };
            mids.insert(
                mid.clone(),
                StreamInfo {
                    mid,
                    feed_id,
                    display,
                },
            );
        }
        self.mids = mids;
    }

    /// Moves the subscription one step towards "every audio stream of every publisher".
    fn reconcile(&mut self, now: Instant) {
        if self.state != State::Joined || self.sub_busy {
            return;
        }
        let Some(h) = self.sub_handle else { return };
        while let Some(feed) = self.to_unsubscribe.pop_first() {
            if self.sub_joined {
                self.sub_busy = true;
                let body = json!({"request": "unsubscribe", "streams": [{"feed": feed.to_json()}]});
                self.send_message(now, Req::Unsubscribe, h, body, None);
                return;
            }
        }
        // Audio streams a publisher stopped offering.
        let stale = self.requested.iter().find_map(|(feed, mids)| {
            let want = self.publishers.get(feed).map(|p| &p.audio_mids);
            let gone: Vec<String> = mids
                .iter()
                .filter(|m| !want.is_some_and(|w| w.contains(*m)))
                .cloned()
                .collect();
            (!gone.is_empty()).then(|| (feed.clone(), gone))
        });
        if let Some((feed, gone)) = stale {
            if let Some(set) = self.requested.get_mut(&feed) {
                for m in &gone {
                    set.remove(m);
                }
                if set.is_empty() {
                    self.requested.remove(&feed);
                }
            }
            if self.sub_joined {
                self.sub_busy = true;
                let streams: Vec<Value> = gone
                    .iter()
                    .map(|m| json!({"feed": feed.to_json(), "mid": m}))
                    .collect();
                let body = json!({"request": "unsubscribe", "streams": streams});
                self.send_message(now, Req::Unsubscribe, h, body, None);
                return;
            }
        }
        // New audio streams.
        let new = self.publishers.iter().find_map(|(feed, p)| {
            let have = self.requested.get(feed);
            let add: Vec<String> = p
                .audio_mids
                .iter()
                .filter(|m| !have.is_some_and(|h| h.contains(*m)))
                .cloned()
                .collect();
            (!add.is_empty()).then(|| (feed.clone(), add))
        });
        let Some((feed, add)) = new else { return };
        let streams: Vec<Value> = add
            .iter()
            .map(|m| json!({"feed": feed.to_json(), "mid": m}))
            .collect();
        self.requested.entry(feed.clone()).or_default().extend(add);
        self.sub_busy = true;
        if self.sub_joined {
            let body = json!({"request": "subscribe", "streams": streams});
            self.send_message(now, Req::Subscribe(feed), h, body, None);
        } else {
            let mut body = json!({
                "request": "join",
                "ptype": "subscriber",
                "room": self.cfg.room.to_json(),
                "autoupdate": false,
                "streams": streams,
            });
            if let Some(p) = self.private_id {
                body["private_id"] = Value::from(p);
            }
            if let Some(pin) = &self.cfg.pin {
                body["pin"] = Value::from(pin.expose().as_str());
            }
            self.send_message(now, Req::JoinSub(feed), h, body, None);
        }
    }

    // ---- sending -------------------------------------------------------------------------

    fn send_join(&mut self, now: Instant) {
        let Some(h) = self.pub_handle else { return };
        let mut body = json!({
            "request": "join",
            "ptype": "publisher",
            "room": self.cfg.room.to_json(),
            "display": self.cfg.display.expose(),
        });
        if let Some(pin) = &self.cfg.pin {
            body["pin"] = Value::from(pin.expose().as_str());
        }
        self.send_message(now, Req::JoinPub, h, body, None);
    }

    fn send_message(
        &mut self,
        now: Instant,
        req: Req,
        handle: u64,
        body: Value,
        jsep: Option<Value>,
    ) {
        let mut msg = json!({"janus": "message", "body": body});
        if let Some(j) = jsep {
            msg["jsep"] = j;
        }
        self.send_to_handle(now, req, handle, msg);
    }

    fn send_to_handle(&mut self, now: Instant, req: Req, handle: u64, mut msg: Value) {
        msg["handle_id"] = Value::from(handle);
        self.send(now, req, msg);
    }

    fn send(&mut self, now: Instant, req: Req, mut msg: Value) {
        self.txn_counter += 1;
        let txn = format!("mb{:08x}{:x}", self.txn_prefix, self.txn_counter);
        msg["transaction"] = Value::from(txn.as_str());
        if let Some(s) = self.session_id {
            msg["session_id"] = Value::from(s);
        }
        trace!(request = req.name(), "Janus request.");
        self.pending.insert(
            txn,
            Pending {
                req,
                deadline: now + self.cfg.request_timeout,
            },
        );
        self.out.push_back(SigOutput::Transmit(msg.to_string()));
    }

    fn emit(&mut self, ev: SigEvent) {
        self.out.push_back(SigOutput::Event(ev));
    }

    /// Ends the session after a room-level end (kicked, destroyed): best-effort `destroy`.
    fn terminate(&mut self, ev: SigEvent) {
        if let Some(s) = self.session_id.take() {
            let msg = json!({"janus": "destroy", "session_id": s, "transaction": format!("mb{:08x}end", self.txn_prefix)});
            self.out.push_back(SigOutput::Transmit(msg.to_string()));
        }
        self.finish(ev);
    }

    fn fatal(&mut self, kind: FatalKind, reason: String) {
        warn!(kind = kind.as_str(), %reason, "Janus session failed.");
        self.terminate(SigEvent::Fatal { kind, reason });
    }

    fn finish(&mut self, ev: SigEvent) {
        self.pending.clear();
        self.next_keepalive = None;
        self.leave_deadline = None;
        self.pending_offer = None;
        self.state = State::Closed;
        self.emit(ev);
    }
}

fn plugin_data(obj: &Map<String, Value>) -> Option<&Map<String, Value>> {
    obj.get("plugindata")?.get("data")?.as_object()
}

fn parse_offer(jsep: &Value) -> Option<String> {
    let obj = jsep.as_object()?;
    if obj.get("type").and_then(Value::as_str) != Some("offer") {
        return None;
    }
    let sdp = obj.get("sdp").and_then(Value::as_str)?;
    if sdp.is_empty() || sdp.len() > MAX_SDP_BYTES {
        warn!(
            bytes = sdp.len(),
            "Ignoring an empty or oversized SDP offer."
        );
        return None;
    }
    Some(sdp.to_string())
}

/// A mid or id we can use: non-empty, short, no control characters.
fn clean_id(s: &str) -> Option<String> {
    (!s.is_empty() && s.chars().count() <= MAX_ID_CHARS && !s.chars().any(char::is_control))
        .then(|| s.to_string())
}

/// Free text from the server: control characters dropped, cut to `max` characters.
fn clean_text(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

/// Janus core error codes (`apierror.h`).
fn core_error(code: i64) -> (FatalKind, &'static str) {
    match code {
        403 => (
            FatalKind::Unauthorized,
            "the server requires an API secret or token",
        ),
        405 => (
            FatalKind::Unauthorized,
            "the server does not allow the VideoRoom plugin",
        ),
        458 => (FatalKind::SessionLost, "the session no longer exists"),
        459 => (FatalKind::SessionLost, "the handle no longer exists"),
        460 => (
            FatalKind::Unavailable,
            "the server does not run the VideoRoom plugin",
        ),
        461 => (
            FatalKind::Unavailable,
            "attaching to the VideoRoom plugin failed",
        ),
        465 => (FatalKind::Rejected, "the server rejected the SDP answer"),
        469 => (
            FatalKind::Rejected,
            "the server did not expect an SDP answer",
        ),
        470 => (FatalKind::Unauthorized, "the token is not valid"),
        472 => (
            FatalKind::Unavailable,
            "the server does not accept new sessions",
        ),
        452..=457 | 467 => (
            FatalKind::Protocol,
            "the server considers the request malformed",
        ),
        _ => (FatalKind::Rejected, "the server rejected the request"),
    }
}

/// VideoRoom error codes (`janus_videoroom.c`).
fn plugin_error(code: i64) -> (FatalKind, &'static str) {
    match code {
        426 => (FatalKind::NoSuchRoom, "no such room"),
        433 => (FatalKind::Unauthorized, "wrong PIN or token"),
        432 => (FatalKind::RoomFull, "the room is full"),
        429 => (FatalKind::Rejected, "a required field is missing"),
        430 => (FatalKind::Rejected, "a field has an invalid value"),
        425 => (FatalKind::Rejected, "already joined"),
        436 => (FatalKind::Rejected, "the participant id is taken"),
        428 => (FatalKind::Rejected, "no such feed"),
        431 | 437 => (FatalKind::Rejected, "the SDP was rejected"),
        421..=424 => (
            FatalKind::Protocol,
            "the server considers the request malformed",
        ),
        _ => (
            FatalKind::Rejected,
            "the VideoRoom plugin rejected the request",
        ),
    }
}
