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

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout, Instant as TokioInstant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::jitter::{JitterBuffer, JitterConfig, JitterOutput};
use super::signalling::{FeedId, Offer, SigEvent};
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

/// A Janus VideoRoom meeting, joined as a listener that never publishes.
pub struct JanusPlatform {
    url: JanusUrl,
    bot_name: String,
    opts: JanusOptions,
    transport: TransportConfig,
    jitter: JitterConfig,
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
        })
    }

    /// Replaces the signalling, media and jitter settings (defaults otherwise).
    pub fn with_options(
        mut self,
        opts: JanusOptions,
        transport: TransportConfig,
        jitter: JitterConfig,
    ) -> JanusPlatform {
        self.opts = opts;
        self.transport = transport;
        self.jitter = jitter;
        self
    }
}

/// How the main loop ended.
enum Exit {
    /// `leave` was cancelled or the core stopped listening: leave politely.
    Leave,
    /// The room ended the meeting for us.
    Ended(EndReason),
    /// Something failed; the reason names no person, URL or PIN.
    Failed(String),
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

    fn participant(feed: &FeedId) -> ParticipantId {
        ParticipantId(feed.to_string())
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

    /// The earliest jitter-buffer deadline.
    fn next_deadline(&self) -> Option<Instant> {
        self.buffers.values().filter_map(|b| b.poll_timeout()).min()
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
        if !self.present.contains(&feed) {
            return Ok(());
        }
        let now = rtp.arrival;
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
        let started = Instant::now();
        let (mut transport, mut media_rx) = connect_webrtc(&this.transport)
            .await
            .map_err(|e| PlatformError::Other(format!("media transport: {e}")))?;
        let connected = tokio::select! {
            r = JanusClient::connect(&this.url, &this.bot_name, &this.opts) => r,
            _ = leave.cancelled() => {
                transport.close().await;
                return Ok(());
            }
        };
        let (client, mut sig_rx) = match connected {
            Ok(c) => c,
            Err(e) => {
                transport.close().await;
                return Err(PlatformError::Other(e.to_string()));
            }
        };
        info!(
            tls = this.url.is_tls(),
            "Connected to Janus; joining the room."
        );
        let mut r = Router {
            events,
            leave: leave.clone(),
            jitter: this.jitter.clone(),
            meeting_start: None,
            mids: BTreeMap::new(),
            buffers: BTreeMap::new(),
            present: BTreeSet::new(),
            started,
            first_audio: false,
        };
        let join_deadline = TokioInstant::from_std(started) + JOIN_TIMEOUT;
        let mut media_open = true;
        let exit = loop {
            let wake = r.next_deadline().map(TokioInstant::from_std);
            let step: Result<Option<Exit>, Stop> = tokio::select! {
                _ = leave.cancelled() => Err(Stop),
                ev = sig_rx.recv() => match ev {
                    Some(ev) => on_client_event(&mut r, &client, transport.as_mut(), ev).await,
                    None => Ok(Some(Exit::Failed("the Janus session ended unexpectedly".into()))),
                },
                ev = media_rx.recv(), if media_open => match ev {
                    Some(TransportEvent::Rtp(rtp)) => r.on_rtp(rtp).await.map(|()| None),
                    Some(TransportEvent::Connected) => {
                        info!("Media connected.");
                        Ok(None)
                    }
                    Some(TransportEvent::Failed(reason)) => {
                        Ok(Some(Exit::Failed(format!("media connection failed: {reason}"))))
                    }
                    Some(TransportEvent::Closed) | None => {
                        media_open = false;
                        Ok(Some(Exit::Failed("media connection closed".into())))
                    }
                },
                _ = sleep_until(wake.unwrap_or_else(TokioInstant::now)), if wake.is_some() => {
                    r.pop_ready(Instant::now()).await.map(|()| None)
                }
                _ = sleep_until(join_deadline), if r.meeting_start.is_none() => {
                    Ok(Some(Exit::Failed(format!(
                        "joining the Janus room timed out after {JOIN_TIMEOUT:?}"
                    ))))
                }
            };
            match step {
                Ok(None) => {}
                Ok(Some(exit)) => break exit,
                Err(Stop) => break Exit::Leave,
            }
        };
        let leave_bound = this.opts.request_timeout + LEAVE_MARGIN;
        let result = match exit {
            Exit::Leave => {
                debug!("Asked to leave the Janus room.");
                Ok(())
            }
            Exit::Ended(reason) => {
                info!(reason = reason.as_str(), "The Janus meeting ended.");
                if r.drain_all().await.is_ok() {
                    let _ = r.send(PlatformEvent::Ended { reason }).await;
                }
                Ok(())
            }
            Exit::Failed(reason) => {
                // TODO(issue 3, resilience): a retryable failure (socket lost, session
                // timed out, media failed) should rejoin the same room with backoff and
                // record the gap in the transcript metadata instead of ending here.
                warn!(reason = %reason, "Janus platform failed.");
                Err(PlatformError::Other(reason))
            }
        };
        // Leave politely (a no-op once the session is terminal) and wait, bounded, for the
        // client to finish; then close the media side.
        let _ = timeout(leave_bound, async {
            client.leave().await;
            while sig_rx.recv().await.is_some() {}
            client.closed().await;
        })
        .await;
        transport.close().await;
        debug!("Janus platform stopped.");
        result
    }
}

/// One signalling event. `Ok(Some(_))` ends the loop.
async fn on_client_event(
    r: &mut Router,
    client: &JanusClient,
    transport: &mut dyn MediaTransport,
    ev: ClientEvent,
) -> Result<Option<Exit>, Stop> {
    match ev {
        ClientEvent::NeedAnswer(offer) => {
            debug!(
                offer_id = offer.offer_id,
                streams = offer.streams.len(),
                "Janus offer."
            );
            r.replace_streams(&offer).await?;
            let answer = match transport.answer(&offer.offer_sdp).await {
                Ok(sdp) => sdp,
                Err(e) => return Ok(Some(Exit::Failed(answer_failure(&e)))),
            };
            if client.answer(offer.offer_id, answer).await.is_err() {
                return Ok(Some(Exit::Failed(
                    "the Janus session ended while answering".into(),
                )));
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
            if r.meeting_start.is_none() {
                r.meeting_start = Some(Instant::now());
                info!(
                    after_ms = r.started.elapsed().as_millis() as u64,
                    "Meeting clock started."
                );
                r.send(PlatformEvent::Admitted).await?;
            }
            Ok(None)
        }
        SigEvent::PublisherJoined { feed_id, display } => {
            if r.present.insert(feed_id.clone()) {
                debug!(feed = %feed_id, "Publisher joined.");
                r.send(PlatformEvent::ParticipantJoined {
                    id: Router::participant(&feed_id),
                    name: display,
                })
                .await?;
            }
            Ok(None)
        }
        SigEvent::PublisherLeft { feed_id } => {
            let mids: Vec<String> = r
                .mids
                .iter()
                .filter(|(_, f)| **f == feed_id)
                .map(|(m, _)| m.clone())
                .collect();
            for mid in mids {
                r.drain_mid(&mid, &feed_id).await?;
            }
            if r.present.remove(&feed_id) {
                debug!(feed = %feed_id, "Publisher left.");
                r.send(PlatformEvent::ParticipantLeft {
                    id: Router::participant(&feed_id),
                })
                .await?;
            }
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
        SigEvent::Left => Ok(Some(Exit::Failed(
            "the Janus session left unexpectedly".into(),
        ))),
        SigEvent::Fatal { kind, reason } => Ok(Some(Exit::Failed(format!(
            "janus {}: {reason}",
            kind.as_str()
        )))),
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
        let r = Router {
            events: tx,
            leave: CancellationToken::new(),
            jitter: JitterConfig::default(),
            meeting_start: None,
            mids: BTreeMap::new(),
            buffers: BTreeMap::new(),
            present: BTreeSet::new(),
            started: Instant::now(),
            first_audio: false,
        };
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
        let Some(Exit::Failed(reason)) = sig(
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

    #[tokio::test]
    async fn a_closed_core_channel_stops_the_router() {
        let (mut r, rx) = router();
        drop(rx);
        assert!(on_sig_event(&mut r, SigEvent::Joined).await.is_err());
    }
}
