//! One participant's audio path: Opus packets in, utterances out.
//!
//! ```text
//! OpusPacket ─▶ loss/jitter handling ─▶ Opus decode (16 kHz mono)
//!            ─▶ Vad ─▶ Utterance (meeting clock)
//! ```
//!
//! Sans-IO: no clock is read; time comes from [`OpusPacket::at_ms`]. The first
//! packet fixes where the participant's stream sits on the meeting clock; after
//! that the stream is kept aligned to `at_ms`:
//!
//! * a packet whose sequence number is not newer than the last one (duplicate
//!   or late) is dropped, unless it is not behind on the meeting clock: then
//!   the stream restarted (a rejoin, a new sender) and it is taken as such,
//!   like a forward jump of more than [`RESTART_PACKETS`];
//! * a hole of up to [`MAX_PLC_MS`] where packets are missing is filled with
//!   Opus packet-loss concealment, sized from the last packet's duration,
//!   except its last packet's worth, which is recovered from the in-band FEC
//!   (LBRR) data the next packet carries when the sender added it (Chrome
//!   does, `useinbandfec=1`); libopus falls back to concealment otherwise;
//! * a longer hole, or one without missing sequence numbers (DTX, a muted
//!   sender), becomes silence that the VAD never takes for speech, at a cost
//!   that does not grow with the hole's length;
//! * a payload the decoder rejects is concealed like a lost packet;
//! * a packet due more than [`MAX_AHEAD_MS`] before the end of the audio
//!   already produced is skipped (junk that decoded to long frames), so the
//!   stream never drifts ahead of the meeting clock.
//!
//! Plaintext audio lives only in bounded buffers: one packet of decode scratch
//! and the VAD's utterance buffer (at most `max_utterance`).

use tracing::{debug, trace};

use crate::core::media::{OpusPacket, ParticipantId, Utterance};
use crate::core::vad::{Vad, VadConfig, VadSegment};

/// The stream's clock counts 48 kHz samples (Opus's RTP clock), so every Opus
/// duration is a whole number of them.
const RATE_48K: u64 = 48_000;
/// Samples per ms at 48 kHz.
const PER_MS_48K: u64 = RATE_48K / 1000;
/// Samples per ms at 16 kHz.
const PER_MS_16K: u64 = 16;
/// Opus decodes straight to the rate the VAD and STT use: libopus band-limits
/// internally, which is cheaper than decoding at 48 kHz (SILK upsamples to it)
/// and decimating back.
const DECODE_RATE: u32 = 16_000;
/// 48 kHz samples per decoded sample.
const CLOCK_PER_DECODED: usize = 3;
/// Longest Opus packet, 120 ms at 48 kHz.
const MAX_PACKET_SAMPLES: usize = 5_760;
/// The decode scratch size: 120 ms at 16 kHz.
const MAX_DECODED: usize = MAX_PACKET_SAMPLES / CLOCK_PER_DECODED;
/// Opus conceals in multiples of 2.5 ms.
const PLC_QUANTUM: u64 = 120;
/// Longest hole filled by concealment rather than silence, ms.
pub const MAX_PLC_MS: u64 = 120;
/// How far the stream may run ahead of a packet's `at_ms` before that packet
/// is skipped, ms.
pub const MAX_AHEAD_MS: u64 = 100;
/// A forward sequence jump larger than this is a restarted stream rather than
/// loss (20 s of 20 ms packets; the jitter buffer's default resync threshold).
pub const RESTART_PACKETS: u16 = 1000;
/// Lateness of `at_ms` tolerated without inserting anything (clock jitter), in
/// 48 kHz samples (2.5 ms).
const JITTER_TOLERANCE: u64 = PLC_QUANTUM;

/// Why a pipeline cannot be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AudioError {
    /// The VAD settings are invalid.
    #[error("invalid VAD settings: {0}")]
    Config(String),
    /// libopus refused to create a decoder.
    #[error("cannot create Opus decoder: {0}")]
    Decoder(String),
}

/// Counters for one participant's stream (no audio content).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PipelineStats {
    /// Packets decoded.
    pub decoded: u64,
    /// Duplicate or late packets dropped.
    pub dropped: u64,
    /// Payloads the decoder rejected (concealed instead).
    pub corrupt: u64,
    /// 48 kHz samples produced by loss concealment.
    pub concealed_samples: u64,
    /// 48 kHz samples of silence inserted for holes.
    pub silence_samples: u64,
    /// 48 kHz samples recovered from in-band FEC (or concealed by libopus
    /// when the packet carried none).
    pub fec_samples: u64,
    /// Times the stream restarted (a large sequence jump not late in time).
    pub restarts: u64,
}

/// Decode (16 kHz) → VAD for one participant.
pub struct ParticipantPipeline {
    id: ParticipantId,
    decoder: opus::Decoder,
    vad: Vad,
    /// Decode scratch (16 kHz).
    pcm16: Vec<f32>,
    /// VAD output scratch.
    segments: Vec<VadSegment>,
    /// Meeting-clock ms of stream sample 0; set by the first packet.
    origin_ms: Option<u64>,
    /// 48 kHz samples in the stream so far (decoded, concealed or silent).
    samples48: u64,
    last_seq: u16,
    /// Duration of the last decoded packet, 48 kHz samples.
    last_duration: usize,
    stats: PipelineStats,
    /// Decode-only mode ([`decode_range`]): samples go here, not to the VAD.
    collect: Option<Collect>,
}

/// Collects the decoded stream between two meeting-clock times.
struct Collect {
    from_ms: u64,
    to_ms: u64,
    /// 16 kHz samples of the stream so far.
    pos: u64,
    /// Capacity reserved up front: it never reallocates.
    out: zeroize::Zeroizing<Vec<f32>>,
}

impl Collect {
    /// The window in stream samples, once the origin is known.
    fn window(&self, origin_ms: Option<u64>) -> (u64, u64) {
        let origin = origin_ms.unwrap_or(0);
        (
            self.from_ms.saturating_sub(origin) * PER_MS_16K,
            self.to_ms.saturating_sub(origin) * PER_MS_16K,
        )
    }

    fn take(&mut self, samples: &[f32], origin_ms: Option<u64>) {
        let (a, b) = self.window(origin_ms);
        let start = self.pos;
        let end = start + samples.len() as u64;
        self.pos = end;
        let (lo, hi) = (start.max(a), end.min(b));
        if lo < hi {
            let room = self.out.capacity() - self.out.len();
            let slice = &samples[(lo - start) as usize..(hi - start) as usize];
            self.out.extend_from_slice(&slice[..slice.len().min(room)]);
        }
    }

    fn skip(&mut self, n: u64, origin_ms: Option<u64>) {
        let (a, b) = self.window(origin_ms);
        let start = self.pos;
        let end = start.saturating_add(n);
        self.pos = end;
        let (lo, hi) = (start.max(a), end.min(b));
        if lo < hi {
            let room = (self.out.capacity() - self.out.len()) as u64;
            let k = (hi - lo).min(room) as usize;
            self.out.extend(std::iter::repeat_n(0.0, k));
        }
    }
}

impl std::fmt::Debug for ParticipantPipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParticipantPipeline")
            .field("id", &self.id)
            .field("origin_ms", &self.origin_ms)
            .field("samples48", &self.samples48)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl ParticipantPipeline {
    /// A pipeline for participant `id`.
    pub fn new(id: ParticipantId, vad: &VadConfig) -> Result<Self, AudioError> {
        let vad = Vad::new(vad).map_err(AudioError::Config)?;
        let decoder = opus::Decoder::new(DECODE_RATE, opus::Channels::Mono)
            .map_err(|e| AudioError::Decoder(e.to_string()))?;
        Ok(ParticipantPipeline {
            id,
            decoder,
            vad,
            pcm16: vec![0.0; MAX_DECODED],
            segments: Vec::new(),
            origin_ms: None,
            samples48: 0,
            last_seq: 0,
            last_duration: 960,
            stats: PipelineStats::default(),
            collect: None,
        })
    }

    /// The participant.
    pub fn id(&self) -> &ParticipantId {
        &self.id
    }

    /// Meeting-clock time (ms) just after the audio processed so far; `None`
    /// before the first packet.
    pub fn stream_end_ms(&self) -> Option<u64> {
        self.origin_ms
            .map(|o| o.saturating_add(self.samples48 / PER_MS_48K))
    }

    /// Counters so far.
    pub fn stats(&self) -> PipelineStats {
        self.stats
    }

    /// Takes one packet; returns the utterances it completed (usually none).
    pub fn push(&mut self, packet: &OpusPacket) -> Vec<Utterance> {
        self.push_parts(packet.seq, packet.at_ms, &packet.payload)
    }

    /// [`ParticipantPipeline::push`] of a packet given by its parts.
    fn push_parts(&mut self, seq: u16, at_ms: u64, payload: &[u8]) -> Vec<Utterance> {
        struct Packet<'a> {
            seq: u16,
            at_ms: u64,
            payload: &'a [u8],
        }
        let packet = Packet {
            seq,
            at_ms,
            payload,
        };
        match self.origin_ms {
            None => self.origin_ms = Some(packet.at_ms),
            Some(origin) => {
                let ahead = packet.seq.wrapping_sub(self.last_seq);
                let expected = origin
                    .saturating_mul(PER_MS_48K)
                    .saturating_add(self.samples48);
                let due = packet.at_ms.saturating_mul(PER_MS_48K);
                let not_newer = ahead == 0 || ahead >= 0x8000;
                // A late or duplicate packet's slot has played: its time is
                // before the stream's end. One that is not behind in time but
                // whose sequence number says otherwise (or leaps ahead) is a
                // new stream: a rejoin, a restarted sender.
                let in_time = due.saturating_add(JITTER_TOLERANCE) >= expected;
                let restart = in_time && (not_newer || ahead > RESTART_PACKETS);
                if restart {
                    self.stats.restarts += 1;
                    debug!(participant = %self.id, "Stream restarted (sequence jump).");
                } else if not_newer {
                    self.stats.dropped += 1;
                    trace!(participant = %self.id, seq = packet.seq, "Dropped duplicate or late packet.");
                    return Vec::new();
                }
                let lost_packets = !restart && ahead > 1;
                if expected > due.saturating_add(MAX_AHEAD_MS * PER_MS_48K) {
                    // Earlier packets decoded to more audio than their slots
                    // (junk that parsed as long frames): skip this one so the
                    // stream cannot drift ahead of the meeting clock.
                    self.stats.dropped += 1;
                    self.last_seq = packet.seq;
                    trace!(participant = %self.id, seq = packet.seq, "Dropped packet: stream ahead of its timestamp.");
                    return Vec::new();
                }
                let hole = due.saturating_sub(expected);
                if hole > JITTER_TOLERANCE {
                    self.fill_hole(hole, lost_packets, packet.payload);
                } else if lost_packets {
                    trace!(participant = %self.id, seq = packet.seq, "Sequence gap without a time gap.");
                }
            }
        }
        self.last_seq = packet.seq;
        self.decode(packet.payload);
        self.take_utterances()
    }

    /// Ends the stream: the utterance in progress, if it is long enough.
    pub fn finish(&mut self) -> Option<Utterance> {
        let seg = self.vad.finish()?;
        Some(self.utterance(seg))
    }

    /// Fills `hole` 48 kHz samples before the packet carrying `next`:
    /// concealment for a short loss (its last packet from `next`'s in-band
    /// FEC), silence otherwise.
    fn fill_hole(&mut self, hole: u64, lost_packets: bool, next: &[u8]) {
        let mut silence = hole;
        if lost_packets && hole <= MAX_PLC_MS * PER_MS_48K {
            let mut conceal = hole / PLC_QUANTUM * PLC_QUANTUM;
            silence = hole - conceal;
            // The lost packet just before `next`: FEC needs the exact frame
            // size of that packet, taken to be the last one's.
            let fec = (self.last_duration as u64).min(conceal);
            conceal -= fec;
            while conceal > 0 {
                // Both bounds are at most MAX_PACKET_SAMPLES, so the cast is exact.
                let n = conceal.min(self.last_duration as u64) as usize;
                if !self.conceal(n) {
                    silence += conceal;
                    break;
                }
                conceal -= n as u64;
            }
            if fec > 0 && !self.recover_fec(fec as usize, next) {
                silence += fec;
            }
        }
        if silence > 0 {
            debug!(participant = %self.id, ms = silence / PER_MS_48K, "Inserting silence for a gap.");
            self.stats.silence_samples = self.stats.silence_samples.saturating_add(silence);
            self.samples48 = self.samples48.saturating_add(silence);
            // Gaps are whole ms or 2.5 ms quanta, so multiples of 3 samples at
            // 48 kHz: the 16 kHz position stays exactly a third.
            self.sink_gap(silence / 3);
        }
    }

    /// Recovers the `n` samples (≤ 120 ms) just before `next` from its
    /// in-band FEC data; libopus conceals instead when it carries none. False
    /// if the decoder refused (then nothing was produced).
    fn recover_fec(&mut self, n: usize, next: &[u8]) -> bool {
        if next.is_empty() {
            return self.conceal(n);
        }
        match self
            .decoder
            .decode_float(next, &mut self.pcm16[..n / CLOCK_PER_DECODED], true)
        {
            Ok(got) if got > 0 => {
                self.stats.fec_samples += (got * CLOCK_PER_DECODED) as u64;
                self.feed(got);
                true
            }
            Ok(_) => self.conceal(n),
            Err(e) => {
                debug!(participant = %self.id, error = %e, "FEC decode failed; concealing.");
                self.conceal(n)
            }
        }
    }

    /// Packet-loss concealment of `n` samples (a multiple of 2.5 ms, ≤ 120 ms).
    /// False if the decoder refused.
    fn conceal(&mut self, n: usize) -> bool {
        match self
            .decoder
            .decode_float(&[], &mut self.pcm16[..n / CLOCK_PER_DECODED], false)
        {
            Ok(got) if got > 0 => {
                self.stats.concealed_samples += (got * CLOCK_PER_DECODED) as u64;
                self.feed(got);
                true
            }
            Ok(_) => false,
            Err(e) => {
                debug!(participant = %self.id, error = %e, "Loss concealment failed.");
                false
            }
        }
    }

    /// Decodes one payload, concealing it if it is empty or corrupt.
    fn decode(&mut self, payload: &[u8]) {
        if !payload.is_empty() {
            match self.decoder.decode_float(payload, &mut self.pcm16, false) {
                Ok(n) if n > 0 => {
                    self.stats.decoded += 1;
                    self.last_duration =
                        (n * CLOCK_PER_DECODED).clamp(PLC_QUANTUM as usize, MAX_PACKET_SAMPLES);
                    self.feed(n);
                    return;
                }
                Ok(_) => {}
                Err(e) => {
                    self.stats.corrupt += 1;
                    debug!(participant = %self.id, error = %e, "Undecodable Opus payload; concealing it.");
                }
            }
        }
        let n = self.last_duration;
        if !self.conceal(n) {
            // Even concealment failed: keep the clock with silence.
            self.stats.silence_samples = self.stats.silence_samples.saturating_add(n as u64);
            self.samples48 = self.samples48.saturating_add(n as u64);
            self.sink_gap(n as u64 / 3);
        }
    }

    /// Runs `pcm16[..n]` (decoded at 16 kHz) through the VAD.
    fn feed(&mut self, n: usize) {
        self.samples48 = self
            .samples48
            .saturating_add((n * CLOCK_PER_DECODED) as u64);
        match self.collect.as_mut() {
            None => self.vad.push(&self.pcm16[..n], &mut self.segments),
            Some(c) => c.take(&self.pcm16[..n], self.origin_ms),
        }
    }

    /// `n` samples (16 kHz) of missing audio, to the VAD or the collector.
    fn sink_gap(&mut self, n: u64) {
        match self.collect.as_mut() {
            None => self.vad.push_gap(n, &mut self.segments),
            Some(c) => c.skip(n, self.origin_ms),
        }
    }

    fn take_utterances(&mut self) -> Vec<Utterance> {
        if self.segments.is_empty() {
            return Vec::new();
        }
        let segs = std::mem::take(&mut self.segments);
        segs.into_iter().map(|s| self.utterance(s)).collect()
    }

    fn utterance(&self, seg: VadSegment) -> Utterance {
        let origin = self.origin_ms.unwrap_or(0);
        Utterance {
            participant: self.id.clone(),
            start_ms: origin.saturating_add(seg.start_sample / PER_MS_16K),
            end_ms: origin.saturating_add(seg.end_sample() / PER_MS_16K),
            samples: seg.samples,
        }
    }
}

/// Decodes `id`'s packets (`run`, read back from the recording) through the
/// same path as the live pipeline — loss concealment, FEC, silence for holes,
/// alignment to the meeting clock — and returns the 16 kHz samples from
/// `start_ms` to `end_ms` (meeting clock). Packets before `start_ms` warm the
/// decoder up; start a run a little early (the bot uses [`WARMUP_MS`]). The
/// result is zeroized on drop and never holds more than the range.
pub fn decode_range(
    id: ParticipantId,
    run: &crate::core::media::PacketRun,
    start_ms: u64,
    end_ms: u64,
    vad: &VadConfig,
) -> Result<zeroize::Zeroizing<Vec<f32>>, AudioError> {
    let mut p = ParticipantPipeline::new(id, vad)?;
    let len = end_ms.saturating_sub(start_ms).saturating_mul(PER_MS_16K);
    p.collect = Some(Collect {
        from_ms: start_ms,
        to_ms: end_ms,
        pos: 0,
        out: zeroize::Zeroizing::new(Vec::with_capacity(usize::try_from(len).unwrap_or(0))),
    });
    for (seq, at_ms, payload) in run.iter() {
        p.push_parts(seq, at_ms, payload);
    }
    zeroize::Zeroize::zeroize(&mut p.pcm16);
    Ok(p.collect.take().map(|c| c.out).unwrap_or_default())
}

/// Audio decoded before an utterance's start when it is decoded again from
/// the recording, so the Opus decoder's state has settled, ms.
pub const WARMUP_MS: u64 = 500;

/// Test helpers shared with other modules' tests.
#[cfg(test)]
pub(crate) mod testutil {
    use crate::core::media::OpusPacket;

    /// Encodes 48 kHz mono audio into 20 ms Opus packets (32 kb/s VoIP) starting at
    /// `at_ms` with sequence numbers from `seq0`; with `fec`, in-band FEC as Chrome sends it.
    pub(crate) fn encode_with(audio: &[f32], at_ms: u64, seq0: u16, fec: bool) -> Vec<OpusPacket> {
        let mut enc = opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip)
            .expect("encoder");
        enc.set_bitrate(opus::Bitrate::Bits(32_000))
            .expect("bitrate");
        if fec {
            enc.set_inband_fec(true).expect("fec");
            enc.set_packet_loss_perc(20).expect("loss");
        }
        let mut out = [0u8; 1500];
        audio
            .chunks(960)
            .enumerate()
            .map(|(i, chunk)| {
                let mut frame = [0.0f32; 960];
                frame[..chunk.len()].copy_from_slice(chunk);
                let n = enc.encode_float(&frame, &mut out).expect("encode");
                OpusPacket {
                    seq: seq0.wrapping_add(i as u16),
                    at_ms: at_ms + 20 * i as u64,
                    payload: bytes::Bytes::copy_from_slice(&out[..n]),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::encode_with;
    use super::*;
    use crate::core::vad::testutil::{espeak_48k, noise};

    /// Encodes 48 kHz mono audio into 20 ms packets starting at `at_ms`.
    fn encode(audio: &[f32], at_ms: u64, seq0: u16) -> Vec<OpusPacket> {
        encode_with(audio, at_ms, seq0, false)
    }

    /// 1 s of quiet hiss, the sentence, 1.5 s of hiss (48 kHz); returns the
    /// audio and where the speech really starts and ends (first and last
    /// sample above −34 dBFS), in ms.
    fn clip(dir: &std::path::Path) -> (Vec<f32>, u64, u64) {
        let speech = espeak_48k(dir, "s", "Good morning everyone, let us begin the review.");
        let mut audio = vec![0.0; 48_000];
        audio.extend(&speech);
        audio.extend(vec![0.0; 72_000]);
        let hiss = noise(audio.len(), 0.001, 11);
        for (s, n) in audio.iter_mut().zip(hiss) {
            *s += n;
        }
        let loud = |s: &f32| s.abs() > 0.02;
        let first = audio.iter().position(loud).expect("speech present") as u64;
        let last = audio.iter().rposition(loud).expect("speech present") as u64;
        (audio, first / 48, last / 48)
    }

    fn run(p: &mut ParticipantPipeline, packets: &[OpusPacket]) -> Vec<Utterance> {
        let mut out = Vec::new();
        for pk in packets {
            out.extend(p.push(pk));
        }
        out.extend(p.finish());
        out
    }

    fn pipeline() -> ParticipantPipeline {
        ParticipantPipeline::new(ParticipantId("p1".into()), &VadConfig::default())
            .expect("pipeline")
    }

    /// The utterance starts within the pre-roll (240 ms) before the speech
    /// and ends within the post-roll (200 ms) after it, give or take a frame
    /// or two of detection.
    fn assert_near(u: &Utterance, start: u64, end: u64) {
        assert!(
            u.start_ms + 300 >= start && u.start_ms <= start,
            "start {} vs {start}",
            u.start_ms
        );
        assert!(
            u.end_ms + 100 >= end && u.end_ms <= end + 300,
            "end {} vs {end}",
            u.end_ms
        );
        let dur = u.samples.len() as u64 / 16;
        assert!(dur.abs_diff(u.end_ms - u.start_ms) <= 1);
    }

    #[test]
    fn espeak_clip_yields_one_utterance_on_the_meeting_clock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (audio, s, e) = clip(dir.path());
        let offset = 12_340; // the participant's stream starts here on the meeting clock
        let packets = encode(&audio, offset, 65_500); // sequence numbers wrap
        let mut p = pipeline();
        let us = run(&mut p, &packets);
        assert_eq!(us.len(), 1, "{us:?}");
        eprintln!("speech {s}..{e} ms, utterance {:?}", us[0]);
        assert_eq!(us[0].participant, ParticipantId("p1".into()));
        assert_near(&us[0], offset + s, offset + e);
        assert_eq!(p.stats().decoded, packets.len() as u64);
        assert_eq!(p.stats().dropped, 0);
    }

    #[test]
    fn lost_packets_are_concealed_and_the_clock_holds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (audio, s, e) = clip(dir.path());
        let mut packets = encode(&audio, 0, 0);
        // Lose every 7th packet and a burst of 4 in the middle of the speech.
        let mid = (s + e) / 2 / 20;
        packets = packets
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % 7 != 3 && !(mid as usize..mid as usize + 4).contains(i))
            .map(|(_, p)| p)
            .collect();
        let mut p = pipeline();
        let us = run(&mut p, &packets);
        assert_eq!(us.len(), 1, "{us:?}");
        assert_near(&us[0], s, e);
        // The packet just before each arriving one goes through the FEC path
        // (concealment again here: this encoder adds no FEC data), the rest
        // of a burst through plain concealment.
        let st = p.stats();
        assert!(st.concealed_samples + st.fec_samples >= 960 * 10, "{st:?}");
        assert!(st.concealed_samples >= 960 * 3, "{st:?}");
        assert_eq!(st.silence_samples, 0);
    }

    /// Mean squared difference between two utterances over the meeting time
    /// they share, relative to the reference's energy there.
    fn relative_error(reference: &Utterance, got: &Utterance) -> f64 {
        let from = reference.start_ms.max(got.start_ms);
        let to = reference.end_ms.min(got.end_ms);
        assert!(to > from + 500, "too little overlap: {reference:?} {got:?}");
        let r0 = ((from - reference.start_ms) * 16) as usize;
        let g0 = ((from - got.start_ms) * 16) as usize;
        let n = ((to - from) * 16) as usize;
        let (mut err, mut energy) = (0f64, 0f64);
        for i in 0..n {
            let (r, g) = (
                f64::from(reference.samples[r0 + i]),
                f64::from(got.samples[g0 + i]),
            );
            err += (r - g) * (r - g);
            energy += r * r;
        }
        err / energy.max(f64::MIN_POSITIVE)
    }

    #[test]
    fn single_losses_are_recovered_from_in_band_fec() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (audio, s, e) = clip(dir.path());
        // Lose every 5th packet inside the speech.
        let lossy = |packets: &[OpusPacket]| -> Vec<OpusPacket> {
            packets
                .iter()
                .enumerate()
                .filter(|(i, _)| !(*i as u64 * 20 > s && (*i as u64) * 20 < e && i % 5 == 2))
                .map(|(_, p)| p.clone())
                .collect()
        };
        let mut errors = Vec::new();
        for fec in [true, false] {
            let packets = encode_with(&audio, 0, 7, fec);
            let reference = run(&mut pipeline(), &packets);
            let mut p = pipeline();
            let got = run(&mut p, &lossy(&packets));
            assert_eq!(
                (reference.len(), got.len()),
                (1, 1),
                "{reference:?} {got:?}"
            );
            assert_near(&got[0], s, e);
            if fec {
                assert!(p.stats().fec_samples >= 960 * 10, "{:?}", p.stats());
            }
            errors.push(relative_error(&reference[0], &got[0]));
        }
        // FEC rebuilds the lost packets from the next packet's LBRR data; plain
        // concealment only extrapolates, and is clearly further off.
        let (with_fec, plc_only) = (errors[0], errors[1]);
        eprintln!("relative error: FEC {with_fec:.4}, PLC {plc_only:.4}");
        assert!(
            with_fec * 2.0 < plc_only,
            "FEC {with_fec} vs PLC {plc_only}"
        );
    }

    #[test]
    fn a_restarted_stream_is_taken_not_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (audio, s, e) = clip(dir.path());
        let first = encode(&audio, 0, 40_000);
        // A rejoin: the sender's sequence starts over far below, 30 s later.
        let later_at = 30_000;
        let second = encode(&audio, later_at, 12);
        let mut all = first.clone();
        all.extend(second.iter().cloned());
        let mut p = pipeline();
        let us = run(&mut p, &all);
        assert_eq!(us.len(), 2, "{us:?}");
        assert_near(&us[1], later_at + s, later_at + e);
        assert_eq!(p.stats().restarts, 1);
        assert_eq!(p.stats().dropped, 0);
        assert_eq!(p.stats().decoded as usize, all.len());
        // But an old packet replayed late (its time has passed) is still dropped.
        let end = p.stream_end_ms().expect("started");
        let _ = p.push(&first[10]);
        assert_eq!(p.stats().dropped, 1);
        assert_eq!(p.stream_end_ms(), Some(end));
        // A small step back in sequence numbers, later in time: a restart too.
        let last_seq = second.last().expect("packets").seq;
        let third = encode(&audio, end + 5_000, last_seq.wrapping_sub(20));
        let us = run(&mut p, &third);
        assert_eq!(us.len(), 1, "{us:?}");
        assert_near(&us[0], end + 5_000 + s, end + 5_000 + e);
        assert_eq!(p.stats().restarts, 2);
        assert_eq!(p.stats().dropped, 1);
    }

    #[test]
    fn long_gap_becomes_silence_and_timestamps_follow_at_ms() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (audio, s, e) = clip(dir.path());
        let first = encode(&audio, 0, 100);
        let n = first.len() as u16;
        // The same speech again after 10 minutes without packets (muted, DTX).
        let later_at = 600_000;
        let second = encode(&audio, later_at, 100 + n);
        let mut p = pipeline();
        let mut all = first.clone();
        all.extend(second);
        let us = run(&mut p, &all);
        assert_eq!(us.len(), 2, "{us:?}");
        assert_near(&us[0], s, e);
        assert_near(&us[1], later_at + s, later_at + e);
        assert!(p.stats().silence_samples > 500 * 48_000);
    }

    #[test]
    fn duplicates_and_late_packets_are_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (audio, s, e) = clip(dir.path());
        let packets = encode(&audio, 0, 40);
        let mut shuffled = Vec::new();
        for (i, pk) in packets.iter().enumerate() {
            shuffled.push(pk.clone());
            if i % 5 == 0 {
                shuffled.push(pk.clone()); // duplicate
            }
            if i >= 10 && i % 9 == 0 {
                shuffled.push(packets[i - 3].clone()); // late
            }
        }
        let mut p = pipeline();
        let us = run(&mut p, &shuffled);
        assert_eq!(us.len(), 1);
        assert_near(&us[0], s, e);
        assert_eq!(p.stats().dropped as usize, shuffled.len() - packets.len());
        assert_eq!(p.stats().decoded as usize, packets.len());
    }

    #[test]
    fn garbage_payloads_never_panic_and_keep_the_clock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (audio, s, e) = clip(dir.path());
        let mut packets = encode(&audio, 0, 0);
        let junk = noise(4000, 1.0, 99);
        for (i, pk) in packets.iter_mut().enumerate() {
            match i % 11 {
                // Random bytes: libopus often decodes these as (loud) audio of any frame size.
                5 => {
                    let len = (i * 37) % 1400;
                    let bytes: Vec<u8> = junk[..len]
                        .iter()
                        .map(|v| (v * 127.0) as i8 as u8)
                        .collect();
                    pk.payload = bytes::Bytes::from(bytes);
                }
                // Malformed: code-3 TOC announcing 63 frames in 3 bytes.
                8 => pk.payload = bytes::Bytes::from_static(&[0x03, 0xFF, 0x00]),
                _ => {}
            }
        }
        let last_at = packets.last().map(|p| p.at_ms).unwrap_or(0);
        let mut p = pipeline();
        let us = run(&mut p, &packets);
        assert!(!us.is_empty());
        // Junk can sound like speech, so only the start is pinned down.
        assert!(us[0].start_ms + 300 >= s && us[0].start_ms <= s, "{us:?}");
        assert!(us.iter().map(|u| u.end_ms).max().unwrap_or(0) + 100 >= e);
        assert!(p.stats().corrupt > 0);
        // The stream stays on the meeting clock despite junk of odd durations.
        let end = p.stream_end_ms().expect("started");
        assert!(
            end.abs_diff(last_at + 20) <= MAX_AHEAD_MS + 120,
            "{end} vs {last_at}"
        );

        // Pure junk from the first packet on, including odd sizes, is survivable.
        let mut q = pipeline();
        for i in 0..300u16 {
            let len = usize::from(i) * 13 % 2000;
            let bytes: Vec<u8> = (0..len).map(|j| (j * 31 + usize::from(i)) as u8).collect();
            let _ = q.push(&OpusPacket {
                seq: i,
                at_ms: u64::from(i) * 20,
                payload: bytes::Bytes::from(bytes),
            });
        }
        let end = q.stream_end_ms().expect("started");
        assert!(end.abs_diff(300 * 20) <= MAX_AHEAD_MS + 120, "{end}");
        let _ = q.finish();
        // Absurd timestamps do not overflow.
        let _ = q.push(&OpusPacket {
            seq: 300,
            at_ms: u64::MAX,
            payload: bytes::Bytes::new(),
        });
        let _ = q.push(&OpusPacket {
            seq: 301,
            at_ms: u64::MAX,
            payload: bytes::Bytes::new(),
        });
        let _ = q.finish();
    }

    #[test]
    fn invalid_vad_config_is_an_error() {
        let cfg = VadConfig {
            threshold_db: -1.0,
            ..VadConfig::default()
        };
        let err = ParticipantPipeline::new(ParticipantId("x".into()), &cfg).expect_err("invalid");
        assert!(err.to_string().contains("threshold_db"), "{err}");
    }

    /// An utterance decoded again from its packets (as the bot does from the
    /// recording when it was queued) is the audio the live pipeline cut:
    /// same span, same samples once the decoder has warmed up.
    #[test]
    fn decode_range_reproduces_the_live_utterance() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (audio, _, _) = clip(dir.path());
        // Start mid-meeting, with a short loss in the middle (concealed the same way).
        let mut packets = encode(&audio, 7_000, 40_000);
        packets.remove(packets.len() / 2);
        let id = ParticipantId("p".into());
        let mut p = ParticipantPipeline::new(id.clone(), &VadConfig::default()).expect("pipeline");
        let mut utts = run(&mut p, &packets);
        utts.extend(p.finish());
        assert_eq!(utts.len(), 1, "{utts:?}");
        let u = &utts[0];
        let mut r = crate::core::media::PacketRun::default();
        for pk in packets
            .iter()
            .filter(|pk| pk.at_ms + WARMUP_MS >= u.start_ms && pk.at_ms <= u.end_ms)
        {
            r.push(pk.seq, pk.at_ms, &pk.payload);
        }
        let again =
            decode_range(id, &r, u.start_ms, u.end_ms, &VadConfig::default()).expect("decode");
        let want = (u.end_ms - u.start_ms) as usize * 16;
        assert!(
            again.len().abs_diff(want) <= 16,
            "{} vs {want}",
            again.len()
        );
        assert!(
            u.samples.len().abs_diff(want) <= 16,
            "{} vs {want}",
            u.samples.len()
        );
        let n = again.len().min(u.samples.len());
        let energy: f64 = u.samples[..n].iter().map(|x| f64::from(*x).powi(2)).sum();
        let diff: f64 = u.samples[..n]
            .iter()
            .zip(again.iter())
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum();
        // Sub-ms offsets from the ms-rounded range and the warm-up are allowed;
        // a different stretch of audio would be of the order of the energy itself.
        assert!(diff < energy * 0.02, "diff {diff} energy {energy}");
        // Nothing before the first packet: decoding from a later start gives
        // the range with silence where there was no audio.
        let empty = decode_range(
            ParticipantId("p".into()),
            &Default::default(),
            0,
            1000,
            &VadConfig::default(),
        )
        .expect("decode");
        assert!(empty.is_empty());
    }
}
