//! The media transport seam and its webrtc-rs implementation.
//!
//! [`MediaTransport`] is all the Janus platform needs from WebRTC: answer an
//! offer (and later re-offers on the same connection) with a complete,
//! non-trickle SDP, and deliver every received audio RTP packet tagged with the
//! m-line (`mid`) it arrived on — Janus rewrites SSRCs, so the mid is the only
//! stable key (mid ↔ feed comes from signalling). Another stack (str0m) can
//! sit behind the same trait.
//!
//! [`connect_webrtc`] builds a receive-only peer on webrtc-rs 0.21 (an async
//! layer over the sans-IO `rtc` crate): Opus 48000/2 registered at payload type
//! 111 (an offer's own Opus payload type is accepted too), the default
//! interceptors (NACK, RTCP receiver reports, …), mDNS disabled. Every audio
//! m-line the remote sends on is answered `recvonly`; every other m-line
//! (video, audio the remote does not send) is answered `inactive`.
//!
//! # Tasks
//!
//! The connection's driver runs as a task on the ambient tokio runtime (no
//! thread of its own). Besides it this module spawns one supervisor task per
//! connection (forwards lifecycle events, starts track pumps) and one pump task
//! per received track; all end once the connection is closed or dropped.
//!
//! # Events
//!
//! [`TransportEvent::Rtp`] for each packet (empty payloads — padding — are
//! skipped), `Connected` when ICE+DTLS are up, `Failed` when the connection
//! fails, `Closed` when it closes (reported once the connection is closed and
//! its [`MediaTransport`] dropped, or earlier if the library reports it); after
//! that the channel ends. The channel is bounded: a consumer that
//! falls behind stalls the pumps, and the library then drops packets at its
//! own 256-packet per-track queue (counted in its stats, logged at error by the
//! `webrtc` crate via `log`).

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, trace, warn};

use rtc::ice::mdns::MulticastDnsMode;
use rtc::peer_connection::configuration::media_engine::MIME_TYPE_OPUS;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind};
use rtc::rtp_transceiver::RTCRtpTransceiverDirection;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    register_default_interceptors, MediaEngine, PeerConnection, PeerConnectionBuilder,
    PeerConnectionEventHandler, RTCConfigurationBuilder, RTCIceGatheringState, RTCIceServer,
    RTCPeerConnectionState, RTCSdpType, RTCSessionDescription, Registry, SettingEngineBuilder,
};
use webrtc::runtime::TokioRuntime;

use super::jitter::InboundRtp;

/// Largest offer accepted, bytes. Janus offers are a few KB per m-line.
pub const MAX_OFFER_BYTES: usize = 512 * 1024;
/// Most m-lines accepted in one offer.
pub const MAX_MLINES: usize = 256;
/// Capacity of the event channel returned by [`connect_webrtc`].
pub const EVENT_CHANNEL_CAPACITY: usize = 1024;
/// Longest wait for the library to close a connection.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// The Opus payload type registered locally.
const OPUS_PT: u8 = 111;

/// One received audio RTP packet.
#[derive(Clone)]
pub struct RtpAudio {
    /// The m-line it arrived on.
    pub mid: String,
    /// RTP sequence number.
    pub seq: u16,
    /// RTP timestamp (48 kHz).
    pub timestamp: u32,
    /// The Opus payload.
    pub payload: Bytes,
    /// When the transport received it.
    pub arrival: Instant,
}

impl std::fmt::Debug for RtpAudio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtpAudio")
            .field("mid", &self.mid)
            .field("seq", &self.seq)
            .field("timestamp", &self.timestamp)
            .field("len", &self.payload.len())
            .finish()
    }
}

impl From<RtpAudio> for InboundRtp {
    fn from(p: RtpAudio) -> Self {
        InboundRtp {
            seq: p.seq,
            timestamp: p.timestamp,
            payload: p.payload,
            arrival: p.arrival,
        }
    }
}

/// What a transport reports.
#[derive(Debug)]
pub enum TransportEvent {
    /// An audio packet.
    Rtp(RtpAudio),
    /// ICE and DTLS are up; media can flow.
    Connected,
    /// The connection failed (ICE or DTLS); it will not recover by itself.
    Failed(String),
    /// The connection closed.
    Closed,
}

/// Transport settings.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// Local UDP addresses to bind (default `["0.0.0.0:0"]`). A wildcard binds
    /// one socket per non-loopback, non-link-local interface; give a concrete
    /// address (e.g. `127.0.0.1:0`) to bind exactly that one.
    pub udp_bind: Vec<String>,
    /// Longest wait for ICE gathering before an answer is sent (default 5 s).
    pub ice_gather_timeout: Duration,
    /// STUN server URLs (`stun:host:port`) for server-reflexive candidates
    /// (default none: host candidates only, enough when Janus is reachable
    /// directly). TURN is not wired yet.
    pub stun_urls: Vec<String>,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            udp_bind: vec!["0.0.0.0:0".to_owned()],
            ice_gather_timeout: Duration::from_secs(5),
            stun_urls: Vec::new(),
        }
    }
}

/// Why a transport operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The peer connection could not be created (bad settings, no socket).
    #[error("cannot create the WebRTC peer connection: {0}")]
    Setup(String),
    /// The offer is unusable; nothing was applied.
    #[error("unusable SDP offer: {0}")]
    BadOffer(String),
    /// The library refused a negotiation step.
    #[error("SDP negotiation failed at {step}: {reason}")]
    Negotiation {
        /// Which step.
        step: &'static str,
        /// The library's reason.
        reason: String,
    },
    /// ICE gathering did not complete in time.
    #[error("ICE gathering did not complete within {0:?}")]
    GatherTimeout(Duration),
    /// The transport was closed.
    #[error("transport closed")]
    Closed,
    /// The library panicked; the connection must be discarded.
    #[error("WebRTC library failure during {0}")]
    Internal(&'static str),
}

/// The media side of a meeting connection.
#[async_trait]
pub trait MediaTransport: Send {
    /// Applies a remote offer (candidates included; Janus ends them with
    /// `a=end-of-candidates`), answers it, waits (bounded) for ICE gathering
    /// and returns the complete local SDP to send back — no trickle. Also used
    /// for re-offers on the same connection (m-lines added, removed, recycled).
    async fn answer(&mut self, offer_sdp: &str) -> Result<String, TransportError>;

    /// Closes the connection (bounded); idempotent. Events end with `Closed`
    /// unless the consumer already went away.
    async fn close(&mut self);
}

/// What one m-line of an offer is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferedLine {
    /// `a=mid`.
    pub mid: String,
    /// `audio`, `video`, `application`, …
    pub kind: String,
    /// Whether the offerer sends on it (`sendonly`/`sendrecv`, port ≠ 0).
    pub remote_sends: bool,
}

/// Checks an offer and lists its m-lines. Pure: no connection is touched.
pub fn inspect_offer(sdp: &str) -> Result<Vec<OfferedLine>, TransportError> {
    if sdp.len() > MAX_OFFER_BYTES {
        return Err(TransportError::BadOffer(format!(
            "{} bytes, more than {MAX_OFFER_BYTES}",
            sdp.len()
        )));
    }
    let desc = RTCSessionDescription::offer(sdp.to_owned())
        .map_err(|e| TransportError::BadOffer(format!("does not parse: {e}")))?;
    let parsed = desc
        .unmarshal()
        .map_err(|e| TransportError::BadOffer(format!("does not parse: {e}")))?;
    if parsed.media_descriptions.len() > MAX_MLINES {
        return Err(TransportError::BadOffer(format!(
            "{} m-lines, more than {MAX_MLINES}",
            parsed.media_descriptions.len()
        )));
    }
    let session_dir = direction_of(parsed.attributes.iter().map(|a| a.key.as_str()));
    let mut lines = Vec::with_capacity(parsed.media_descriptions.len());
    let mut seen = std::collections::HashSet::new();
    for (i, m) in parsed.media_descriptions.iter().enumerate() {
        let kind = m.media_name.media.clone();
        let Some(Some(mid)) = m.attribute("mid") else {
            return Err(TransportError::BadOffer(format!(
                "m-line {i} ({kind}) has no a=mid"
            )));
        };
        if mid.is_empty() || mid.len() > 64 {
            return Err(TransportError::BadOffer(format!(
                "m-line {i} has an unusable a=mid"
            )));
        }
        if !seen.insert(mid.to_owned()) {
            return Err(TransportError::BadOffer(format!(
                "m-line {i} repeats a mid"
            )));
        }
        let dir = direction_of(m.attributes.iter().map(|a| a.key.as_str())).or(session_dir);
        let sends = matches!(dir, None | Some("sendonly") | Some("sendrecv"));
        lines.push(OfferedLine {
            mid: mid.to_owned(),
            remote_sends: sends && m.media_name.port.value != 0,
            kind,
        });
    }
    Ok(lines)
}

fn direction_of<'a>(mut keys: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    keys.find(|k| matches!(*k, "sendonly" | "sendrecv" | "recvonly" | "inactive"))
}

/// Builds a receive-only webrtc-rs peer. Events arrive on the returned
/// channel until the connection is closed and dropped.
pub async fn connect_webrtc(
    cfg: &TransportConfig,
) -> Result<(Box<dyn MediaTransport>, mpsc::Receiver<TransportEvent>), TransportError> {
    let setup = |e: webrtc::error::Error| TransportError::Setup(e.to_string());
    if cfg.udp_bind.is_empty() {
        return Err(TransportError::Setup("no UDP address to bind".into()));
    }
    let mut media = MediaEngine::default();
    media
        .register_codec(
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: MIME_TYPE_OPUS.to_owned(),
                    clock_rate: 48_000,
                    channels: 2,
                    sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
                    rtcp_feedback: vec![],
                },
                payload_type: OPUS_PT,
            },
            RtpCodecKind::Audio,
        )
        .map_err(setup)?;
    let registry = register_default_interceptors(Registry::new(), &mut media).map_err(setup)?;
    let settings = SettingEngineBuilder::new()
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        .build();
    let ice_servers = if cfg.stun_urls.is_empty() {
        vec![]
    } else {
        vec![RTCIceServer {
            urls: cfg.stun_urls.clone(),
            ..Default::default()
        }]
    };
    let config = RTCConfigurationBuilder::new()
        .with_ice_servers(ice_servers)
        .build();

    let (events_tx, events_rx) = mpsc::channel(EVENT_CHANNEL_CAPACITY);
    let (life_tx, life_rx) = mpsc::unbounded_channel();
    let (tracks_tx, tracks_rx) = mpsc::unbounded_channel();
    let (gather_tx, gather_rx) = watch::channel(RTCIceGatheringState::New);
    let handler = Arc::new(Handler {
        lifecycle: life_tx,
        tracks: tracks_tx,
        gathering: gather_tx,
    });
    let pc = PeerConnectionBuilder::new()
        .with_configuration(config)
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_setting_engine(settings)
        .with_handler(handler)
        .with_runtime(Arc::new(TokioRuntime))
        .with_udp_addrs(cfg.udp_bind.clone())
        .build()
        .await
        .map_err(setup)?;
    let pc: Arc<dyn PeerConnection> = Arc::new(pc);
    tokio::spawn(supervise(
        Arc::downgrade(&pc),
        tracks_rx,
        life_rx,
        events_tx,
    ));
    debug!("WebRTC peer connection created.");
    Ok((
        Box::new(WebRtcTransport {
            pc: Some(pc),
            gathering: gather_rx,
            gather_timeout: cfg.ice_gather_timeout,
        }),
        events_rx,
    ))
}

/// Lifecycle signals from the library's callbacks, forwarded in order.
enum Lifecycle {
    Connected,
    Failed(String),
    Closed,
}

/// The library's callbacks. They run on the connection's driver, so they
/// never block: everything goes through unbounded channels (lifecycle and
/// track announcements are few) or a watch.
struct Handler {
    lifecycle: mpsc::UnboundedSender<Lifecycle>,
    tracks: mpsc::UnboundedSender<Arc<dyn TrackRemote>>,
    gathering: watch::Sender<RTCIceGatheringState>,
}

#[async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        trace!(?state, "ICE gathering state.");
        self.gathering.send_replace(state);
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        debug!(%state, "WebRTC connection state.");
        let ev = match state {
            RTCPeerConnectionState::Connected => Lifecycle::Connected,
            RTCPeerConnectionState::Failed => {
                Lifecycle::Failed("ICE or DTLS failed (no usable path to the server)".into())
            }
            RTCPeerConnectionState::Closed => Lifecycle::Closed,
            _ => return,
        };
        // A send error means the supervisor is gone: nobody is listening.
        let _ = self.lifecycle.send(ev);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self.tracks.send(track);
    }
}

/// Forwards lifecycle events and starts one pump per track. Ends when the
/// connection (which owns the handler) is gone.
async fn supervise(
    pc: Weak<dyn PeerConnection>,
    mut tracks: mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>,
    mut lifecycle: mpsc::UnboundedReceiver<Lifecycle>,
    events: mpsc::Sender<TransportEvent>,
) {
    let mut closed_sent = false;
    loop {
        tokio::select! {
            Some(track) = tracks.recv() => {
                let mid = match pc.upgrade() {
                    Some(pc) => mid_of(pc.as_ref(), &track).await,
                    None => None,
                };
                let kind = track.kind().await;
                match (mid, kind) {
                    (Some(mid), RtpCodecKind::Audio) => {
                        debug!(%mid, "Audio track started.");
                        tokio::spawn(pump(track, mid, events.clone()));
                    }
                    (mid, kind) => {
                        warn!(?mid, ?kind, "Ignoring a track that is not audio on a known m-line.");
                        tokio::spawn(pump_discard(track));
                    }
                }
            }
            Some(ev) = lifecycle.recv() => {
                let ev = match ev {
                    Lifecycle::Connected => TransportEvent::Connected,
                    Lifecycle::Failed(why) => TransportEvent::Failed(why),
                    Lifecycle::Closed => {
                        closed_sent = true;
                        TransportEvent::Closed
                    }
                };
                // A closed channel means the consumer left; keep draining.
                let _ = events.send(ev).await;
            }
            else => break,
        }
    }
    // The connection is gone (closed locally and dropped): say so once, so
    // every connection's events end with `Closed`. Bounded: a consumer that
    // stopped draining does not keep this task alive.
    if !closed_sent {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, events.send(TransportEvent::Closed)).await;
    }
    trace!("WebRTC supervisor ended.");
}

/// The mid of the transceiver whose receiver carries `track`.
async fn mid_of(pc: &dyn PeerConnection, track: &Arc<dyn TrackRemote>) -> Option<String> {
    // Compared by address (as usize so the future stays Send).
    let want = Arc::as_ptr(track).cast::<()>() as usize;
    for t in pc.get_transceivers().await {
        if let Ok(Some(receiver)) = t.receiver().await {
            if Arc::as_ptr(receiver.track()).cast::<()>() as usize == want {
                return t.mid().await.ok().flatten();
            }
        }
    }
    None
}

/// Moves one track's packets to the event channel. Keeps draining the track
/// after the consumer has gone, so the library never sees a full queue; ends
/// when the library ends the track (on close).
async fn pump(track: Arc<dyn TrackRemote>, mid: String, events: mpsc::Sender<TransportEvent>) {
    let mut open = true;
    let mut delivered: u64 = 0;
    while let Some(ev) = track.poll().await {
        match ev {
            TrackRemoteEvent::OnRtpPacket(p) => {
                if !open || p.payload.is_empty() {
                    continue;
                }
                let audio = RtpAudio {
                    mid: mid.clone(),
                    seq: p.header.sequence_number,
                    timestamp: p.header.timestamp,
                    payload: p.payload,
                    arrival: Instant::now(),
                };
                if events.send(TransportEvent::Rtp(audio)).await.is_err() {
                    open = false;
                } else {
                    delivered += 1;
                }
            }
            TrackRemoteEvent::OnEnded => break,
            _ => {}
        }
    }
    debug!(%mid, delivered, "Audio track ended.");
}

async fn pump_discard(track: Arc<dyn TrackRemote>) {
    while let Some(ev) = track.poll().await {
        if matches!(ev, TrackRemoteEvent::OnEnded) {
            break;
        }
    }
}

/// The webrtc-rs transport.
struct WebRtcTransport {
    /// `None` once closed.
    pc: Option<Arc<dyn PeerConnection>>,
    gathering: watch::Receiver<RTCIceGatheringState>,
    gather_timeout: Duration,
}

#[async_trait]
impl MediaTransport for WebRtcTransport {
    async fn answer(&mut self, offer_sdp: &str) -> Result<String, TransportError> {
        let pc = self.pc.clone().ok_or(TransportError::Closed)?;
        let lines = inspect_offer(offer_sdp)?;
        let offer = RTCSessionDescription::offer(offer_sdp.to_owned())
            .map_err(|e| TransportError::BadOffer(e.to_string()))?;
        let gathering = self.gathering.clone();
        let timeout = self.gather_timeout;
        // Negotiation runs in its own task so a panic inside the library on
        // odd input becomes an error instead of unwinding through the caller.
        let task = tokio::spawn(negotiate(pc, offer, lines, gathering, timeout));
        match task.await {
            Ok(result) => result,
            Err(e) if e.is_panic() => {
                warn!("The WebRTC library panicked while answering an offer.");
                Err(TransportError::Internal("answer"))
            }
            Err(_) => Err(TransportError::Internal("answer (cancelled)")),
        }
    }

    async fn close(&mut self) {
        let Some(pc) = self.pc.take() else {
            return;
        };
        match tokio::time::timeout(CLOSE_TIMEOUT, pc.close()).await {
            Ok(Ok(())) => debug!("WebRTC peer connection closed."),
            Ok(Err(e)) => debug!(error = %e, "WebRTC close reported an error."),
            Err(_) => warn!("WebRTC close timed out; dropping the connection."),
        }
    }
}

/// set_remote → directions → create_answer → set_local → gathering → SDP.
async fn negotiate(
    pc: Arc<dyn PeerConnection>,
    offer: RTCSessionDescription,
    lines: Vec<OfferedLine>,
    mut gathering: watch::Receiver<RTCIceGatheringState>,
    gather_timeout: Duration,
) -> Result<String, TransportError> {
    let step = |step: &'static str| {
        move |e: webrtc::error::Error| TransportError::Negotiation {
            step,
            reason: e.to_string(),
        }
    };
    let result = match pc.set_remote_description(offer).await {
        Ok(()) => answer_applied(&pc, &lines, &mut gathering, gather_timeout).await,
        Err(e) => Err(step("set_remote_description")(e)),
    };
    if result.is_err() {
        // Back to `stable`, so the connection can take the next offer. Also
        // after a failed set_remote_description: 0.21.1 can leave the
        // signalling state at have-remote-offer when it rejects an offer late
        // (e.g. one without a fingerprint).
        let mut rollback = RTCSessionDescription::default();
        rollback.sdp_type = RTCSdpType::Rollback;
        if let Err(e) = pc.set_remote_description(rollback).await {
            debug!(error = %e, "Rollback after a failed answer did not apply.");
        }
    }
    result
}

/// The rest of [`negotiate`], after the remote offer is applied.
async fn answer_applied(
    pc: &Arc<dyn PeerConnection>,
    lines: &[OfferedLine],
    gathering: &mut watch::Receiver<RTCIceGatheringState>,
    gather_timeout: Duration,
) -> Result<String, TransportError> {
    let step = |step: &'static str| {
        move |e: webrtc::error::Error| TransportError::Negotiation {
            step,
            reason: e.to_string(),
        }
    };

    // Receive audio the remote sends; nothing else.
    let wanted: HashMap<&str, bool> = lines
        .iter()
        .map(|l| (l.mid.as_str(), l.kind == "audio" && l.remote_sends))
        .collect();
    let mut receiving = 0usize;
    for t in pc.get_transceivers().await {
        let Ok(Some(mid)) = t.mid().await else {
            continue;
        };
        let Some(&recv) = wanted.get(mid.as_str()) else {
            continue;
        };
        let dir = if recv {
            receiving += 1;
            RTCRtpTransceiverDirection::Recvonly
        } else {
            RTCRtpTransceiverDirection::Inactive
        };
        if let Err(e) = t.set_direction(dir).await {
            // A stopped transceiver (a rejected m-line) cannot change direction.
            trace!(%mid, error = %e, "Transceiver direction unchanged.");
        }
    }

    let answer = pc
        .create_answer(None)
        .await
        .map_err(step("create_answer"))?;
    pc.set_local_description(answer)
        .await
        .map_err(step("set_local_description"))?;

    let complete = gathering.wait_for(|s| *s == RTCIceGatheringState::Complete);
    match tokio::time::timeout(gather_timeout, complete).await {
        Ok(Ok(_)) => {}
        Ok(Err(_)) => return Err(TransportError::Closed),
        Err(_) => return Err(TransportError::GatherTimeout(gather_timeout)),
    }
    let local = pc
        .local_description()
        .await
        .ok_or(TransportError::Negotiation {
            step: "local_description",
            reason: "no local description after set_local_description".into(),
        })?;
    info!(m_lines = lines.len(), receiving, "Answered a WebRTC offer.");
    Ok(local.sdp)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE a v\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:a\r\na=sendonly\r\na=rtpmap:111 opus/48000/2\r\n\
m=video 0 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:v\r\na=inactive\r\na=rtpmap:96 VP8/90000\r\n";

    #[test]
    fn inspect_lists_mlines() {
        let lines = inspect_offer(OFFER).expect("valid offer");
        assert_eq!(
            lines,
            vec![
                OfferedLine {
                    mid: "a".into(),
                    kind: "audio".into(),
                    remote_sends: true
                },
                OfferedLine {
                    mid: "v".into(),
                    kind: "video".into(),
                    remote_sends: false
                },
            ]
        );
    }

    #[test]
    fn inspect_rejects_bad_offers() {
        assert!(matches!(
            inspect_offer("garbage"),
            Err(TransportError::BadOffer(_))
        ));
        assert!(matches!(
            inspect_offer(""),
            Err(TransportError::BadOffer(_))
        ));
        let no_mid = OFFER.replace("a=mid:a\r\n", "");
        assert!(matches!(
            inspect_offer(&no_mid),
            Err(TransportError::BadOffer(_))
        ));
        let dup = OFFER.replace("a=mid:v", "a=mid:a");
        assert!(matches!(
            inspect_offer(&dup),
            Err(TransportError::BadOffer(_))
        ));
        let huge = "x".repeat(MAX_OFFER_BYTES + 1);
        assert!(matches!(
            inspect_offer(&huge),
            Err(TransportError::BadOffer(_))
        ));
    }

    /// Truncations and byte flips of a real offer never panic.
    #[test]
    fn inspect_survives_mangled_offers() {
        let bytes = OFFER.as_bytes();
        for cut in 0..bytes.len() {
            let _ = inspect_offer(&String::from_utf8_lossy(&bytes[..cut]));
        }
        for i in 0..bytes.len() {
            for b in [b'\r', b'\n', b' ', b':', b'=', b'0', b'x', 0xff] {
                let mut m = bytes.to_vec();
                m[i] = b;
                let _ = inspect_offer(&String::from_utf8_lossy(&m));
            }
        }
    }
}
