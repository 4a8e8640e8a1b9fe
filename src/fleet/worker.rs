//! `meetbot worker`: take exactly one job, run its meeting, report every
//! status change, finish the job.
//!
//! Sources, first match wins: `--job-file`, `MEETBOT_JOB` (JSON), else the
//! Azure Storage Queue `queue.name`. A queued job is leased (invisible to
//! other workers) and the lease renewed every third of `queue.lease` while
//! the meeting runs; it is deleted when the run ends (done or fatal: the
//! outcome is recorded either way). If the worker dies, the job reappears
//! after the lease and the next worker retries it; after `queue.max_attempts`
//! receipts it is parked in `queue.poison_name` instead.
//!
//! Every status line goes to stdout at once and, in order, to the bot record
//! (Table Storage), the tenant's receipt chain (the deletion receipt,
//! [`crate::azure::audit_chain`]) and the job's webhook. A job whose record is already final (a redelivery after the
//! worker finished but before it deleted the message) is not run again.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::json;
use tokio::sync::{mpsc, Mutex};
use tracing::{error, info, warn};

use super::job::Job;
use super::metrics::Metrics;
use super::records::{Records, Update};
use super::AzureEnv;
use crate::azure::audit_chain::BlobAuditChain;
use crate::azure::blob_store::BlobStore;
use crate::azure::queue::{JobQueue, Leased};
use crate::bot::{self, JoinRequest};
use crate::config::{Config, StoreKind};
use crate::pii::Pii;
use crate::status::{self, StatusLine};
use crate::store::local::LocalDirStore;
use crate::store::TranscriptStore;
use crate::webhook::{
    Delivery, DispatcherOptions, PendingDelivery, Schedule, WebhookDispatcher, WebhookEvent,
    WebhookSecret, WebhookSender,
};

/// Where the job comes from.
#[derive(Debug)]
pub enum JobSource {
    /// `--job-file`.
    File(PathBuf),
    /// `MEETBOT_JOB`.
    Env(String),
    /// The queue.
    Queue,
}

/// Exit codes: 0 done (or nothing to do), 1 fatal, 2 bad job or configuration.
pub const EXIT_FATAL: i32 = 1;
/// See [`EXIT_FATAL`].
pub const EXIT_USAGE: i32 = 2;

/// Shared state the health server reads.
#[derive(Debug, Default)]
pub struct WorkerState {
    /// Current status (empty until a job is taken).
    pub status: std::sync::Mutex<String>,
    /// Metrics.
    pub metrics: Metrics,
    /// The running meeting's transcription backlog (exported with the metrics).
    pub backlog: Arc<bot::BacklogGauges>,
}

impl WorkerState {
    /// The metrics, with the backlog gauges read now.
    fn render_metrics(&self) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        let b = &self.backlog;
        let m = &self.metrics;
        m.set(
            "meetbot_worker_stt_queued_utterances",
            "Utterances waiting for the STT provider (kept as references into the encrypted recording).",
            &[],
            b.queued.load(Relaxed) as f64,
        );
        m.set(
            "meetbot_worker_stt_queued_audio_seconds",
            "Audio waiting for the STT provider, seconds.",
            &[],
            b.queued_audio_ms.load(Relaxed) as f64 / 1000.0,
        );
        m.set(
            "meetbot_worker_stt_in_flight_utterances",
            "Utterances at the STT provider.",
            &[],
            b.in_flight.load(Relaxed) as f64,
        );
        m.set(
            "meetbot_worker_stt_inflight_pcm_bytes",
            "Plaintext PCM held for STT now, bytes (capped by stt.inflight_budget_kib).",
            &[],
            b.pcm_bytes.load(Relaxed) as f64,
        );
        m.set(
            "meetbot_worker_stt_inflight_pcm_peak_bytes",
            "Most plaintext PCM held for STT at once in this meeting, bytes.",
            &[],
            b.peak_pcm_bytes.load(Relaxed) as f64,
        );
        m.set(
            "meetbot_worker_stt_requeued_utterances",
            "Utterances requeued in this meeting after the STT provider failed transiently.",
            &[],
            b.requeued.load(Relaxed) as f64,
        );
        m.render()
    }

    fn set_status(&self, s: &str) {
        *self.status.lock().unwrap_or_else(|p| p.into_inner()) = s.to_string();
        self.metrics.set_only(
            "meetbot_worker_status",
            "The worker's current bot status (1 for the current one).",
            &[("status", s)],
            1.0,
        );
        self.metrics.inc(
            "meetbot_worker_status_changes_total",
            "Status changes reported by this worker.",
            &[("status", s)],
            1.0,
        );
    }
}

fn skipped(reason: &str, job: Option<&Job>) {
    // A worker-only line: the job was not run by this worker.
    let line = json!({
        "status": "skipped",
        "at": status::now_rfc3339(),
        "reason": reason,
        "tenant": job.map(|j| j.tenant.as_str()),
        "meeting_id": job.map(|j| j.meeting_id.as_str()),
        "bot_id": job.map(|j| j.bot_id()),
    });
    println!("{line}");
}

fn fatal_line(job: Option<&Job>, reason: String) -> StatusLine {
    StatusLine {
        status: "fatal",
        at: status::now_rfc3339(),
        meeting_id: job.map(|j| j.meeting_id.clone()).unwrap_or_default(),
        tenant: job.map(|j| j.tenant.clone()).unwrap_or_default(),
        recording_id: None,
        reason: Some(reason),
        transcript: None,
        receipt: None,
        transcribing: None,
    }
}

/// Runs `meetbot worker`. Returns the exit code.
pub async fn run(mut cfg: Config, source: JobSource) -> i32 {
    let (stop_tx, stop_rx) = mpsc::channel(8);
    crate::cli::forward_signals(stop_tx.clone());
    let state = Arc::new(WorkerState::default());
    let health = if cfg.worker.listen.is_empty() {
        None
    } else {
        match tokio::net::TcpListener::bind(&cfg.worker.listen).await {
            Ok(l) => Some(tokio::spawn(serve_health(l, state.clone()))),
            Err(e) => {
                status::print(&fatal_line(
                    None,
                    format!("worker.listen {}: {e}", cfg.worker.listen),
                ));
                return EXIT_USAGE;
            }
        }
    };
    let code = run_inner(&mut cfg, source, state, stop_tx, stop_rx).await;
    if let Some(h) = health {
        h.abort();
    }
    code
}

async fn run_inner(
    cfg: &mut Config,
    source: JobSource,
    state: Arc<WorkerState>,
    stop_tx: mpsc::Sender<()>,
    mut stop_rx: mpsc::Receiver<()>,
) -> i32 {
    let uses_azure = matches!(source, JobSource::Queue)
        || cfg.store.kind == StoreKind::AzureBlob
        || !cfg.azure.table_url.trim().is_empty();
    let azure = if uses_azure {
        match AzureEnv::from_config(cfg) {
            Ok(a) => Some(a),
            Err(e) => {
                status::print(&fatal_line(None, e.to_string()));
                return EXIT_USAGE;
            }
        }
    } else {
        None
    };
    let records = match (&azure, cfg.azure.table_url.trim().is_empty()) {
        (Some(az), false) => match az.records(cfg) {
            Ok(r) => Some(r),
            Err(e) => {
                status::print(&fatal_line(None, e.to_string()));
                return EXIT_USAGE;
            }
        },
        _ => None,
    };
    let tenants = if cfg.tenants.file.as_os_str().is_empty() {
        super::tenants::Tenants::default()
    } else {
        match super::tenants::Tenants::load(&cfg.tenants.file) {
            Ok(t) => t,
            Err(e) => {
                status::print(&fatal_line(None, e));
                return EXIT_USAGE;
            }
        }
    };

    // 0. A crashed run's recording on this pod's spool (the container restarted in
    //    the same pod, whose spool survives) is destroyed before waiting for a job,
    //    even if no job comes: its receipt goes to the audit log, stdout and the
    //    tenant's container.
    if let Err(e) = sweep_orphans_at_start(cfg, azure.as_ref()).await {
        status::print(&fatal_line(None, e));
        return EXIT_FATAL;
    }

    // 1. Take the job.
    let mut lease: Option<Lease> = None;
    let text = match source {
        JobSource::File(path) => match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                status::print(&fatal_line(
                    None,
                    format!("--job-file {}: {e}", path.display()),
                ));
                return EXIT_USAGE;
            }
        },
        JobSource::Env(s) => s.into_bytes(),
        JobSource::Queue => {
            let Some(az) = &azure else {
                unreachable!("queue source implies azure")
            };
            let q = match az.queue(cfg, &cfg.queue.name) {
                Ok(q) => q,
                Err(e) => {
                    status::print(&fatal_line(None, e.to_string()));
                    return EXIT_USAGE;
                }
            };
            match take_one(&q, cfg.queue.lease, cfg.queue.wait, &mut stop_rx).await {
                Ok(Some(m)) => {
                    let t = m.text.clone().into_bytes();
                    lease = Some(Lease::start(q, m, cfg.queue.lease, state.clone()));
                    t
                }
                Ok(None) => {
                    skipped("no job in the queue", None);
                    return 0;
                }
                Err(e) => {
                    status::print(&fatal_line(None, format!("taking a job: {e}")));
                    return EXIT_FATAL;
                }
            }
        }
    };
    if let Some(l) = &lease {
        info!(message_id = %l.id, dequeue_count = l.dequeue_count, "Took a job from the queue.");
    }

    // 2. Parse. A job that cannot be parsed never will be: park it.
    let job = match Job::parse(&text) {
        Ok(j) => j,
        Err(e) => {
            if let Some(l) = &lease {
                l.park(cfg, azure.as_ref(), "invalid job").await;
            }
            status::print(&fatal_line(None, format!("invalid job: {e}")));
            return EXIT_USAGE;
        }
    };
    let tenant_cfg = tenants.get(&job.tenant).cloned();
    let attempt = lease.as_ref().map(|l| l.dequeue_count).unwrap_or(1);
    let webhook = match webhook_target(cfg, &job, tenant_cfg.as_ref(), attempt) {
        Ok(w) => w,
        Err(e) => {
            if let Some(l) = &lease {
                l.park(cfg, azure.as_ref(), "invalid webhook settings")
                    .await;
            }
            let line = fatal_line(Some(&job), e);
            status::print(&line);
            // Still tell the bot record (there is no webhook to tell).
            let mut r = Reporter::start(ReporterCtx {
                records: records.clone(),
                job: job.clone(),
                state: state.clone(),
                webhook_transcript: false,
                receipts: None,
                chain: None,
                appended: None,
                webhook: None,
                outbox: None,
                drain: Duration::ZERO,
                seq: 0,
            });
            r.send(line);
            r.finish(Duration::from_secs(10)).await;
            return EXIT_USAGE;
        }
    };
    let outbox = match (&azure, &webhook) {
        (Some(az), Some(_)) if !cfg.azure.queue_url.trim().is_empty() => {
            az.queue(cfg, &cfg.webhooks.outbox_queue).ok()
        }
        _ => None,
    };
    let reporter_ctx = ReporterCtx {
        records: records.clone(),
        job: job.clone(),
        state: state.clone(),
        webhook_transcript: tenant_cfg.as_ref().is_some_and(|t| t.webhook_transcript),
        receipts: None,
        chain: None,
        appended: None,
        webhook,
        outbox,
        drain: cfg.webhooks.drain,
        seq: 0,
    };

    // 3. Too many attempts: park.
    if let Some(l) = &lease {
        if l.dequeue_count > cfg.queue.max_attempts {
            let reason = format!(
                "gave up after {} attempts (worker crashed or was evicted each time); job parked in {}",
                cfg.queue.max_attempts, cfg.queue.poison_name
            );
            l.park(cfg, azure.as_ref(), "too many attempts").await;
            let mut r = Reporter::start(reporter_ctx);
            r.send(fatal_line(Some(&job), reason.clone()));
            r.finish(Duration::from_secs(10)).await;
            status::print(&fatal_line(Some(&job), reason));
            return EXIT_FATAL;
        }
    }

    // 4. The bot record: never run a finished job twice; honour a stop
    //    requested before we started.
    if let Some(rec) = &records {
        match claim(rec, &job, lease.as_ref().map(|l| l.dequeue_count)).await {
            Ok(Claim::Run) => {}
            Ok(Claim::AlreadyFinished(status)) => {
                if let Some(l) = &lease {
                    l.delete().await;
                }
                skipped(
                    &format!("bot already finished ({status}); redelivered job not run again"),
                    Some(&job),
                );
                return 0;
            }
            Ok(Claim::Cancelled) => {
                if let Some(l) = &lease {
                    l.delete().await;
                }
                let mut r = Reporter::start(reporter_ctx);
                let mut line = fatal_line(
                    Some(&job),
                    "stopped before joining (DELETE /v1/bots)".into(),
                );
                line.status = "cancelled";
                r.send(line.clone());
                r.finish(Duration::from_secs(10)).await;
                status::print(&line);
                return 0;
            }
            Err(e) => {
                // The lease lapses and the job is retried.
                status::print(&fatal_line(Some(&job), format!("bot record: {e}")));
                return EXIT_FATAL;
            }
        }
    }
    let mut reporter = Reporter::start(reporter_ctx);
    let fail = |reporter: &mut Reporter, reason: String| {
        let line = fatal_line(Some(&job), reason);
        status::print(&line);
        reporter.send(line);
    };

    // 5. Not before join_at.
    if let Some(at) = job.join_at_time() {
        if let Ok(wait) = at.duration_since(SystemTime::now()) {
            if let (Some(l), true) = (&lease, wait > Duration::from_secs(60)) {
                // Delivered early (clock skew, or a schedule beyond the
                // queue's 7-day limit): hide it again until join_at.
                let wait = wait.min(crate::azure::queue::MAX_VISIBILITY);
                match l.defer(wait).await {
                    Ok(()) => {
                        skipped(
                            "join_at is in the future; job hidden until then",
                            Some(&job),
                        );
                        reporter.finish(Duration::from_secs(5)).await;
                        return 0;
                    }
                    Err(e) => {
                        warn!(error = %e, "Could not defer an early job; waiting in the worker.")
                    }
                }
            }
            info!(wait_s = wait.as_secs(), "Waiting for join_at.");
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop_rx.recv() => {
                    let mut line = fatal_line(Some(&job), "stopped before joining".into());
                    line.status = "cancelled";
                    status::print(&line);
                    reporter.send(line);
                    reporter.finish(cfg.webhooks.drain + Duration::from_secs(30)).await;
                    if let Some(l) = &lease { l.delete().await; }
                    return 0;
                }
            }
        }
    }

    // 6. Settings for this job.
    if let Some(stt) = &job.stt {
        if let Some(p) = stt.provider {
            cfg.stt.provider = p;
        }
        if let Some(l) = &stt.language {
            cfg.stt.language = l.clone();
        }
    }
    if let Some(n) = &job.bot_name {
        cfg.bot.name = n.clone();
    }
    let retention = job
        .retention_days
        .map(|d| Duration::from_secs(u64::from(d) * 86_400))
        .or(tenant_cfg.as_ref().and_then(|t| t.retention))
        .unwrap_or(cfg.store.retention);
    let setup = async {
        cfg.validate().map_err(|e| e.to_string())?;
        let pinned = check_meeting_url(cfg, &job.meeting_url).await?;
        let blob = match (cfg.store.kind, &azure) {
            (StoreKind::AzureBlob, Some(az)) => Some(
                az.blob_store(cfg)
                    .map_err(|e| e.to_string())?
                    .with_retention(retention),
            ),
            _ => None,
        };
        let store: Arc<dyn TranscriptStore> = match &blob {
            Some(b) => Arc::new(b.clone()),
            None => Arc::new(LocalDirStore::new(cfg.paths.transcripts_dir())),
        };
        let keys = super::build_keys(cfg, azure.as_ref()).await?;
        let chain = blob.as_ref().map(|b| {
            let mac_keys = (cfg.audit_mac() == crate::config::AuditMac::Keys).then(|| keys.clone());
            Arc::new(BlobAuditChain::new(b.clone(), mac_keys))
        });
        let mut comps = crate::cli::prepare(cfg, store, keys)?;
        comps.gauges = state.backlog.clone();
        // Connect (and reconnect) only to the addresses just vetted.
        let mut settings = cfg.platform();
        // Media goes only to candidates the same policy admits (the meeting host's vetted
        // addresses included).
        settings.media = crate::platform::janus::candidates::MediaPolicy::Guarded {
            policy: cfg.url_policy(),
            server: pinned.iter().map(|a| a.ip()).collect(),
        };
        settings.janus.pinned_addrs = pinned;
        let platform =
            crate::platform::open(&Pii::new(job.meeting_url.clone()), &cfg.bot.name, &settings)
                .map_err(|e| e.to_string())?;
        Ok::<_, String>((comps, platform, blob, chain))
    };
    let (comps, platform, blob, chain) = match setup.await {
        Ok(x) => x,
        Err(e) => {
            fail(&mut reporter, e);
            reporter
                .finish(cfg.webhooks.drain + Duration::from_secs(30))
                .await;
            if let Some(l) = &lease {
                l.delete().await;
            }
            return EXIT_FATAL;
        }
    };
    reporter.set_receipts(blob, chain);

    // 7. Last check before joining: a stop requested during setup wins;
    //    otherwise mark the bot joining, conditionally, so a concurrent
    //    DELETE either cancels it first or sees it joining and asks it to
    //    leave (the poll below).
    if let Some(rec) = &records {
        match mark_joining(rec, &job).await {
            Ok(true) => {}
            Ok(false) => {
                let mut line = fatal_line(
                    Some(&job),
                    "stopped before joining (DELETE /v1/bots)".into(),
                );
                line.status = "cancelled";
                status::print(&line);
                reporter.send(line);
                reporter
                    .finish(cfg.webhooks.drain + Duration::from_secs(30))
                    .await;
                if let Some(l) = &lease {
                    l.delete().await;
                }
                return 0;
            }
            Err(e) => warn!(error = %e, "Could not mark the bot joining; continuing."),
        }
    }
    let stopper = records.clone().map(|rec| {
        let (tenant, bot_id, every) = (
            job.tenant.clone(),
            job.bot_id().to_string(),
            cfg.worker.stop_poll,
        );
        let tx = stop_tx.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Ok(Some(r)) = rec.get(&tenant, &bot_id).await {
                    if r.stop_requested {
                        info!("Stop requested through the API; leaving.");
                        let _ = tx.send(()).await;
                        return;
                    }
                }
            }
        })
    });

    // 8. The meeting.
    let req = JoinRequest {
        tenant: job.tenant.clone(),
        meeting_id: job.meeting_id.clone(),
        bot_name: cfg.bot.name.clone(),
        language: cfg.stt.language.clone(),
    };
    let mut emit = |l: &StatusLine| {
        status::print(l);
        reporter.send(l.clone());
    };
    let outcome = bot::run(req, comps, platform, stop_rx, &mut emit).await;

    // 9. Finish: report everything, then release the job.
    if let Some(h) = stopper {
        h.abort();
    }
    reporter
        .finish(cfg.webhooks.drain + Duration::from_secs(30))
        .await;
    if let Some(l) = &lease {
        l.delete().await;
    }
    if outcome.success {
        0
    } else {
        EXIT_FATAL
    }
}

/// Meeting URLs from jobs: `replay:` only when `urls.allow_replay`; others
/// must pass the URL guard (public addresses, or `urls.allow`) — checked again
/// here, at join time, not only when the job was submitted.
/// Returns the vetted addresses, to pin the connection to.
pub async fn check_meeting_url(
    cfg: &Config,
    url: &str,
) -> Result<Vec<std::net::SocketAddr>, String> {
    let url = url.trim();
    if url.starts_with("replay:") {
        return if cfg.urls.allow_replay {
            Ok(Vec::new())
        } else {
            Err("meeting_url: replay: URLs are disabled (urls.allow_replay)".into())
        };
    }
    cfg.url_policy()
        .check_meeting_url(url)
        .await
        .map(|c| c.addrs)
        .map_err(|e| format!("meeting_url: {e}"))
}

async fn take_one(
    q: &JobQueue,
    lease: Duration,
    wait: Duration,
    stop: &mut mpsc::Receiver<()>,
) -> Result<Option<Leased>, crate::azure::queue::QueueError> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut backoff = Duration::from_millis(500);
    loop {
        match q.receive(lease).await {
            Ok(Some(m)) => return Ok(Some(m)),
            Ok(None) => {}
            Err(e) if e.is_transient() => warn!(error = %e, "Queue unavailable; retrying."),
            Err(e) => return Err(e),
        }
        if tokio::time::Instant::now() + backoff > deadline {
            return Ok(None);
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.recv() => return Ok(None),
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// A leased job: its lease is renewed every third of `len` from the moment it
/// is taken until it is deleted, parked or deferred.
struct Lease {
    q: JobQueue,
    m: Arc<Mutex<Leased>>,
    id: String,
    dequeue_count: u32,
    renewer: tokio::task::JoinHandle<()>,
}

impl Lease {
    fn start(q: JobQueue, m: Leased, len: Duration, state: Arc<WorkerState>) -> Lease {
        let (id, dequeue_count) = (m.id.clone(), m.dequeue_count);
        let m = Arc::new(Mutex::new(m));
        let (q2, m2) = (q.clone(), m.clone());
        let renewer = tokio::spawn(async move {
            let every = len / 3;
            loop {
                tokio::time::sleep(every).await;
                let mut guard = m2.lock().await;
                let result = q2.renew(&mut guard, len).await;
                drop(guard);
                let label = if result.is_ok() { "ok" } else { "error" };
                state.metrics.inc(
                    "meetbot_worker_lease_renewals_total",
                    "Job lease renewals.",
                    &[("result", label)],
                    1.0,
                );
                if let Err(e) = result {
                    warn!(error = %e, "Could not renew the job lease; retrying at the next interval.");
                }
            }
        });
        Lease {
            q,
            m,
            id,
            dequeue_count,
            renewer,
        }
    }

    /// Stops renewing. Takes the lock first, so a renewal in flight finishes
    /// and its new pop receipt is kept.
    async fn stop_renewing(&self) -> tokio::sync::MutexGuard<'_, Leased> {
        let guard = self.m.lock().await;
        self.renewer.abort();
        guard
    }

    async fn delete(&self) {
        let m = self.stop_renewing().await;
        delete_job(&self.q, &m).await;
    }

    async fn park(&self, cfg: &Config, azure: Option<&AzureEnv>, why: &str) {
        let m = self.stop_renewing().await;
        park(cfg, azure, &self.q, &m, why).await;
    }

    async fn defer(&self, wait: Duration) -> Result<(), crate::azure::queue::QueueError> {
        let mut m = self.stop_renewing().await;
        self.q.renew(&mut m, wait).await
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

/// Marks the bot `joining` unless a stop was requested (false). Conditional
/// on the record's ETag, so it cannot overwrite a concurrent cancellation.
async fn mark_joining(rec: &Records, job: &Job) -> Result<bool, crate::azure::table::TableError> {
    for _ in 0..5 {
        let Some((r, etag)) = rec.get_with_etag(&job.tenant, job.bot_id()).await? else {
            return Ok(true);
        };
        if r.stop_requested || r.is_terminal() {
            return Ok(false);
        }
        let u = Update {
            status: Some("joining".into()),
            ..Default::default()
        };
        match rec.update_if(&job.tenant, job.bot_id(), &u, &etag).await {
            Ok(()) => return Ok(true),
            Err(crate::azure::table::TableError::PreconditionFailed) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

async fn delete_job(q: &JobQueue, m: &Leased) {
    for attempt in 0..5u32 {
        match q.delete(m).await {
            Ok(()) => {
                info!(message_id = %m.id, "Job finished and removed from the queue.");
                return;
            }
            Err(e) if e.is_transient() && attempt < 4 => {
                tokio::time::sleep(Duration::from_secs(1 << attempt)).await;
            }
            Err(e) => {
                // The job reappears after the lease; its record is final, so
                // the next worker only deletes it.
                warn!(error = %e, "Could not delete the finished job; it will be redelivered and skipped.");
                return;
            }
        }
    }
}

async fn park(cfg: &Config, azure: Option<&AzureEnv>, q: &JobQueue, m: &Leased, why: &str) {
    let Some(az) = azure else { return };
    let poison = match az.queue(cfg, &cfg.queue.poison_name) {
        Ok(p) => p,
        Err(e) => {
            error!(error = %e, "Cannot reach the poison queue.");
            return;
        }
    };
    let _ = poison.create_if_missing().await;
    match poison.send(&m.text, Duration::ZERO).await {
        Ok(_) => {
            warn!(message_id = %m.id, reason = why, "Parked a job in the poison queue.");
            delete_job(q, m).await;
        }
        Err(e) => error!(error = %e, "Could not park a job; it stays in the queue."),
    }
}

enum Claim {
    Run,
    AlreadyFinished(String),
    Cancelled,
}

async fn claim(rec: &Records, job: &Job, attempts: Option<u32>) -> Result<Claim, String> {
    let mut tries = 0;
    loop {
        tries += 1;
        let r = async {
            rec.ensure_table().await?;
            match rec.get(&job.tenant, job.bot_id()).await? {
                Some(r) if r.is_terminal() => return Ok(Claim::AlreadyFinished(r.status)),
                Some(r) if r.stop_requested => return Ok(Claim::Cancelled),
                Some(_) => {}
                None => match rec
                    .create(
                        &job.tenant,
                        job.bot_id(),
                        &job.meeting_id,
                        "queued",
                        job.join_at.as_deref(),
                    )
                    .await
                {
                    Ok(()) | Err(crate::azure::table::TableError::AlreadyExists) => {}
                    Err(e) => return Err(e),
                },
            }
            if let Some(n) = attempts {
                rec.update(
                    &job.tenant,
                    job.bot_id(),
                    &Update {
                        attempts: Some(n),
                        ..Default::default()
                    },
                )
                .await?;
            }
            Ok(Claim::Run)
        }
        .await;
        match r {
            Ok(c) => return Ok(c),
            Err(e) if e.is_transient() && tries < 4 => {
                tokio::time::sleep(Duration::from_secs(1 << tries)).await;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

struct ReporterCtx {
    records: Option<Records>,
    job: Job,
    state: Arc<WorkerState>,
    webhook_transcript: bool,
    receipts: Option<BlobStore>,
    chain: Option<Arc<BlobAuditChain>>,
    /// The receipt last appended to the chain, and where it went.
    appended: Option<(
        crate::audit::DeletionReceipt,
        crate::azure::audit_chain::Appended,
    )>,
    webhook: Option<WebhookTarget>,
    outbox: Option<JobQueue>,
    drain: Duration,
    seq: u64,
}

/// Where and how this job's status changes are POSTed.
struct WebhookTarget {
    dispatcher: WebhookDispatcher,
    url: Pii<String>,
    secret_ref: String,
    secrets: Arc<[WebhookSecret]>,
    /// Message-id stream: bot id and attempt, so ids are stable across
    /// retries of a message but a rerun of the job sends new messages.
    stream: String,
}

fn webhook_target(
    cfg: &Config,
    job: &Job,
    tenant: Option<&super::tenants::Tenant>,
    attempt: u32,
) -> Result<Option<WebhookTarget>, String> {
    let Some(w) = &job.webhook else {
        return Ok(None);
    };
    let secret = tenant
        .and_then(|t| t.webhook_secrets.get(&w.secret_ref))
        .ok_or_else(|| {
            format!(
                "webhook.secret_ref {:?} is not a webhook secret of tenant {} in the tenants file",
                w.secret_ref, job.tenant
            )
        })?;
    let secret =
        WebhookSecret::parse(secret.expose()).map_err(|e| format!("webhook secret: {e}"))?;
    let sender = WebhookSender::new(cfg.url_policy()).with_timeout(cfg.webhooks.timeout);
    let (dispatcher, mut reports) = WebhookDispatcher::spawn(
        sender,
        DispatcherOptions {
            schedule: Schedule {
                delays: cfg.webhooks.schedule.clone(),
                ..Schedule::standard()
            },
            in_process_attempts: cfg.webhooks.in_process_attempts,
        },
    );
    // The endpoint is named by its secret reference (tenant/name): a stable
    // reference that does not identify the receiver's host.
    let webhook = format!("{}/{}", job.tenant, w.secret_ref);
    tokio::spawn(async move {
        while let Some(r) = reports.recv().await {
            info!(webhook_id = %r.id, %webhook, attempts = r.attempts, result = %r.result.label(), "Webhook delivery finished.");
        }
    });
    Ok(Some(WebhookTarget {
        dispatcher,
        url: Pii::new(w.url.clone()),
        secret_ref: format!("{}/{}", job.tenant, w.secret_ref),
        secrets: Arc::from(vec![secret]),
        stream: format!("{}/{attempt}", job.bot_id()),
    }))
}

/// The webhook payload's `data` for a status line.
fn event_data(
    job: &Job,
    line: &StatusLine,
    receipt: Option<&serde_json::Value>,
    seq: u64,
) -> serde_json::Value {
    let mut d = json!({
        "bot_id": job.bot_id(),
        "tenant": job.tenant,
        "meeting_id": job.meeting_id,
        "status": line.status,
        "at": line.at,
        "sequence": seq,
    });
    if let Some(o) = d.as_object_mut() {
        if let Some(r) = &line.reason {
            o.insert("reason".into(), r.clone().into());
        }
        if let Some(r) = &line.recording_id {
            o.insert("recording_id".into(), r.clone().into());
        }
        if let Some(t) = &line.transcript {
            o.insert(
                "transcript".into(),
                serde_json::to_value(t).unwrap_or_default(),
            );
        }
        if let Some(r) = receipt {
            o.insert("receipt".into(), r.clone());
        }
    }
    d
}

/// Carries status lines, in order, to the bot record, the receipt blob and
/// the webhook, off the bot's path.
struct Reporter {
    tx: Option<mpsc::UnboundedSender<ReporterMsg>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

enum ReporterMsg {
    Line(Box<StatusLine>),
    Receipts(Option<BlobStore>, Option<Arc<BlobAuditChain>>),
}

impl Reporter {
    fn start(ctx: ReporterCtx) -> Reporter {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(report_loop(ctx, rx));
        Reporter {
            tx: Some(tx),
            task: Some(task),
        }
    }

    fn send(&mut self, line: StatusLine) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(ReporterMsg::Line(Box::new(line)));
        }
    }

    fn set_receipts(&mut self, store: Option<BlobStore>, chain: Option<Arc<BlobAuditChain>>) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(ReporterMsg::Receipts(store, chain));
        }
    }

    /// Waits for everything sent to be reported, at most `limit`.
    async fn finish(&mut self, limit: Duration) {
        self.tx.take();
        if let Some(task) = self.task.take() {
            if tokio::time::timeout(limit, task).await.is_err() {
                warn!("Reporting did not finish in time; some status updates may be missing.");
            }
        }
    }
}

async fn retry<T, E: std::fmt::Display, F, Fut>(what: &str, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    for attempt in 0..4u32 {
        match f().await {
            Ok(v) => return Some(v),
            Err(e) if attempt < 3 => {
                warn!(error = %e, "{what} failed; retrying.");
                tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
            }
            Err(e) => error!(error = %e, "{what} failed; giving up."),
        }
    }
    None
}

async fn report_loop(mut ctx: ReporterCtx, mut rx: mpsc::UnboundedReceiver<ReporterMsg>) {
    while let Some(msg) = rx.recv().await {
        let line = match msg {
            ReporterMsg::Receipts(s, c) => {
                ctx.receipts = s;
                ctx.chain = c;
                continue;
            }
            ReporterMsg::Line(l) => *l,
        };
        ctx.state.set_status(line.status);
        let mut receipt_json = line
            .receipt
            .as_ref()
            .map(|r| serde_json::to_value(r).unwrap_or_default());
        // The receipt goes to the tenant's chain before anyone is told the
        // recording is deleted.
        // Several lines carry the same receipt (`recording_deleted`, then
        // the final one): it is appended once.
        if let (Some(chain), Some(r)) = (&ctx.chain, &line.receipt) {
            let same = |a: &&(
                crate::audit::DeletionReceipt,
                crate::azure::audit_chain::Appended,
            )| { a.0 == r.receipt };
            if !ctx.appended.as_ref().is_some_and(|a| same(&a)) {
                let record = crate::audit::AuditRecord::Recording(r.receipt.clone());
                if let Some(a) = retry(
                    "Appending the deletion receipt to the tenant's audit chain",
                    || chain.append(&record),
                )
                .await
                {
                    ctx.appended = Some((r.receipt.clone(), a));
                }
            }
            if let (Some((_, a)), Some(serde_json::Value::Object(o))) =
                (ctx.appended.as_ref().filter(same), &mut receipt_json)
            {
                insert_chain_position(o, a);
            }
        }
        if let Some(rec) = &ctx.records {
            let u = Update {
                status: Some(line.status.to_string()),
                reason: line.reason.clone(),
                recording_id: line.recording_id.clone(),
                transcript: line
                    .transcript
                    .as_ref()
                    .map(|t| serde_json::to_value(t).unwrap_or_default()),
                receipt: receipt_json.clone(),
                ..Default::default()
            };
            let (tenant, bot_id) = (ctx.job.tenant.clone(), ctx.job.bot_id().to_string());
            retry("Updating the bot record", || {
                rec.update(&tenant, &bot_id, &u)
            })
            .await;
        }
        if let Some(w) = &ctx.webhook {
            ctx.seq += 1;
            let mut data = event_data(&ctx.job, &line, receipt_json.as_ref(), ctx.seq);
            if ctx.webhook_transcript && line.status == "transcript_committed" {
                if let Some(doc) = committed_document(&ctx, &line).await {
                    data["transcript_document"] = doc;
                }
            }
            let event = WebhookEvent::status(crate::webhook::message_id(&w.stream, ctx.seq), data);
            let d = Delivery::new(
                &event,
                &w.stream,
                w.url.clone(),
                &w.secret_ref,
                w.secrets.clone(),
            );
            if w.dispatcher.enqueue(d).is_err() {
                warn!("Webhook dispatcher stopped; a status change was not delivered.");
            }
        }
    }
    // Deliveries the worker could not finish go to the outbox for `serve`.
    if let Some(w) = ctx.webhook.take() {
        let pending = w.dispatcher.drain(ctx.drain).await;
        if !pending.is_empty() {
            hand_to_outbox(ctx.outbox.as_ref(), pending).await;
        }
    }
}

/// Adds where a receipt landed in its chain to the receipt's JSON.
fn insert_chain_position(
    o: &mut serde_json::Map<String, serde_json::Value>,
    a: &crate::azure::audit_chain::Appended,
) {
    o.insert("location".into(), a.location.clone().into());
    o.insert("chain_seq".into(), a.seq.into());
    o.insert("chain_hash".into(), a.hash.clone().into());
}

async fn committed_document(ctx: &ReporterCtx, line: &StatusLine) -> Option<serde_json::Value> {
    let bytes = match &ctx.receipts {
        Some(store) => store
            .read(&ctx.job.tenant, &format!("{}.json", ctx.job.meeting_id))
            .await
            .ok()?,
        None => tokio::fs::read(&line.transcript.as_ref()?.location)
            .await
            .ok()?,
    };
    serde_json::from_slice(&bytes).ok()
}

async fn hand_to_outbox(outbox: Option<&JobQueue>, pending: Vec<PendingDelivery>) {
    let Some(q) = outbox else {
        error!(undelivered = pending.len(), "Webhook deliveries left undelivered and no outbox queue is configured (azure.queue_url).");
        return;
    };
    let _ = q.create_if_missing().await;
    let now = crate::webhook::unix_ms_now();
    for p in pending {
        let delay = Duration::from_millis(p.due_unix_ms.saturating_sub(now))
            .min(crate::azure::queue::MAX_VISIBILITY);
        let text = match serde_json::to_string(&p) {
            Ok(t) => t,
            Err(_) => continue,
        };
        if retry("Handing a webhook delivery to the outbox", || {
            q.send(&text, delay)
        })
        .await
        .is_none()
        {
            error!(webhook_id = %p.id, "A webhook delivery was lost: the outbox queue is unreachable.");
        }
    }
}

/// Destroys recordings a previous run on this spool left behind (see step 0 of
/// [`run`]); an error when the spool or the audit log cannot be handled.
async fn sweep_orphans_at_start(cfg: &Config, azure: Option<&AzureEnv>) -> Result<(), String> {
    let spool = cfg.paths.spool_dir();
    let has_entries = std::fs::read_dir(&spool).is_ok_and(|mut d| d.next().is_some());
    if !has_entries {
        return Ok(());
    }
    let audit = crate::cli::open_audit(cfg)?;
    let receipts =
        crate::bot::sweep_spool_receipts(&crate::recording::RecordingConfig::new(spool), &audit)
            .map_err(|e| format!("sweeping the spool: {e:#}"))?;
    let chain = match azure {
        Some(az) if cfg.store.kind == StoreKind::AzureBlob && !receipts.is_empty() => {
            match super::build_audit_chain(cfg, az).await {
                Ok(c) => Some(c),
                Err(e) => {
                    error!(error = %e, "Swept orphaned recordings but cannot reach the audit chain; their receipts are only in the local audit log.");
                    None
                }
            }
        }
        _ => None,
    };
    for r in receipts {
        let mut line = json!({
            "status": "orphan_swept",
            "at": status::now_rfc3339(),
            "tenant": r.tenant,
            "meeting_id": r.meeting_id,
            "recording_id": r.recording_id,
            "receipt": r,
            "receipt_location": null,
        });
        if let Some(chain) = &chain {
            let record = crate::audit::AuditRecord::Recording(r.clone());
            if let Some(a) = retry(
                "Appending an orphan's deletion receipt to the audit chain",
                || chain.append(&record),
            )
            .await
            {
                line["receipt_location"] = a.location.into();
                line["chain_seq"] = a.seq.into();
                line["chain_hash"] = a.hash.into();
            }
        }
        println!("{line}");
    }
    Ok(())
}

async fn serve_health(listener: tokio::net::TcpListener, state: Arc<WorkerState>) {
    use axum::http::StatusCode;
    use axum::routing::get;
    let s1 = state.clone();
    let s2 = state.clone();
    let app = axum::Router::new()
        .route("/healthz", get(|| async { (StatusCode::OK, "ok\n") }))
        .route(
            "/readyz",
            get(move || {
                let s = s1.clone();
                async move {
                    // Ready from the moment this worker has its job until it exits,
                    // also while it reports after the meeting: KEDA counts a Job as
                    // pending (and starts one fewer pod for the queue) while its pod
                    // is not Ready, which is right only before the job is taken.
                    let st = s.status.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    if st.is_empty() {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "no job taken yet\n".to_string(),
                        )
                    } else {
                        (StatusCode::OK, format!("{st}\n"))
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let s = s2.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            super::metrics::CONTENT_TYPE,
                        )],
                        s.render_metrics(),
                    )
                }
            }),
        );
    if let Err(e) = axum::serve(listener, app).await {
        warn!(error = %e, "Health server stopped.");
    }
}
