//! [`JanusPlatform`]: the Janus VideoRoom pieces joined into a [`MeetingPlatform`].
//!
//! One task runs one `select!` over four inputs: the signalling client's events
//! ([`JanusClient`]), the media transport's events ([`MediaTransport`]), the earliest
//! jitter-buffer deadline, and the `leave` token. It decides nothing the pieces already
//! decide; it only routes:
//!
//! * `Joined` → [`PlatformEvent::Admitted`]; the meeting clock starts then;
//! * `PublisherJoined` / `PublisherLeft` → `ParticipantJoined` / `ParticipantLeft` (the
//!   leaver's jitter buffers are drained first, so its last words are not lost);
//! * an offer → the transport's answer → the client; the offer's streams replace the
//!   mid → feed map (a mid recycled for another feed gets a fresh jitter buffer);
//! * RTP → the mid's [`JitterBuffer`] → [`PlatformEvent::Audio`] for that mid's feed. Gaps
//!   are not forwarded: the sequence numbers tell the decoder where to run FEC or PLC;
//! * `RoomDestroyed` / `Kicked` → [`PlatformEvent::Ended`]; `Fatal` → an error.
//!
//! Every wait is bounded: the join by [`JOIN_TIMEOUT`], a polite leave by the client's
//! request timeout plus a margin, the transport's negotiation by its gather timeout.
//!
//! # Rejoin
//!
//! Once admitted, losing the meeting (WebSocket closed, Janus session timed out or
//! forgotten, a request unanswered, the media connection failed) is not the end: the
//! platform reports [`PlatformEvent::Interrupted`], then reconnects with a fresh session
//! and PeerConnection into the same room, with exponential backoff, for at most
//! [`RejoinPolicy::window`]. Back in, publishers still there keep their participant (feed
//! ids are stable in a VideoRoom), new ones join, and whoever is gone leaves; then
//! [`PlatformEvent::Resumed`]. The meeting clock runs on through the gap, so timelines
//! stay aligned. Failures before the first admission (unreachable server, wrong room or
//! PIN) are not retried: they are errors at once.
//!
//! # Vanished publishers
//!
//! A publisher whose audio stops for [`RejoinPolicy::publisher_timeout`] without a
//! `leaving` (a crashed browser, a dead network) is reported as having left; if its audio
//! comes back it joins again under the same id.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout, Instant as TokioInstant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::candidates::{CandidateFilter, MediaPolicy};
use super::jitter::{JitterBuffer, JitterConfig, JitterOutput};
use super::signalling::{FatalKind, FeedId, Offer, SigEvent};
use super::transport::{
    connect_webrtc, MediaTransport, TransportConfig, TransportError, TransportEvent,
};
use super::url::JanusUrl;
use super::ws::{ClientEvent, JanusClient, JanusOptions};
use crate::core::media::ParticipantId;
use crate::pii::Pii;
use crate::platform::{EndReason, MeetingPlatform, PlatformError, PlatformEvent};

/// Longest wait from the start of [`MeetingPlatform::run`] until Janus confirms the join.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Added to the client's request timeout when waiting for a polite leave to finish.
const LEAVE_MARGIN: Duration = Duration::from_secs(2);

/// How the platform rejoins after losing the meeting, and when a silent publisher counts
/// as gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejoinPolicy {
    /// First wait before rejoining (default 1 s); doubles per failed attempt.
    pub initial_backoff: Duration,
    /// Longest wait between attempts (default 15 s).
    pub max_backoff: Duration,
    /// Give up when still out of the meeting this long after losing it (default 2 min).
    /// Zero disables rejoining.
    pub window: Duration,
    /// A publisher that sent audio and then none for this long, without leaving, is
    /// reported gone (default 60 s).
    pub publisher_timeout: Duration,
}

impl Default for RejoinPolicy {
    fn default() -> Self {
        RejoinPolicy {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(15),
            window: Duration::from_secs(120),
            publisher_timeout: Duration::from_secs(60),
        }
    }
}

/// A Janus VideoRoom meeting, joined as a listener that never publishes.
pub struct JanusPlatform {
    url: JanusUrl,
    bot_name: String,
    opts: JanusOptions,
    transport: TransportConfig,
    jitter: JitterConfig,
    rejoin: RejoinPolicy,
    media: MediaPolicy,
}

impl JanusPlatform {
    /// Checks `url` (`janus+ws://host:port/<room>[?pin=…]` or `janus+wss://…`) without
    /// touching the network. Errors never repeat the URL or the PIN.
    pub fn open(url: &Pii<String>, bot_name: &str) -> Result<JanusPlatform, PlatformError> {
        let url = JanusUrl::parse(url.expose().trim())
            .map_err(|e| PlatformError::InvalidUrl(e.to_string()))?;
        Ok(JanusPlatform {
            url,
            bot_name: bot_name.to_owned(),
            opts: JanusOptions::default(),
            transport: TransportConfig::default(),
            jitter: JitterConfig::default(),
            rejoin: RejoinPolicy::default(),
            media: MediaPolicy::default(),
        })
    }

    /// Replaces the policy for remote ICE candidates (default [`MediaPolicy::Operator`] with no
    /// allow list).
    pub fn with_media_policy(mut self, media: MediaPolicy) -> JanusPlatform {
        self.media = media;
        self
    }

    /// Replaces the signalling, media, jitter and rejoin settings (defaults otherwise).
    pub fn with_options(
        mut self,
        opts: JanusOptions,
        transport: TransportConfig,
        jitter: JitterConfig,
        rejoin: RejoinPolicy,
    ) -> JanusPlatform {
        self.opts = opts;
        self.transport = transport;
        self.jitter = jitter;
        self.rejoin = rejoin;
        self
    }
}

/// How the main loop ended.
enum Exit {
    /// `leave` was cancelled or the core stopped listening: leave politely.
    Leave,
    /// The room ended the meeting for us.
    Ended(EndReason),
    /// Something failed; the reason names no person, URL or PIN. `retryable` when a
    /// fresh session may get back in (connection or session lost, media failed).
    Failed { reason: String, retryable: bool },
}

impl Exit {
    fn fatal(reason: impl Into<String>) -> Exit {
        Exit::Failed {
            reason: reason.into(),
            retryable: false,
        }
    }

    fn lost(reason: impl Into<String>) -> Exit {
        Exit::Failed {
            reason: reason.into(),
            retryable: true,
        }
    }
}

/// The routing state of one run.
struct Router {
    events: mpsc::Sender<PlatformEvent>,
    leave: CancellationToken,
    jitter: JitterConfig,
    /// When Janus confirmed the join: ms 0 of the meeting clock.
    meeting_start: Option<Instant>,
    /// Subscriber mid → publisher, from the latest offer.
    mids: BTreeMap<String, FeedId>,
    /// One jitter buffer per mid that has received audio.
    buffers: BTreeMap<String, JitterBuffer>,
    /// Publishers announced to the core and not yet gone.
    present: BTreeSet<FeedId>,
    /// Display names of publishers seen (to re-announce a timed-out one that returns).
    names: BTreeMap<FeedId, Pii<String>>,
    /// Publishers announced by the current session (for reconciliation after a rejoin).
    session_seen: BTreeSet<FeedId>,
    /// Announcements held until the first `Joined` so the core hears `Admitted` first.
    pending_roster: Vec<FeedId>,
    /// Last audio arrival per present publisher that has sent any.
    last_audio: BTreeMap<FeedId, Instant>,
    /// Publishers reported gone for silence while still subscribed.
    timed_out: BTreeSet<FeedId>,
    publisher_timeout: Duration,
    /// Set while out of the meeting after being admitted: when it was lost.
    interrupted: Option<Instant>,
    /// For the "first audio" measurement.
    started: Instant,
    first_audio: bool,
}

/// The core stopped listening or `leave` was cancelled while sending.
struct Stop;

impl Router {
    /// Sends one event, giving way to `leave`. `Err` means: stop and leave.
    async fn send(&self, ev: PlatformEvent) -> Result<(), Stop> {
        tokio::select! {
            biased;
            _ = self.leave.cancelled() => Err(Stop),
            r = self.events.send(ev) => r.map_err(|_| Stop),
        }
    }

    fn new(
        events: mpsc::Sender<PlatformEvent>,
        leave: CancellationToken,
        jitter: JitterConfig,
        publisher_timeout: Duration,
        started: Instant,
    ) -> Router {
        Router {
            events,
            leave,
            jitter,
            meeting_start: None,
            mids: BTreeMap::new(),
            buffers: BTreeMap::new(),
            present: BTreeSet::new(),
            names: BTreeMap::new(),
            session_seen: BTreeSet::new(),
            pending_roster: Vec::new(),
            last_audio: BTreeMap::new(),
            timed_out: BTreeSet::new(),
            publisher_timeout,
            interrupted: None,
            started,
            first_audio: false,
        }
    }

    fn participant(feed: &FeedId) -> ParticipantId {
        ParticipantId(feed.to_string())
    }

    /// Meeting-clock ms now (0 before admission).
    fn meeting_ms(&self, now: Instant) -> u64 {
        self.meeting_start
            .map(|s| now.saturating_duration_since(s).as_millis() as u64)
            .unwrap_or(0)
    }

    /// Announces `feed` as present (if it is not already).
    async fn announce(&mut self, feed: FeedId) -> Result<(), Stop> {
        if self.present.insert(feed.clone()) {
            debug!(feed = %feed, "Publisher joined.");
            let name = self
                .names
                .get(&feed)
                .cloned()
                .unwrap_or_else(|| Pii::new(String::new()));
            self.send(PlatformEvent::ParticipantJoined {
                id: Self::participant(&feed),
                name,
            })
            .await?;
        }
        Ok(())
    }

    /// Reports `feed` gone (if it was present).
    async fn depart(&mut self, feed: &FeedId) -> Result<(), Stop> {
        self.last_audio.remove(feed);
        if self.present.remove(feed) {
            debug!(feed = %feed, "Publisher left.");
            self.send(PlatformEvent::ParticipantLeft {
                id: Self::participant(feed),
            })
            .await?;
        }
        Ok(())
    }

    /// The session was lost after admission: flush what the buffers hold, forget the
    /// subscription (the next session renegotiates), tell the core.
    async fn interrupt(&mut self, now: Instant, reason: &str) -> Result<(), Stop> {
        if self.interrupted.is_some() {
            return Ok(());
        }
        self.drain_all().await?;
        self.mids.clear();
        self.interrupted = Some(now);
        // Silence while out of the meeting is not the publishers' doing.
        self.last_audio.clear();
        warn!(reason = %reason, "Lost the Janus meeting; rejoining.");
        self.send(PlatformEvent::Interrupted {
            at_ms: self.meeting_ms(now),
            reason: reason.to_owned(),
        })
        .await
    }

    /// A new session begins: nothing of the old subscription carries over.
    fn new_session(&mut self) {
        self.session_seen.clear();
        self.mids.clear();
        self.buffers.clear();
    }

    /// Publishers that went quiet for too long, as of `now`, are reported gone.
    async fn expire_silent(&mut self, now: Instant) -> Result<(), Stop> {
        let expired: Vec<FeedId> = self
            .last_audio
            .iter()
            .filter(|(_, t)| now.saturating_duration_since(**t) >= self.publisher_timeout)
            .map(|(f, _)| f.clone())
            .collect();
        for feed in expired {
            info!(
                feed = %feed,
                after_s = self.publisher_timeout.as_secs(),
                "Publisher sent no audio and did not leave; treating it as gone."
            );
            self.timed_out.insert(feed.clone());
            let mids: Vec<String> = self
                .mids
                .iter()
                .filter(|(_, f)| **f == feed)
                .map(|(m, _)| m.clone())
                .collect();
            for mid in mids {
                self.drain_mid(&mid, &feed).await?;
            }
            self.depart(&feed).await?;
        }
        Ok(())
    }

    /// Forwards jitter-buffer output for `feed` (gaps are implied by sequence numbers).
    async fn forward(&mut self, feed: &FeedId, outs: Vec<JitterOutput>) -> Result<(), Stop> {
        for out in outs {
            if let JitterOutput::Packet(packet) = out {
                if !self.first_audio {
                    self.first_audio = true;
                    info!(
                        after_ms = self.started.elapsed().as_millis() as u64,
                        "First audio packet."
                    );
                }
                self.send(PlatformEvent::Audio {
                    id: Self::participant(feed),
                    packet,
                })
                .await?;
            }
        }
        Ok(())
    }

    /// Drains and drops the buffer of `mid`, forwarding what it held to `feed`.
    async fn drain_mid(&mut self, mid: &str, feed: &FeedId) -> Result<(), Stop> {
        if let Some(mut buf) = self.buffers.remove(mid) {
            let stats = buf.stats();
            debug!(
                mid,
                pushed = stats.pushed,
                lost = stats.lost,
                late = stats.late,
                "Jitter buffer closed."
            );
            let outs = buf.drain();
            if self.present.contains(feed) {
                self.forward(feed, outs).await?;
            }
        }
        Ok(())
    }

    /// Pops every ready packet of every buffer at `now`.
    async fn pop_ready(&mut self, now: Instant) -> Result<(), Stop> {
        let mids: Vec<String> = self.buffers.keys().cloned().collect();
        for mid in mids {
            let Some(feed) = self.mids.get(&mid).cloned() else {
                continue;
            };
            let mut outs = Vec::new();
            if let Some(buf) = self.buffers.get_mut(&mid) {
                while let Some(out) = buf.pop(now) {
                    outs.push(out);
                }
            }
            self.forward(&feed, outs).await?;
        }
        Ok(())
    }

    /// The earliest jitter-buffer or publisher-timeout deadline.
    fn next_deadline(&self) -> Option<Instant> {
        let jitter = self.buffers.values().filter_map(|b| b.poll_timeout()).min();
        let silent = self
            .last_audio
            .values()
            .min()
            .map(|t| *t + self.publisher_timeout);
        jitter.into_iter().chain(silent).min()
    }

    /// The offer's streams become the mid → feed map; buffers of mids that now mean
    /// something else (or nothing) are drained to their old feed and dropped.
    async fn replace_streams(&mut self, offer: &Offer) -> Result<(), Stop> {
        let new: BTreeMap<String, FeedId> = offer
            .streams
            .iter()
            .map(|s| (s.mid.clone(), s.feed_id.clone()))
            .collect();
        let stale: Vec<(String, FeedId)> = self
            .mids
            .iter()
            .filter(|(mid, feed)| new.get(*mid) != Some(*feed))
            .map(|(m, f)| (m.clone(), f.clone()))
            .collect();
        for (mid, feed) in stale {
            self.drain_mid(&mid, &feed).await?;
        }
        debug!(streams = new.len(), "Subscription streams updated.");
        self.mids = new;
        Ok(())
    }

    /// One RTP packet into its mid's buffer, then whatever became ready.
    async fn on_rtp(&mut self, rtp: super::transport::RtpAudio) -> Result<(), Stop> {
        let Some(start) = self.meeting_start else {
            return Ok(());
        };
        let Some(feed) = self.mids.get(&rtp.mid).cloned() else {
            return Ok(()); // not (or no longer) part of the subscription
        };
        if self.timed_out.remove(&feed) {
            info!(feed = %feed, "A publisher timed out for silence is sending again.");
            self.announce(feed.clone()).await?;
        }
        if !self.present.contains(&feed) {
            return Ok(());
        }
        let now = rtp.arrival;
        // Per packet: update in place, allocate only for a feed's first packet.
        match self.last_audio.get_mut(&feed) {
            Some(t) => *t = now,
            None => {
                self.last_audio.insert(feed.clone(), now);
            }
        }
        let jitter = self.jitter.clone();
        let buf = self
            .buffers
            .entry(rtp.mid.clone())
            .or_insert_with(|| JitterBuffer::new(jitter, start));
        buf.push(rtp.into());
        let mut outs = Vec::new();
        while let Some(out) = buf.pop(now) {
            outs.push(out);
        }
        self.forward(&feed, outs).await
    }

    /// Drains every buffer (the meeting is over).
    async fn drain_all(&mut self) -> Result<(), Stop> {
        let mids: Vec<(String, FeedId)> = self
            .mids
            .iter()
            .map(|(m, f)| (m.clone(), f.clone()))
            .collect();
        for (mid, feed) in mids {
            self.drain_mid(&mid, &feed).await?;
        }
        self.buffers.clear();
        Ok(())
    }
}

#[async_trait]
impl MeetingPlatform for JanusPlatform {
    async fn run(
        self: Box<Self>,
        events: mpsc::Sender<PlatformEvent>,
        leave: CancellationToken,
    ) -> Result<(), PlatformError> {
        let this = *self;
        let mut r = Router::new(
            events,
            leave.clone(),
            this.jitter.clone(),
            this.rejoin.publisher_timeout,
            Instant::now(),
        );
        let mut backoff = this.rejoin.initial_backoff;
        loop {
            let exit = this.session(&mut r, &leave).await;
            let (reason, retryable) = match exit {
                Exit::Leave => {
                    debug!("Asked to leave the Janus room.");
                    return Ok(());
                }
                Exit::Ended(reason) => {
                    info!(reason = reason.as_str(), "The Janus meeting ended.");
                    if r.drain_all().await.is_ok() {
                        let _ = r.send(PlatformEvent::Ended { reason }).await;
                    }
                    return Ok(());
                }
                Exit::Failed { reason, retryable } => (reason, retryable),
            };
            if !retryable || r.meeting_start.is_none() || this.rejoin.window.is_zero() {
                warn!(reason = %reason, "Janus platform failed.");
                return Err(PlatformError::Other(reason));
            }
            let now = Instant::now();
            if r.interrupted.is_none() {
                backoff = this.rejoin.initial_backoff;
                if r.interrupt(now, &reason).await.is_err() {
                    return Ok(()); // the core stopped listening: nothing left to do
                }
            }
            let lost_for = r
                .interrupted
                .map(|t| now.saturating_duration_since(t))
                .unwrap_or_default();
            if lost_for >= this.rejoin.window {
                let reason = format!(
                    "lost the Janus meeting and could not rejoin within {}s: {reason}",
                    this.rejoin.window.as_secs()
                );
                warn!(reason = %reason, "Janus platform failed.");
                return Err(PlatformError::Other(reason));
            }
            // The last attempt starts when the window closes.
            let wait = backoff.min(this.rejoin.window - lost_for);
            info!(
                backoff_ms = wait.as_millis() as u64,
                reason = %reason,
                "Rejoining the Janus room."
            );
            tokio::select! {
                _ = leave.cancelled() => return Ok(()),
                _ = tokio::time::sleep(wait) => {}
            }
            backoff = (backoff * 2).min(this.rejoin.max_backoff);
        }
    }
}

impl JanusPlatform {
    /// One session: connect, join, route until it ends; then leave politely (bounded)
    /// and close the media side.
    async fn session(&self, r: &mut Router, leave: &CancellationToken) -> Exit {
        let started = Instant::now();
        r.new_session();
        let (mut transport, mut media_rx) = match connect_webrtc(&self.transport).await {
            Ok(t) => t,
            // Local set-up (sockets): retrying will not help.
            Err(e) => return Exit::fatal(format!("media transport: {e}")),
        };
        let connected = tokio::select! {
            r = JanusClient::connect(&self.url, &self.bot_name, &self.opts) => r,
            _ = leave.cancelled() => {
                transport.close().await;
                return Exit::Leave;
            }
        };
        let (client, mut sig_rx) = match connected {
            Ok(c) => c,
            Err(e) => {
                transport.close().await;
                return Exit::lost(e.to_string());
            }
        };
        info!(
            tls = self.url.is_tls(),
            "Connected to Janus; joining the room."
        );
        let join_deadline = TokioInstant::from_std(started) + JOIN_TIMEOUT;
        // One ICE session per connection: the candidate cap counts from here.
        let mut candidates = CandidateFilter::new(self.media.clone());
        let mut joined = false;
        let mut media_open = true;
        let exit = loop {
            let wake = r.next_deadline().map(TokioInstant::from_std);
            let step: Result<Option<Exit>, Stop> = tokio::select! {
                _ = leave.cancelled() => Err(Stop),
                ev = sig_rx.recv() => match ev {
                    Some(ClientEvent::Event(SigEvent::Joined)) => {
                        joined = true;
                        on_sig_event(r, SigEvent::Joined).await
                    }
                    Some(ev) => {
                        on_client_event(r, &client, transport.as_mut(), &mut candidates, ev).await
                    }
                    None => Ok(Some(Exit::lost("the Janus session ended unexpectedly"))),
                },
                ev = media_rx.recv(), if media_open => match ev {
                    Some(TransportEvent::Rtp(rtp)) => r.on_rtp(rtp).await.map(|()| None),
                    Some(TransportEvent::Connected) => {
                        info!("Media connected.");
                        Ok(None)
                    }
                    Some(TransportEvent::Failed(reason)) => {
                        Ok(Some(Exit::lost(format!("media connection failed: {reason}"))))
                    }
                    Some(TransportEvent::Closed) | None => {
                        media_open = false;
                        Ok(Some(Exit::lost("media connection closed")))
                    }
                },
                _ = sleep_until(wake.unwrap_or_else(TokioInstant::now)), if wake.is_some() => {
                    let now = Instant::now();
                    match r.pop_ready(now).await {
                        Ok(()) => r.expire_silent(now).await.map(|()| None),
                        Err(stop) => Err(stop),
                    }
                }
                _ = sleep_until(join_deadline), if !joined => {
                    Ok(Some(Exit::lost(format!(
                        "joining the Janus room timed out after {}s",
                        JOIN_TIMEOUT.as_secs()
                    ))))
                }
            };
            match step {
                Ok(None) => {}
                Ok(Some(exit)) => break exit,
                Err(Stop) => break Exit::Leave,
            }
        };
        // Leave politely (a no-op once the session is terminal) and wait, bounded, for the
        // client to finish; then close the media side.
        let leave_bound = self.opts.request_timeout + LEAVE_MARGIN;
        let _ = timeout(leave_bound, async {
            client.leave().await;
            while sig_rx.recv().await.is_some() {}
            client.closed().await;
        })
        .await;
        transport.close().await;
        debug!("Janus session closed.");
        exit
    }
}

/// One signalling event. `Ok(Some(_))` ends the loop.
async fn on_client_event(
    r: &mut Router,
    client: &JanusClient,
    transport: &mut dyn MediaTransport,
    candidates: &mut CandidateFilter,
    ev: ClientEvent,
) -> Result<Option<Exit>, Stop> {
    match ev {
        ClientEvent::NeedAnswer(offer) => {
            debug!(
                offer_id = offer.offer_id,
                streams = offer.streams.len(),
                "Janus offer."
            );
            let filtered = candidates.filter_offer(&offer.offer_sdp);
            if filtered.rejected.total() > 0 {
                info!(
                    kept = filtered.kept,
                    refused_by_policy = filtered.rejected.policy,
                    mdns = filtered.rejected.mdns,
                    host_names = filtered.rejected.fqdn,
                    malformed = filtered.rejected.malformed,
                    over_cap = filtered.rejected.over_cap,
                    "Removed ICE candidates from the Janus offer."
                );
                for (why, addr) in &filtered.details {
                    debug!(?why, ?addr, "Removed an ICE candidate.");
                }
            }
            // Nothing left to connect to, and nothing accepted before in this session: ICE
            // cannot succeed, and retrying would get the same offer.
            if filtered.kept == 0 && candidates.accepted() == 0 {
                let reason = filtered.no_candidate_reason();
                warn!(reason = %reason, "No usable ICE candidate in the Janus offer.");
                return Ok(Some(Exit::fatal(reason)));
            }
            r.replace_streams(&offer).await?;
            let answer = match transport.answer(&filtered.sdp).await {
                Ok(sdp) => sdp,
                Err(e) => return Ok(Some(Exit::lost(answer_failure(&e)))),
            };
            if client.answer(offer.offer_id, answer).await.is_err() {
                return Ok(Some(Exit::lost("the Janus session ended while answering")));
            }
            Ok(None)
        }
        ClientEvent::Event(ev) => on_sig_event(r, ev).await,
    }
}

fn answer_failure(e: &TransportError) -> String {
    format!("answering the Janus offer failed: {e}")
}

async fn on_sig_event(r: &mut Router, ev: SigEvent) -> Result<Option<Exit>, Stop> {
    match ev {
        SigEvent::Joined => {
            let now = Instant::now();
            if r.meeting_start.is_none() {
                r.meeting_start = Some(now);
                info!(
                    after_ms = r.started.elapsed().as_millis() as u64,
                    "Meeting clock started."
                );
                r.send(PlatformEvent::Admitted).await?;
                for feed in std::mem::take(&mut r.pending_roster) {
                    r.announce(feed).await?;
                }
            } else if let Some(lost_at) = r.interrupted.take() {
                // Back in. The roster came before `Joined`: whoever it did not name is gone.
                let gone: Vec<FeedId> = r.present.difference(&r.session_seen).cloned().collect();
                for feed in gone {
                    r.depart(&feed).await?;
                }
                info!(
                    after_ms = now.saturating_duration_since(lost_at).as_millis() as u64,
                    "Rejoined the Janus room."
                );
                r.send(PlatformEvent::Resumed {
                    at_ms: r.meeting_ms(now),
                })
                .await?;
            }
            Ok(None)
        }
        SigEvent::PublisherJoined { feed_id, display } => {
            r.session_seen.insert(feed_id.clone());
            r.timed_out.remove(&feed_id);
            r.names.insert(feed_id.clone(), display);
            if r.meeting_start.is_none() {
                r.pending_roster.push(feed_id);
            } else {
                r.announce(feed_id).await?;
            }
            Ok(None)
        }
        SigEvent::PublisherLeft { feed_id } => {
            r.session_seen.remove(&feed_id);
            r.timed_out.remove(&feed_id);
            r.pending_roster.retain(|f| *f != feed_id);
            let mids: Vec<String> = r
                .mids
                .iter()
                .filter(|(_, f)| **f == feed_id)
                .map(|(m, _)| m.clone())
                .collect();
            for mid in mids {
                r.drain_mid(&mid, &feed_id).await?;
            }
            r.depart(&feed_id).await?;
            Ok(None)
        }
        SigEvent::WebrtcUp => {
            debug!("Janus reports the subscriber PeerConnection up.");
            Ok(None)
        }
        SigEvent::Media { mid, receiving } => {
            debug!(?mid, receiving, "Janus media state.");
            Ok(None)
        }
        SigEvent::Hangup { reason } => {
            warn!(reason = %reason, "Janus hung up the subscriber PeerConnection.");
            Ok(None)
        }
        SigEvent::RoomDestroyed => Ok(Some(Exit::Ended(EndReason::EndedByHost))),
        SigEvent::Kicked => Ok(Some(Exit::Ended(EndReason::Kicked))),
        SigEvent::Left => Ok(Some(Exit::lost("the Janus session left unexpectedly"))),
        SigEvent::Fatal { kind, reason } => {
            let reason = format!("janus {}: {reason}", kind.as_str());
            Ok(Some(match kind {
                FatalKind::ConnectionLost | FatalKind::SessionLost | FatalKind::RequestTimeout => {
                    Exit::lost(reason)
                }
                // The room we were in is gone: the meeting is over.
                FatalKind::NoSuchRoom if r.interrupted.is_some() => {
                    Exit::Ended(EndReason::EndedByHost)
                }
                _ => Exit::fatal(reason),
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_accepts_janus_urls_and_never_echoes_a_bad_one() {
        let ok = JanusPlatform::open(
            &Pii::new("janus+ws://10.0.0.1:8188/1234?pin=x".into()),
            "bot",
        );
        assert!(ok.is_ok());
        let secret = "janus+ws://secret-host.example:8188/";
        let Err(PlatformError::InvalidUrl(msg)) =
            JanusPlatform::open(&Pii::new(secret.into()), "bot")
        else {
            panic!("a URL without a room must be rejected");
        };
        assert!(!msg.contains("secret-host"), "{msg}");
    }

    #[tokio::test]
    async fn unreachable_server_fails_fast_with_a_reason() {
        // Port 1 on loopback refuses at once; nothing is left running.
        let p = JanusPlatform::open(&Pii::new("janus+ws://127.0.0.1:1/1234".into()), "bot")
            .expect("valid URL");
        let (tx, mut rx) = mpsc::channel(8);
        let res = timeout(
            Duration::from_secs(20),
            Box::new(p).run(tx, CancellationToken::new()),
        )
        .await
        .expect("run is bounded");
        let Err(PlatformError::Other(reason)) = res else {
            panic!("an unreachable server must fail");
        };
        assert!(reason.contains("connect"), "{reason}");
        assert!(rx.try_recv().is_err(), "no event before joining");
    }

    fn router() -> (Router, mpsc::Receiver<PlatformEvent>) {
        let (tx, rx) = mpsc::channel(64);
        let r = Router::new(
            tx,
            CancellationToken::new(),
            JitterConfig::default(),
            Duration::from_secs(60),
            Instant::now(),
        );
        (r, rx)
    }

    fn offer(streams: &[(&str, u64)]) -> Offer {
        Offer {
            offer_id: 1,
            offer_sdp: String::new(),
            streams: streams
                .iter()
                .map(|(mid, feed)| super::super::signalling::StreamInfo {
                    mid: (*mid).to_owned(),
                    feed_id: FeedId::Num(*feed),
                    display: Pii::new(format!("P{feed}")),
                })
                .collect(),
        }
    }

    fn rtp(mid: &str, seq: u16, arrival: Instant) -> super::super::transport::RtpAudio {
        super::super::transport::RtpAudio {
            mid: mid.to_owned(),
            seq,
            timestamp: u32::from(seq) * 960,
            payload: bytes::Bytes::from_static(b"\xfc\x01"),
            arrival,
        }
    }

    fn drain(rx: &mut mpsc::Receiver<PlatformEvent>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(ev) = rx.try_recv() {
            out.push(match ev {
                PlatformEvent::Admitted => "admitted".to_owned(),
                PlatformEvent::ParticipantJoined { id, name } => {
                    format!("joined {id} {}", name.expose())
                }
                PlatformEvent::ParticipantLeft { id } => format!("left {id}"),
                PlatformEvent::Audio { id, packet } => format!("audio {id} {}", packet.seq),
                PlatformEvent::Ended { reason } => format!("ended {}", reason.as_str()),
                PlatformEvent::Waiting => "waiting".to_owned(),
                PlatformEvent::Interrupted { .. } => "interrupted".to_owned(),
                PlatformEvent::Resumed { .. } => "resumed".to_owned(),
            });
        }
        out
    }

    async fn sig(r: &mut Router, ev: SigEvent) -> Option<Exit> {
        on_sig_event(r, ev).await.ok().flatten()
    }

    #[tokio::test]
    async fn routes_rtp_per_mid_and_drains_a_leaver_before_it_leaves() {
        let (mut r, mut rx) = router();
        let t0 = Instant::now();
        // Audio before the join is dropped (no meeting clock yet).
        r.replace_streams(&offer(&[("0", 7)])).await.ok();
        r.on_rtp(rtp("0", 1, t0)).await.ok();
        assert!(r.buffers.is_empty());
        assert!(sig(&mut r, SigEvent::Joined).await.is_none());
        let feed = |n| SigEvent::PublisherJoined {
            feed_id: FeedId::Num(n),
            display: Pii::new(format!("P{n}")),
        };
        sig(&mut r, feed(7)).await;
        sig(&mut r, feed(9)).await;
        let now = Instant::now();
        r.on_rtp(rtp("0", 10, now)).await.ok();
        r.on_rtp(rtp("0", 11, now)).await.ok();
        // The first packet is held for the jitter delay; popping later releases both.
        r.pop_ready(now + Duration::from_millis(100)).await.ok();
        // A mid the subscription does not know is ignored.
        r.on_rtp(rtp("5", 1, now)).await.ok();
        r.on_rtp(rtp("0", 12, now)).await.ok();
        // 13 is missing, 14 is held behind the hole: the leaver's buffer is drained
        // (gap skipped) before ParticipantLeft.
        r.on_rtp(rtp("0", 14, now)).await.ok();
        sig(
            &mut r,
            SigEvent::PublisherLeft {
                feed_id: FeedId::Num(7),
            },
        )
        .await;
        // Audio for a feed that left is dropped.
        r.on_rtp(rtp("0", 15, now)).await.ok();
        assert_eq!(
            drain(&mut rx),
            [
                "admitted",
                "joined 7 P7",
                "joined 9 P9",
                "audio 7 10",
                "audio 7 11",
                "audio 7 12",
                "audio 7 14",
                "left 7",
            ]
        );
    }

    #[tokio::test]
    async fn a_recycled_mid_gets_a_fresh_buffer_and_flushes_the_old_feed() {
        let (mut r, mut rx) = router();
        sig(&mut r, SigEvent::Joined).await;
        for n in [7, 9] {
            sig(
                &mut r,
                SigEvent::PublisherJoined {
                    feed_id: FeedId::Num(n),
                    display: Pii::new(format!("P{n}")),
                },
            )
            .await;
        }
        r.replace_streams(&offer(&[("0", 7)])).await.ok();
        let now = Instant::now();
        r.on_rtp(rtp("0", 500, now)).await.ok(); // held (first packet)
        r.replace_streams(&offer(&[("0", 9)])).await.ok();
        r.on_rtp(rtp("0", 3, now)).await.ok();
        r.pop_ready(now + Duration::from_millis(100)).await.ok();
        let evs = drain(&mut rx);
        assert_eq!(&evs[3..], ["audio 7 500", "audio 9 3"], "{evs:?}");
    }

    #[tokio::test]
    async fn terminal_events_map_to_ends_and_failures() {
        let (mut r, _rx) = router();
        assert!(matches!(
            sig(&mut r, SigEvent::RoomDestroyed).await,
            Some(Exit::Ended(EndReason::EndedByHost))
        ));
        assert!(matches!(
            sig(&mut r, SigEvent::Kicked).await,
            Some(Exit::Ended(EndReason::Kicked))
        ));
        let Some(Exit::Failed {
            reason,
            retryable: false,
        }) = sig(
            &mut r,
            SigEvent::Fatal {
                kind: super::super::signalling::FatalKind::NoSuchRoom,
                reason: "no such room".into(),
            },
        )
        .await
        else {
            panic!("Fatal must fail the run");
        };
        assert!(reason.contains("no such room"), "{reason}");
    }

    fn pub_joined(n: u64) -> SigEvent {
        SigEvent::PublisherJoined {
            feed_id: FeedId::Num(n),
            display: Pii::new(format!("P{n}")),
        }
    }

    #[tokio::test]
    async fn the_roster_is_announced_after_admission() {
        let (mut r, mut rx) = router();
        // Signalling reports the room's publishers first, then Joined.
        sig(&mut r, pub_joined(7)).await;
        sig(&mut r, pub_joined(8)).await;
        sig(
            &mut r,
            SigEvent::PublisherLeft {
                feed_id: FeedId::Num(8),
            },
        )
        .await;
        assert!(drain(&mut rx).is_empty(), "nothing before admission");
        sig(&mut r, SigEvent::Joined).await;
        assert_eq!(drain(&mut rx), ["admitted", "joined 7 P7"]);
    }

    #[tokio::test]
    async fn a_rejoin_keeps_who_stayed_adds_newcomers_and_drops_leavers() {
        let (mut r, mut rx) = router();
        for n in [7, 8] {
            sig(&mut r, pub_joined(n)).await;
        }
        sig(&mut r, SigEvent::Joined).await;
        r.replace_streams(&offer(&[("0", 7), ("1", 8)])).await.ok();
        let now = Instant::now();
        r.on_rtp(rtp("0", 10, now)).await.ok(); // held by the jitter buffer
        drain(&mut rx);

        // Lost: the held packet is flushed first, then Interrupted (once).
        let lost = Instant::now();
        r.interrupt(lost, "janus connection_lost").await.ok();
        r.interrupt(lost, "again").await.ok();
        assert_eq!(drain(&mut rx), ["audio 7 10", "interrupted"]);
        assert!(r.mids.is_empty() && r.buffers.is_empty());

        // The new session: 7 is still there, 8 left meanwhile, 9 arrived.
        r.new_session();
        sig(&mut r, pub_joined(7)).await;
        sig(&mut r, pub_joined(9)).await;
        sig(&mut r, SigEvent::Joined).await;
        assert_eq!(drain(&mut rx), ["joined 9 P9", "left 8", "resumed"]);
        assert!(r.interrupted.is_none());
        assert_eq!(
            r.present.iter().cloned().collect::<Vec<_>>(),
            [FeedId::Num(7), FeedId::Num(9)]
        );
        // Audio flows again on the new subscription, same meeting clock.
        r.replace_streams(&offer(&[("0", 9), ("1", 7)])).await.ok();
        let later = Instant::now();
        r.on_rtp(rtp("1", 4000, later)).await.ok();
        r.pop_ready(later + Duration::from_millis(100)).await.ok();
        assert_eq!(drain(&mut rx), ["audio 7 4000"]);
    }

    #[tokio::test]
    async fn a_publisher_silent_too_long_is_timed_out_and_returns_with_its_audio() {
        let (tx, mut rx) = mpsc::channel(64);
        let mut r = Router::new(
            tx,
            CancellationToken::new(),
            JitterConfig::default(),
            Duration::from_secs(10),
            Instant::now(),
        );
        sig(&mut r, pub_joined(7)).await;
        sig(&mut r, pub_joined(8)).await; // video only: never sends audio
        sig(&mut r, SigEvent::Joined).await;
        r.replace_streams(&offer(&[("0", 7)])).await.ok();
        let t0 = Instant::now();
        r.on_rtp(rtp("0", 1, t0)).await.ok();
        r.pop_ready(t0 + Duration::from_millis(100)).await.ok();
        drain(&mut rx);
        // The deadline is the silence timeout after the last packet.
        assert_eq!(r.next_deadline(), Some(t0 + Duration::from_secs(10)));
        r.expire_silent(t0 + Duration::from_secs(9)).await.ok();
        assert!(drain(&mut rx).is_empty());
        r.expire_silent(t0 + Duration::from_secs(10)).await.ok();
        // Only the publisher that had sent audio times out.
        assert_eq!(drain(&mut rx), ["left 7"]);
        assert_eq!(r.next_deadline(), None);
        // Its audio comes back: it joins again, under its name, and is heard.
        let t1 = t0 + Duration::from_secs(30);
        r.on_rtp(rtp("0", 2, t1)).await.ok();
        r.pop_ready(t1 + Duration::from_millis(100)).await.ok();
        assert_eq!(drain(&mut rx), ["joined 7 P7", "audio 7 2"]);
    }

    #[tokio::test]
    async fn only_connection_failures_are_retryable() {
        use super::super::signalling::FatalKind as K;
        let (mut r, _rx) = router();
        for (kind, retryable) in [
            (K::ConnectionLost, true),
            (K::SessionLost, true),
            (K::RequestTimeout, true),
            (K::Unauthorized, false),
            (K::RoomFull, false),
            (K::Protocol, false),
        ] {
            let ev = SigEvent::Fatal {
                kind,
                reason: "x".into(),
            };
            match sig(&mut r, ev).await {
                Some(Exit::Failed { retryable: got, .. }) => assert_eq!(got, retryable, "{kind:?}"),
                _ => panic!("{kind:?} must fail the session"),
            }
        }
        // The room vanished while we were rejoining: the meeting is over.
        r.interrupted = Some(Instant::now());
        let ev = SigEvent::Fatal {
            kind: K::NoSuchRoom,
            reason: "x".into(),
        };
        assert!(matches!(
            sig(&mut r, ev).await,
            Some(Exit::Ended(EndReason::EndedByHost))
        ));
    }

    #[tokio::test]
    async fn a_closed_core_channel_stops_the_router() {
        let (mut r, rx) = router();
        drop(rx);
        assert!(on_sig_event(&mut r, SigEvent::Joined).await.is_err());
    }
}
