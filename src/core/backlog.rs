//! The transcription backlog: which utterance goes to STT next, and when.
//!
//! Sans-IO. The encrypted recording is the buffer: an utterance that cannot go
//! to the provider at once is kept only *by reference* ([`UtteranceRef`]:
//! participant, meeting-clock range and the recording chunks that hold its
//! packets), its PCM is dropped, and the shell decodes it again from the
//! recording when [`Backlog::poll_dispatch`] hands it out. What this module
//! decides:
//!
//! * **Order.** First in, first out over the whole meeting; a retried
//!   utterance goes back to the front, so the transcript fills in in order.
//! * **In-flight plaintext.** At most `concurrency` utterances are in flight,
//!   and their decoded PCM ([`pcm_bytes`]) together stays within
//!   `inflight_budget_bytes` — except that one utterance is always allowed
//!   alone, so a budget smaller than the longest utterance cannot stall.
//!   The head of the queue is never skipped for a smaller one behind it.
//! * **A provider that is down.** An utterance whose attempts all failed
//!   transiently is not dropped: it is requeued at the front and nothing new
//!   is dispatched for a hold-off that doubles per consecutive requeue
//!   (`retry_initial`..=`retry_max`). The first success clears it. Only the
//!   lifecycle's deadlines (`recording.max_age`, the stop grace) end the wait.
//! * **Visibility.** [`Backlog::stats`] (queued utterances and audio, in
//!   flight, peaks) and [`Backlog::poll_report`], a throttled "transcription
//!   is lagging" report for the log.
//!
//! [`AudioIndex`] maps (participant, meeting time) to a recording chunk so the
//! shell decrypts only the chunks around an utterance, not the whole recording.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::core::media::ParticipantId;

/// Bytes of decoded PCM per ms of audio: 16 kHz mono `f32`.
pub const PCM_BYTES_PER_MS: u64 = 16 * 4;

/// Decoded PCM bytes of `ms` of audio ([`PCM_BYTES_PER_MS`] per ms).
pub fn pcm_bytes(ms: u64) -> u64 {
    ms.saturating_mul(PCM_BYTES_PER_MS)
}

/// Default cap on decoded PCM in flight to STT: 8 MiB, about 2 min 11 s of audio.
pub const DEFAULT_INFLIGHT_BUDGET_BYTES: u64 = 8 * 1024 * 1024;

/// Queued audio at which the backlog counts as lagging (reported), ms.
pub const LAGGING_AUDIO_MS: u64 = 10_000;
/// How often a lagging backlog is reported.
pub const REPORT_EVERY: Duration = Duration::from_secs(30);

/// How the backlog dispatches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BacklogConfig {
    /// Utterances in flight at once (at least 1).
    pub concurrency: usize,
    /// Cap on the decoded PCM of the utterances in flight, bytes.
    pub inflight_budget_bytes: u64,
    /// Hold-off after the first requeue; doubles per consecutive requeue.
    pub retry_initial: Duration,
    /// Cap on the hold-off.
    pub retry_max: Duration,
}

impl Default for BacklogConfig {
    fn default() -> Self {
        BacklogConfig {
            concurrency: 1,
            inflight_budget_bytes: DEFAULT_INFLIGHT_BUDGET_BYTES,
            retry_initial: Duration::from_secs(10),
            retry_max: Duration::from_secs(60),
        }
    }
}

/// Where an utterance's audio is in the recording. Holds no audio.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UtteranceRef {
    /// Whose speech.
    pub participant: ParticipantId,
    /// Meeting-clock start, ms.
    pub start_ms: u64,
    /// Meeting-clock end, ms.
    pub end_ms: u64,
    /// First recording chunk that may hold its packets (warm-up included).
    pub first_chunk: u64,
    /// Last recording chunk that may hold its packets.
    pub last_chunk: u64,
}

impl UtteranceRef {
    /// Length, ms.
    pub fn duration_ms(&self) -> u64 {
        self.end_ms.saturating_sub(self.start_ms)
    }
}

/// A queued reference, compact: participants are interned.
#[derive(Clone, Copy, Debug)]
struct Entry {
    participant: u32,
    start_ms: u64,
    end_ms: u64,
    first_chunk: u64,
    last_chunk: u64,
}

impl Entry {
    fn duration_ms(&self) -> u64 {
        self.end_ms.saturating_sub(self.start_ms)
    }
}

/// Identifies one dispatched utterance until [`Backlog::finished`].
pub type Ticket = u64;

/// What [`Backlog::offer`] decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Send it now with the PCM already in hand.
    Now(Ticket),
    /// Drop the PCM: it is queued by reference.
    Queued,
}

/// How a dispatched utterance ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// Transcribed.
    Done,
    /// Failed for good (a permanent error): it becomes a gap.
    Failed,
    /// Failed transiently after the provider's attempts: requeue it.
    Retry,
}

/// The backlog's figures (no audio, no names).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BacklogStats {
    /// Utterances waiting (not in flight).
    pub queued: u64,
    /// Audio waiting, ms.
    pub queued_audio_ms: u64,
    /// Utterances in flight.
    pub in_flight: u64,
    /// Decoded PCM bytes in flight.
    pub in_flight_bytes: u64,
    /// Most utterances ever waiting at once.
    pub peak_queued: u64,
    /// Most audio ever waiting at once, ms.
    pub peak_queued_audio_ms: u64,
    /// Most decoded PCM bytes ever in flight at once.
    pub peak_in_flight_bytes: u64,
    /// Utterances requeued after a transient failure.
    pub requeued: u64,
    /// Utterances dispatched from the queue (decoded again from the recording).
    pub from_recording: u64,
}

/// A throttled report for the log while transcription lags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Report {
    /// The backlog is lagging (or the provider is failing).
    Lagging(BacklogStats),
    /// A backlog that was reported lagging is empty again.
    CaughtUp(BacklogStats),
}

/// The transcription queue. See the module docs.
#[derive(Debug)]
pub struct Backlog {
    cfg: BacklogConfig,
    participants: Vec<ParticipantId>,
    participant_ids: HashMap<ParticipantId, u32>,
    queue: VecDeque<Entry>,
    in_flight: BTreeMap<Ticket, (Entry, u64)>,
    next_ticket: Ticket,
    stats: BacklogStats,
    hold_until: Option<Instant>,
    requeues_in_a_row: u32,
    last_report: Option<Instant>,
    reported_lagging: bool,
}

impl Backlog {
    /// An empty backlog.
    pub fn new(cfg: BacklogConfig) -> Self {
        Backlog {
            cfg,
            participants: Vec::new(),
            participant_ids: HashMap::new(),
            queue: VecDeque::new(),
            in_flight: BTreeMap::new(),
            next_ticket: 0,
            stats: BacklogStats::default(),
            hold_until: None,
            requeues_in_a_row: 0,
            last_report: None,
            reported_lagging: false,
        }
    }

    fn intern(&mut self, p: ParticipantId) -> u32 {
        if let Some(&i) = self.participant_ids.get(&p) {
            return i;
        }
        let i = u32::try_from(self.participants.len()).unwrap_or(u32::MAX);
        self.participants.push(p.clone());
        self.participant_ids.insert(p, i);
        i
    }

    fn to_ref(&self, e: &Entry) -> UtteranceRef {
        UtteranceRef {
            participant: self
                .participants
                .get(e.participant as usize)
                .cloned()
                .unwrap_or_else(|| ParticipantId(String::new())),
            start_ms: e.start_ms,
            end_ms: e.end_ms,
            first_chunk: e.first_chunk,
            last_chunk: e.last_chunk,
        }
    }

    /// Whether `e` may start now.
    fn can_start(&self, now: Instant, e: &Entry) -> bool {
        if self.hold_until.is_some_and(|h| now < h) {
            return false;
        }
        if self.in_flight.len() >= self.cfg.concurrency.max(1) {
            return false;
        }
        self.in_flight.is_empty()
            || self
                .stats
                .in_flight_bytes
                .saturating_add(pcm_bytes(e.duration_ms()))
                <= self.cfg.inflight_budget_bytes
    }

    fn start(&mut self, e: Entry) -> Ticket {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        let bytes = pcm_bytes(e.duration_ms());
        self.in_flight.insert(ticket, (e, bytes));
        self.stats.in_flight = self.in_flight.len() as u64;
        self.stats.in_flight_bytes = self.stats.in_flight_bytes.saturating_add(bytes);
        self.stats.peak_in_flight_bytes = self
            .stats
            .peak_in_flight_bytes
            .max(self.stats.in_flight_bytes);
        ticket
    }

    fn enqueue(&mut self, e: Entry, front: bool) {
        if front {
            self.queue.push_front(e);
        } else {
            self.queue.push_back(e);
        }
        self.stats.queued = self.queue.len() as u64;
        self.stats.queued_audio_ms = self.stats.queued_audio_ms.saturating_add(e.duration_ms());
        self.stats.peak_queued = self.stats.peak_queued.max(self.stats.queued);
        self.stats.peak_queued_audio_ms = self
            .stats
            .peak_queued_audio_ms
            .max(self.stats.queued_audio_ms);
    }

    /// A new utterance. `Now` when nothing is waiting and a slot and budget
    /// are free: send it with the PCM the live pipeline decoded. Otherwise it
    /// is queued by reference and the caller drops (zeroizes) its PCM.
    pub fn offer(&mut self, now: Instant, r: UtteranceRef) -> Admit {
        let e = Entry {
            participant: self.intern(r.participant),
            start_ms: r.start_ms,
            end_ms: r.end_ms,
            first_chunk: r.first_chunk,
            last_chunk: r.last_chunk,
        };
        if self.queue.is_empty() && self.can_start(now, &e) {
            Admit::Now(self.start(e))
        } else {
            self.enqueue(e, false);
            Admit::Queued
        }
    }

    /// The next queued utterance to decode from the recording and send, if a
    /// slot, the budget and the hold-off allow. Call until `None`.
    pub fn poll_dispatch(&mut self, now: Instant) -> Option<(Ticket, UtteranceRef)> {
        if self.hold_until.is_some_and(|h| now >= h) {
            // Over: [`Backlog::poll_timeout`] must not report a past instant.
            self.hold_until = None;
        }
        let head = *self.queue.front()?;
        if !self.can_start(now, &head) {
            return None;
        }
        self.queue.pop_front();
        self.stats.queued = self.queue.len() as u64;
        self.stats.queued_audio_ms = self
            .stats
            .queued_audio_ms
            .saturating_sub(head.duration_ms());
        self.stats.from_recording += 1;
        let r = self.to_ref(&head);
        Some((self.start(head), r))
    }

    /// When [`Backlog::poll_dispatch`] may next return something without any
    /// other input (the end of a hold-off), if work is waiting for it. Call
    /// it after `poll_dispatch(now)`: then it is never in the past.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.queue.is_empty() {
            return None;
        }
        self.hold_until
    }

    /// A dispatched utterance ended. Returns its reference (for the
    /// transcript), or `None` for an unknown ticket.
    pub fn finished(&mut self, now: Instant, ticket: Ticket, how: Finish) -> Option<UtteranceRef> {
        let (e, bytes) = self.in_flight.remove(&ticket)?;
        self.stats.in_flight = self.in_flight.len() as u64;
        self.stats.in_flight_bytes = self.stats.in_flight_bytes.saturating_sub(bytes);
        match how {
            Finish::Done => {
                self.requeues_in_a_row = 0;
                self.hold_until = None;
            }
            Finish::Failed => {}
            Finish::Retry => {
                self.requeues_in_a_row = self.requeues_in_a_row.saturating_add(1);
                self.stats.requeued += 1;
                let exp = self.requeues_in_a_row.saturating_sub(1).min(20);
                let wait = self
                    .cfg
                    .retry_initial
                    .saturating_mul(1u32 << exp)
                    .min(self.cfg.retry_max);
                self.hold_until = Some(now + wait);
                self.enqueue(e, true);
            }
        }
        Some(self.to_ref(&e))
    }

    /// Forgets everything queued and in flight (transcription abandoned).
    /// Returns how many utterances and ms of audio were dropped.
    pub fn abandon(&mut self) -> (u64, u64) {
        let n = (self.queue.len() + self.in_flight.len()) as u64;
        let ms = self
            .queue
            .iter()
            .chain(self.in_flight.values().map(|(e, _)| e))
            .map(Entry::duration_ms)
            .sum();
        self.queue.clear();
        self.in_flight.clear();
        self.hold_until = None;
        self.stats.queued = 0;
        self.stats.queued_audio_ms = 0;
        self.stats.in_flight = 0;
        self.stats.in_flight_bytes = 0;
        (n, ms)
    }

    /// Nothing queued and nothing in flight.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.in_flight.is_empty()
    }

    /// The figures now.
    pub fn stats(&self) -> BacklogStats {
        self.stats
    }

    /// A report for the log, at most every [`REPORT_EVERY`] while queued
    /// audio is at least [`LAGGING_AUDIO_MS`] or a hold-off is running, and
    /// once when a reported backlog has emptied.
    pub fn poll_report(&mut self, now: Instant) -> Option<Report> {
        let held = self.hold_until.is_some_and(|h| now < h) && !self.queue.is_empty();
        let lagging = self.stats.queued_audio_ms >= LAGGING_AUDIO_MS || held;
        if lagging {
            if self
                .last_report
                .is_none_or(|t| now.saturating_duration_since(t) >= REPORT_EVERY)
            {
                self.last_report = Some(now);
                self.reported_lagging = true;
                return Some(Report::Lagging(self.stats));
            }
        } else if self.reported_lagging && self.queue.is_empty() {
            self.reported_lagging = false;
            self.last_report = None;
            return Some(Report::CaughtUp(self.stats));
        }
        None
    }
}

/// Spacing of [`AudioIndex`] entries per participant, ms of meeting clock.
pub const INDEX_SPACING_MS: u64 = 2_000;

/// Which recording chunk holds a participant's audio from a given time on:
/// one entry per participant every [`INDEX_SPACING_MS`] (about 2 KiB per
/// participant-hour), so locating an utterance costs a binary search and its
/// decode reads at most that much extra audio.
#[derive(Debug, Default)]
pub struct AudioIndex {
    /// Per participant, (at_ms, chunk) of sampled packets, both increasing.
    entries: HashMap<ParticipantId, Vec<(u64, u64)>>,
}

impl AudioIndex {
    /// A packet of `participant` at `at_ms` was appended to chunk `chunk`.
    pub fn note(&mut self, participant: &ParticipantId, at_ms: u64, chunk: u64) {
        let v = match self.entries.get_mut(participant) {
            Some(v) => v,
            None => self.entries.entry(participant.clone()).or_default(),
        };
        match v.last() {
            Some(&(last_ms, last_chunk))
                if at_ms < last_ms.saturating_add(INDEX_SPACING_MS) || chunk < last_chunk => {}
            _ => v.push((at_ms, chunk)),
        }
    }

    /// The first chunk that can hold `participant`'s packets at or after
    /// `from_ms` (packets of one participant are appended in meeting-clock
    /// order: late ones are dropped by the audio path anyway).
    pub fn locate(&self, participant: &ParticipantId, from_ms: u64) -> Option<u64> {
        let v = self.entries.get(participant)?;
        let i = v.partition_point(|&(at, _)| at <= from_ms);
        Some(v[i.saturating_sub(1)].1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(i: u32) -> ParticipantId {
        ParticipantId(format!("p{i}"))
    }

    fn utt(i: u32, start_s: u64, secs: u64) -> UtteranceRef {
        UtteranceRef {
            participant: p(i),
            start_ms: start_s * 1000,
            end_ms: (start_s + secs) * 1000,
            first_chunk: start_s,
            last_chunk: start_s + secs,
        }
    }

    fn cfg(concurrency: usize, budget_s: u64) -> BacklogConfig {
        BacklogConfig {
            concurrency,
            inflight_budget_bytes: pcm_bytes(budget_s * 1000),
            retry_initial: Duration::from_secs(10),
            retry_max: Duration::from_secs(60),
        }
    }

    /// A provider in virtual time: each dispatched utterance answers after
    /// `latency`, or fails transiently while `down_until` has not passed.
    struct Sim {
        b: Backlog,
        now: Instant,
        running: Vec<(Instant, Ticket, bool)>,
        done: Vec<UtteranceRef>,
        latency: Duration,
        down_until: Instant,
        attempt_cost: Duration,
    }

    impl Sim {
        fn new(c: BacklogConfig) -> Self {
            let now = Instant::now();
            Sim {
                b: Backlog::new(c),
                now,
                running: Vec::new(),
                done: Vec::new(),
                latency: Duration::from_secs(2),
                down_until: now,
                attempt_cost: Duration::from_secs(5),
            }
        }
        fn start(&mut self, t: Ticket) {
            let down = self.now < self.down_until;
            let d = if down {
                self.attempt_cost
            } else {
                self.latency
            };
            self.running.push((self.now + d, t, down));
        }
        fn offer(&mut self, r: UtteranceRef) {
            if let Admit::Now(t) = self.b.offer(self.now, r) {
                self.start(t);
            }
            self.pump();
        }
        fn pump(&mut self) {
            while let Some((t, _)) = self.b.poll_dispatch(self.now) {
                self.start(t);
            }
        }
        /// Advances to `until`, finishing utterances and firing hold-offs.
        fn advance_to(&mut self, until: Instant) {
            loop {
                let next_done = self.running.iter().map(|(at, _, _)| *at).min();
                let next = [next_done, self.b.poll_timeout()]
                    .into_iter()
                    .flatten()
                    .filter(|t| *t <= until)
                    .min();
                let Some(t) = next else { break };
                self.now = self.now.max(t);
                let (due, rest): (Vec<_>, Vec<_>) = self
                    .running
                    .drain(..)
                    .partition(|(at, _, _)| *at <= self.now);
                self.running = rest;
                for (_, ticket, failed) in due {
                    let how = if failed { Finish::Retry } else { Finish::Done };
                    let r = self
                        .b
                        .finished(self.now, ticket, how)
                        .expect("known ticket");
                    if how == Finish::Done {
                        self.done.push(r);
                    }
                }
                self.pump();
            }
            self.now = until;
            self.pump();
        }
    }

    #[test]
    fn idle_provider_takes_utterances_at_once_with_their_pcm() {
        let mut b = Backlog::new(cfg(2, 60));
        let now = Instant::now();
        assert!(matches!(b.offer(now, utt(0, 0, 3)), Admit::Now(_)));
        assert!(matches!(b.offer(now, utt(1, 1, 3)), Admit::Now(_)));
        // Both slots taken: the third waits, by reference.
        assert_eq!(b.offer(now, utt(2, 2, 3)), Admit::Queued);
        assert_eq!(b.stats().queued, 1);
        assert_eq!(b.stats().queued_audio_ms, 3000);
        assert_eq!(b.stats().in_flight_bytes, pcm_bytes(6000));
        assert!(b.poll_dispatch(now).is_none());
        assert!(b.finished(now, 0, Finish::Done).is_some());
        let (_, r) = b.poll_dispatch(now).expect("a slot freed");
        assert_eq!(r, utt(2, 2, 3));
        assert_eq!(b.stats().from_recording, 1);
        assert!(
            b.finished(now, 99, Finish::Done).is_none(),
            "unknown ticket"
        );
    }

    #[test]
    fn in_flight_pcm_stays_within_the_budget_but_one_always_fits() {
        // Budget 10 s of PCM, four slots: a 20 s utterance goes alone; 4 s
        // ones go two at a time; the head is never skipped for a smaller one.
        let mut b = Backlog::new(cfg(4, 10));
        let now = Instant::now();
        let big = b.offer(now, utt(0, 0, 20));
        assert!(
            matches!(big, Admit::Now(_)),
            "alone, over budget: still sent"
        );
        assert_eq!(b.offer(now, utt(1, 20, 4)), Admit::Queued);
        assert_eq!(b.offer(now, utt(2, 24, 1)), Admit::Queued);
        assert!(
            b.poll_dispatch(now).is_none(),
            "the big one fills the budget"
        );
        b.finished(now, 0, Finish::Done);
        let (t1, r1) = b.poll_dispatch(now).expect("head");
        assert_eq!(r1.start_ms, 20_000);
        let (_, r2) = b.poll_dispatch(now).expect("fits beside it");
        assert_eq!(r2.start_ms, 24_000);
        assert_eq!(b.stats().in_flight_bytes, pcm_bytes(5000));
        assert_eq!(
            b.offer(now, utt(3, 25, 6)),
            Admit::Queued,
            "FIFO: behind nothing, but over budget"
        );
        assert!(b.poll_dispatch(now).is_none());
        b.finished(now, t1, Finish::Done);
        assert!(b.poll_dispatch(now).is_some());
        assert_eq!(b.stats().peak_in_flight_bytes, pcm_bytes(20_000));
    }

    #[test]
    fn a_hung_provider_delays_but_memory_stays_bounded_and_nothing_is_lost() {
        // Ten speakers, one 3 s utterance each every 10 s, for an hour; the
        // provider fails every attempt (5 s each) for the first 5 minutes.
        let mut c = cfg(2, 8);
        c.retry_initial = Duration::from_secs(1);
        c.retry_max = Duration::from_secs(20);
        let mut s = Sim::new(c);
        let t0 = s.now;
        s.down_until = t0 + Duration::from_secs(300);
        s.latency = Duration::from_millis(500);
        let mut offered = Vec::new();
        for sec in (0..3600u64).step_by(1) {
            s.advance_to(t0 + Duration::from_secs(sec));
            if sec % 10 == 0 {
                for i in 0..10 {
                    let r = utt(i, sec, 3);
                    offered.push(r.clone());
                    s.offer(r);
                }
            }
            assert!(
                s.b.stats().in_flight_bytes <= pcm_bytes(8000),
                "{:?}",
                s.b.stats()
            );
            assert!(s.b.stats().in_flight <= 2);
        }
        s.advance_to(t0 + Duration::from_secs(7200));
        assert!(s.b.is_idle(), "{:?}", s.b.stats());
        let st = s.b.stats();
        assert!(st.requeued > 0, "the outage was seen: {st:?}");
        assert!(
            st.peak_queued >= 250,
            "10 utterances every 10 s for 5 min: {st:?}"
        );
        // Every utterance came through exactly once, in order.
        assert_eq!(s.done.len(), offered.len());
        let mut got: Vec<_> = s
            .done
            .iter()
            .map(|r| (r.start_ms, r.participant.clone()))
            .collect();
        let mut want: Vec<_> = offered
            .iter()
            .map(|r| (r.start_ms, r.participant.clone()))
            .collect();
        assert_eq!(got, want, "FIFO order kept across the outage");
        got.dedup();
        want.dedup();
        assert_eq!(got.len(), want.len());
    }

    #[test]
    fn requeue_holds_off_with_doubling_waits_and_a_success_clears_it() {
        let mut b = Backlog::new(cfg(1, 60));
        let now = Instant::now();
        let Admit::Now(t) = b.offer(now, utt(0, 0, 2)) else {
            panic!("idle")
        };
        assert_eq!(b.offer(now, utt(1, 2, 2)), Admit::Queued);
        b.finished(now, t, Finish::Retry);
        assert_eq!(b.poll_timeout(), Some(now + Duration::from_secs(10)));
        assert!(b.poll_dispatch(now + Duration::from_secs(9)).is_none());
        let later = now + Duration::from_secs(10);
        let (t, r) = b.poll_dispatch(later).expect("hold-off over");
        assert_eq!(r.start_ms, 0, "the retried one first");
        b.finished(later, t, Finish::Retry);
        assert_eq!(b.poll_timeout(), Some(later + Duration::from_secs(20)));
        let mut at = later;
        for _ in 0..5 {
            at = b.poll_timeout().expect("held");
            let (t, _) = b.poll_dispatch(at).expect("due");
            b.finished(at, t, Finish::Retry);
        }
        assert_eq!(
            b.poll_timeout(),
            Some(at + Duration::from_secs(60)),
            "capped"
        );
        let at = at + Duration::from_secs(60);
        let (t, _) = b.poll_dispatch(at).expect("due");
        b.finished(at, t, Finish::Done);
        // Cleared: the next one goes at once.
        assert!(b.poll_dispatch(at).is_some());
        assert_eq!(b.stats().requeued, 7);
        // A permanent failure neither requeues nor holds off.
        let mut b = Backlog::new(cfg(1, 60));
        let Admit::Now(t) = b.offer(now, utt(0, 0, 2)) else {
            panic!("idle")
        };
        b.offer(now, utt(1, 2, 2));
        assert_eq!(
            b.finished(now, t, Finish::Failed).map(|r| r.start_ms),
            Some(0)
        );
        assert_eq!(b.poll_dispatch(now).map(|(_, r)| r.start_ms), Some(2000));
    }

    #[test]
    fn lagging_is_reported_throttled_and_catching_up_once() {
        let mut b = Backlog::new(cfg(1, 60));
        let now = Instant::now();
        let Admit::Now(t) = b.offer(now, utt(0, 0, 5)) else {
            panic!("idle")
        };
        b.offer(now, utt(1, 5, 5));
        assert_eq!(b.poll_report(now), None, "5 s waiting is not lagging");
        b.offer(now, utt(2, 10, 5));
        assert!(
            matches!(b.poll_report(now), Some(Report::Lagging(s)) if s.queued == 2 && s.queued_audio_ms == 10_000)
        );
        assert_eq!(b.poll_report(now + Duration::from_secs(29)), None);
        let later = now + REPORT_EVERY;
        assert!(matches!(b.poll_report(later), Some(Report::Lagging(_))));
        b.finished(later, t, Finish::Done);
        while let Some((t, _)) = b.poll_dispatch(later) {
            b.finished(later, t, Finish::Done);
        }
        assert!(
            matches!(b.poll_report(later), Some(Report::CaughtUp(s)) if s.queued == 0 && s.peak_queued == 2)
        );
        assert_eq!(b.poll_report(later), None);
    }

    #[test]
    fn abandon_counts_what_is_dropped() {
        let mut b = Backlog::new(cfg(1, 60));
        let now = Instant::now();
        b.offer(now, utt(0, 0, 2));
        b.offer(now, utt(1, 2, 3));
        assert_eq!(b.abandon(), (2, 5000));
        assert!(b.is_idle());
        assert_eq!(b.stats().in_flight_bytes, 0);
    }

    #[test]
    fn the_index_finds_the_chunk_at_or_before_a_time() {
        let mut ix = AudioIndex::default();
        let a = p(0);
        assert_eq!(ix.locate(&a, 0), None);
        // 20 ms packets, a new chunk every 100 packets (2 s).
        for i in 0..1000u64 {
            ix.note(&a, 500 + i * 20, i / 100);
        }
        assert_eq!(ix.entries[&a].len(), 10, "one entry per 2 s");
        assert_eq!(ix.locate(&a, 0), Some(0), "before the first packet");
        for t in [500u64, 3_000, 7_777, 19_999, 60_000] {
            let c = ix.locate(&a, t).expect("known");
            // Every packet at or after t is in chunk c or later.
            let first_after = (t.saturating_sub(500)).div_ceil(20).min(999);
            assert!(c <= first_after / 100, "t={t} c={c}");
            // And c is not far before: within the index spacing.
            assert!(
                first_after / 100 <= c + INDEX_SPACING_MS / 2_000 + 1,
                "t={t} c={c}"
            );
        }
        assert_eq!(ix.locate(&p(1), 0), None);
    }
}
