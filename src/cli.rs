//! Command line: `meetbot join`, `meetbot stt-serve`, `meetbot audit verify`, `meetbot bench`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::{Parser, Subcommand};
use tokio::sync::mpsc;
use tracing::info;

use crate::audit::AuditLog;
use crate::bot::{self, Components, JoinRequest};
use crate::config::{Config, SttKind};
use crate::pii::{Pii, Secret};
use crate::recording::{KeyProvider, RecordingConfig};
use crate::status::{self, StatusLine};
use crate::store::{local::LocalDirStore, validate_id};
use crate::stt::openai::{OpenAiConfig, OpenAiProvider};
use crate::stt::retry::RetryPolicy;
use crate::stt::SttProvider;

/// meetbot: joins a meeting, transcribes every participant, keeps audio only
/// as an encrypted ephemeral recording, commits the transcript and destroys
/// the recording with a receipt.
#[derive(Debug, Parser)]
#[command(name = "meetbot", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file layered over the built-in defaults.
    #[arg(long, global = true, env = "MEETBOT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Join a meeting and run it to its end (status lines on stdout, logs on stderr).
    Join(JoinArgs),
    /// Serve the embedded Whisper engine over the OpenAI-compatible transcription API.
    SttServe(SttServeArgs),
    /// Audit log tools.
    Audit {
        /// What to do.
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Print performance figures (audio path, Whisper real-time factor).
    Bench(crate::benchcmd::BenchArgs),
    /// Fleet mode: take one job (--job-file, MEETBOT_JOB, else the queue) and run its meeting.
    Worker(WorkerArgs),
    /// Fleet mode: serve the control API (POST/GET/DELETE /v1/bots).
    Serve,
    /// Fleet mode: delete expired transcripts and orphaned recordings, with receipts.
    Sweep(SweepArgs),
    /// Check the configuration (built-in defaults, --config file, MEETBOT_* variables) and
    /// print the effective settings as TOML, secrets redacted. Exits 2 when it is invalid.
    Config,
}

/// `meetbot worker`.
#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// Job JSON file (instead of MEETBOT_JOB or the queue).
    #[arg(long, value_name = "FILE")]
    pub job_file: Option<PathBuf>,
}

/// `meetbot sweep`.
#[derive(Debug, clap::Args)]
pub struct SweepArgs {
    /// Report what would be deleted without deleting anything.
    #[arg(long)]
    pub dry_run: bool,
}

/// `meetbot join`.
#[derive(Debug, clap::Args)]
pub struct JoinArgs {
    /// Meeting URL. Supported: replay:<path/to/manifest.json>.
    #[arg(value_name = "MEETING_URL")]
    pub url: String,
    /// Tenant the transcript belongs to (default: bot.tenant).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Meeting id used to name the transcript (default: a new random id).
    #[arg(long)]
    pub meeting_id: Option<String>,
    /// Display name in the meeting (default: bot.name).
    #[arg(long)]
    pub bot_name: Option<String>,
    /// STT provider: embedded or openai (default: stt.provider).
    #[arg(long, value_name = "PROVIDER")]
    pub stt: Option<SttKind>,
    /// OpenAI-compatible API base, e.g. http://127.0.0.1:8799/v1 (default: stt.url).
    #[arg(long, value_name = "BASE")]
    pub stt_url: Option<String>,
}

/// `meetbot stt-serve`.
#[derive(Debug, clap::Args)]
pub struct SttServeArgs {
    /// Listen address (default: stt_serve.listen).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Serve on a non-loopback address without an API key (only when something
    /// else, e.g. a network policy, controls who can connect).
    #[arg(long)]
    pub insecure_no_auth: bool,
}

/// `meetbot audit …`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify the hash chain of the local audit log, or (--tenant) a
    /// tenant's receipt chain in Blob Storage (fleet mode).
    Verify {
        /// Audit log (default: paths.audit_log).
        #[arg(long, value_name = "FILE", conflicts_with = "tenant")]
        log: Option<PathBuf>,
        /// Verify this tenant's chain in Blob Storage (`_fleet`: receipts of
        /// orphans whose tenant was unreadable), with the fleet configuration.
        #[arg(long, value_name = "TENANT")]
        tenant: Option<String>,
    },
}

/// Disables core dumps and marks the process non-dumpable (no ptrace or
/// /proc/<pid>/mem access by same-user processes). Failures are reported on
/// stderr but do not stop the bot: neither call can fail on Linux in practice.
pub fn harden_process() {
    use rustix::process::{setrlimit, Resource, Rlimit};
    if let Err(e) = setrlimit(
        Resource::Core,
        Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    ) {
        eprintln!("meetbot: warning: cannot disable core dumps: {e}");
    }
    if let Err(e) =
        rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
    {
        eprintln!("meetbot: warning: cannot mark the process non-dumpable: {e}");
    }
}

/// Loads configuration from the defaults, the file and the environment.
pub fn load_config(cli: &Cli) -> Result<Config, crate::config::ConfigError> {
    Config::load(cli.config.as_deref(), std::env::vars())
}

/// Sets up stderr logging.
pub fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// Builds the configured STT provider.
pub fn build_stt(cfg: &Config) -> anyhow::Result<Arc<dyn SttProvider>> {
    match cfg.stt.provider {
        SttKind::Openai => {
            let key = cfg.stt.api_key.expose();
            let p = OpenAiProvider::new(OpenAiConfig {
                base_url: cfg.stt.url.clone(),
                api_key: (!key.is_empty()).then(|| Secret::new(key.clone())),
                model: cfg.stt.model.clone(),
                language: Some(cfg.stt.language.clone()),
                timeout: cfg.stt.timeout,
            })
            .map_err(|e| anyhow!("stt.url: {e}"))?;
            Ok(Arc::new(p))
        }
        SttKind::Embedded => build_embedded(cfg),
    }
}

#[cfg(feature = "whisper")]
fn build_embedded(cfg: &Config) -> anyhow::Result<Arc<dyn SttProvider>> {
    let p = crate::stt::whisper::WhisperProvider::load(&cfg.stt.model_dir, cfg.stt.threads)
        .map_err(|e| anyhow!("embedded STT: {e}"))?;
    Ok(Arc::new(p))
}

#[cfg(not(feature = "whisper"))]
fn build_embedded(_cfg: &Config) -> anyhow::Result<Arc<dyn SttProvider>> {
    Err(anyhow!(
        "embedded STT: this meetbot was built without the `whisper` feature; use --stt openai --stt-url <BASE>"
    ))
}

/// Runs `meetbot join`. Returns the process exit code.
pub async fn join(mut cfg: Config, args: JoinArgs) -> i32 {
    // Signals first: a SIGTERM during start-up (key setup, sweep, model load)
    // must not kill the process without a status line. Stops that arrive
    // before the meeting starts wait in the channel.
    let (stop_tx, stop_rx) = mpsc::channel(4);
    forward_signals(stop_tx);
    let tenant = args
        .tenant
        .clone()
        .unwrap_or_else(|| cfg.bot.tenant.clone());
    let meeting_id = args
        .meeting_id
        .clone()
        .unwrap_or_else(|| format!("m-{}", uuid::Uuid::new_v4().simple()));
    // Exit 2 for bad configuration or arguments, 1 for everything else.
    let fatal_with = |code: i32, reason: String| {
        let safe = |id: &str| {
            if validate_id("id", id).is_ok() {
                id.to_string()
            } else {
                String::new()
            }
        };
        status::print(&StatusLine {
            status: "fatal",
            at: status::now_rfc3339(),
            meeting_id: safe(&meeting_id),
            tenant: safe(&tenant),
            recording_id: None,
            reason: Some(reason),
            transcript: None,
            receipt: None,
            transcribing: None,
        });
        code
    };
    let usage_error = |reason: String| fatal_with(2, reason);
    let fatal_early = |reason: String| fatal_with(1, reason);
    if let Some(kind) = args.stt {
        cfg.stt.provider = kind;
    }
    if let Some(url) = &args.stt_url {
        cfg.stt.url = url.clone();
    }
    if let Some(name) = &args.bot_name {
        cfg.bot.name = name.clone();
    }
    if let Err(e) = cfg.validate() {
        return usage_error(e.to_string());
    }
    if let Err(e) = validate_id("tenant", &tenant) {
        return usage_error(format!("--tenant: {e}"));
    }
    if let Err(e) = validate_id("meeting id", &meeting_id) {
        return usage_error(format!("--meeting-id: {e}"));
    }
    let url = Pii::new(args.url);

    // Everything that can be checked before joining is checked here, so bad
    // input fails fast with nothing recorded.
    let platform = match crate::platform::open(&url, &cfg.bot.name, &cfg.platform()) {
        Ok(p) => p,
        Err(e) => return fatal_early(e.to_string()),
    };
    let keys = match crate::fleet::build_keys(&cfg, None).await {
        Ok(k) => k,
        Err(e) => return fatal_early(e),
    };
    let store: Arc<dyn crate::store::TranscriptStore> = match cfg.store.kind {
        crate::config::StoreKind::Local => {
            Arc::new(LocalDirStore::new(cfg.paths.transcripts_dir()))
        }
        crate::config::StoreKind::AzureBlob => {
            match crate::fleet::AzureEnv::from_config(&cfg).and_then(|az| az.blob_store(&cfg)) {
                Ok(s) => Arc::new(s),
                Err(e) => return usage_error(e.to_string()),
            }
        }
    };
    let comps = match prepare(&cfg, store, keys) {
        Ok(c) => c,
        Err(e) => return fatal_early(e),
    };
    let req = JoinRequest {
        tenant,
        meeting_id,
        bot_name: cfg.bot.name.clone(),
        language: cfg.stt.language.clone(),
    };
    let mut emit = |l: &StatusLine| status::print(l);
    let outcome = bot::run(req, comps, platform, stop_rx, &mut emit).await;
    if outcome.success {
        0
    } else {
        1
    }
}

/// Opens `paths.audit_log` and checks it can take another receipt. A log that
/// cannot must stop a command before anything is recorded or swept: a deletion
/// without its receipt is not allowed. The error is a status-line reason.
pub fn open_audit(cfg: &Config) -> Result<AuditLog, String> {
    AuditLog::open(cfg.paths.audit_log())
        .map(|a| a.with_lock_timeout(cfg.audit.lock_timeout))
        .and_then(|a| a.check_appendable().map(|()| a))
        .map_err(|e| format!("audit log: {e} (inspect it with `meetbot audit verify`)"))
}

/// Builds what a run needs besides the platform, store and keys: the audit
/// log (checked appendable), the spool (orphans swept, with receipts) and the
/// STT provider. Errors are the reason for a `fatal` status line.
pub fn prepare(
    cfg: &Config,
    store: Arc<dyn crate::store::TranscriptStore>,
    keys: Arc<dyn KeyProvider>,
) -> Result<Components, String> {
    let audit = Arc::new(open_audit(cfg)?);
    let recording = RecordingConfig {
        spool_dir: cfg.paths.spool_dir(),
        memory_budget_bytes: (cfg.recording.memory_budget_kib * 1024) as usize,
        chunk_bytes: (cfg.recording.chunk_kib * 1024) as usize,
    };
    if let Err(e) = bot::sweep_spool(&recording, &audit) {
        return Err(format!(
            "sweeping the spool {}: {e:#}",
            recording.spool_dir.display()
        ));
    }
    let stt = build_stt(cfg).map_err(|e| format!("{e:#}"))?;
    info!(provider = stt.name(), model = stt.model(), "STT ready.");
    Ok(Components {
        keys,
        stt,
        store,
        audit,
        recording,
        vad: cfg.vad.clone(),
        lifecycle: cfg.lifecycle(),
        retry: RetryPolicy {
            attempts: cfg.stt.attempts,
            attempt_timeout: cfg.stt.timeout,
            initial_backoff: cfg.stt.initial_backoff,
            max_backoff: cfg.stt.max_backoff,
        },
        stt_concurrency: cfg.stt.concurrency,
        stt_inflight_budget_bytes: cfg.stt.inflight_budget_kib * 1024,
        gauges: Arc::new(bot::BacklogGauges::default()),
    })
}

/// Installs SIGTERM/SIGINT handlers now (synchronously) and forwards one
/// message per signal from a task.
pub fn forward_signals(tx: mpsc::Sender<()>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!(
            "Cannot install signal handlers; SIGTERM will kill the bot without cleanup."
        );
        return;
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            if tx.send(()).await.is_err() {
                return;
            }
        }
    });
}

/// Runs `meetbot stt-serve`.
pub async fn stt_serve(cfg: Config, args: SttServeArgs) -> anyhow::Result<()> {
    let listen = args.listen.unwrap_or_else(|| cfg.stt_serve.listen.clone());
    let addr: std::net::SocketAddr = listen
        .parse()
        .with_context(|| format!("--listen {listen:?} is not an address like 127.0.0.1:8799"))?;
    let key = cfg.stt_serve.api_key.expose();
    // Before the model loads: a refused start is immediate.
    crate::stt::serve::check_exposure(addr, !key.is_empty(), args.insecure_no_auth)
        .map_err(anyhow::Error::msg)?;
    if key.is_empty() && !addr.ip().to_canonical().is_loopback() {
        tracing::warn!(%addr, "stt-serve runs without an API key on a non-loopback address (--insecure-no-auth).");
    }
    let mut engine_cfg = cfg.clone();
    engine_cfg.stt.provider = SttKind::Embedded;
    let provider = build_stt(&engine_cfg)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let s = &cfg.stt_serve;
    let opts = crate::stt::serve::ServeOptions {
        api_key: (!key.is_empty()).then(|| Secret::new(key.clone())),
        max_concurrency: s.max_concurrency,
        max_body_bytes: s.max_body_bytes,
        header_timeout: s.header_timeout,
        body_timeout: s.body_timeout,
        max_connections: s.max_connections,
        ..Default::default()
    };
    info!(listen = %listener.local_addr()?, "stt-serve listening.");
    let shutdown = async {
        use tokio::signal::unix::{signal, SignalKind};
        if let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        } else {
            std::future::pending::<()>().await;
        }
    };
    crate::stt::serve::serve(listener, provider, opts, shutdown).await?;
    Ok(())
}

/// Runs `meetbot audit verify`. Returns the exit code.
pub fn audit_verify(cfg: &Config, log: Option<PathBuf>) -> i32 {
    let path = log.unwrap_or_else(|| cfg.paths.audit_log());
    match crate::audit::verify(&path) {
        Ok(r) => {
            println!(
                "{}",
                serde_json::json!({"ok": true, "log": path.display().to_string(), "entries": r.entries, "head_hash": r.head_hash})
            );
            0
        }
        Err(e) => {
            println!(
                "{}",
                serde_json::json!({"ok": false, "log": path.display().to_string(), "error": e.to_string()})
            );
            eprintln!(
                "meetbot: audit log {} failed verification: {e}",
                path.display()
            );
            1
        }
    }
}

/// Runs `meetbot audit verify --tenant T`: verifies the tenant's receipt
/// chain in Blob Storage. Prints one JSON report line; exit 0 if intact, 1 if
/// not (naming the first bad entry), 2 if it could not be checked.
pub async fn audit_verify_chain(cfg: &Config, tenant: &str) -> i32 {
    use crate::azure::audit_chain::ChainError;
    if tenant != crate::audit_chain::FLEET_CHAIN {
        if let Err(e) = crate::store::validate_id("tenant", tenant) {
            eprintln!("meetbot: --tenant: {e}");
            return 2;
        }
    }
    if cfg.store.kind != crate::config::StoreKind::AzureBlob {
        eprintln!("meetbot: --tenant verifies the chain in Blob Storage; set store.kind = \"azure_blob\" and [azure] (the fleet configuration)");
        return 2;
    }
    let chain = match crate::fleet::AzureEnv::from_config(cfg) {
        Ok(az) => crate::fleet::build_audit_chain(cfg, &az).await,
        Err(e) => Err(e.to_string()),
    };
    let chain = match chain {
        Ok(c) => c,
        Err(e) => {
            eprintln!("meetbot: {e}");
            return 2;
        }
    };
    match chain.verify(tenant).await {
        Ok(r) => {
            println!(
                "{}",
                serde_json::json!({"ok": true, "tenant": tenant, "entries": r.entries,
                    "last_hash": r.last_hash, "head_seq": r.head_seq,
                    "entries_beyond_head": r.beyond_head, "authenticated": r.authenticated})
            );
            if !r.authenticated && r.entries > 0 {
                eprintln!("meetbot: warning: the chain of {tenant} is intact but not authenticated (audit.mac = \"none\"): a consistent rewrite by someone who can write the container would not be detected");
            }
            0
        }
        Err(ChainError::Tampered(f)) => {
            println!(
                "{}",
                serde_json::json!({"ok": false, "tenant": tenant, "first_bad": f.blob,
                    "seq": f.seq, "error": f.problem})
            );
            eprintln!("meetbot: audit chain of {tenant} failed verification: {f}");
            1
        }
        Err(e) => {
            println!(
                "{}",
                serde_json::json!({"ok": false, "tenant": tenant, "error": e.to_string(), "checked": false})
            );
            eprintln!("meetbot: could not verify the audit chain of {tenant}: {e}");
            2
        }
    }
}

/// Runs `meetbot worker`. Returns the exit code.
pub async fn worker(cfg: Config, args: WorkerArgs) -> i32 {
    use crate::fleet::worker::JobSource;
    let source = match (args.job_file, std::env::var("MEETBOT_JOB")) {
        (Some(f), _) => JobSource::File(f),
        (None, Ok(j)) if !j.trim().is_empty() => JobSource::Env(j),
        _ => JobSource::Queue,
    };
    crate::fleet::worker::run(cfg, source).await
}

/// Bounded wait used when the process exits while blocking work (a Whisper
/// call) is still running.
pub const RUNTIME_SHUTDOWN: Duration = Duration::from_millis(500);
