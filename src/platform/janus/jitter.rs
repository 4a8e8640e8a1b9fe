//! Per-participant reorder (jitter) buffer and RTP-to-meeting-clock mapping.
//!
//! Sans-IO: the caller pushes packets with their arrival [`Instant`] and pops
//! with the current time; nothing here reads a clock, spawns or sleeps. One
//! [`JitterBuffer`] serves one m-line (one participant's audio).
//!
//! # Reordering
//!
//! Packets come out in sequence order. A packet that continues the sequence
//! leaves at once (no added latency); a hole is waited for at most
//! [`JitterConfig::delay`] (measured from the arrival of the oldest packet held
//! behind it) or until more than [`JitterConfig::max_depth`] packets are held,
//! then it is skipped and reported as a [`JitterOutput::Gap`] so the decoder
//! can run FEC (with the packet that follows) or PLC. The very first packet is
//! held for `delay` too, so a stream whose first two packets swap still starts
//! at the right one.
//!
//! * sequence numbers wrap at 2^16 (tracked internally as 64-bit);
//! * a duplicate (already held) is dropped;
//! * a late packet (its slot already played out or skipped) is dropped;
//! * a jump of more than [`JitterConfig::resync_packets`] either way (a sender
//!   restart, a stream switched under the same m-line) flushes what is held and
//!   restarts the buffer, sequence and clock, at that packet.
//!
//! # Meeting clock
//!
//! `at_ms = anchor + (ts - first_ts) / 48`, where the anchor is the first
//! packet's arrival on the meeting clock (ms since `meeting_start`). The RTP
//! timestamp carries the timeline, so DTX pauses and network jitter do not
//! distort it. The anchor moves (a re-anchor) when arrivals disagree with it:
//!
//! * a packet arriving more than [`JitterConfig::ahead_tolerance`] *before*
//!   its mapped time (a forward timestamp jump, or a sender clock running fast)
//!   re-anchors at once on that packet;
//! * when every packet over a [`JitterConfig::drift_window`] arrived more than
//!   [`JitterConfig::behind_tolerance`] *after* its mapped time (a backward
//!   timestamp jump, a slow sender clock) the anchor moves to the least-delayed
//!   of them. A single late burst after a network stall does not do this.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{debug, trace};

use crate::core::media::OpusPacket;

/// Opus RTP clock ticks per millisecond (RFC 7587: always 48 kHz).
const TICKS_PER_MS: i64 = 48;

/// One received RTP packet, as the buffer needs it (the m-line is implied:
/// one buffer per m-line).
#[derive(Clone)]
pub struct InboundRtp {
    /// RTP sequence number.
    pub seq: u16,
    /// RTP timestamp (48 kHz for Opus).
    pub timestamp: u32,
    /// The Opus payload.
    pub payload: Bytes,
    /// When it arrived.
    pub arrival: Instant,
}

impl std::fmt::Debug for InboundRtp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundRtp")
            .field("seq", &self.seq)
            .field("timestamp", &self.timestamp)
            .field("len", &self.payload.len())
            .finish()
    }
}

/// Knobs, with defaults suited to 20 ms Opus over a LAN or the internet.
#[derive(Debug, Clone)]
pub struct JitterConfig {
    /// Longest wait for a missing packet before it is declared lost
    /// (default 60 ms). Also how long the first packet is held.
    pub delay: Duration,
    /// Most packets held behind a hole; one more forces the hole to be
    /// skipped (default 32, 640 ms of 20 ms packets).
    pub max_depth: usize,
    /// A sequence jump larger than this (either way) restarts the buffer
    /// (default 1000 packets, 20 s of 20 ms packets).
    pub resync_packets: u16,
    /// Re-anchor at once when a packet arrives this much earlier than its
    /// mapped meeting time (default 60 ms).
    pub ahead_tolerance: Duration,
    /// Re-anchor when all packets of a window arrive at least this much later
    /// than their mapped meeting time (default 300 ms).
    pub behind_tolerance: Duration,
    /// The window for `behind_tolerance` (default 2 s).
    pub drift_window: Duration,
}

impl Default for JitterConfig {
    fn default() -> Self {
        Self {
            delay: Duration::from_millis(60),
            max_depth: 32,
            resync_packets: 1000,
            ahead_tolerance: Duration::from_millis(60),
            behind_tolerance: Duration::from_millis(300),
            drift_window: Duration::from_secs(2),
        }
    }
}

/// What [`JitterBuffer::push`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Held for output.
    Accepted,
    /// The same sequence number is already held; dropped.
    Duplicate,
    /// Its slot has already been played out or skipped; dropped.
    Late,
    /// A large sequence jump: what was held is queued for output, and the
    /// stream restarts at this packet (held).
    Resync,
}

/// What [`JitterBuffer::pop`] hands out, in sequence order.
#[derive(Debug, Clone)]
pub enum JitterOutput {
    /// The next packet, with its meeting-clock time.
    Packet(OpusPacket),
    /// Packets `first_seq ..` (`count` of them, sequence wrapping) were given
    /// up as lost. The packet that follows, if it comes next, is the one to
    /// try Opus in-band FEC with.
    Gap {
        /// The first missing sequence number.
        first_seq: u16,
        /// How many are missing.
        count: u32,
    },
}

/// Counters since the buffer was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Packets pushed.
    pub pushed: u64,
    /// Packets handed out.
    pub emitted: u64,
    /// Duplicates dropped.
    pub duplicates: u64,
    /// Late packets dropped.
    pub late: u64,
    /// Packets reported lost in gaps.
    pub lost: u64,
    /// Gaps skipped because the buffer was full rather than by timeout.
    pub forced: u64,
    /// Restarts after a large sequence jump.
    pub resyncs: u64,
    /// Meeting-clock re-anchors.
    pub reanchors: u64,
}

/// A held packet.
struct Held {
    payload: Bytes,
    arrival: Instant,
    at_ms: u64,
}

/// Maps the RTP timestamp onto the meeting clock.
struct Clock {
    /// Unwrapped timestamp of the most recent packet (the unwrap reference).
    last_ts: i64,
    /// Raw value of `last_ts`.
    last_raw: u32,
    /// Meeting-clock ms minus timestamp ms: `at_ms = ts_ms + offset`.
    offset_ms: i64,
    /// Start of the current drift window and the least lateness seen in it.
    window_start: Instant,
    window_min_late_ms: i64,
}

impl Clock {
    fn new(ts: u32, arrival_ms: i64, arrival: Instant) -> Self {
        Self {
            last_ts: i64::from(ts),
            last_raw: ts,
            offset_ms: arrival_ms - i64::from(ts) / TICKS_PER_MS,
            window_start: arrival,
            window_min_late_ms: i64::MAX,
        }
    }

    /// Unwraps `ts` against the last one (a difference of up to ±2^31 ticks,
    /// about 12 hours, is taken as the short way round).
    fn unwrap(&mut self, ts: u32) -> i64 {
        // `as i32` reinterprets the wrapping difference as signed: intended.
        let diff = ts.wrapping_sub(self.last_raw) as i32;
        let unwrapped = self.last_ts + i64::from(diff);
        if diff > 0 {
            self.last_ts = unwrapped;
            self.last_raw = ts;
        }
        unwrapped
    }

    /// Maps a packet; may re-anchor. Returns (at_ms, re-anchored).
    fn map(
        &mut self,
        ts: u32,
        arrival_ms: i64,
        arrival: Instant,
        cfg: &JitterConfig,
    ) -> (u64, bool) {
        let ts_ms = self.unwrap(ts).div_euclid(TICKS_PER_MS);
        let mapped = ts_ms + self.offset_ms;
        let late = arrival_ms - mapped;
        let mut reanchored = false;
        if -late > duration_ms(cfg.ahead_tolerance) {
            self.offset_ms = arrival_ms - ts_ms;
            self.window_start = arrival;
            self.window_min_late_ms = i64::MAX;
            reanchored = true;
        } else {
            self.window_min_late_ms = self.window_min_late_ms.min(late);
            if arrival.saturating_duration_since(self.window_start) >= cfg.drift_window {
                if self.window_min_late_ms > duration_ms(cfg.behind_tolerance) {
                    self.offset_ms += self.window_min_late_ms;
                    reanchored = true;
                }
                self.window_start = arrival;
                self.window_min_late_ms = i64::MAX;
            }
        }
        let at = (ts_ms + self.offset_ms).max(0);
        // Non-negative after `max(0)`, so the cast is exact.
        (at as u64, reanchored)
    }
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The reorder buffer for one m-line. See the module docs.
pub struct JitterBuffer {
    cfg: JitterConfig,
    meeting_start: Instant,
    /// Held packets by unwrapped (64-bit) sequence number.
    held: BTreeMap<i64, Held>,
    /// Output already decided (flushed by a resync), handed out first.
    ready: VecDeque<JitterOutput>,
    /// Next unwrapped sequence number to hand out; `None` before the first
    /// packet is handed out.
    next: Option<i64>,
    /// Highest unwrapped sequence number seen (the unwrap reference).
    highest: Option<i64>,
    clock: Option<Clock>,
    stats: JitterStats,
}

impl JitterBuffer {
    /// A buffer whose meeting clock starts at `meeting_start` (ms 0).
    pub fn new(cfg: JitterConfig, meeting_start: Instant) -> Self {
        Self {
            cfg,
            meeting_start,
            held: BTreeMap::new(),
            ready: VecDeque::new(),
            next: None,
            highest: None,
            clock: None,
            stats: JitterStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// Packets currently held.
    pub fn len(&self) -> usize {
        self.held.len() + self.ready.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes one packet.
    pub fn push(&mut self, pkt: InboundRtp) -> PushOutcome {
        self.stats.pushed += 1;
        let arrival_ms = duration_ms(pkt.arrival.saturating_duration_since(self.meeting_start));
        let Some(highest) = self.highest else {
            self.start(pkt, arrival_ms);
            return PushOutcome::Accepted;
        };
        // Reinterpret the wrapping difference as signed: the short way round.
        let diff = pkt.seq.wrapping_sub(wrap(highest)) as i16;
        if diff.unsigned_abs() > self.cfg.resync_packets {
            debug!(
                seq = pkt.seq,
                jump = diff,
                "Sequence jump: restarting the jitter buffer."
            );
            self.flush_into_ready();
            self.stats.resyncs += 1;
            self.start(pkt, arrival_ms);
            return PushOutcome::Resync;
        }
        let ext = highest + i64::from(diff);
        if self.next.is_some_and(|next| ext < next) {
            self.stats.late += 1;
            trace!(seq = pkt.seq, "Late packet dropped.");
            return PushOutcome::Late;
        }
        if self.held.contains_key(&ext) {
            self.stats.duplicates += 1;
            trace!(seq = pkt.seq, "Duplicate packet dropped.");
            return PushOutcome::Duplicate;
        }
        self.highest = Some(highest.max(ext));
        let at_ms = self.map_time(pkt.timestamp, arrival_ms, pkt.arrival);
        self.held.insert(
            ext,
            Held {
                payload: pkt.payload,
                arrival: pkt.arrival,
                at_ms,
            },
        );
        PushOutcome::Accepted
    }

    /// Hands out the next ready item, if any, at time `now`. Call until it
    /// returns `None`, then again after [`Self::poll_timeout`].
    pub fn pop(&mut self, now: Instant) -> Option<JitterOutput> {
        if let Some(out) = self.ready.pop_front() {
            return Some(out);
        }
        let (&head, _) = self.held.first_key_value()?;
        let contiguous = self.next == Some(head);
        let overfull = self.held.len() > self.cfg.max_depth;
        let timed_out = self.deadline().is_some_and(|d| now >= d);
        if !(contiguous || overfull || timed_out) {
            return None;
        }
        if !contiguous && overfull && !timed_out {
            self.stats.forced += 1;
        }
        if let Some(next) = self.next {
            if head > next {
                // `head - next` is bounded by `resync_packets` (< 2^16).
                let count = u32::try_from(head - next).unwrap_or(u32::MAX);
                self.stats.lost += u64::from(count);
                self.next = Some(head);
                return Some(JitterOutput::Gap {
                    first_seq: wrap(next),
                    count,
                });
            }
        }
        self.take_head()
    }

    /// When [`Self::pop`] may next have something to hand out because a
    /// wait ends (an instant already past means now); `None` if only a new
    /// packet can change anything.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.ready.is_empty() {
            return Some(self.meeting_start);
        }
        let (&head, _) = self.held.first_key_value()?;
        if self.next == Some(head) || self.held.len() > self.cfg.max_depth {
            return Some(self.meeting_start);
        }
        self.deadline()
    }

    /// Hands out everything held, in order, with gaps (the stream ended).
    pub fn drain(&mut self) -> Vec<JitterOutput> {
        self.flush_into_ready();
        self.ready.drain(..).collect()
    }

    /// The end of the current wait: the oldest held arrival plus `delay`.
    fn deadline(&self) -> Option<Instant> {
        let oldest = self.held.values().map(|h| h.arrival).min()?;
        Some(oldest + self.cfg.delay)
    }

    /// Moves the head packet out (the caller has reported any gap before it).
    fn take_head(&mut self) -> Option<JitterOutput> {
        let (ext, held) = self.held.pop_first()?;
        self.next = Some(ext + 1);
        self.stats.emitted += 1;
        Some(JitterOutput::Packet(OpusPacket {
            seq: wrap(ext),
            at_ms: held.at_ms,
            payload: held.payload,
        }))
    }

    /// Queues everything held for output, in order, with gaps.
    fn flush_into_ready(&mut self) {
        while let Some((&head, _)) = self.held.first_key_value() {
            if let Some(next) = self.next {
                if head > next {
                    let count = u32::try_from(head - next).unwrap_or(u32::MAX);
                    self.stats.lost += u64::from(count);
                    self.ready.push_back(JitterOutput::Gap {
                        first_seq: wrap(next),
                        count,
                    });
                }
            }
            if let Some(out) = self.take_head() {
                self.ready.push_back(out);
            }
        }
    }

    /// (Re)starts sequence and clock at `pkt`, which is held.
    fn start(&mut self, pkt: InboundRtp, arrival_ms: i64) {
        // Unwrapped numbers start one full cycle up so the first packet's
        // predecessors stay positive; only differences matter.
        let ext = (1i64 << 16) + i64::from(pkt.seq);
        self.next = None;
        self.highest = Some(ext);
        let clock = Clock::new(pkt.timestamp, arrival_ms, pkt.arrival);
        let at_ms = u64::try_from(arrival_ms).unwrap_or(0);
        self.clock = Some(clock);
        self.held.insert(
            ext,
            Held {
                payload: pkt.payload,
                arrival: pkt.arrival,
                at_ms,
            },
        );
    }

    fn map_time(&mut self, ts: u32, arrival_ms: i64, arrival: Instant) -> u64 {
        let cfg = &self.cfg;
        match self.clock.as_mut() {
            Some(clock) => {
                let (at, reanchored) = clock.map(ts, arrival_ms, arrival, cfg);
                if reanchored {
                    self.stats.reanchors += 1;
                    debug!(at_ms = at, "Meeting clock re-anchored for a stream.");
                }
                at
            }
            // `start` always sets the clock before anything else is pushed.
            None => u64::try_from(arrival_ms).unwrap_or(0),
        }
    }
}

/// The 16-bit sequence number of an unwrapped one.
fn wrap(ext: i64) -> u16 {
    // Truncation to the low 16 bits is the point.
    (ext & 0xffff) as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    const FRAME: u32 = 960;

    fn pkt(seq: u16, ts: u32, arrival: Instant) -> InboundRtp {
        InboundRtp {
            seq,
            timestamp: ts,
            payload: Bytes::from(seq.to_be_bytes().to_vec()),
            arrival,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Pops everything ready at `now`.
    fn pop_all(jb: &mut JitterBuffer, now: Instant, out: &mut Vec<JitterOutput>) {
        while let Some(o) = jb.pop(now) {
            out.push(o);
        }
    }

    fn seqs(out: &[JitterOutput]) -> Vec<u16> {
        out.iter()
            .filter_map(|o| match o {
                JitterOutput::Packet(p) => Some(p.seq),
                JitterOutput::Gap { .. } => None,
            })
            .collect()
    }

    #[test]
    fn in_order_stream_flows_without_added_delay_after_the_first_packet() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default(), t0);
        let mut out = Vec::new();
        let start = t0 + ms(1000);
        jb.push(pkt(10, 5000, start));
        pop_all(&mut jb, start, &mut out);
        assert!(out.is_empty(), "first packet is held for the delay");
        assert_eq!(jb.poll_timeout(), Some(start + ms(60)));
        pop_all(&mut jb, start + ms(60), &mut out);
        assert_eq!(seqs(&out), vec![10]);
        for i in 1..50u16 {
            let at = start + ms(20 * u64::from(i));
            jb.push(pkt(10 + i, 5000 + FRAME * u32::from(i), at));
            let before = out.len();
            pop_all(&mut jb, at, &mut out);
            assert_eq!(
                out.len(),
                before + 1,
                "contiguous packet {i} leaves at once"
            );
        }
        let times: Vec<u64> = out
            .iter()
            .map(|o| match o {
                JitterOutput::Packet(p) => p.at_ms,
                JitterOutput::Gap { .. } => panic!("no gaps expected"),
            })
            .collect();
        let expected: Vec<u64> = (0..50).map(|i| 1000 + 20 * i).collect();
        assert_eq!(times, expected);
        assert_eq!(jb.stats().reanchors, 0);
    }

    #[test]
    fn wraps_around_sequence_and_timestamp() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default(), t0);
        let mut out = Vec::new();
        let ts0 = u32::MAX - 3 * FRAME + 1;
        for i in 0..20u16 {
            let at = t0 + ms(20 * u64::from(i));
            jb.push(pkt(
                65_530u16.wrapping_add(i),
                ts0.wrapping_add(FRAME * u32::from(i)),
                at,
            ));
            pop_all(&mut jb, at + ms(60), &mut out);
        }
        let expected: Vec<u16> = (0..20u16).map(|i| 65_530u16.wrapping_add(i)).collect();
        assert_eq!(seqs(&out), expected);
        let last = match out.last() {
            Some(JitterOutput::Packet(p)) => p.at_ms,
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(last, 19 * 20);
    }

    #[test]
    fn first_two_swapped_start_at_the_right_one() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default(), t0);
        jb.push(pkt(101, FRAME, t0));
        jb.push(pkt(100, 0, t0 + ms(5)));
        let mut out = Vec::new();
        pop_all(&mut jb, t0 + ms(60), &mut out);
        assert_eq!(seqs(&out), vec![100, 101]);
        assert_eq!(jb.stats().late, 0);
    }

    #[test]
    fn a_hole_is_waited_for_then_reported() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default(), t0);
        let mut out = Vec::new();
        jb.push(pkt(1, 0, t0));
        pop_all(&mut jb, t0 + ms(60), &mut out);
        // 2 and 3 lost; 4 arrives at 80 ms.
        jb.push(pkt(4, 3 * FRAME, t0 + ms(80)));
        pop_all(&mut jb, t0 + ms(139), &mut out);
        assert_eq!(out.len(), 1, "still waiting for 2");
        assert_eq!(jb.poll_timeout(), Some(t0 + ms(140)));
        pop_all(&mut jb, t0 + ms(140), &mut out);
        assert!(matches!(
            out[1],
            JitterOutput::Gap {
                first_seq: 2,
                count: 2
            }
        ));
        assert_eq!(seqs(&out), vec![1, 4]);
        // 2 arriving now is late.
        assert_eq!(jb.push(pkt(2, FRAME, t0 + ms(150))), PushOutcome::Late);
        assert_eq!(jb.stats().lost, 2);
    }

    #[test]
    fn a_late_arrival_inside_the_wait_fills_the_hole() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default(), t0);
        let mut out = Vec::new();
        jb.push(pkt(1, 0, t0));
        pop_all(&mut jb, t0 + ms(60), &mut out);
        jb.push(pkt(3, 2 * FRAME, t0 + ms(61)));
        pop_all(&mut jb, t0 + ms(61), &mut out);
        jb.push(pkt(2, FRAME, t0 + ms(90)));
        pop_all(&mut jb, t0 + ms(90), &mut out);
        assert_eq!(seqs(&out), vec![1, 2, 3]);
        assert_eq!(out.len(), 3, "no gap");
    }

    #[test]
    fn overfull_buffer_forces_the_hole() {
        let t0 = Instant::now();
        let cfg = JitterConfig {
            max_depth: 4,
            ..JitterConfig::default()
        };
        let mut jb = JitterBuffer::new(cfg, t0);
        let mut out = Vec::new();
        jb.push(pkt(1, 0, t0));
        pop_all(&mut jb, t0 + ms(60), &mut out);
        for s in 3..8u16 {
            jb.push(pkt(s, u32::from(s) * FRAME, t0 + ms(61)));
        }
        pop_all(&mut jb, t0 + ms(61), &mut out);
        assert_eq!(seqs(&out), vec![1, 3, 4, 5, 6, 7]);
        assert_eq!(jb.stats().forced, 1);
    }

    #[test]
    fn duplicates_are_dropped() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default(), t0);
        assert_eq!(jb.push(pkt(7, 0, t0)), PushOutcome::Accepted);
        assert_eq!(jb.push(pkt(8, FRAME, t0)), PushOutcome::Accepted);
        assert_eq!(jb.push(pkt(8, FRAME, t0)), PushOutcome::Duplicate);
        let mut out = Vec::new();
        pop_all(&mut jb, t0 + ms(60), &mut out);
        assert_eq!(jb.push(pkt(8, FRAME, t0 + ms(70))), PushOutcome::Late);
        assert_eq!(seqs(&out), vec![7, 8]);
    }

    #[test]
    fn a_big_jump_resyncs_and_keeps_what_was_held() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default(), t0);
        let mut out = Vec::new();
        jb.push(pkt(100, 0, t0));
        pop_all(&mut jb, t0 + ms(60), &mut out);
        jb.push(pkt(102, 2 * FRAME, t0 + ms(65)));
        // A new stream at a random place.
        assert_eq!(
            jb.push(pkt(40_000, 123_456, t0 + ms(70))),
            PushOutcome::Resync
        );
        pop_all(&mut jb, t0 + ms(70), &mut out);
        assert!(matches!(
            out[1],
            JitterOutput::Gap {
                first_seq: 101,
                count: 1
            }
        ));
        assert_eq!(seqs(&out), vec![100, 102]);
        pop_all(&mut jb, t0 + ms(130), &mut out);
        assert_eq!(seqs(&out), vec![100, 102, 40_000]);
        match out.last() {
            Some(JitterOutput::Packet(p)) => {
                assert_eq!(p.at_ms, 70, "new stream anchored at its arrival")
            }
            other => panic!("unexpected {other:?}"),
        }
        jb.push(pkt(40_001, 123_456 + FRAME, t0 + ms(90)));
        pop_all(&mut jb, t0 + ms(90), &mut out);
        match out.last() {
            Some(JitterOutput::Packet(p)) => assert_eq!((p.seq, p.at_ms), (40_001, 90)),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(jb.stats().resyncs, 1);
    }

    #[test]
    fn forward_timestamp_jump_reanchors_at_once() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default(), t0);
        let mut out = Vec::new();
        for i in 0..10u16 {
            let at = t0 + ms(20 * u64::from(i));
            jb.push(pkt(i, FRAME * u32::from(i), at));
            pop_all(&mut jb, at + ms(60), &mut out);
        }
        // Timestamp leaps 10 s ahead; arrival keeps pace.
        let at = t0 + ms(200);
        jb.push(pkt(10, FRAME * 10 + 480_000, at));
        jb.push(pkt(11, FRAME * 11 + 480_000, at + ms(20)));
        pop_all(&mut jb, at + ms(20), &mut out);
        let times: Vec<u64> = out
            .iter()
            .filter_map(|o| match o {
                JitterOutput::Packet(p) => Some(p.at_ms),
                JitterOutput::Gap { .. } => None,
            })
            .collect();
        assert_eq!(&times[9..], &[180, 200, 220]);
        assert_eq!(jb.stats().reanchors, 1);
    }

    #[test]
    fn backward_timestamp_jump_reanchors_after_a_window_but_a_stall_does_not() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default(), t0);
        let mut out = Vec::new();
        // Normal flow, then a 1 s stall and a burst, then normal again.
        for i in 0..300u16 {
            let send = ms(20 * u64::from(i));
            let at = if (100..150).contains(&i) {
                t0 + ms(3000)
            } else {
                t0 + send
            };
            jb.push(pkt(i, FRAME * u32::from(i), at));
            pop_all(&mut jb, at + ms(60), &mut out);
        }
        assert_eq!(jb.stats().reanchors, 0, "a single stall is not drift");
        // Timestamps fall back by 5 s; arrivals keep pace.
        for i in 300..500u16 {
            let at = t0 + ms(20 * u64::from(i));
            jb.push(pkt(i, FRAME * u32::from(i) - 240_000, at));
            pop_all(&mut jb, at + ms(60), &mut out);
        }
        assert_eq!(jb.stats().reanchors, 1);
        match out.last() {
            Some(JitterOutput::Packet(p)) => {
                assert_eq!(p.seq, 499);
                assert_eq!(p.at_ms, 499 * 20);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn drift_of_a_fast_sender_clock_is_followed() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default(), t0);
        let mut out = Vec::new();
        // The sender's clock runs 1 % fast: 969.6 ticks per 20 ms.
        let mut max_err = 0i64;
        for i in 0..3000u32 {
            let at = t0 + ms(20 * u64::from(i));
            // Truncation to whole ticks is intended.
            let seq = i as u16;
            jb.push(pkt(seq, (f64::from(i) * 969.6) as u32, at));
            let before = out.len();
            pop_all(&mut jb, at + ms(60), &mut out);
            for o in &out[before..] {
                if let JitterOutput::Packet(p) = o {
                    let true_ms = i64::from(p.seq) * 20;
                    max_err = max_err.max((p.at_ms as i64 - true_ms).abs());
                }
            }
        }
        assert!(jb.stats().reanchors >= 1);
        assert!(max_err <= 60 + 20, "mapped time strays {max_err} ms");
    }

    /// A seeded hostile network: loss, duplication, reordering within and
    /// beyond the wait. Invariants: output strictly in sequence order, nothing
    /// twice, every sequence number between the first and last output is
    /// either a packet or inside exactly one gap, packets that arrived in time
    /// are never lost, and at_ms is exact for an undisturbed clock.
    #[test]
    fn property_seeded_loss_dup_reorder() {
        for seed in 0..200u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let t0 = Instant::now();
            let cfg = JitterConfig::default();
            let mut jb = JitterBuffer::new(cfg.clone(), t0);
            let n: u16 = rng.gen_range(50..400);
            let seq0: u16 = rng.gen();
            let ts0: u32 = rng.gen();
            let mut arrivals: Vec<(Instant, u16)> = Vec::new();
            for i in 0..n {
                if rng.gen_bool(0.05) {
                    continue; // lost
                }
                let send = 1000 + 20 * u64::from(i);
                let jitter: u64 = if rng.gen_bool(0.1) {
                    rng.gen_range(0..150)
                } else {
                    rng.gen_range(0..10)
                };
                arrivals.push((t0 + ms(send + jitter), i));
                if rng.gen_bool(0.03) {
                    arrivals.push((t0 + ms(send + jitter + rng.gen_range(0..100)), i));
                }
            }
            arrivals.sort_by_key(|(at, _)| *at);
            let mut out = Vec::new();
            for (at, i) in &arrivals {
                pop_all(&mut jb, *at, &mut out);
                jb.push(pkt(
                    seq0.wrapping_add(*i),
                    ts0.wrapping_add(FRAME * u32::from(*i)),
                    *at,
                ));
                pop_all(&mut jb, *at, &mut out);
            }
            out.extend(jb.drain());

            let mut expect: Option<u16> = None;
            let mut seen = std::collections::HashSet::new();
            for o in &out {
                match o {
                    JitterOutput::Packet(p) => {
                        if let Some(e) = expect {
                            assert_eq!(p.seq, e, "seed {seed}: out of order");
                        }
                        assert!(seen.insert(p.seq), "seed {seed}: {} twice", p.seq);
                        let i = p.seq.wrapping_sub(seq0);
                        assert_eq!(p.payload.as_ref(), &p.seq.to_be_bytes(), "seed {seed}");
                        let want = 1000 + 20 * u64::from(i);
                        // The anchor is the first output's arrival, at most its jitter late.
                        assert!(
                            p.at_ms >= want && p.at_ms <= want + 150,
                            "seed {seed}: at_ms {} for {i}",
                            p.at_ms
                        );
                        expect = Some(p.seq.wrapping_add(1));
                    }
                    JitterOutput::Gap { first_seq, count } => {
                        assert_eq!(Some(*first_seq), expect, "seed {seed}: gap not at the hole");
                        assert!(*count >= 1);
                        expect = Some(first_seq.wrapping_add(*count as u16));
                    }
                }
            }
            // Anything that arrived within `delay` of its predecessor's slot is never given up.
            let s = jb.stats();
            assert_eq!(s.emitted as usize, seen.len(), "seed {seed}");
            assert_eq!(s.emitted + s.duplicates + s.late, s.pushed, "seed {seed}");
            let timely: std::collections::HashSet<u16> = arrivals
                .iter()
                .filter(|(at, i)| {
                    let send = t0 + ms(1000 + 20 * u64::from(*i));
                    at.saturating_duration_since(send) < ms(20)
                })
                .map(|(_, i)| seq0.wrapping_add(*i))
                .collect();
            for seq in timely {
                // The first packet(s) may precede the first output only by a swap.
                if seq.wrapping_sub(seq0) > 3 {
                    assert!(seen.contains(&seq), "seed {seed}: timely {seq} lost");
                }
            }
        }
    }
}
