//! The orchestrator: the tokio shell around [`Lifecycle`].
//!
//! It owns the recording, the per-participant audio pipelines, the
//! transcription tasks and the platform task, turns what they report into
//! lifecycle [`Input`]s, and carries out the lifecycle's [`Output`]s. It makes
//! no decisions of its own about *when* to leave, commit or delete.
//!
//! Transcription goes through a [`Backlog`]: an utterance that finds the
//! provider busy (or down) waits as a reference into the recording, and is
//! read back ([`Recording::read_packets`]) and decoded again
//! ([`decode_range`]) when its turn comes; see `core::backlog`.
//!
//! **Invariant:** every path out of [`run`] after the recording is created
//! destroys it (the lifecycle guarantees a `DeleteRecording`), and the
//! recording's audio never leaves memory unencrypted.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::audit::{AuditLog, DeletionReceipt, TranscriptOutcome};
use crate::core::audio::{decode_range, ParticipantPipeline, WARMUP_MS};
use crate::core::backlog::{
    AudioIndex, Backlog, BacklogConfig, BacklogStats, Finish, Report, Ticket, UtteranceRef,
};
use crate::core::lifecycle::{Input, Lifecycle, LifecycleConfig, Output, Status};
use crate::core::media::{PacketRun, ParticipantId, Utterance};
use crate::core::vad::VadConfig;
use crate::pii::Pii;
use crate::platform::{MeetingPlatform, PlatformEvent};
use crate::recording::{self, DataKey, KeyProvider, Recording, RecordingConfig, RecordingMeta};
use crate::status::{self, BacklogInfo, ReceiptInfo, StatusLine, TranscriptInfo};
use crate::store::{Committed, TranscriptStore};
use crate::stt::retry::{transcribe_with_retry, RetryPolicy};
use crate::stt::{SttError, SttProvider};
use crate::transcript::{GapDoc, ParticipantDoc, SegmentDoc, TranscriptDoc, SCHEMA};

/// What to join and on whose behalf.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    /// Tenant (validated, path-safe).
    pub tenant: String,
    /// Meeting id (validated, path-safe).
    pub meeting_id: String,
    /// Display name.
    pub bot_name: String,
    /// Language for STT.
    pub language: String,
}

/// The components a run uses.
pub struct Components {
    /// Wraps recording keys.
    pub keys: Arc<dyn KeyProvider>,
    /// Transcribes utterances.
    pub stt: Arc<dyn SttProvider>,
    /// Commits transcripts.
    pub store: Arc<dyn TranscriptStore>,
    /// Receives deletion receipts.
    pub audit: Arc<AuditLog>,
    /// Recording spool and budget.
    pub recording: RecordingConfig,
    /// VAD settings.
    pub vad: VadConfig,
    /// Lifecycle timings.
    pub lifecycle: LifecycleConfig,
    /// STT retries and timeouts.
    pub retry: RetryPolicy,
    /// Utterances transcribed at once.
    pub stt_concurrency: usize,
    /// Cap on decoded PCM in flight to STT, bytes (`stt.inflight_budget_kib`).
    pub stt_inflight_budget_bytes: u64,
    /// Live backlog figures, for the worker's metrics (and tests).
    pub gauges: Arc<BacklogGauges>,
}

/// The transcription backlog as it is now, readable from other tasks (the
/// worker's `/metrics`). Updated by [`run`]; no audio, no names.
#[derive(Debug, Default)]
pub struct BacklogGauges {
    /// Utterances waiting for STT (by reference).
    pub queued: AtomicU64,
    /// Audio waiting for STT, ms.
    pub queued_audio_ms: AtomicU64,
    /// Utterances at the provider.
    pub in_flight: AtomicU64,
    /// Utterances requeued after the provider failed transiently (total).
    pub requeued: AtomicU64,
    /// Utterances decoded again from the recording (total).
    pub from_recording: AtomicU64,
    /// Plaintext PCM bytes the orchestrator holds for STT right now: counted
    /// from the moment a buffer exists until it is zeroized.
    pub pcm_bytes: AtomicU64,
    /// The most `pcm_bytes` ever was.
    pub peak_pcm_bytes: AtomicU64,
}

impl BacklogGauges {
    fn publish(&self, s: &BacklogStats) {
        self.queued.store(s.queued, Ordering::Relaxed);
        self.queued_audio_ms
            .store(s.queued_audio_ms, Ordering::Relaxed);
        self.in_flight.store(s.in_flight, Ordering::Relaxed);
        self.requeued.store(s.requeued, Ordering::Relaxed);
        self.from_recording
            .store(s.from_recording, Ordering::Relaxed);
    }
}

/// Plaintext PCM on its way to STT: counted in [`BacklogGauges::pcm_bytes`]
/// while it lives, zeroized when dropped.
struct MeteredPcm {
    samples: Arc<[f32]>,
    bytes: u64,
    gauges: Arc<BacklogGauges>,
}

impl MeteredPcm {
    fn new(samples: Vec<f32>, gauges: &Arc<BacklogGauges>) -> Self {
        let bytes = (samples.len() * std::mem::size_of::<f32>()) as u64;
        let now = gauges.pcm_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        gauges.peak_pcm_bytes.fetch_max(now, Ordering::Relaxed);
        // `into()` copies into the Arc's allocation: wipe the source.
        let mut samples = zeroize::Zeroizing::new(samples);
        let shared: Arc<[f32]> = Arc::from(&samples[..]);
        zeroize::Zeroize::zeroize(&mut *samples);
        MeteredPcm {
            samples: shared,
            bytes,
            gauges: gauges.clone(),
        }
    }
}

impl Drop for MeteredPcm {
    fn drop(&mut self) {
        // Unique unless a provider still holds a clone (an attempt that timed
        // out while its blocking work runs on); that clone then dies unwiped.
        if let Some(s) = Arc::get_mut(&mut self.samples) {
            zeroize::Zeroize::zeroize(s);
        }
        self.gauges
            .pcm_bytes
            .fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// How the run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `done` (true) or `fatal` (false).
    pub success: bool,
}

/// Destroys recordings left by processes that died (SIGKILL, OOM, power
/// loss) and writes a receipt for each. Returns how many were swept.
pub fn sweep_spool(cfg: &RecordingConfig, audit: &AuditLog) -> anyhow::Result<usize> {
    sweep_spool_receipts(cfg, audit).map(|r| r.len())
}

/// [`sweep_spool`], returning the receipts (each already appended to the audit log).
pub fn sweep_spool_receipts(
    cfg: &RecordingConfig,
    audit: &AuditLog,
) -> anyhow::Result<Vec<DeletionReceipt>> {
    if !cfg.spool_dir.exists() {
        return Ok(Vec::new());
    }
    let report = recording::sweep_orphans(&cfg.spool_dir)?;
    let n = report.destroyed.len();
    let mut receipts = Vec::with_capacity(n);
    let mut append_failures = 0usize;
    for r in &report.destroyed {
        // The reason says who could still have decrypted it (its custody).
        let custody =
            recording::KeyCustody::of_method(&r.method).unwrap_or(recording::KeyCustody::Unknown);
        let receipt = DeletionReceipt::new(
            r,
            TranscriptOutcome::NotCommitted {
                reason: custody.orphan_reason().into(),
            },
            std::time::SystemTime::now(),
        );
        // Keep going: one failed append must not lose the other receipts.
        if let Err(e) = audit.append_once(&receipt) {
            error!(recording_id = %r.recording_id, error = %e, "Swept an orphaned recording but could not append its receipt: operator action needed.");
            append_failures += 1;
        }
        receipts.push(receipt);
    }
    for f in &report.failed {
        error!(recording_id = %f.recording_id, error = %f.error, "Could not sweep an orphaned recording: operator action needed.");
    }
    // Runs that died between destroying their recording and appending its
    // receipt (or whose append failed) left a receipt intent: append it now,
    // once. An orphan just swept above already has its receipt.
    for pending in recording::pending_receipt_intents(&cfg.spool_dir)? {
        let receipt: DeletionReceipt = match serde_json::from_slice(&pending.body) {
            Ok(r) => r,
            Err(e) => {
                error!(recording_id = %pending.recording_id, error = %e, "Unreadable receipt intent kept for an operator.");
                append_failures += 1;
                continue;
            }
        };
        if receipt.recording_id != pending.recording_id {
            error!(recording_id = %pending.recording_id, "A receipt intent names another recording; kept for an operator.");
            append_failures += 1;
            continue;
        }
        match audit.append_once(&receipt) {
            Ok((_, appended)) => {
                if appended {
                    warn!(recording_id = %receipt.recording_id, "Appended the deletion receipt of a run that ended before writing it.");
                    receipts.push(receipt);
                }
                if let Err(e) =
                    recording::remove_receipt_intent(&cfg.spool_dir, &pending.recording_id)
                {
                    warn!(error = %e, "Could not remove a completed receipt intent.");
                }
            }
            Err(e) => {
                error!(recording_id = %receipt.recording_id, error = %e, "Could not append a recovered deletion receipt: operator action needed.");
                append_failures += 1;
            }
        }
    }
    if n > 0 {
        warn!(
            recordings = n,
            "Swept orphaned encrypted recordings left by a previous run."
        );
    }
    if append_failures > 0 {
        anyhow::bail!(
            "{append_failures} destroyed recording(s) have no receipt in the audit log yet (see the errors above)"
        );
    }
    Ok(receipts)
}

struct SttResult {
    ticket: Ticket,
    result: Result<Vec<crate::stt::SttSegment>, SttError>,
}

/// The audio of one dispatched utterance.
enum SttAudio {
    /// PCM the live pipeline decoded (the utterance went straight out).
    Live(Vec<f32>),
    /// Its packets, read back from the recording, to decode in the task.
    Packets(PacketRun, UtteranceRef),
}

/// Runs one meeting to its end. `stop` yields once per stop request
/// (SIGTERM/SIGINT); `emit` receives every status line.
pub async fn run(
    req: JoinRequest,
    comps: Components,
    platform: Box<dyn MeetingPlatform>,
    mut stop: mpsc::Receiver<()>,
    emit: &mut (dyn FnMut(&StatusLine) + Send),
) -> Outcome {
    let started_at = status::now_rfc3339();
    let mut lc = Lifecycle::new(comps.lifecycle.clone(), Instant::now());
    let line = |status: &'static str,
                recording_id: Option<String>,
                reason: Option<String>,
                transcript: Option<TranscriptInfo>,
                receipt: Option<ReceiptInfo>| StatusLine {
        status,
        at: status::now_rfc3339(),
        meeting_id: req.meeting_id.clone(),
        tenant: req.tenant.clone(),
        recording_id,
        reason,
        transcript,
        receipt,
        transcribing: None,
    };

    // The first output is always `joining`.
    while let Some(o) = lc.poll_output() {
        if let Output::Status { status, reason } = o {
            emit(&line(status.as_str(), None, reason, None, None));
        }
    }

    // The recording exists before any audio can arrive.
    let mut rec = match create_recording(&req, &comps).await {
        Ok(r) => Some(r),
        Err(e) => {
            error!(error = %e, "Cannot create the encrypted recording.");
            emit(&line("fatal", None, Some(format!("{e:#}")), None, None));
            return Outcome { success: false };
        }
    };
    let recording_id = rec.as_ref().map(|r| r.id().to_string()).unwrap_or_default();
    info!(recording_id = %recording_id, "Encrypted recording created.");

    let (ev_tx, mut ev_rx) = mpsc::channel::<PlatformEvent>(256);
    let leave = CancellationToken::new();
    let mut platform_task = Some(tokio::spawn(platform.run(ev_tx, leave.clone())));
    let mut ev_closed = false;

    let (stt_tx, mut stt_rx) = mpsc::channel::<SttResult>(64);
    let mut stt_tasks: JoinSet<()> = JoinSet::new();
    let mut task_tickets: HashMap<tokio::task::Id, Ticket> = HashMap::new();
    let mut backlog = Backlog::new(BacklogConfig {
        concurrency: comps.stt_concurrency.max(1),
        inflight_budget_bytes: comps.stt_inflight_budget_bytes,
        retry_initial: comps
            .retry
            .max_backoff
            .max(std::time::Duration::from_secs(1)),
        retry_max: comps
            .retry
            .max_backoff
            .max(std::time::Duration::from_secs(60)),
    });
    let gauges = comps.gauges.clone();
    let mut draining = false;
    let mut abandoned = false;
    let mut complete = true;
    let mut stt_ok = 0usize;
    let mut stt_failed = 0usize;
    let mut stt_failed_in_a_row = 0usize;
    let mut last_stt_error: Option<String> = None;
    let mut gaps: Vec<GapDoc> = Vec::new();

    let mut capture = Capture::new(comps.vad.clone());
    let mut segments: Vec<SegmentDoc> = Vec::new();
    let mut ended_at: Option<String> = None;
    let mut committed: Option<Committed> = None;
    let mut commit_task: Option<
        tokio::task::JoinHandle<Result<Committed, crate::store::CommitError>>,
    > = None;
    let mut receipt_info: Option<ReceiptInfo> = None;
    let mut inputs: Vec<Input> = Vec::new();
    let success;

    // Starts one utterance's transcription task.
    let spawn = |ticket: Ticket,
                 audio: SttAudio,
                 tasks: &mut JoinSet<()>,
                 ids: &mut HashMap<tokio::task::Id, Ticket>| {
        let stt = comps.stt.clone();
        let tx = stt_tx.clone();
        let policy = comps.retry.clone();
        let gauges = gauges.clone();
        let vad = comps.vad.clone();
        let handle = tasks.spawn(async move {
            let pcm = match audio {
                SttAudio::Live(samples) => Ok(MeteredPcm::new(samples, &gauges)),
                SttAudio::Packets(run, r) => {
                    // Opus decoding is CPU work: off the runtime's threads.
                    let g = gauges.clone();
                    tokio::task::spawn_blocking(move || {
                        let from = r.start_ms;
                        decode_range(r.participant, &run, from, r.end_ms, &vad)
                            .map(|mut pcm| MeteredPcm::new(std::mem::take(&mut *pcm), &g))
                    })
                    .await
                    .map_err(|e| SttError::Permanent(format!("decoding task failed: {e}")))
                    .and_then(|r| {
                        r.map_err(|e| {
                            SttError::Permanent(format!("decoding from the recording: {e}"))
                        })
                    })
                }
            };
            let result = match pcm {
                Ok(pcm) => {
                    let r = transcribe_with_retry(stt.as_ref(), pcm.samples.clone(), &policy).await;
                    drop(pcm);
                    r
                }
                Err(e) => Err(e),
            };
            let _ = tx.send(SttResult { ticket, result }).await;
        });
        ids.insert(handle.id(), ticket);
    };
    // A new utterance: straight out with its PCM if the provider has room,
    // else queued by reference (its PCM wiped now).
    let offer = |u: Utterance,
                 rec: &Option<Recording>,
                 index: &AudioIndex,
                 backlog: &mut Backlog,
                 tasks: &mut JoinSet<()>,
                 ids: &mut HashMap<tokio::task::Id, Ticket>| {
        let last_chunk = rec.as_ref().map(|r| r.write_position()).unwrap_or(0);
        let first_chunk = index
            .locate(&u.participant, u.start_ms.saturating_sub(WARMUP_MS))
            .unwrap_or(last_chunk)
            .min(last_chunk);
        let r = UtteranceRef {
            participant: u.participant.clone(),
            start_ms: u.start_ms,
            end_ms: u.end_ms,
            first_chunk,
            last_chunk,
        };
        let mut samples = u.samples;
        match backlog.offer(Instant::now(), r) {
            crate::core::backlog::Admit::Now(t) => spawn(t, SttAudio::Live(samples), tasks, ids),
            crate::core::backlog::Admit::Queued => zeroize::Zeroize::zeroize(&mut samples),
        }
    };

    'run: loop {
        // Act on everything the lifecycle wants, feeding back immediate results.
        loop {
            for i in inputs.drain(..) {
                lc.handle_input(Instant::now(), i);
            }
            let Some(out) = lc.poll_output() else { break };
            match out {
                Output::Status { status, reason } => {
                    let mut transcript = None;
                    let mut receipt = None;
                    match status {
                        Status::CallEnded => {
                            ended_at.get_or_insert_with(status::now_rfc3339);
                        }
                        Status::TranscriptCommitted
                        | Status::RecordingDeleted
                        | Status::Done
                        | Status::Fatal => {
                            transcript = committed.as_ref().map(|c| TranscriptInfo {
                                location: c.location.clone(),
                                vtt_location: c.vtt_location.clone(),
                                sha256: c.sha256.clone(),
                                segments: segments.len(),
                                complete,
                            });
                            receipt = receipt_info.clone();
                        }
                        _ => {}
                    }
                    info!(status = status.as_str(), "Status changed.");
                    let mut l = line(
                        status.as_str(),
                        Some(recording_id.clone()),
                        reason,
                        transcript,
                        receipt,
                    );
                    if !matches!(status, Status::Joining | Status::InCallRecording) {
                        l.transcribing = Some(BacklogInfo::new(
                            &backlog.stats(),
                            gauges.peak_pcm_bytes.load(Ordering::Relaxed),
                        ));
                    }
                    emit(&l);
                }
                Output::Leave => leave.cancel(),
                Output::FinishTranscription => {
                    for (_, mut p) in std::mem::take(&mut capture.pipelines) {
                        if let Some(u) = p.finish() {
                            offer(
                                u,
                                &rec,
                                &capture.index,
                                &mut backlog,
                                &mut stt_tasks,
                                &mut task_tickets,
                            );
                        }
                    }
                    if let Some(Err(e)) = rec.as_mut().map(|r| r.flush()) {
                        warn!(error = %e, "Could not seal the last recording chunk.");
                    }
                    draining = true;
                    if backlog.is_idle() {
                        inputs.push(drained(stt_ok, stt_failed, &last_stt_error));
                    }
                }
                Output::AbandonTranscription => {
                    let (n, ms) = backlog.abandon();
                    if n > 0 {
                        warn!(utterances = n, audio_s = ms / 1000, "Shutdown grace running out: committing without the remaining utterances.");
                        complete = false;
                    }
                    stt_tasks.abort_all();
                    task_tickets.clear();
                    gauges.publish(&backlog.stats());
                    draining = false;
                    abandoned = true;
                }
                Output::Commit => {
                    let mut all_gaps = gaps.clone();
                    all_gaps.extend(capture.gaps());
                    // Audio missed while rejoining is missing from the transcript too.
                    let whole = complete && all_gaps.iter().all(|g| g.kind != "rejoin");
                    let mut doc = TranscriptDoc {
                        schema: SCHEMA.into(),
                        meeting_id: req.meeting_id.clone(),
                        tenant: req.tenant.clone(),
                        recording_id: recording_id.clone(),
                        started_at: started_at.clone(),
                        ended_at: ended_at.clone().unwrap_or_else(status::now_rfc3339),
                        participants: capture
                            .names
                            .iter()
                            .map(|(id, n)| ParticipantDoc {
                                id: id.0.clone(),
                                name: n.expose().clone(),
                            })
                            .collect(),
                        segments: segments.clone(),
                        provider: comps.stt.name().to_string(),
                        model: comps.stt.model().to_string(),
                        language: req.language.clone(),
                        complete: whole,
                        gaps: all_gaps,
                    };
                    doc.normalize();
                    let store = comps.store.clone();
                    commit_task = Some(tokio::spawn(async move { store.commit(&doc).await }));
                }
                Output::DeleteRecording {
                    committed: was_committed,
                    reason,
                } => {
                    stt_tasks.abort_all();
                    task_tickets.clear();
                    let (n, _) = backlog.abandon();
                    if n > 0 {
                        complete = false;
                    }
                    gauges.publish(&backlog.stats());
                    leave.cancel();
                    // A commit still in flight after the grace ran out must not
                    // land after the receipt says "not committed".
                    if let Some(t) = commit_task.take() {
                        t.abort();
                    }
                    // The lifecycle emits exactly one DeleteRecording, so the recording is still here.
                    let Some(r) = rec.take() else { continue };
                    match destroy_and_receipt(
                        r,
                        &comps.audit,
                        &comps.recording.spool_dir,
                        was_committed,
                        committed.as_ref(),
                        reason,
                    )
                    .await
                    {
                        Ok((info, None)) => {
                            receipt_info = Some(info);
                            inputs.push(Input::RecordingDeleted);
                        }
                        Ok((info, Some(receipt_error))) => {
                            error!(error = %receipt_error, "Recording destroyed but its receipt could not be appended to the audit log: operator action needed.");
                            receipt_info = Some(info);
                            inputs.push(Input::ReceiptFailed {
                                reason: receipt_error,
                            });
                        }
                        Err(e) => {
                            error!(error = %e, "Recording deletion failed: operator action needed.");
                            inputs.push(Input::DeletionFailed {
                                reason: format!("{e:#}"),
                            });
                        }
                    }
                }
                Output::Exit { success: s } => {
                    success = s;
                    break 'run;
                }
            }
        }

        // Send what the provider has room for, decoded again from the recording.
        if !abandoned {
            let now = Instant::now();
            while let Some((ticket, r)) = backlog.poll_dispatch(now) {
                let read = match rec.as_mut() {
                    Some(rc) => rc.read_packets(
                        &r.participant,
                        r.first_chunk,
                        r.last_chunk,
                        r.start_ms.saturating_sub(WARMUP_MS),
                        r.end_ms,
                    ),
                    None => break,
                };
                match read {
                    Ok(run) => spawn(
                        ticket,
                        SttAudio::Packets(run, r),
                        &mut stt_tasks,
                        &mut task_tickets,
                    ),
                    Err(e) => {
                        error!(error = %e, "Cannot read an utterance back from the recording.");
                        backlog.finished(now, ticket, Finish::Failed);
                        stt_failed += 1;
                        complete = false;
                        last_stt_error = Some(format!("reading the recording: {e}"));
                        gaps.push(GapDoc {
                            start_ms: r.start_ms,
                            end_ms: r.end_ms,
                            speaker_id: Some(r.participant.0.clone()),
                            kind: "transcription_failed".into(),
                        });
                        if draining && backlog.is_idle() {
                            inputs.push(drained(stt_ok, stt_failed, &last_stt_error));
                        }
                    }
                }
            }
            match backlog.poll_report(now) {
                Some(Report::Lagging(s)) => warn!(
                    queued = s.queued,
                    queued_audio_s = s.queued_audio_ms / 1000,
                    in_flight = s.in_flight,
                    requeued = s.requeued,
                    "Transcription is lagging: utterances wait in the recording for the STT provider."
                ),
                Some(Report::CaughtUp(s)) => info!(
                    peak_queued = s.peak_queued,
                    peak_queued_audio_s = s.peak_queued_audio_ms / 1000,
                    "Transcription caught up."
                ),
                None => {}
            }
            gauges.publish(&backlog.stats());
        }
        if !inputs.is_empty() {
            continue 'run;
        }
        let deadline = match (lc.poll_timeout(), backlog.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        tokio::select! {
            ev = ev_rx.recv(), if !ev_closed => match ev {
                Some(ev) => {
                    let mut utts = Vec::new();
                    capture.on_event(ev, lc.is_capturing(), &mut rec, &mut inputs, &mut utts);
                    for u in utts { offer(u, &rec, &capture.index, &mut backlog, &mut stt_tasks, &mut task_tickets); }
                }
                None => {
                    // Sender dropped: the platform task is finishing; its result arrives below.
                    ev_closed = true;
                }
            },
            Some(res) = async { match platform_task.as_mut() { Some(t) => Some(t.await), None => None } }, if platform_task.is_some() => {
                platform_task = None;
                // Whatever the outcome, audio already queued was captured: keep it.
                while let Ok(ev) = ev_rx.try_recv() {
                    let mut utts = Vec::new();
                    capture.on_event(ev, lc.is_capturing(), &mut rec, &mut inputs, &mut utts);
                    for u in utts { offer(u, &rec, &capture.index, &mut backlog, &mut stt_tasks, &mut task_tickets); }
                }
                match res {
                    Ok(Ok(())) => {
                        inputs.push(Input::CallEnded { reason: "left".into() });
                    }
                    Ok(Err(e)) => {
                        warn!(error = %e, "Platform failed.");
                        inputs.push(Input::PlatformFailed { reason: e.to_string() });
                    }
                    Err(e) => inputs.push(Input::PlatformFailed { reason: format!("platform task crashed: {e}") }),
                }
            },
            Some(()) = stop.recv() => {
                info!("Stop requested: leaving, then transcribing, committing and deleting.");
                inputs.push(Input::StopRequested);
            },
            Some(r) = stt_rx.recv(), if !abandoned => {
                let how = match &r.result {
                    Ok(_) => Finish::Done,
                    Err(SttError::Transient(_)) => Finish::Retry,
                    Err(SttError::Permanent(_)) => Finish::Failed,
                };
                let Some(u) = backlog.finished(Instant::now(), r.ticket, how) else { continue };
                match r.result {
                    Err(SttError::Transient(e)) => {
                        // Not a gap: the audio is in the recording and the
                        // utterance is requeued, to go again after a hold-off.
                        warn!(error = %e, start_ms = u.start_ms, end_ms = u.end_ms, "Transcription failed after retries; requeued.");
                        last_stt_error = Some(e);
                    }
                    Ok(segs) => {
                        stt_ok += 1;
                        stt_failed_in_a_row = 0;
                        let span = u.end_ms.saturating_sub(u.start_ms);
                        for s in segs {
                            let text = s.text.trim().to_string();
                            if text.is_empty() { continue; }
                            let start = u.start_ms + s.start_ms.min(span);
                            let end = (u.start_ms + s.end_ms.min(span)).max(start);
                            let name = capture.names.get(&u.participant).map(|n| n.expose().clone()).unwrap_or_else(|| u.participant.0.clone());
                            segments.push(SegmentDoc { speaker: name, speaker_id: u.participant.0.clone(), start_ms: start, end_ms: end, text });
                        }
                    }
                    Err(e) => {
                        // One lost utterance is a gap in the transcript, not a lost
                        // meeting; a provider that keeps failing is fatal.
                        stt_failed += 1;
                        stt_failed_in_a_row += 1;
                        complete = false;
                        warn!(error = %e, start_ms = u.start_ms, end_ms = u.end_ms, "Transcription of an utterance failed.");
                        gaps.push(GapDoc { start_ms: u.start_ms, end_ms: u.end_ms, speaker_id: Some(u.participant.0.clone()), kind: "transcription_failed".into() });
                        last_stt_error = Some(e.to_string());
                        if stt_failed_in_a_row >= MAX_STT_FAILURES_IN_A_ROW {
                            error!("Transcription keeps failing: giving up.");
                            inputs.push(Input::TranscriptionFailed { reason: format!("{e} ({stt_failed_in_a_row} utterances in a row failed)") });
                        }
                    }
                }
                if draining && backlog.is_idle() {
                    inputs.push(drained(stt_ok, stt_failed, &last_stt_error));
                }
            },
            Some(joined) = stt_tasks.join_next_with_id(), if !stt_tasks.is_empty() => {
                // Results arrive on the channel; a task that panicked sends none.
                match joined {
                    Ok((id, ())) => { task_tickets.remove(&id); }
                    Err(e) => {
                        let ticket = task_tickets.remove(&e.id());
                        if e.is_panic() && !abandoned {
                            error!("A transcription task panicked.");
                            if let Some(u) = ticket.and_then(|t| backlog.finished(Instant::now(), t, Finish::Failed)) {
                                gaps.push(GapDoc { start_ms: u.start_ms, end_ms: u.end_ms, speaker_id: Some(u.participant.0.clone()), kind: "transcription_failed".into() });
                            }
                            stt_failed += 1;
                            complete = false;
                            last_stt_error = Some("transcription task panicked".into());
                            if draining && backlog.is_idle() {
                                inputs.push(drained(stt_ok, stt_failed, &last_stt_error));
                            }
                        }
                    }
                }
            },
            Some(res) = async { match commit_task.as_mut() { Some(t) => Some(t.await), None => None } }, if commit_task.is_some() => {
                commit_task = None;
                match res {
                    Ok(Ok(c)) => {
                        info!(sha256 = %c.sha256, "Transcript committed and verified.");
                        committed = Some(c);
                        inputs.push(Input::CommitSucceeded);
                    }
                    Ok(Err(e)) => {
                        warn!(error = %e, retryable = e.is_retryable(), "Transcript commit failed.");
                        inputs.push(Input::CommitFailed { reason: e.to_string(), retryable: e.is_retryable() });
                    }
                    Err(e) => inputs.push(Input::CommitFailed { reason: format!("commit task crashed: {e}"), retryable: true }),
                }
            },
            _ = sleep_until(deadline) => {
                // Also wakes for the end of a backlog hold-off; the lifecycle
                // acts only on its own deadlines.
                lc.handle_timeout(Instant::now());
            },
        }
    }
    leave.cancel();
    stt_tasks.abort_all();
    debug!("Run finished.");
    Outcome { success }
}

/// Consecutive failed utterances after which transcription counts as failed.
const MAX_STT_FAILURES_IN_A_ROW: usize = 3;

/// What to tell the lifecycle once nothing is pending: drained, unless every
/// utterance failed.
fn drained(ok: usize, failed: usize, last_error: &Option<String>) -> Input {
    if ok == 0 && failed > 0 {
        Input::TranscriptionFailed {
            reason: format!(
                "{} (all {failed} utterances failed)",
                last_error.as_deref().unwrap_or("unknown error")
            ),
        }
    } else {
        Input::TranscriptionDrained
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

/// What the orchestrator knows about the meeting's participants and audio.
struct Capture {
    names: BTreeMap<ParticipantId, Pii<String>>,
    present: BTreeSet<ParticipantId>,
    pipelines: BTreeMap<ParticipantId, ParticipantPipeline>,
    vad: VadConfig,
    last_activity_report: Option<Instant>,
    speech_since_report: bool,
    /// Stretches spent rejoining (kind `rejoin`).
    rejoin_gaps: Vec<GapDoc>,
    /// An interruption in progress: where it began on the meeting clock, and when.
    interrupted: Option<(u64, Instant)>,
    /// Where each participant's audio is in the recording.
    index: AudioIndex,
}

/// How often audio activity is reported to the lifecycle.
const ACTIVITY_REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl Capture {
    fn new(vad: VadConfig) -> Self {
        Capture {
            names: BTreeMap::new(),
            present: BTreeSet::new(),
            pipelines: BTreeMap::new(),
            vad,
            last_activity_report: None,
            speech_since_report: false,
            rejoin_gaps: Vec::new(),
            interrupted: None,
            index: AudioIndex::default(),
        }
    }

    /// The rejoin gaps so far; one still open ends now.
    fn gaps(&self) -> Vec<GapDoc> {
        let mut gaps = self.rejoin_gaps.clone();
        if let Some((at_ms, since)) = self.interrupted {
            gaps.push(GapDoc {
                start_ms: at_ms,
                end_ms: at_ms.saturating_add(since.elapsed().as_millis() as u64),
                speaker_id: None,
                kind: "rejoin".into(),
            });
        }
        gaps
    }

    /// Turns one platform event into lifecycle inputs and finished utterances.
    fn on_event(
        &mut self,
        ev: PlatformEvent,
        capturing: bool,
        rec: &mut Option<Recording>,
        inputs: &mut Vec<Input>,
        utterances: &mut Vec<Utterance>,
    ) {
        match ev {
            PlatformEvent::Waiting => {
                debug!("Waiting to be admitted.");
                inputs.push(Input::Waiting);
            }
            PlatformEvent::Admitted => inputs.push(Input::Admitted),
            PlatformEvent::ParticipantJoined { id, name } => {
                debug!(participant = %id, "Participant joined.");
                self.names.insert(id.clone(), name);
                self.present.insert(id);
                inputs.push(Input::ParticipantCount(self.present.len()));
            }
            PlatformEvent::ParticipantLeft { id } => {
                debug!(participant = %id, "Participant left.");
                if let Some(mut p) = self.pipelines.remove(&id) {
                    utterances.extend(p.finish());
                }
                self.present.remove(&id);
                inputs.push(Input::ParticipantCount(self.present.len()));
            }
            PlatformEvent::Audio { id, packet } => {
                if !capturing {
                    return;
                }
                let Some(rec) = rec.as_mut() else { return };
                if let Err(e) = rec.append(&id, &packet) {
                    error!(error = %e, "Cannot append to the encrypted recording.");
                    inputs.push(Input::PlatformFailed {
                        reason: format!("recording: {e}"),
                    });
                    return;
                }
                self.index.note(&id, packet.at_ms, rec.write_position());
                let p = match self.pipelines.entry(id.clone()) {
                    std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                    std::collections::btree_map::Entry::Vacant(v) => {
                        match ParticipantPipeline::new(id.clone(), &self.vad) {
                            Ok(p) => v.insert(p),
                            Err(e) => {
                                inputs.push(Input::PlatformFailed {
                                    reason: format!("audio pipeline: {e}"),
                                });
                                return;
                            }
                        }
                    }
                };
                let before = utterances.len();
                utterances.extend(p.push(&packet));
                self.speech_since_report |= utterances.len() > before;
                let now = Instant::now();
                if self
                    .last_activity_report
                    .is_none_or(|t| now.duration_since(t) >= ACTIVITY_REPORT_EVERY)
                {
                    self.last_activity_report = Some(now);
                    inputs.push(Input::MediaActivity {
                        speech: std::mem::take(&mut self.speech_since_report),
                    });
                }
            }
            PlatformEvent::Interrupted { at_ms, reason } => {
                warn!(reason = %reason, at_ms, "Meeting connection lost; the platform is rejoining.");
                // Utterances in progress end here; audio after the rejoin starts new
                // pipelines on the same meeting clock.
                for (_, mut p) in std::mem::take(&mut self.pipelines) {
                    utterances.extend(p.finish());
                }
                self.interrupted.get_or_insert((at_ms, Instant::now()));
                inputs.push(Input::ConnectionLost);
            }
            PlatformEvent::Resumed { at_ms } => {
                inputs.push(Input::Reconnected);
                if let Some((start_ms, _)) = self.interrupted.take() {
                    info!(
                        gap_ms = at_ms.saturating_sub(start_ms),
                        "Back in the meeting."
                    );
                    self.rejoin_gaps.push(GapDoc {
                        start_ms,
                        end_ms: at_ms.max(start_ms),
                        speaker_id: None,
                        kind: "rejoin".into(),
                    });
                }
            }
            PlatformEvent::Ended { reason } => inputs.push(Input::CallEnded {
                reason: reason.as_str().into(),
            }),
        }
    }
}

async fn create_recording(req: &JoinRequest, comps: &Components) -> anyhow::Result<Recording> {
    let dek = DataKey::generate();
    let wrapped = comps
        .keys
        .wrap(&dek)
        .await
        .map_err(|e| anyhow::anyhow!("key provider {}: {e}", comps.keys.name()))?;
    let meta = RecordingMeta {
        meeting_id: req.meeting_id.clone(),
        tenant: req.tenant.clone(),
    };
    let cfg = comps.recording.clone();
    let rec =
        tokio::task::spawn_blocking(move || Recording::create(&cfg, dek, wrapped, meta)).await??;
    Ok(rec)
}

/// Writes the receipt intent, destroys the recording, then appends its
/// receipt (once: a sweep may have recovered it from the intent meanwhile)
/// and removes the intent. `Err` means the recording may still exist;
/// `Ok((info, Some(error)))` means it is gone but the receipt could not be
/// appended (it still goes out on the status line, and the intent stays for
/// the next start's sweep to append).
async fn destroy_and_receipt(
    rec: Recording,
    audit: &Arc<AuditLog>,
    spool_dir: &std::path::Path,
    was_committed: bool,
    committed: Option<&Committed>,
    reason: Option<String>,
) -> anyhow::Result<(ReceiptInfo, Option<String>)> {
    let (transcript_sha256, transcript_location) = committed
        .filter(|_| was_committed)
        .map(|c| (c.sha256.clone(), c.location.clone()))
        .unzip();
    let receipt_for = move |report: crate::recording::DestroyReport| DeletionReceipt {
        recording_id: report.recording_id,
        meeting_id: report.meeting_id,
        tenant: report.tenant,
        chunk_count: report.chunks,
        ciphertext_bytes: report.ciphertext_bytes,
        manifest_sha256: report.manifest_sha256,
        transcript_committed: was_committed,
        transcript_sha256: transcript_sha256.clone(),
        transcript_location: transcript_location.clone(),
        reason: reason.clone(),
        deleted_at: status::now_rfc3339(),
        method: report.method,
    };
    // One blocking task, in order: write-ahead intent (a process that dies
    // after the destroy leaves it for the next start's sweep), destroy, the
    // intent rewritten with the final receipt (deleted_at after the
    // deletion), the append (once), the intent removed.
    let intent = receipt_for(rec.destroy_report());
    let spool = spool_dir.to_path_buf();
    let audit2 = audit.clone();
    let (receipt, appended) = tokio::task::spawn_blocking(move || {
        let id = intent.recording_id.clone();
        let put = |r: &DeletionReceipt| {
            serde_json::to_vec(r)
                .map_err(|e| e.to_string())
                .and_then(|json| {
                    recording::write_receipt_intent(&spool, &id, &json).map_err(|e| e.to_string())
                })
        };
        let wrote = put(&intent);
        if let Err(e) = &wrote {
            // Destroying comes first: go on, the receipt still goes out below.
            warn!(error = %e, "Could not write the receipt intent; a crash before the receipt is appended would lose it.");
        }
        let report = rec.destroy()?;
        let receipt = receipt_for(report);
        if wrote.is_ok() {
            if let Err(e) = put(&receipt) {
                warn!(error = %e, "Could not update the receipt intent after the deletion.");
            }
        }
        let appended = audit2.append_once(&receipt);
        if wrote.is_ok() && appended.is_ok() {
            if let Err(e) = recording::remove_receipt_intent(&spool, &id) {
                // Harmless: the next sweep finds the receipt already appended.
                warn!(error = %e, "Could not remove a completed receipt intent.");
            }
        }
        Ok::<_, crate::recording::RecordingError>((receipt, appended))
    })
    .await??;
    let audit_log = audit.path().display().to_string();
    let (receipt, entry, error) = match appended {
        Ok((entry, true)) => {
            info!(audit_seq = entry.seq, "Deletion receipt appended.");
            (receipt, Some(entry), None)
        }
        Ok((entry, false)) => {
            // A concurrent sweep recovered it from the intent first.
            info!(
                audit_seq = entry.seq,
                "Deletion receipt was already appended from its intent."
            );
            let theirs = match entry.receipt.clone() {
                crate::audit::AuditRecord::Recording(r) => r,
                crate::audit::AuditRecord::Transcript(_) => receipt,
            };
            (theirs, Some(entry), None)
        }
        Err(e) => (receipt, None, Some(e.to_string())),
    };
    Ok((
        ReceiptInfo {
            receipt,
            audit_seq: entry.as_ref().map(|e| e.seq),
            audit_hash: entry.map(|e| e.hash),
            audit_log,
        },
        error,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::media::OpusPacket;
    use crate::platform::{EndReason, PlatformError};
    use crate::recording::EphemeralKeys;
    use crate::store::local::LocalDirStore;
    use crate::stt::SttSegment;
    use async_trait::async_trait;

    /// Says how long each utterance is; never fails.
    struct Durations;

    #[async_trait]
    impl SttProvider for Durations {
        fn name(&self) -> &str {
            "durations"
        }
        fn model(&self) -> &str {
            "none"
        }
        async fn transcribe(&self, samples: Arc<[f32]>) -> Result<Vec<SttSegment>, SttError> {
            let ms = samples.len() as u64 / 16;
            Ok(vec![SttSegment {
                start_ms: 0,
                end_ms: ms,
                text: format!("{ms} ms"),
            }])
        }
    }

    /// Plays a fixed list of events, pausing where told.
    struct Scripted(Vec<(u64, PlatformEvent)>);

    #[async_trait]
    impl MeetingPlatform for Scripted {
        async fn run(
            self: Box<Self>,
            events: mpsc::Sender<PlatformEvent>,
            _leave: CancellationToken,
        ) -> Result<(), PlatformError> {
            for (pause_ms, ev) in self.0 {
                tokio::time::sleep(std::time::Duration::from_millis(pause_ms)).await;
                if events.send(ev).await.is_err() {
                    break;
                }
            }
            Ok(())
        }
    }

    fn encode(audio: &[f32], at_ms: u64, seq0: u16) -> Vec<OpusPacket> {
        crate::core::audio::testutil::encode_with(audio, at_ms, seq0, false)
    }

    /// The platform loses the meeting mid-sentence and rejoins: what was said before is
    /// kept, the time away is a `rejoin` gap, speech after the rejoin (a restarted RTP
    /// stream) lands on the same clock, and the transcript is marked incomplete.
    #[tokio::test]
    async fn a_rejoin_becomes_a_gap_and_speech_on_both_sides_is_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let speech = crate::core::vad::testutil::espeak_48k(
            d,
            "s",
            "Good morning everyone, let us begin the review.",
        );
        let mut audio = vec![0.0; 24_000];
        audio.extend(&speech);
        audio.extend(vec![0.0; 48_000]);
        let id = ParticipantId("p1".into());
        let mut script = vec![
            (0, PlatformEvent::Admitted),
            (
                0,
                PlatformEvent::ParticipantJoined {
                    id: id.clone(),
                    name: Pii::new("Alice".into()),
                },
            ),
        ];
        let audio_ev = |p: OpusPacket| {
            (
                0,
                PlatformEvent::Audio {
                    id: id.clone(),
                    packet: p,
                },
            )
        };
        let before = encode(&audio, 0, 100);
        let cut = before.len() * 2 / 3; // mid-utterance
        let lost_at = before[cut].at_ms;
        script.extend(before[..cut].iter().cloned().map(audio_ev));
        script.push((
            0,
            PlatformEvent::Interrupted {
                at_ms: lost_at,
                reason: "janus connection_lost".into(),
            },
        ));
        let back_at = lost_at + 6_000;
        script.push((50, PlatformEvent::Resumed { at_ms: back_at }));
        // A fresh RTP stream: its sequence numbers start over, lower.
        script.extend(encode(&audio, back_at + 500, 7).into_iter().map(audio_ev));
        script.push((0, PlatformEvent::ParticipantLeft { id: id.clone() }));
        script.push((
            0,
            PlatformEvent::Ended {
                reason: EndReason::ReplayFinished,
            },
        ));

        let comps = Components {
            keys: Arc::new(EphemeralKeys),
            stt: Arc::new(Durations),
            store: Arc::new(LocalDirStore::new(d.join("t"))),
            audit: Arc::new(AuditLog::open(d.join("audit.jsonl")).expect("audit")),
            recording: RecordingConfig::new(d.join("spool")),
            vad: VadConfig::default(),
            lifecycle: LifecycleConfig::default(),
            retry: RetryPolicy::default(),
            stt_concurrency: 1,
            stt_inflight_budget_bytes: crate::core::backlog::DEFAULT_INFLIGHT_BUDGET_BYTES,
            gauges: Arc::new(BacklogGauges::default()),
        };
        let req = JoinRequest {
            tenant: "acme".into(),
            meeting_id: "m1".into(),
            bot_name: "bot".into(),
            language: "en".into(),
        };
        let (_stop_tx, stop_rx) = mpsc::channel(1);
        let mut statuses = Vec::new();
        let outcome = run(req, comps, Box::new(Scripted(script)), stop_rx, &mut |l| {
            statuses.push(l.status)
        })
        .await;
        assert!(outcome.success, "{statuses:?}");
        // The time away is visible as a status, and the return to the call.
        assert_eq!(
            statuses[..5],
            [
                "joining",
                "in_call_recording",
                "reconnecting",
                "in_call_recording",
                "call_ended"
            ],
            "{statuses:?}"
        );
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.join("t/acme/m1.json")).expect("transcript"))
                .expect("json");
        assert_eq!(doc["complete"], false);
        let gaps = doc["gaps"].as_array().expect("gaps");
        assert_eq!(gaps.len(), 1, "{gaps:?}");
        assert_eq!(gaps[0]["kind"], "rejoin");
        assert_eq!(gaps[0]["start_ms"], lost_at);
        assert_eq!(gaps[0]["end_ms"], back_at);
        assert!(gaps[0]["speaker_id"].is_null());
        let segs = doc["segments"].as_array().expect("segments");
        assert_eq!(segs.len(), 2, "{segs:?}");
        // Before: cut off at the loss. After: the whole sentence, after the gap.
        let (s0, e0) = (segs[0]["start_ms"].as_u64(), segs[0]["end_ms"].as_u64());
        assert!(s0 < Some(lost_at) && e0 <= Some(lost_at), "{segs:?}");
        let s1 = segs[1]["start_ms"].as_u64().expect("start");
        assert!(s1 >= back_at + 500, "{segs:?}");
        assert!(segs.iter().all(|s| s["speaker"] == "Alice"));
    }

    /// A recording with one sealed chunk, its spool and audit log in `d`.
    async fn one_recording(d: &std::path::Path) -> (Components, Recording) {
        let comps = Components {
            keys: Arc::new(EphemeralKeys),
            stt: Arc::new(Durations),
            store: Arc::new(LocalDirStore::new(d.join("t"))),
            audit: Arc::new(AuditLog::open(d.join("audit.jsonl")).expect("audit")),
            recording: RecordingConfig::new(d.join("spool")),
            vad: VadConfig::default(),
            lifecycle: LifecycleConfig::default(),
            retry: RetryPolicy::default(),
            stt_concurrency: 1,
            stt_inflight_budget_bytes: 1 << 20,
            gauges: Arc::new(BacklogGauges::default()),
        };
        let req = JoinRequest {
            tenant: "acme".into(),
            meeting_id: "m1".into(),
            bot_name: "bot".into(),
            language: "en".into(),
        };
        let mut rec = create_recording(&req, &comps).await.expect("recording");
        for p in encode(&vec![0.1; 4_800], 0, 1) {
            rec.append(&ParticipantId("p1".into()), &p).expect("append");
        }
        rec.flush().expect("flush");
        (comps, rec)
    }

    fn receipts_for(audit: &std::path::Path, id: &str) -> Vec<serde_json::Value> {
        std::fs::read_to_string(audit)
            .expect("audit log")
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json"))
            .filter(|e| e["receipt"]["recording_id"] == id)
            .collect()
    }

    #[tokio::test]
    async fn a_crash_between_destroy_and_receipt_does_not_lose_the_receipt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let (comps, rec) = one_recording(d).await;
        let id = rec.id().to_string();
        // What destroy_and_receipt does up to the crash: intent, destroy, and
        // then the process is gone before the append.
        let intent = DeletionReceipt::new(
            &rec.destroy_report(),
            TranscriptOutcome::Committed {
                sha256: "ab".repeat(32),
                location: "t/acme/m1.json".into(),
            },
            std::time::SystemTime::now(),
        );
        recording::write_receipt_intent(
            &comps.recording.spool_dir,
            &id,
            &serde_json::to_vec(&intent).expect("json"),
        )
        .expect("intent");
        let destroyed = rec.destroy().expect("destroy");
        assert!(receipts_for(&d.join("audit.jsonl"), &id).is_empty());

        // The next start's sweep appends it, exactly once.
        let recovered = sweep_spool_receipts(&comps.recording, &comps.audit).expect("sweep");
        assert_eq!(recovered.len(), 1);
        assert_eq!(recovered[0], intent);
        assert_eq!(recovered[0].chunk_count, destroyed.chunks);
        assert!(sweep_spool_receipts(&comps.recording, &comps.audit)
            .expect("sweep again")
            .is_empty());
        let got = receipts_for(&d.join("audit.jsonl"), &id);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0]["receipt"]["transcript_committed"], true);
        crate::audit::verify(&d.join("audit.jsonl")).expect("chain verifies");
    }

    #[tokio::test]
    async fn a_failed_receipt_append_is_completed_by_the_next_sweep() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let (comps, rec) = one_recording(d).await;
        let id = rec.id().to_string();
        let log = d.join("audit.jsonl");
        // A torn last line: the log refuses appends until it is repaired.
        std::fs::write(&log, b"{\"seq\":1,").expect("tear");
        let (info, error) = destroy_and_receipt(
            rec,
            &comps.audit,
            &comps.recording.spool_dir,
            false,
            None,
            Some("stopped".into()),
        )
        .await
        .expect("destroyed");
        assert!(error.is_some() && info.audit_seq.is_none());
        assert!(!comps.recording.spool_dir.join(&id).exists());
        // An operator repairs the log; the next start appends the receipt.
        std::fs::write(&log, b"").expect("repair");
        let recovered = sweep_spool_receipts(&comps.recording, &comps.audit).expect("sweep");
        assert_eq!(recovered, vec![info.receipt]);
        assert_eq!(receipts_for(&log, &id).len(), 1);
    }

    #[tokio::test]
    async fn a_receipt_recovered_by_a_sweep_first_is_not_appended_twice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let (comps, rec) = one_recording(d).await;
        let id = rec.id().to_string();
        let intent = DeletionReceipt::new(
            &rec.destroy_report(),
            TranscriptOutcome::NotCommitted { reason: "x".into() },
            std::time::SystemTime::now(),
        );
        let mut for_sweep = intent.clone();
        for_sweep.reason = Some("recovered".into());
        // The owner has destroyed the recording; a sweep in another process
        // recovers the receipt before the owner appends its own.
        recording::write_receipt_intent(
            &comps.recording.spool_dir,
            &id,
            &serde_json::to_vec(&for_sweep).expect("json"),
        )
        .expect("intent");
        let (_, appended) = comps.audit.append_once(&for_sweep).expect("sweep append");
        assert!(appended);
        let (entry, appended) = comps.audit.append_once(&intent).expect("owner append");
        assert!(!appended, "a second receipt for one recording");
        assert_eq!(entry.seq, 1);
        drop(rec);
        assert_eq!(receipts_for(&d.join("audit.jsonl"), &id).len(), 1);
    }

    /// Hangs (every attempt times out) until the meeting's last event was
    /// delivered and at least `hung_calls` attempts hung, then says how long
    /// each utterance is; records the loudness of what it was given.
    struct HangsThenAnswers {
        meeting_over: Arc<std::sync::atomic::AtomicBool>,
        hung_calls: u64,
        calls: std::sync::atomic::AtomicU64,
        rms: std::sync::Mutex<Vec<f64>>,
    }

    /// Plays a script, then raises a flag.
    struct FlagWhenDone(Scripted, Arc<std::sync::atomic::AtomicBool>);

    #[async_trait]
    impl MeetingPlatform for FlagWhenDone {
        async fn run(
            self: Box<Self>,
            events: mpsc::Sender<PlatformEvent>,
            leave: CancellationToken,
        ) -> Result<(), PlatformError> {
            let r = Box::new(self.0).run(events, leave).await;
            self.1.store(true, Ordering::SeqCst);
            r
        }
    }

    #[async_trait]
    impl SttProvider for HangsThenAnswers {
        fn name(&self) -> &str {
            "hangs-then-answers"
        }
        fn model(&self) -> &str {
            "none"
        }
        async fn transcribe(&self, samples: Arc<[f32]>) -> Result<Vec<SttSegment>, SttError> {
            let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            if call <= self.hung_calls || !self.meeting_over.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            let sq: f64 = samples.iter().map(|x| f64::from(*x).powi(2)).sum();
            self.rms
                .lock()
                .expect("test mutex")
                .push((sq / samples.len().max(1) as f64).sqrt());
            let ms = samples.len() as u64 / 16;
            Ok(vec![SttSegment {
                start_ms: 0,
                end_ms: ms,
                text: format!("{ms} ms"),
            }])
        }
    }

    /// A provider that hangs (far longer than its retry budget: until the
    /// whole meeting has been captured) while four speakers produce a dozen
    /// utterances: nothing
    /// is dropped (every utterance the VAD cut is in the transcript, complete,
    /// with the right span and real audio, decoded back from the spilled
    /// recording), and the plaintext PCM held for STT never exceeds the
    /// in-flight budget — it does not grow with the number of waiting
    /// utterances.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hung_provider_delays_the_transcript_without_holding_its_audio_or_losing_words() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let sentences = [
            "Good morning everyone, let us begin the review.",
            "The budget for the next quarter is still open.",
            "We should ship the release on Thursday afternoon.",
        ];
        let speech: Vec<Vec<f32>> = sentences
            .iter()
            .enumerate()
            .map(|(i, t)| crate::core::vad::testutil::espeak_48k(d, &format!("s{i}"), t))
            .collect();
        // Four speakers take turns, three sentences each, a second of silence
        // between turns; each speaker's stream runs (silent) the whole meeting.
        let speakers = 4usize;
        let turn_ms = |k: usize| -> u64 { 500 + k as u64 * 4_500 };
        let turns = speakers * 3;
        let total_ms = turn_ms(turns) + 2_000;
        let mut all: Vec<(ParticipantId, OpusPacket)> = Vec::new();
        let mut expected = Vec::new();
        for sp in 0..speakers {
            let id = ParticipantId(format!("feed{sp}"));
            let mut audio = vec![0.0f32; (total_ms * 48) as usize];
            for k in (sp..turns).step_by(speakers) {
                let s = &speech[k / speakers];
                let at = (turn_ms(k) * 48) as usize;
                audio[at..at + s.len()].copy_from_slice(s);
            }
            let packets = encode(&audio, 0, (sp * 1000) as u16);
            // What the live pipeline cuts: the utterances the transcript must hold.
            let mut p =
                ParticipantPipeline::new(id.clone(), &VadConfig::default()).expect("pipeline");
            for pk in &packets {
                expected.extend(
                    p.push(pk)
                        .into_iter()
                        .map(|u| (u.participant.0, u.start_ms, u.end_ms)),
                );
            }
            expected.extend(p.finish().map(|u| (u.participant.0, u.start_ms, u.end_ms)));
            all.extend(packets.into_iter().map(|pk| (id.clone(), pk)));
        }
        all.sort_by_key(|(_, pk)| pk.at_ms);
        expected.sort_by_key(|(_, s, _)| *s);
        assert!(expected.len() >= turns, "{expected:?}");
        let total_pcm: u64 = expected.iter().map(|(_, s, e)| (e - s) * 64).sum();
        let longest: u64 = expected
            .iter()
            .map(|(_, s, e)| (e - s) * 64)
            .max()
            .unwrap_or(0);

        let mut script = vec![(0, PlatformEvent::Admitted)];
        for sp in 0..speakers {
            script.push((
                0,
                PlatformEvent::ParticipantJoined {
                    id: ParticipantId(format!("feed{sp}")),
                    name: Pii::new(format!("Speaker {sp}")),
                },
            ));
        }
        script.extend(
            all.into_iter()
                .map(|(id, packet)| (0, PlatformEvent::Audio { id, packet })),
        );
        script.push((
            0,
            PlatformEvent::Ended {
                reason: EndReason::ReplayFinished,
            },
        ));

        let meeting_over = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let provider = Arc::new(HangsThenAnswers {
            meeting_over: meeting_over.clone(),
            hung_calls: 4,
            calls: Default::default(),
            rms: Default::default(),
        });
        // Room for the longest utterance and a bit: far less than all of them.
        let budget = longest + longest / 2;
        assert!(
            budget * 3 < total_pcm,
            "the test needs a backlog: {budget} vs {total_pcm}"
        );
        let gauges = Arc::new(BacklogGauges::default());
        let mut recording = RecordingConfig::new(d.join("spool"));
        // Spill nearly everything: utterances are read back from the spool.
        recording.memory_budget_bytes = 4096;
        recording.chunk_bytes = 4096;
        let comps = Components {
            keys: Arc::new(EphemeralKeys),
            stt: provider.clone(),
            store: Arc::new(LocalDirStore::new(d.join("t"))),
            audit: Arc::new(AuditLog::open(d.join("audit.jsonl")).expect("audit")),
            recording,
            vad: VadConfig::default(),
            lifecycle: LifecycleConfig::default(),
            retry: RetryPolicy {
                attempts: 2,
                attempt_timeout: std::time::Duration::from_millis(300),
                initial_backoff: std::time::Duration::from_millis(50),
                max_backoff: std::time::Duration::from_millis(100),
            },
            stt_concurrency: 2,
            stt_inflight_budget_bytes: budget,
            gauges: gauges.clone(),
        };
        let req = JoinRequest {
            tenant: "acme".into(),
            meeting_id: "m1".into(),
            bot_name: "bot".into(),
            language: "en".into(),
        };
        let (_stop_tx, stop_rx) = mpsc::channel(1);
        let mut lines = Vec::new();
        let platform = FlagWhenDone(Scripted(script), meeting_over);
        let outcome = run(req, comps, Box::new(platform), stop_rx, &mut |l| {
            lines.push(serde_json::to_value(l).expect("json"))
        })
        .await;
        assert!(outcome.success, "{lines:#?}");
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.join("t/acme/m1.json")).expect("transcript"))
                .expect("json");
        assert_eq!(doc["complete"], true, "{doc:#}");
        assert_eq!(doc["gaps"].as_array().map(Vec::len), Some(0), "{doc:#}");
        let segs = doc["segments"].as_array().expect("segments");
        let got: Vec<(String, u64, u64)> = segs
            .iter()
            .map(|s| {
                (
                    s["speaker_id"].as_str().unwrap_or_default().to_string(),
                    s["start_ms"].as_u64().unwrap_or(0),
                    s["end_ms"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        assert_eq!(got.len(), expected.len(), "{got:?} vs {expected:?}");
        for ((gp, gs, ge), (ep, es, ee)) in got.iter().zip(&expected) {
            assert_eq!((gp, gs), (ep, es), "{got:?} vs {expected:?}");
            assert!(ge.abs_diff(*ee) <= 20, "{got:?} vs {expected:?}");
        }
        // Real speech reached the provider, not silence.
        let rms = provider.rms.lock().expect("test mutex").clone();
        assert_eq!(rms.len(), expected.len());
        assert!(rms.iter().all(|r| *r > 0.01), "{rms:?}");
        // The outage was seen and waited out by requeueing, not by holding audio.
        let last = lines.last().expect("final line");
        assert_eq!(last["status"], "done");
        let t = &last["transcribing"];
        assert_eq!(t["queued"], 0, "{last:#}");
        assert!(t["requeued"].as_u64() > Some(0), "{last:#}");
        assert!(
            t["peak_queued"].as_u64() >= Some(expected.len() as u64 / 2),
            "{last:#}"
        );
        assert!(
            t["from_recording"].as_u64() >= Some(expected.len() as u64 / 2),
            "{last:#}"
        );
        let peak = gauges.peak_pcm_bytes.load(Ordering::Relaxed);
        assert!(peak > 0);
        assert!(peak <= budget + 2 * 64, "peak {peak} over budget {budget}");
        assert_eq!(t["peak_inflight_pcm_bytes"], peak);
        assert_eq!(gauges.pcm_bytes.load(Ordering::Relaxed), 0, "all wiped");
        let calls = provider.calls.load(Ordering::SeqCst);
        assert!(calls >= expected.len() as u64 + 4, "{calls} calls");
    }
}
