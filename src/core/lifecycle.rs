//! The bot's lifecycle as a sans-IO state machine.
//!
//! The shell feeds [`Input`]s and the current time in, and drains
//! [`Output`]s until [`Lifecycle::poll_output`] returns `None`; it then sleeps
//! until [`Lifecycle::poll_timeout`] (or the next input) and calls
//! [`Lifecycle::handle_timeout`]. The machine never reads the clock, so tests
//! drive hours of virtual time in microseconds.
//!
//! ```text
//! joining ─admitted─▶ in_call_recording ─ended/stop─▶ call_ended ─drained─▶ (commit)
//!    │                        │                                            │
//!    └──────── failure ───────┴──────────────────────▶ (delete) ◀──committed / gave up
//!                                                          │
//!                                   recording_deleted ─▶ done | fatal
//! ```
//!
//! **Invariant:** every path that starts a recording ends with exactly one
//! [`Output::DeleteRecording`], whatever fails on the way. The only exit
//! without one is a deletion that itself failed, which is reported as `fatal`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Timing knobs of the lifecycle.
#[derive(Clone, Debug)]
pub struct LifecycleConfig {
    /// How long to wait for admission into the meeting.
    pub join_timeout: Duration,
    /// After a stop request: the time to leave, finish transcribing, commit and delete.
    pub grace: Duration,
    /// A recording is destroyed at this age even if its transcript never committed.
    pub max_recording_age: Duration,
    /// First commit retry delay; doubles per failure.
    pub commit_retry_initial: Duration,
    /// Cap on the commit retry delay.
    pub commit_retry_max: Duration,
    /// When the bot leaves on its own.
    pub auto_leave: AutoLeaveConfig,
}

/// Auto-leave rules. A zero duration disables its rule. Every way out goes
/// through commit and deletion like any other end of call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AutoLeaveConfig {
    /// Leave this long after the last other participant left.
    pub everyone_left: Duration,
    /// Leave if nobody else joined within this long of admission.
    pub noone_joined: Duration,
    /// Leave after this long in the call, whatever happens.
    pub max_duration: Duration,
    /// Leave after this long without speech — only while audio is arriving.
    /// No audio at all is a capture fault, not silence, and never triggers it.
    pub silence: Duration,
    /// Give up after this long in a waiting room (instead of `join_timeout`).
    pub waiting_room: Duration,
}

impl Default for AutoLeaveConfig {
    fn default() -> Self {
        AutoLeaveConfig {
            everyone_left: Duration::from_secs(5),
            noone_joined: Duration::from_secs(600),
            max_duration: Duration::from_secs(4 * 3600),
            silence: Duration::from_secs(1800),
            waiting_room: Duration::from_secs(600),
        }
    }
}

/// Audio counts as arriving if a packet came within this window.
pub const MEDIA_HEALTHY_WINDOW: Duration = Duration::from_secs(5);

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            join_timeout: Duration::from_secs(120),
            grace: Duration::from_secs(25),
            max_recording_age: Duration::from_secs(24 * 3600),
            commit_retry_initial: Duration::from_secs(1),
            commit_retry_max: Duration::from_secs(300),
            auto_leave: AutoLeaveConfig::default(),
        }
    }
}

/// Public statuses, in the order a successful run passes through them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Connecting to the meeting.
    Joining,
    /// In the call; audio is being captured into the encrypted recording.
    InCallRecording,
    /// Admitted, but the connection to the meeting was lost and the platform
    /// is rejoining; back to [`Status::InCallRecording`] once it is in again.
    Reconnecting,
    /// Left the call (or it ended); finishing transcription.
    CallEnded,
    /// The transcript is committed and verified.
    TranscriptCommitted,
    /// The recording is destroyed and the receipt written.
    RecordingDeleted,
    /// Finished successfully.
    Done,
    /// Finished with a failure (the reason says which).
    Fatal,
}

impl Status {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Joining => "joining",
            Status::InCallRecording => "in_call_recording",
            Status::Reconnecting => "reconnecting",
            Status::CallEnded => "call_ended",
            Status::TranscriptCommitted => "transcript_committed",
            Status::RecordingDeleted => "recording_deleted",
            Status::Done => "done",
            Status::Fatal => "fatal",
        }
    }
}

/// What happened, as told by the shell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// The platform put the bot in a waiting room / lobby.
    Waiting,
    /// The platform admitted the bot.
    Admitted,
    /// How many other participants are in the meeting now.
    ParticipantCount(usize),
    /// Audio arrived (the shell reports at most about once a second);
    /// `speech` when the VAD heard speech since the last report.
    MediaActivity {
        /// Whether speech was detected.
        speech: bool,
    },
    /// The connection to the meeting was lost after admission; the platform
    /// is rejoining (it reports [`Input::Reconnected`] or fails).
    ConnectionLost,
    /// Back in the meeting after [`Input::ConnectionLost`].
    Reconnected,
    /// The platform says the meeting is over (`reason` is a stable code).
    CallEnded {
        /// Stable snake_case code, e.g. `replay_finished`.
        reason: String,
    },
    /// SIGTERM/SIGINT or an API stop. A second one skips the remaining transcription.
    StopRequested,
    /// The platform failed; what was captured is still transcribed and committed.
    PlatformFailed {
        /// Human-readable cause, free of personal data.
        reason: String,
    },
    /// Every captured utterance has been transcribed.
    TranscriptionDrained,
    /// Transcription failed for good (after the provider's retries).
    TranscriptionFailed {
        /// Cause.
        reason: String,
    },
    /// The transcript is committed and read back verified.
    CommitSucceeded,
    /// The commit failed.
    CommitFailed {
        /// Cause.
        reason: String,
        /// Whether another attempt may succeed.
        retryable: bool,
    },
    /// The recording is destroyed and the receipt appended.
    RecordingDeleted,
    /// The recording is destroyed but its receipt could not be appended to
    /// the audit log (the receipt still goes out on the final status line).
    ReceiptFailed {
        /// Cause.
        reason: String,
    },
    /// Destroying the recording failed.
    DeletionFailed {
        /// Cause.
        reason: String,
    },
}

/// What the shell must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Report a status change. `reason` accompanies `call_ended` and `fatal`.
    Status {
        /// The new status.
        status: Status,
        /// Why, where relevant.
        reason: Option<String>,
    },
    /// Leave the meeting (idempotent).
    Leave,
    /// Flush utterances in progress, transcribe everything captured, then
    /// report [`Input::TranscriptionDrained`].
    FinishTranscription,
    /// Stop waiting for transcription: commit what is done (marked incomplete).
    AbandonTranscription,
    /// Try to commit the transcript; report success or failure.
    Commit,
    /// Destroy the recording and write the receipt.
    DeleteRecording {
        /// Whether the transcript was committed.
        committed: bool,
        /// Why not, when not.
        reason: Option<String>,
    },
    /// The run is over.
    Exit {
        /// Whether it ended in `done`.
        success: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Joining,
    InCall,
    Transcribing,
    Committing,
    Deleting,
    Finished,
}

/// The lifecycle state machine. See the module docs for the run loop.
#[derive(Debug)]
pub struct Lifecycle {
    cfg: LifecycleConfig,
    phase: Phase,
    join_deadline: Instant,
    /// When the recording must be gone. Starts at `started + max_recording_age`;
    /// reaching it in the call ends the call and extends it by the grace.
    age_deadline: Instant,
    admitted_at: Option<Instant>,
    /// Between [`Input::ConnectionLost`] and [`Input::Reconnected`].
    reconnecting: bool,
    waiting: bool,
    others: usize,
    anyone_joined: bool,
    alone_since: Option<Instant>,
    last_speech: Option<Instant>,
    last_media: Option<Instant>,
    stop_deadline: Option<Instant>,
    stop_count: u32,
    next_commit_at: Option<Instant>,
    commit_in_flight: bool,
    commit_failures: u32,
    last_commit_error: Option<String>,
    committed: bool,
    /// The reason the run will end `fatal`, once something failed.
    failure: Option<String>,
    outputs: VecDeque<Output>,
}

impl Lifecycle {
    /// Starts the machine at `now` in `joining`.
    pub fn new(cfg: LifecycleConfig, now: Instant) -> Self {
        let join_deadline = now + cfg.join_timeout;
        let age_deadline = now + cfg.max_recording_age;
        let mut lc = Lifecycle {
            cfg,
            phase: Phase::Joining,
            join_deadline,
            age_deadline,
            admitted_at: None,
            reconnecting: false,
            waiting: false,
            others: 0,
            anyone_joined: false,
            alone_since: None,
            last_speech: None,
            last_media: None,
            stop_deadline: None,
            stop_count: 0,
            next_commit_at: None,
            commit_in_flight: false,
            commit_failures: 0,
            last_commit_error: None,
            committed: false,
            failure: None,
            outputs: VecDeque::new(),
        };
        lc.status(Status::Joining, None);
        lc
    }

    /// Whether the run has finished (an `Exit` was emitted).
    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Finished
    }

    /// Whether audio should still be captured.
    pub fn is_capturing(&self) -> bool {
        matches!(self.phase, Phase::Joining | Phase::InCall)
    }

    /// The failure that will make (or made) the run end `fatal`, if any.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// Next output to act on, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The next instant at which [`Lifecycle::handle_timeout`] must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut consider = |x: Instant| {
            t = Some(match t {
                Some(cur) if cur <= x => cur,
                _ => x,
            })
        };
        match self.phase {
            Phase::Finished | Phase::Deleting => return None,
            Phase::Joining => consider(self.join_deadline),
            Phase::Transcribing => {
                if let Some(d) = self.stop_deadline {
                    consider(self.abandon_at(d));
                }
            }
            Phase::Committing => {
                if let Some(at) = self.next_commit_at {
                    consider(at);
                }
                if let Some(d) = self.stop_deadline {
                    consider(d);
                }
            }
            Phase::InCall => {
                if let Some((at, _)) = self.next_auto_leave() {
                    consider(at);
                }
            }
        }
        consider(self.age_deadline);
        t
    }

    /// Feeds the passage of time.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.phase == Phase::Finished || self.phase == Phase::Deleting {
            return;
        }
        if now >= self.age_deadline {
            let age = humanize(self.cfg.max_recording_age);
            match self.phase {
                Phase::InCall => {
                    // End the call like a stop: what was captured is still
                    // transcribed and committed, within the grace.
                    self.outputs.push_back(Output::Leave);
                    self.age_deadline = now + self.cfg.grace;
                    self.stop_deadline.get_or_insert(now + self.cfg.grace);
                    self.end_call("max_recording_age_reached".into());
                }
                Phase::Joining => {
                    self.outputs.push_back(Output::Leave);
                    self.fail_and_delete(format!(
                        "transcript not committed: the recording reached its maximum age ({age}) before the bot was admitted"
                    ));
                }
                _ => {
                    let why = match &self.last_commit_error {
                        Some(e) => format!(
                            "transcript not committed within the recording's maximum age ({age}); last commit error: {e}"
                        ),
                        None => format!(
                            "transcript not committed: the recording reached its maximum age ({age}) first"
                        ),
                    };
                    self.fail_and_delete(why);
                }
            }
            return;
        }
        match self.phase {
            Phase::Joining if now >= self.join_deadline => {
                self.outputs.push_back(Output::Leave);
                let why = if self.waiting {
                    format!(
                        "timeout_exceeded_waiting_room: not admitted from the waiting room within {}",
                        humanize(self.cfg.auto_leave.waiting_room)
                    )
                } else {
                    format!(
                        "not admitted to the meeting within {}",
                        humanize(self.cfg.join_timeout)
                    )
                };
                self.fail_and_delete(why);
            }
            Phase::InCall => {
                if let Some((at, reason)) = self.next_auto_leave() {
                    if now >= at {
                        if reason == "silence" && !self.media_healthy(now) {
                            // Capture fault, not silence: wait for audio to return.
                            self.last_speech = Some(now);
                        } else {
                            self.outputs.push_back(Output::Leave);
                            self.end_call(reason.into());
                        }
                    }
                }
            }
            Phase::Transcribing => {
                if let Some(d) = self.stop_deadline {
                    if now >= self.abandon_at(d) {
                        self.outputs.push_back(Output::AbandonTranscription);
                        self.start_commit();
                    }
                }
            }
            Phase::Committing => {
                if let Some(d) = self.stop_deadline {
                    if now >= d {
                        let why = format!(
                            "transcript not committed before the shutdown grace ({}) ran out; last commit error: {}",
                            humanize(self.cfg.grace),
                            self.last_commit_error.as_deref().unwrap_or("none")
                        );
                        self.fail_and_delete(why);
                        return;
                    }
                }
                if let Some(at) = self.next_commit_at {
                    if now >= at && !self.commit_in_flight {
                        self.next_commit_at = None;
                        self.commit_in_flight = true;
                        self.outputs.push_back(Output::Commit);
                    }
                }
            }
            _ => {}
        }
    }

    /// Feeds an input at `now`.
    pub fn handle_input(&mut self, now: Instant, input: Input) {
        match (self.phase, input) {
            (Phase::Finished, _) => {}
            (_, Input::StopRequested) => self.on_stop(now),
            (Phase::Joining, Input::Waiting) if !self.waiting => {
                self.waiting = true;
                if !self.cfg.auto_leave.waiting_room.is_zero() {
                    self.join_deadline = now + self.cfg.auto_leave.waiting_room;
                }
            }
            (Phase::Joining, Input::Admitted) => {
                self.phase = Phase::InCall;
                self.admitted_at = Some(now);
                self.last_speech = Some(now);
                if self.others == 0 && self.anyone_joined {
                    self.alone_since = Some(now);
                }
                self.status(Status::InCallRecording, None);
            }
            (Phase::Joining | Phase::InCall, Input::ParticipantCount(n)) => {
                if n > 0 {
                    self.anyone_joined = true;
                    self.alone_since = None;
                } else if self.others > 0 || (self.anyone_joined && self.alone_since.is_none()) {
                    self.alone_since = Some(now);
                }
                self.others = n;
            }
            (Phase::Joining | Phase::InCall, Input::MediaActivity { speech }) => {
                self.last_media = Some(now);
                if speech {
                    self.last_speech = Some(now);
                }
            }
            (Phase::InCall, Input::ConnectionLost) if !self.reconnecting => {
                self.reconnecting = true;
                self.status(Status::Reconnecting, Some("connection_lost".into()));
            }
            (Phase::InCall, Input::Reconnected) if self.reconnecting => {
                self.reconnecting = false;
                self.status(Status::InCallRecording, Some("reconnected".into()));
            }
            (Phase::Joining, Input::CallEnded { reason }) => {
                self.fail_and_delete(format!(
                    "the meeting ended before the bot was admitted ({reason})"
                ));
            }
            (Phase::Joining, Input::PlatformFailed { reason }) => self.fail_and_delete(reason),
            (Phase::InCall, Input::CallEnded { reason }) => self.end_call(reason),
            (Phase::InCall, Input::PlatformFailed { reason }) => {
                // Keep what was captured: transcribe, commit, then report fatal.
                self.failure.get_or_insert(reason);
                self.outputs.push_back(Output::Leave);
                self.end_call("platform_failed".into());
            }
            (
                Phase::Joining | Phase::InCall | Phase::Transcribing,
                Input::TranscriptionFailed { reason },
            ) => {
                if matches!(self.phase, Phase::Joining | Phase::InCall) {
                    self.outputs.push_back(Output::Leave);
                }
                self.fail_and_delete(format!("transcription failed: {reason}"));
            }
            (Phase::Transcribing, Input::TranscriptionDrained) => self.start_commit(),
            (Phase::Committing, Input::CommitSucceeded) => {
                self.commit_in_flight = false;
                self.committed = true;
                self.status(Status::TranscriptCommitted, None);
                self.delete(true, None);
            }
            (Phase::Committing, Input::CommitFailed { reason, retryable }) => {
                self.commit_in_flight = false;
                self.commit_failures += 1;
                self.last_commit_error = Some(reason.clone());
                if retryable {
                    let backoff = self.commit_backoff();
                    self.next_commit_at = Some(now + backoff);
                } else {
                    self.fail_and_delete(format!("transcript commit failed: {reason}"));
                }
            }
            (Phase::Deleting, Input::RecordingDeleted) => {
                self.status(Status::RecordingDeleted, None);
                self.finish();
            }
            (Phase::Deleting, Input::ReceiptFailed { reason }) => {
                self.status(Status::RecordingDeleted, None);
                let why = format!(
                    "recording destroyed, but its deletion receipt could not be appended to the audit log: {reason}"
                );
                self.failure = Some(match self.failure.take() {
                    Some(prev) => format!("{prev}; {why}"),
                    None => why,
                });
                self.finish();
            }
            (Phase::Deleting, Input::DeletionFailed { reason }) => {
                let why = format!("recording deletion failed: {reason}");
                self.failure = Some(match self.failure.take() {
                    Some(prev) => format!("{prev}; {why}"),
                    None => why,
                });
                self.finish();
            }
            // Late or duplicate inputs (e.g. a platform event after leaving) change nothing.
            _ => {}
        }
    }

    fn on_stop(&mut self, now: Instant) {
        self.stop_count += 1;
        if self.stop_deadline.is_none() {
            self.stop_deadline = Some(now + self.cfg.grace);
        }
        match self.phase {
            Phase::Joining => {
                self.outputs.push_back(Output::Leave);
                self.phase = Phase::Transcribing;
                self.status(Status::CallEnded, Some("stop_requested".into()));
                // Nothing can have been captured before admission.
                self.start_commit_or_skip();
            }
            Phase::InCall => {
                self.outputs.push_back(Output::Leave);
                self.end_call("stop_requested".into());
            }
            Phase::Transcribing if self.stop_count > 1 => {
                self.outputs.push_back(Output::AbandonTranscription);
                self.start_commit();
            }
            _ => {}
        }
    }

    /// The earliest auto-leave deadline in the call and its reason code.
    fn next_auto_leave(&self) -> Option<(Instant, &'static str)> {
        let a = &self.cfg.auto_leave;
        let admitted = self.admitted_at?;
        let mut best: Option<(Instant, &'static str)> = None;
        let mut consider = |d: Duration, from: Option<Instant>, why: &'static str| {
            if let (false, Some(from)) = (d.is_zero(), from) {
                let at = from + d;
                if best.is_none_or(|(b, _)| at < b) {
                    best = Some((at, why));
                }
            }
        };
        consider(a.max_duration, Some(admitted), "max_duration_exceeded");
        consider(a.everyone_left, self.alone_since, "everyone_left");
        if !self.anyone_joined {
            consider(a.noone_joined, Some(admitted), "noone_joined");
        }
        consider(a.silence, self.last_speech, "silence");
        best
    }

    fn media_healthy(&self, now: Instant) -> bool {
        self.last_media
            .is_some_and(|t| now.saturating_duration_since(t) <= MEDIA_HEALTHY_WINDOW)
    }

    fn start_commit_or_skip(&mut self) {
        // Stopped before admission: there is no meeting to transcribe, so no
        // transcript; the (empty) recording is still destroyed with a receipt.
        self.delete(false, Some("stopped before the bot was admitted".into()));
    }

    fn end_call(&mut self, reason: String) {
        self.phase = Phase::Transcribing;
        self.reconnecting = false;
        self.status(Status::CallEnded, Some(reason));
        self.outputs.push_back(Output::FinishTranscription);
    }

    fn start_commit(&mut self) {
        self.phase = Phase::Committing;
        self.commit_in_flight = true;
        self.next_commit_at = None;
        self.outputs.push_back(Output::Commit);
    }

    fn fail_and_delete(&mut self, reason: String) {
        self.failure.get_or_insert(reason.clone());
        self.delete(
            self.committed,
            if self.committed { None } else { Some(reason) },
        );
    }

    fn delete(&mut self, committed: bool, reason: Option<String>) {
        self.phase = Phase::Deleting;
        self.next_commit_at = None;
        self.outputs
            .push_back(Output::DeleteRecording { committed, reason });
    }

    fn finish(&mut self) {
        self.phase = Phase::Finished;
        match self.failure.clone() {
            None => {
                self.status(Status::Done, None);
                self.outputs.push_back(Output::Exit { success: true });
            }
            Some(reason) => {
                self.status(Status::Fatal, Some(reason));
                self.outputs.push_back(Output::Exit { success: false });
            }
        }
    }

    fn status(&mut self, status: Status, reason: Option<String>) {
        self.outputs.push_back(Output::Status { status, reason });
    }

    fn commit_backoff(&self) -> Duration {
        let exp = self.commit_failures.saturating_sub(1).min(20);
        let d = self.cfg.commit_retry_initial.saturating_mul(1u32 << exp);
        d.min(self.cfg.commit_retry_max)
    }

    /// When, before the stop deadline, to stop waiting for transcription so
    /// that commit and deletion still fit.
    fn abandon_at(&self, stop_deadline: Instant) -> Instant {
        let reserve = (self.cfg.grace / 3).min(Duration::from_secs(8));
        stop_deadline.checked_sub(reserve).unwrap_or(stop_deadline)
    }
}

fn humanize(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives a lifecycle in virtual time and records everything it asks for.
    struct Sim {
        lc: Lifecycle,
        now: Instant,
        log: Vec<Output>,
    }

    impl Sim {
        fn new(cfg: LifecycleConfig) -> Self {
            let now = Instant::now();
            let mut s = Sim {
                lc: Lifecycle::new(cfg, now),
                now,
                log: Vec::new(),
            };
            s.drain();
            s
        }
        fn drain(&mut self) {
            while let Some(o) = self.lc.poll_output() {
                self.log.push(o);
            }
        }
        fn input(&mut self, i: Input) {
            self.lc.handle_input(self.now, i);
            self.drain();
        }
        /// Advances virtual time by `d`, firing every timeout on the way.
        fn advance(&mut self, d: Duration) {
            let end = self.now + d;
            while let Some(t) = self.lc.poll_timeout() {
                if t > end {
                    break;
                }
                self.now = self.now.max(t);
                self.lc.handle_timeout(self.now);
                self.drain();
                if self.lc.poll_timeout() == Some(t) {
                    break; // no progress; avoid spinning
                }
            }
            self.now = end;
        }
        fn statuses(&self) -> Vec<&'static str> {
            self.log
                .iter()
                .filter_map(|o| match o {
                    Output::Status { status, .. } => Some(status.as_str()),
                    _ => None,
                })
                .collect()
        }
        fn count(&self, pred: impl Fn(&Output) -> bool) -> usize {
            self.log.iter().filter(|o| pred(o)).count()
        }
        fn last_reason(&self) -> Option<String> {
            self.log.iter().rev().find_map(|o| match o {
                Output::Status { reason, .. } => reason.clone(),
                _ => None,
            })
        }
    }

    fn is_delete(o: &Output) -> bool {
        matches!(o, Output::DeleteRecording { .. })
    }

    #[test]
    fn happy_path_walks_every_status_in_order() {
        let mut s = Sim::new(LifecycleConfig::default());
        s.input(Input::Admitted);
        s.input(Input::CallEnded {
            reason: "replay_finished".into(),
        });
        assert!(s.log.contains(&Output::FinishTranscription));
        s.input(Input::TranscriptionDrained);
        assert_eq!(s.log.last(), Some(&Output::Commit));
        s.input(Input::CommitSucceeded);
        assert!(s.log.contains(&Output::DeleteRecording {
            committed: true,
            reason: None
        }));
        s.input(Input::RecordingDeleted);
        assert_eq!(
            s.statuses(),
            [
                "joining",
                "in_call_recording",
                "call_ended",
                "transcript_committed",
                "recording_deleted",
                "done"
            ]
        );
        assert_eq!(s.log.last(), Some(&Output::Exit { success: true }));
        assert!(s.lc.is_finished());
    }

    #[test]
    fn commit_failures_retry_with_backoff_then_delete_at_max_age() {
        let cfg = LifecycleConfig {
            max_recording_age: Duration::from_secs(3600),
            commit_retry_initial: Duration::from_secs(1),
            commit_retry_max: Duration::from_secs(60),
            ..Default::default()
        };
        let mut s = Sim::new(cfg);
        s.input(Input::Admitted);
        s.input(Input::CallEnded {
            reason: "replay_finished".into(),
        });
        s.input(Input::TranscriptionDrained);
        // Every commit attempt fails; the machine keeps retrying, never deleting early.
        let mut seen = 0;
        for _ in 0..2000 {
            if s.lc.is_finished() || s.count(is_delete) > 0 {
                break;
            }
            let fresh: Vec<Output> = s.log[seen..].to_vec();
            seen = s.log.len();
            if fresh.contains(&Output::Commit) {
                s.input(Input::CommitFailed {
                    reason: "disk unavailable".into(),
                    retryable: true,
                });
            }
            s.advance(Duration::from_secs(30));
        }
        let commits = s.count(|o| *o == Output::Commit);
        // 1+2+4+8+16+32 s, then every 60 s for an hour: roughly 60 attempts.
        assert!((40..=80).contains(&commits), "{commits} commit attempts");
        assert_eq!(s.count(is_delete), 1);
        let Some(Output::DeleteRecording { committed, reason }) =
            s.log.iter().find(|o| is_delete(o)).cloned()
        else {
            unreachable!()
        };
        assert!(!committed);
        let reason = reason.unwrap_or_default();
        assert!(reason.contains("maximum age"), "{reason}");
        assert!(reason.contains("disk unavailable"), "{reason}");
        s.input(Input::RecordingDeleted);
        assert_eq!(s.statuses().last(), Some(&"fatal"));
        assert_eq!(s.log.last(), Some(&Output::Exit { success: false }));
    }

    #[test]
    fn commit_that_recovers_before_max_age_is_committed() {
        let mut s = Sim::new(LifecycleConfig::default());
        s.input(Input::Admitted);
        s.input(Input::CallEnded { reason: "x".into() });
        s.input(Input::TranscriptionDrained);
        s.input(Input::CommitFailed {
            reason: "503".into(),
            retryable: true,
        });
        s.advance(Duration::from_secs(2));
        assert_eq!(s.log.last(), Some(&Output::Commit));
        s.input(Input::CommitSucceeded);
        s.input(Input::RecordingDeleted);
        assert_eq!(s.statuses().last(), Some(&"done"));
    }

    #[test]
    fn permanent_commit_failure_deletes_at_once_and_is_fatal() {
        let mut s = Sim::new(LifecycleConfig::default());
        s.input(Input::Admitted);
        s.input(Input::CallEnded { reason: "x".into() });
        s.input(Input::TranscriptionDrained);
        s.input(Input::CommitFailed {
            reason: "a different transcript exists".into(),
            retryable: false,
        });
        assert_eq!(s.count(is_delete), 1);
        s.input(Input::RecordingDeleted);
        assert_eq!(s.statuses().last(), Some(&"fatal"));
        assert!(s.last_reason().unwrap().contains("different transcript"));
    }

    #[test]
    fn stop_leaves_transcribes_commits_and_deletes_within_grace() {
        let mut s = Sim::new(LifecycleConfig::default());
        s.input(Input::Admitted);
        s.advance(Duration::from_secs(600));
        s.input(Input::StopRequested);
        assert!(s.log.contains(&Output::Leave));
        assert!(s.log.contains(&Output::FinishTranscription));
        s.input(Input::TranscriptionDrained);
        s.input(Input::CommitSucceeded);
        s.input(Input::RecordingDeleted);
        assert_eq!(s.statuses().last(), Some(&"done"));
    }

    #[test]
    fn slow_transcription_is_abandoned_so_commit_fits_in_grace() {
        let mut s = Sim::new(LifecycleConfig::default());
        s.input(Input::Admitted);
        s.input(Input::StopRequested);
        s.advance(Duration::from_secs(16));
        assert!(!s.log.contains(&Output::AbandonTranscription));
        s.advance(Duration::from_secs(2));
        assert!(s.log.contains(&Output::AbandonTranscription));
        assert_eq!(s.log.last(), Some(&Output::Commit));
        // The commit keeps failing: at the grace deadline the recording is destroyed anyway.
        s.input(Input::CommitFailed {
            reason: "store down".into(),
            retryable: true,
        });
        s.advance(Duration::from_secs(10));
        assert_eq!(s.count(is_delete), 1);
        s.input(Input::RecordingDeleted);
        assert_eq!(s.statuses().last(), Some(&"fatal"));
        assert!(s.last_reason().unwrap().contains("grace"));
    }

    #[test]
    fn second_stop_skips_remaining_transcription() {
        let mut s = Sim::new(LifecycleConfig::default());
        s.input(Input::Admitted);
        s.input(Input::StopRequested);
        s.input(Input::StopRequested);
        assert!(s.log.contains(&Output::AbandonTranscription));
        assert_eq!(s.log.last(), Some(&Output::Commit));
    }

    #[test]
    fn join_timeout_is_fatal_and_still_deletes() {
        let mut s = Sim::new(LifecycleConfig {
            join_timeout: Duration::from_secs(30),
            ..Default::default()
        });
        s.advance(Duration::from_secs(31));
        assert_eq!(s.count(is_delete), 1);
        s.input(Input::RecordingDeleted);
        assert_eq!(s.statuses(), ["joining", "recording_deleted", "fatal"]);
        assert!(s.last_reason().unwrap().contains("not admitted"));
    }

    #[test]
    fn platform_failure_in_call_keeps_what_was_captured_then_reports_fatal() {
        let mut s = Sim::new(LifecycleConfig::default());
        s.input(Input::Admitted);
        s.input(Input::PlatformFailed {
            reason: "participant #2 (guest.wav): truncated".into(),
        });
        assert!(s.log.contains(&Output::FinishTranscription));
        s.input(Input::TranscriptionDrained);
        s.input(Input::CommitSucceeded);
        s.input(Input::RecordingDeleted);
        assert_eq!(
            s.statuses(),
            [
                "joining",
                "in_call_recording",
                "call_ended",
                "transcript_committed",
                "recording_deleted",
                "fatal"
            ]
        );
        assert!(s.last_reason().unwrap().contains("truncated"));
    }

    #[test]
    fn transcription_failure_deletes_without_commit() {
        let mut s = Sim::new(LifecycleConfig::default());
        s.input(Input::Admitted);
        s.input(Input::TranscriptionFailed {
            reason: "HTTP 500".into(),
        });
        assert!(s.log.contains(&Output::Leave));
        assert!(s.log.contains(&Output::DeleteRecording {
            committed: false,
            reason: Some("transcription failed: HTTP 500".into())
        }));
        assert_eq!(s.count(|o| *o == Output::Commit), 0);
        s.input(Input::RecordingDeleted);
        assert_eq!(s.statuses().last(), Some(&"fatal"));
    }

    #[test]
    fn deletion_failure_is_fatal() {
        let mut s = Sim::new(LifecycleConfig::default());
        s.input(Input::Admitted);
        s.input(Input::CallEnded { reason: "x".into() });
        s.input(Input::TranscriptionDrained);
        s.input(Input::CommitSucceeded);
        s.input(Input::DeletionFailed {
            reason: "EACCES".into(),
        });
        assert_eq!(s.statuses().last(), Some(&"fatal"));
        assert!(s.last_reason().unwrap().contains("deletion failed"));
    }

    fn call_ended_reason(s: &Sim) -> Option<String> {
        s.log.iter().find_map(|o| match o {
            Output::Status {
                status: Status::CallEnded,
                reason,
            } => reason.clone(),
            _ => None,
        })
    }

    fn admitted_sim(auto_leave: AutoLeaveConfig) -> Sim {
        let mut s = Sim::new(LifecycleConfig {
            auto_leave,
            ..Default::default()
        });
        s.input(Input::Admitted);
        s
    }

    #[test]
    fn leaves_a_few_seconds_after_everyone_left() {
        let mut s = admitted_sim(AutoLeaveConfig::default());
        s.input(Input::ParticipantCount(2));
        s.advance(Duration::from_secs(60));
        s.input(Input::ParticipantCount(1));
        s.advance(Duration::from_secs(60));
        assert_eq!(call_ended_reason(&s), None);
        s.input(Input::ParticipantCount(0));
        s.advance(Duration::from_secs(4));
        assert_eq!(call_ended_reason(&s), None);
        // Someone comes back: the countdown stops.
        s.input(Input::ParticipantCount(1));
        s.advance(Duration::from_secs(60));
        assert_eq!(call_ended_reason(&s), None);
        s.input(Input::ParticipantCount(0));
        s.advance(Duration::from_secs(5));
        assert_eq!(call_ended_reason(&s).as_deref(), Some("everyone_left"));
        assert!(s.log.contains(&Output::Leave));
        assert!(s.log.contains(&Output::FinishTranscription));
    }

    #[test]
    fn leaves_when_nobody_joins() {
        let mut s = admitted_sim(AutoLeaveConfig {
            noone_joined: Duration::from_secs(600),
            ..Default::default()
        });
        s.advance(Duration::from_secs(599));
        assert_eq!(call_ended_reason(&s), None);
        s.advance(Duration::from_secs(2));
        assert_eq!(call_ended_reason(&s).as_deref(), Some("noone_joined"));
    }

    #[test]
    fn someone_joining_cancels_noone_joined() {
        let mut s = admitted_sim(AutoLeaveConfig::default());
        s.input(Input::ParticipantCount(1));
        for _ in 0..60 {
            s.input(Input::MediaActivity { speech: true });
            s.advance(Duration::from_secs(60));
        }
        assert_eq!(call_ended_reason(&s), None);
    }

    #[test]
    fn max_duration_ends_the_call() {
        let mut s = admitted_sim(AutoLeaveConfig {
            max_duration: Duration::from_secs(3600),
            silence: Duration::ZERO,
            ..Default::default()
        });
        s.input(Input::ParticipantCount(3));
        s.advance(Duration::from_secs(3601));
        assert_eq!(
            call_ended_reason(&s).as_deref(),
            Some("max_duration_exceeded")
        );
    }

    #[test]
    fn silence_only_counts_while_audio_arrives() {
        let cfg = AutoLeaveConfig {
            silence: Duration::from_secs(300),
            ..Default::default()
        };
        // No audio at all for an hour: a capture fault, never "silence".
        let mut dead = admitted_sim(cfg.clone());
        dead.input(Input::ParticipantCount(2));
        dead.advance(Duration::from_secs(3000));
        assert_eq!(call_ended_reason(&dead), None);
        // Audio arriving, nobody speaking: silence after 300 s.
        let mut quiet = admitted_sim(cfg);
        quiet.input(Input::ParticipantCount(2));
        quiet.input(Input::MediaActivity { speech: true });
        for _ in 0..299 {
            quiet.advance(Duration::from_secs(1));
            quiet.input(Input::MediaActivity { speech: false });
        }
        assert_eq!(call_ended_reason(&quiet), None);
        for _ in 0..3 {
            quiet.advance(Duration::from_secs(1));
            quiet.input(Input::MediaActivity { speech: false });
        }
        assert_eq!(call_ended_reason(&quiet).as_deref(), Some("silence"));
    }

    #[test]
    fn waiting_room_has_its_own_timeout() {
        let mut s = Sim::new(LifecycleConfig {
            join_timeout: Duration::from_secs(30),
            auto_leave: AutoLeaveConfig {
                waiting_room: Duration::from_secs(600),
                ..Default::default()
            },
            ..Default::default()
        });
        s.input(Input::Waiting);
        s.advance(Duration::from_secs(300));
        assert_eq!(s.count(is_delete), 0, "still waiting, not timed out");
        s.input(Input::Admitted);
        assert_eq!(s.statuses().last(), Some(&"in_call_recording"));

        let mut t = Sim::new(LifecycleConfig {
            auto_leave: AutoLeaveConfig {
                waiting_room: Duration::from_secs(600),
                ..Default::default()
            },
            ..Default::default()
        });
        t.input(Input::Waiting);
        t.advance(Duration::from_secs(601));
        assert_eq!(t.count(is_delete), 1);
        t.input(Input::RecordingDeleted);
        assert!(t
            .last_reason()
            .unwrap()
            .contains("timeout_exceeded_waiting_room"));
    }

    #[test]
    fn zero_disables_a_rule() {
        let mut s = admitted_sim(AutoLeaveConfig {
            everyone_left: Duration::ZERO,
            noone_joined: Duration::ZERO,
            max_duration: Duration::ZERO,
            silence: Duration::ZERO,
            waiting_room: Duration::ZERO,
        });
        s.input(Input::ParticipantCount(1));
        s.input(Input::ParticipantCount(0));
        s.advance(Duration::from_secs(20 * 3600));
        assert_eq!(call_ended_reason(&s), None);
    }

    #[test]
    fn max_age_in_the_call_ends_it_and_still_commits_what_was_captured() {
        let mut s = admitted_sim(AutoLeaveConfig {
            max_duration: Duration::ZERO,
            silence: Duration::ZERO,
            ..Default::default()
        });
        s.input(Input::ParticipantCount(1));
        s.advance(Duration::from_secs(24 * 3600 + 1));
        assert_eq!(
            call_ended_reason(&s).as_deref(),
            Some("max_recording_age_reached")
        );
        assert!(s.log.contains(&Output::FinishTranscription));
        s.input(Input::TranscriptionDrained);
        s.input(Input::CommitSucceeded);
        s.input(Input::RecordingDeleted);
        assert_eq!(s.statuses().last(), Some(&"done"));
    }

    #[test]
    fn a_lost_connection_is_reported_as_reconnecting_until_back() {
        let mut s = Sim::new(LifecycleConfig::default());
        s.input(Input::Admitted);
        s.input(Input::ConnectionLost);
        assert_eq!(s.last_reason().as_deref(), Some("connection_lost"));
        // Repeats while away are one status change, not many.
        s.input(Input::ConnectionLost);
        s.input(Input::Reconnected);
        assert_eq!(s.last_reason().as_deref(), Some("reconnected"));
        // A late duplicate changes nothing.
        s.input(Input::Reconnected);
        s.input(Input::ConnectionLost);
        s.input(Input::CallEnded {
            reason: "everyone_left".into(),
        });
        // After the call, a reconnect report is stale.
        s.input(Input::Reconnected);
        assert_eq!(
            s.statuses(),
            [
                "joining",
                "in_call_recording",
                "reconnecting",
                "in_call_recording",
                "reconnecting",
                "call_ended"
            ]
        );
    }

    #[test]
    fn a_connection_lost_before_admission_is_not_a_status() {
        let mut s = Sim::new(LifecycleConfig::default());
        s.input(Input::ConnectionLost);
        s.input(Input::Reconnected);
        assert_eq!(s.statuses(), ["joining"]);
    }

    #[test]
    fn receipt_failure_after_destroy_is_fatal_but_reports_deletion() {
        let mut s = Sim::new(LifecycleConfig::default());
        s.input(Input::Admitted);
        s.input(Input::CallEnded { reason: "x".into() });
        s.input(Input::TranscriptionDrained);
        s.input(Input::CommitSucceeded);
        s.input(Input::ReceiptFailed {
            reason: "audit log full".into(),
        });
        let st = s.statuses();
        assert_eq!(&st[st.len() - 2..], ["recording_deleted", "fatal"]);
        assert!(s
            .last_reason()
            .unwrap()
            .contains("receipt could not be appended"));
    }

    #[test]
    fn every_input_order_ends_with_exactly_one_delete() {
        // A small exhaustive exploration: any sequence of inputs (up to length 5)
        // followed by enough time and cooperative completions reaches exactly one
        // DeleteRecording and one Exit.
        let inputs = [
            Input::Admitted,
            Input::ParticipantCount(0),
            Input::CallEnded { reason: "x".into() },
            Input::StopRequested,
            Input::ConnectionLost,
            Input::Reconnected,
            Input::PlatformFailed { reason: "p".into() },
            Input::TranscriptionFailed { reason: "t".into() },
            Input::TranscriptionDrained,
            Input::CommitFailed {
                reason: "c".into(),
                retryable: true,
            },
        ];
        let n = inputs.len();
        let mut seqs: Vec<Vec<usize>> = vec![vec![]];
        let mut frontier: Vec<Vec<usize>> = vec![vec![]];
        for _ in 0..4 {
            let mut next = Vec::new();
            for s in &frontier {
                for i in 0..n {
                    let mut t = s.clone();
                    t.push(i);
                    next.push(t);
                }
            }
            seqs.extend(next.iter().cloned());
            frontier = next;
        }
        for seq in seqs {
            let mut s = Sim::new(LifecycleConfig::default());
            for &i in &seq {
                s.input(inputs[i].clone());
            }
            // Let everything play out: finish transcription, fail commits, and time passes.
            let mut seen = 0;
            for _ in 0..500 {
                if s.lc.is_finished() {
                    break;
                }
                let fresh: Vec<Output> = s.log[seen..].to_vec();
                seen = s.log.len();
                if fresh.is_empty() {
                    s.advance(Duration::from_secs(3600));
                    continue;
                }
                for o in fresh {
                    match o {
                        Output::FinishTranscription => s.input(Input::TranscriptionDrained),
                        Output::Commit => s.input(Input::CommitFailed {
                            reason: "c".into(),
                            retryable: true,
                        }),
                        Output::DeleteRecording { .. } => s.input(Input::RecordingDeleted),
                        _ => {}
                    }
                }
            }
            assert!(s.lc.is_finished(), "{seq:?} did not finish");
            assert_eq!(s.count(is_delete), 1, "{seq:?}");
            assert_eq!(s.count(|o| matches!(o, Output::Exit { .. })), 1, "{seq:?}");
        }
    }
}
