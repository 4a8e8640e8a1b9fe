//! The webrtc-rs media transport against a second webrtc-rs peer in the same
//! process, over 127.0.0.1 (webrtc-rs, unlike Janus, does ICE over loopback
//! when a loopback address is bound explicitly).
//!
//! The sender plays Janus's part: it offers `sendonly` Opus m-lines with
//! candidates included, our transport answers without trickle, and the sender
//! writes real 20 ms Opus packets with known sequence numbers.
//!
//! Tests run one at a time (a process-wide lock) so the memory test measures
//! only itself.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use meetbot::platform::janus::jitter::{JitterBuffer, JitterConfig, JitterOutput};
use meetbot::platform::janus::transport::{
    connect_webrtc, inspect_offer, RtpAudio, TransportConfig, TransportError, TransportEvent,
};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::peer_connection::{
    register_default_interceptors, MediaEngine, PeerConnection, PeerConnectionBuilder,
    PeerConnectionEventHandler, RTCIceGatheringState, RTCPeerConnectionState,
    RTCSessionDescription, Registry,
};
use webrtc::runtime::TokioRuntime;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const WAIT: Duration = Duration::from_secs(10);

fn loopback_cfg() -> TransportConfig {
    TransportConfig {
        udp_bind: vec!["127.0.0.1:0".to_owned()],
        ..TransportConfig::default()
    }
}

struct SendHandler {
    gathering: watch::Sender<RTCIceGatheringState>,
    state: watch::Sender<RTCPeerConnectionState>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for SendHandler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        self.gathering.send_replace(state);
    }
    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        self.state.send_replace(state);
    }
}

/// The Janus stand-in: a webrtc-rs peer that offers and sends.
struct SenderPeer {
    pc: Arc<dyn PeerConnection>,
    gathering: watch::Receiver<RTCIceGatheringState>,
    state: watch::Receiver<RTCPeerConnectionState>,
    opus_pt: u8,
}

impl SenderPeer {
    async fn new(opus_pt: u8, with_video: bool) -> Self {
        let mut media = MediaEngine::default();
        media
            .register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: opus_codec(),
                    payload_type: opus_pt,
                },
                RtpCodecKind::Audio,
            )
            .expect("register opus");
        if with_video {
            media
                .register_codec(
                    RTCRtpCodecParameters {
                        rtp_codec: vp8_codec(),
                        payload_type: 96,
                    },
                    RtpCodecKind::Video,
                )
                .expect("register vp8");
        }
        let registry =
            register_default_interceptors(Registry::new(), &mut media).expect("interceptors");
        let (gtx, gathering) = watch::channel(RTCIceGatheringState::New);
        let (stx, state) = watch::channel(RTCPeerConnectionState::New);
        let pc = PeerConnectionBuilder::new()
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .with_handler(Arc::new(SendHandler {
                gathering: gtx,
                state: stx,
            }))
            .with_runtime(Arc::new(TokioRuntime))
            .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
            .build()
            .await
            .expect("sender peer");
        Self {
            pc: Arc::new(pc),
            gathering,
            state,
            opus_pt,
        }
    }

    /// Adds a sendonly track and returns it.
    async fn add_track(&self, id: &str, ssrc: u32, kind: RtpCodecKind) -> Arc<TrackLocalStaticRTP> {
        let codec = match kind {
            RtpCodecKind::Video => vp8_codec(),
            _ => opus_codec(),
        };
        let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            format!("stream-{id}"),
            format!("track-{id}"),
            format!("label-{id}"),
            kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec,
                ..Default::default()
            }],
        )));
        self.pc
            .add_transceiver_from_track(
                Arc::clone(&track) as Arc<dyn TrackLocal>,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Sendonly,
                    streams: vec![],
                    send_encodings: vec![],
                }),
            )
            .await
            .expect("add transceiver");
        track
    }

    /// A full (non-trickle) offer, like Janus's.
    async fn offer(&mut self) -> String {
        let offer = self.pc.create_offer(None).await.expect("create offer");
        self.pc
            .set_local_description(offer)
            .await
            .expect("set local offer");
        tokio::time::timeout(
            WAIT,
            self.gathering
                .wait_for(|s| *s == RTCIceGatheringState::Complete),
        )
        .await
        .expect("sender gathering")
        .expect("sender alive");
        self.pc.local_description().await.expect("local offer").sdp
    }

    async fn accept(&self, answer: String) {
        self.pc
            .set_remote_description(RTCSessionDescription::answer(answer).expect("answer parses"))
            .await
            .expect("set remote answer");
    }

    async fn wait_connected(&mut self) {
        tokio::time::timeout(
            WAIT,
            self.state
                .wait_for(|s| *s == RTCPeerConnectionState::Connected),
        )
        .await
        .expect("sender connects")
        .expect("sender alive");
    }
}

fn opus_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

fn vp8_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_VP8.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback: vec![],
    }
}

/// `n` real 20 ms Opus frames of a tone.
fn opus_frames(n: usize, hz: f32) -> Vec<Bytes> {
    let mut enc =
        opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).expect("encoder");
    let mut out = vec![0u8; 1500];
    (0..n)
        .map(|i| {
            let pcm: Vec<i16> = (0..960)
                .map(|s| {
                    let t = (i * 960 + s) as f32 / 48_000.0;
                    ((t * hz * std::f32::consts::TAU).sin() * 8000.0) as i16
                })
                .collect();
            let len = enc.encode(&pcm, &mut out).expect("encode");
            Bytes::copy_from_slice(&out[..len])
        })
        .collect()
}

/// The mid of the `idx`-th m-line of an SDP.
fn mid_at(sdp: &str, idx: usize) -> String {
    inspect_offer(sdp).expect("sdp")[idx].mid.clone()
}

/// Writes `frames` on `track` every 20 ms from `seq0`; returns send times.
async fn send_frames(
    track: &TrackLocalStaticRTP,
    pt: u8,
    ssrc: u32,
    seq0: u16,
    ts0: u32,
    frames: &[Bytes],
) -> Vec<Instant> {
    let mut sent = Vec::with_capacity(frames.len());
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for (i, payload) in frames.iter().enumerate() {
        tick.tick().await;
        let packet = rtc::rtp::packet::Packet {
            header: rtc::rtp::header::Header {
                version: 2,
                payload_type: pt,
                sequence_number: seq0.wrapping_add(i as u16),
                timestamp: ts0.wrapping_add(960 * i as u32),
                ssrc,
                marker: i == 0,
                ..Default::default()
            },
            payload: payload.clone(),
        };
        sent.push(Instant::now());
        track.write_rtp(packet).await.expect("write rtp");
    }
    sent
}

/// Collects RTP events until `n` packets or the deadline; returns them and
/// whether `Connected` was seen.
async fn collect(
    rx: &mut mpsc::Receiver<TransportEvent>,
    n: usize,
    wait: Duration,
) -> Vec<RtpAudio> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut got = Vec::new();
    while got.len() < n {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(TransportEvent::Rtp(p))) => got.push(p),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    got
}

async fn wait_connected(rx: &mut mpsc::Receiver<TransportEvent>) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(TransportEvent::Connected)) => return,
            Ok(Some(TransportEvent::Failed(why))) => panic!("transport failed: {why}"),
            Ok(Some(_)) => {}
            Ok(None) => panic!("events ended before Connected"),
            Err(_) => panic!("no Connected within {WAIT:?}"),
        }
    }
}

fn rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_opus_with_mid_payloads_and_order_through_the_jitter_buffer() {
    let _serial = SERIAL.lock().await;
    let mut sender = SenderPeer::new(111, false).await;
    let track = sender.add_track("a", 0x1111, RtpCodecKind::Audio).await;
    let offer = sender.offer().await;
    let (mut transport, mut rx) = connect_webrtc(&loopback_cfg()).await.expect("transport");
    let answer = transport.answer(&offer).await.expect("answer");
    println!("--- answer SDP ---\n{answer}------------------");
    assert!(answer.contains("a=recvonly"), "audio answered recvonly");
    assert!(
        answer.contains("a=candidate:"),
        "candidates included (non-trickle)"
    );
    assert!(answer.contains("opus/48000/2"));
    sender.accept(answer).await;
    wait_connected(&mut rx).await;
    sender.wait_connected().await;

    let frames = opus_frames(150, 440.0);
    let seq0 = 65_500; // wraps
    let sending = {
        let track = Arc::clone(&track);
        let frames = frames.clone();
        tokio::spawn(async move { send_frames(&track, 111, 0x1111, seq0, 7, &frames).await })
    };
    let got = collect(&mut rx, frames.len(), WAIT).await;
    let sent = sending.await.expect("sender task");
    assert_eq!(got.len(), frames.len(), "every packet arrives on loopback");
    let mid = mid_at(&offer, 0);
    let mut latency_us = Vec::new();
    let meeting_start = sent[0] - Duration::from_millis(500);
    let mut jb = JitterBuffer::new(JitterConfig::default(), meeting_start);
    let mut out = Vec::new();
    let mut jb_delay_us = Vec::new();
    for (i, p) in got.iter().enumerate() {
        assert_eq!(p.mid, mid);
        assert_eq!(p.seq, seq0.wrapping_add(i as u16), "in sequence order");
        assert_eq!(p.timestamp, 7 + 960 * i as u32);
        assert_eq!(p.payload, frames[i], "payload {i} intact");
        latency_us.push(p.arrival.saturating_duration_since(sent[i]).as_micros() as u64);
        jb.push(p.clone().into());
        // Pop at arrival time, and once more when the buffer asks.
        let mut now = p.arrival;
        loop {
            while let Some(o) = jb.pop(now) {
                if let JitterOutput::Packet(op) = &o {
                    let idx = usize::from(op.seq.wrapping_sub(seq0));
                    jb_delay_us
                        .push(now.saturating_duration_since(got[idx].arrival).as_micros() as u64);
                }
                out.push(o);
            }
            match jb.poll_timeout() {
                Some(t) if t > now && (i + 1 == got.len() || t <= got[i + 1].arrival) => now = t,
                _ => break,
            }
        }
    }
    let packets: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            JitterOutput::Packet(p) => Some(p),
            JitterOutput::Gap { .. } => None,
        })
        .collect();
    assert_eq!(packets.len(), frames.len());
    for (i, p) in packets.iter().enumerate() {
        assert_eq!(p.seq, seq0.wrapping_add(i as u16));
        assert_eq!(
            p.at_ms,
            packets[0].at_ms + 20 * i as u64,
            "meeting clock follows RTP time"
        );
    }
    assert!(
        (500..=600).contains(&packets[0].at_ms),
        "anchored at arrival: {}",
        packets[0].at_ms
    );
    latency_us.sort_unstable();
    let mut jb_sorted = jb_delay_us.clone();
    jb_sorted.sort_unstable();
    println!(
        "delivered {}/{} packets; transport latency p50 {} us, max {} us; jitter-buffer delay first {} us, p50 {} us, max {} us",
        got.len(),
        frames.len(),
        latency_us[latency_us.len() / 2],
        latency_us[latency_us.len() - 1],
        jb_delay_us[0],
        jb_sorted[jb_sorted.len() / 2],
        jb_sorted[jb_sorted.len() - 1],
    );
    transport.close().await;
    let _ = sender.pc.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepts_the_offers_own_opus_payload_type_and_rejects_video() {
    let _serial = SERIAL.lock().await;
    let mut sender = SenderPeer::new(109, true).await;
    let track = sender.add_track("a", 0x2222, RtpCodecKind::Audio).await;
    let _video = sender.add_track("v", 0x3333, RtpCodecKind::Video).await;
    let offer = sender.offer().await;
    assert!(offer.contains("a=rtpmap:109 opus/48000/2"));
    let (mut transport, mut rx) = connect_webrtc(&loopback_cfg()).await.expect("transport");
    let answer = transport.answer(&offer).await.expect("answer");
    println!("--- answer SDP (audio pt 109 + video) ---\n{answer}------------------");
    let lines = inspect_offer(&answer).expect("answer parses as SDP");
    assert_eq!(lines.len(), 2);
    let video = answer
        .split("m=")
        .find(|s| s.starts_with("video"))
        .expect("video m-line answered");
    assert!(
        video.starts_with("video 0 ") || video.contains("a=inactive"),
        "video rejected or inactive: {video}"
    );
    assert!(
        answer.contains("a=rtpmap:109 opus/48000/2"),
        "answers with the offer's pt"
    );
    sender.accept(answer).await;
    wait_connected(&mut rx).await;
    sender.wait_connected().await;
    let frames = opus_frames(20, 300.0);
    send_frames(&track, sender.opus_pt, 0x2222, 1, 0, &frames).await;
    let got = collect(&mut rx, frames.len(), WAIT).await;
    assert_eq!(got.len(), frames.len());
    assert!(got.iter().all(|p| p.mid == mid_at(&offer, 0)));
    assert_eq!(
        got.iter().map(|p| p.payload.clone()).collect::<Vec<_>>(),
        frames
    );
    transport.close().await;
    let _ = sender.pc.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renegotiation_adds_a_second_mid_on_the_same_connection() {
    let _serial = SERIAL.lock().await;
    let mut sender = SenderPeer::new(111, false).await;
    let first = sender.add_track("a", 0x4444, RtpCodecKind::Audio).await;
    let offer1 = sender.offer().await;
    let (mut transport, mut rx) = connect_webrtc(&loopback_cfg()).await.expect("transport");
    let answer1 = transport.answer(&offer1).await.expect("answer 1");
    sender.accept(answer1).await;
    wait_connected(&mut rx).await;
    sender.wait_connected().await;

    let second = sender.add_track("b", 0x5555, RtpCodecKind::Audio).await;
    let offer2 = sender.offer().await;
    let t = Instant::now();
    let answer2 = transport.answer(&offer2).await.expect("answer 2");
    println!("renegotiation answer took {:?}", t.elapsed());
    assert_eq!(inspect_offer(&answer2).expect("answer 2 parses").len(), 2);
    sender.accept(answer2).await;
    let (mid_a, mid_b) = (mid_at(&offer2, 0), mid_at(&offer2, 1));
    assert_ne!(mid_a, mid_b);

    let fa = opus_frames(25, 200.0);
    let fb = opus_frames(25, 600.0);
    let (sa, sb) = {
        let (first, second) = (Arc::clone(&first), Arc::clone(&second));
        let (fa, fb) = (fa.clone(), fb.clone());
        (
            tokio::spawn(async move { send_frames(&first, 111, 0x4444, 100, 0, &fa).await }),
            tokio::spawn(async move { send_frames(&second, 111, 0x5555, 9000, 0, &fb).await }),
        )
    };
    let got = collect(&mut rx, 50, WAIT).await;
    sa.await.expect("send a");
    sb.await.expect("send b");
    let a: Vec<_> = got.iter().filter(|p| p.mid == mid_a).collect();
    let b: Vec<_> = got.iter().filter(|p| p.mid == mid_b).collect();
    assert_eq!(a.len(), 25, "first mid keeps delivering");
    assert_eq!(b.len(), 25, "added mid delivers");
    assert!(a
        .iter()
        .enumerate()
        .all(|(i, p)| p.seq == 100 + i as u16 && p.payload == fa[i]));
    assert!(b
        .iter()
        .enumerate()
        .all(|(i, p)| p.seq == 9000 + i as u16 && p.payload == fb[i]));

    // Removing the first track: the m-line goes inactive, the second keeps going.
    let senders = sender.pc.get_senders().await;
    let sender_a = senders
        .iter()
        .find(|s| Arc::as_ptr(s.track()).cast::<()>() == Arc::as_ptr(&first).cast::<()>())
        .expect("sender of a")
        .clone();
    sender.pc.remove_track(&sender_a).await.expect("remove a");
    let offer3 = sender.offer().await;
    let answer3 = transport.answer(&offer3).await.expect("answer 3");
    sender.accept(answer3).await;
    send_frames(&second, 111, 0x5555, 9025, 960 * 25, &fb[..10]).await;
    let got = collect(&mut rx, 10, WAIT).await;
    assert_eq!(got.len(), 10);
    assert!(got.iter().all(|p| p.mid == mid_b));
    transport.close().await;
    let _ = sender.pc.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_offers_are_errors_and_the_transport_survives_them() {
    let _serial = SERIAL.lock().await;
    let mut sender = SenderPeer::new(111, false).await;
    sender.add_track("a", 0x6666, RtpCodecKind::Audio).await;
    let offer = sender.offer().await;
    let (mut transport, mut rx) = connect_webrtc(&loopback_cfg()).await.expect("transport");

    let mut bad: Vec<String> = vec![
        String::new(),
        "garbage".into(),
        "v=0\r\n".into(),
        offer.replace("a=mid:", "a=nomid:"),
        offer.replace("a=fingerprint:", "a=fingerprlnt:"),
        offer.replace("a=ice-ufrag:", "a=ice-ufrog:"),
        offer.replace("UDP/TLS/RTP/SAVPF", "RTP/AVP"),
        offer.replace("opus/48000/2", "speex/8000"),
        offer.replace("m=audio", "m=text"),
    ];
    for cut in (0..offer.len()).step_by(offer.len() / 24 + 1) {
        bad.push(offer[..cut].to_owned());
    }
    let mut rejected = 0;
    for sdp in &bad {
        // Some truncations are still a valid offer: then it is answered.
        if let Err(e) = transport.answer(sdp).await {
            rejected += 1;
            assert!(!e.to_string().is_empty());
        }
    }
    println!("{rejected}/{} odd offers rejected with an error", bad.len());
    assert!(rejected >= 4);
    // The same connection still answers the real offer and connects.
    let answer = transport
        .answer(&offer)
        .await
        .expect("answer after odd offers");
    sender.accept(answer).await;
    wait_connected(&mut rx).await;
    transport.close().await;
    assert!(matches!(
        transport.answer(&offer).await,
        Err(TransportError::Closed)
    ));
    let _ = sender.pc.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_ends_the_event_stream() {
    let _serial = SERIAL.lock().await;
    let mut sender = SenderPeer::new(111, false).await;
    let track = sender.add_track("a", 0x7777, RtpCodecKind::Audio).await;
    let offer = sender.offer().await;
    let (mut transport, mut rx) = connect_webrtc(&loopback_cfg()).await.expect("transport");
    sender
        .accept(transport.answer(&offer).await.expect("answer"))
        .await;
    wait_connected(&mut rx).await;
    send_frames(&track, 111, 0x7777, 0, 0, &opus_frames(5, 440.0)).await;
    let t = Instant::now();
    transport.close().await;
    transport.close().await; // idempotent
    let closed_in = t.elapsed();
    drop(transport);
    let mut saw_closed = 0;
    let ended = tokio::time::timeout(WAIT, async {
        while let Some(ev) = rx.recv().await {
            if matches!(ev, TransportEvent::Closed) {
                saw_closed += 1;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "events end after close and drop");
    assert_eq!(saw_closed, 1, "exactly one Closed");
    println!("close took {closed_in:?}");
    let _ = sender.pc.close().await;
}

/// webrtc-rs #906 was an Arc cycle that kept every closed connection alive.
/// Each cycle must free its connection (the event channel ends, which needs
/// the library to drop our handler) and RSS must stay flat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_answer_close_drop_cycles_do_not_leak() {
    let _serial = SERIAL.lock().await;
    let mut sender = SenderPeer::new(111, false).await;
    sender.add_track("a", 0x8888, RtpCodecKind::Audio).await;
    let offer = sender.offer().await;
    async fn cycle(offer: &str) {
        let (mut transport, mut rx) = connect_webrtc(&loopback_cfg()).await.expect("transport");
        transport.answer(offer).await.expect("answer");
        transport.close().await;
        drop(transport);
        let ended = tokio::time::timeout(Duration::from_secs(5), async {
            while rx.recv().await.is_some() {}
        })
        .await;
        assert!(ended.is_ok(), "connection freed after close + drop");
    }
    for _ in 0..10 {
        cycle(&offer).await;
    }
    let before = rss_kb();
    let t = Instant::now();
    const CYCLES: u64 = 50;
    for _ in 0..CYCLES {
        cycle(&offer).await;
    }
    let after = rss_kb();
    let per_cycle = after.saturating_sub(before) * 1024 / CYCLES;
    println!(
        "{CYCLES} create/answer/close/drop cycles in {:?}: RSS {before} kB -> {after} kB ({per_cycle} B/cycle)",
        t.elapsed()
    );
    // Cost of live connections: 20 answered at once.
    let rss0 = rss_kb();
    let mut live = Vec::new();
    for _ in 0..20 {
        let (mut transport, rx) = connect_webrtc(&loopback_cfg()).await.expect("transport");
        transport.answer(&offer).await.expect("answer");
        live.push((transport, rx));
    }
    let rss1 = rss_kb();
    let threads = std::fs::read_dir("/proc/self/task")
        .expect("tasks")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|c| c.starts_with("webrtc-rx"))
        .inspect(|c| println!("thread: {}", c.trim()))
        .count();
    println!(
        "20 live answered connections: RSS +{} kB ({} kB each); threads named webrtc*: {threads}",
        rss1.saturating_sub(rss0),
        rss1.saturating_sub(rss0) / 20
    );
    assert_eq!(threads, 0, "drivers run on the ambient runtime");
    for (mut transport, _rx) in live {
        transport.close().await;
    }
    assert!(
        after <= before + 4 * 1024,
        "RSS grew {} kB over {CYCLES} cycles",
        after.saturating_sub(before)
    );
    let _ = sender.pc.close().await;
}
