//! `meetbot bench`: figures for the audio path and the embedded Whisper engine.
//! Benchmarks print numbers; they never pass or fail on speed.

use std::path::PathBuf;

use anyhow::anyhow;

use crate::config::Config;
use crate::core::media::ParticipantId;
use crate::recording::{DataKey, EphemeralKeys, Recording, RecordingConfig, RecordingMeta};

/// `meetbot bench …`
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Which benchmark.
    #[command(subcommand)]
    pub which: BenchKind,
}

/// The benchmarks.
#[derive(Debug, clap::Subcommand)]
pub enum BenchKind {
    /// Opus decode + resample + VAD + encryption, next to Opus decode alone (× realtime per core).
    Audio {
        /// Speech to encode into Opus packets (any supported WAV).
        #[arg(long)]
        wav: PathBuf,
        /// Simulated participants.
        #[arg(long, default_value_t = 4)]
        participants: usize,
        /// Timed repeats (the median is reported).
        #[arg(long, default_value_t = 7)]
        repeats: usize,
    },
    /// Embedded Whisper real-time factor (processing time / audio time).
    Whisper {
        /// Speech to transcribe (any supported WAV).
        #[arg(long)]
        wav: PathBuf,
        /// Timed runs.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
}

/// Runs a benchmark and prints its figures as one JSON line.
pub async fn run(cfg: Config, args: BenchArgs) -> anyhow::Result<()> {
    match args.which {
        BenchKind::Audio {
            wav,
            participants,
            repeats,
        } => {
            let packets = crate::bench::opus_packets_from_wav(&wav)
                .map_err(|e| anyhow!("{}: {e}", wav.display()))?;
            // Encryption as the real recording does it: AES-256-GCM chunks kept
            // in memory (a budget large enough that nothing spills). The
            // recording lives in the configured spool like a meeting's, never in
            // $TMPDIR: the container's root filesystem is read-only.
            let rcfg = RecordingConfig {
                spool_dir: cfg.paths.spool_dir(),
                memory_budget_bytes: 1 << 30,
                chunk_bytes: 16 * 1024,
            };
            let mut rec = Recording::create(
                &rcfg,
                DataKey::generate(),
                EphemeralKeys::placeholder(),
                RecordingMeta {
                    meeting_id: "bench".into(),
                    tenant: "bench".into(),
                },
            )?;
            let who = ParticipantId("p".into());
            let mut failures = 0u64;
            let report =
                crate::bench::audio_path_with_hook(&packets, participants, repeats, &mut |p| {
                    if rec.append(&who, p).is_err() {
                        failures += 1;
                    }
                });
            let stats = rec.stats();
            rec.destroy()?;
            if failures > 0 {
                return Err(anyhow!(
                    "{failures} recording appends failed during the benchmark"
                ));
            }
            eprintln!("{report}");
            println!(
                "{}",
                serde_json::json!({
                    "bench": "audio_path",
                    "participants": report.participants,
                    "audio_seconds": report.audio_seconds,
                    "repeats": report.repeats,
                    "decode_only_x_realtime_per_core": round(report.decode_x_realtime),
                    "full_path_x_realtime_per_core": round(report.full_x_realtime),
                    "full_over_decode": round(report.full_to_decode),
                    "utterances": report.utterances,
                    "encrypted_chunks": stats.chunks,
                    "ciphertext_bytes": stats.ciphertext_bytes,
                })
            );
            Ok(())
        }
        BenchKind::Whisper { wav, runs } => whisper(cfg, wav, runs),
    }
}

#[cfg(feature = "whisper")]
fn whisper(cfg: Config, wav: PathBuf, runs: usize) -> anyhow::Result<()> {
    use crate::stt::whisper::{bench_rtf, WhisperSettings};
    use anyhow::Context as _;
    let bytes = std::fs::read(&wav).with_context(|| format!("cannot read {}", wav.display()))?;
    let settings = WhisperSettings {
        threads: cfg.stt.threads,
        ..WhisperSettings::default()
    };
    let r =
        bench_rtf(&cfg.stt.model_dir, &bytes, settings, runs.max(1)).map_err(|e| anyhow!("{e}"))?;
    println!(
        "{}",
        serde_json::json!({
            "bench": "whisper_rtf",
            "threads": cfg.stt.threads,
            "compute_type": format!("{:?}", r.settings.compute_type),
            "audio_seconds": r.audio.as_secs_f64(),
            "load_seconds": r.load.as_secs_f64(),
            "runs": r.runs.iter().map(|d| d.as_secs_f64()).collect::<Vec<_>>(),
            "best_rtf": round(r.best_rtf),
            "mean_rtf": round(r.mean_rtf),
        })
    );
    Ok(())
}

#[cfg(not(feature = "whisper"))]
fn whisper(_cfg: Config, _wav: PathBuf, _runs: usize) -> anyhow::Result<()> {
    Err(anyhow!("built without the `whisper` feature"))
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
