//! The embedded engine: Whisper in-process through CTranslate2 (`ct2rs`).
//!
//! The model is faster-whisper `tiny.en` (MIT, Systran), fetched into a models
//! folder by `scripts/fetch-model`. Audio goes in as 16 kHz mono samples and
//! never leaves memory. Transcription runs on the blocking thread pool so it
//! does not stall the async runtime; CTranslate2 queues concurrent calls.
//!
//! This uses `ct2rs`'s low-level model (`ct2rs::sys::Whisper`) with our own
//! front end ([`super::mel`]) and prompt, because `ct2rs::Whisper`'s
//! high-level `generate` normalises features per frame and always prompts
//! with `<|en|><|transcribe|>`, which English-only (`.en`) models were not
//! trained with: on a 23 s clip it returned one word, and in timestamp mode it
//! stopped after the first timestamp (both observed). Here `.en` models get
//! the plain `<|startoftranscript|>` prompt, as in OpenAI's and
//! faster-whisper's code, and timestamps come from Whisper's timestamp tokens.
//!
//! Whisper reads audio in 30 s windows (shorter input is padded), so an
//! utterance costs one encoder pass per started 30 s plus the decoding of its
//! words. Windows are decoded in batches of [`BATCH_WINDOWS`].
//!
//! Silence and noise: a window whose no-speech probability is above 0.6 with
//! an average log-probability under −1 is dropped (faster-whisper's rule);
//! a window whose text degenerates into repetition is decoded again with beam
//! search and dropped if it still repeats; non-speech annotations such as
//! `[BLANK_AUDIO]` are removed by [`super::text::clean_segments`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ct2rs::sys::{StorageView, Whisper as Model};
use ct2rs::tokenizers::hf::Tokenizer;
use ct2rs::Tokenizer as _;

use super::mel::{MelFrontEnd, WINDOW_FRAMES, WINDOW_SAMPLES};
use super::text::{clean_segments, samples_to_ms, secs_to_ms};
use super::wav::decode_wav;
use super::{SttError, SttProvider, SttSegment};

/// Where `scripts/fetch-model` puts the model by default, relative to the repository root.
pub const DEFAULT_MODEL_DIR: &str = "models/faster-whisper-tiny.en";

/// Files a model folder must hold.
pub const REQUIRED_FILES: [&str; 5] = [
    "model.bin",
    "config.json",
    "tokenizer.json",
    "vocabulary.txt",
    "preprocessor_config.json",
];

/// 30 s windows decoded together; bounds feature memory to ~4 MB per window.
pub const BATCH_WINDOWS: usize = 4;

/// Above this no-speech probability (with a low log-probability) a window is silence.
const NO_SPEECH_THRESHOLD: f32 = 0.6;
/// Average log-probability under which a likely-silent window is dropped.
const LOGPROB_THRESHOLD: f32 = -1.0;
/// Peak amplitude under which a window is digital silence (−60 dBFS).
const SILENCE_PEAK: f32 = 1e-3;
/// Beam width of the second try for a window that degenerated into repetition.
const FALLBACK_BEAM: usize = 5;

/// Numeric precision of the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComputeType {
    /// 8-bit integer weights, quantized on load. Faster on CPUs.
    Int8,
    /// 32-bit float weights.
    Float32,
}

impl ComputeType {
    fn to_ct2(self) -> ct2rs::ComputeType {
        match self {
            ComputeType::Int8 => ct2rs::ComputeType::INT8,
            ComputeType::Float32 => ct2rs::ComputeType::FLOAT32,
        }
    }
}

impl fmt::Display for ComputeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ComputeType::Int8 => "int8",
            ComputeType::Float32 => "float32",
        })
    }
}

/// Engine settings for [`WhisperProvider::load_with`].
#[derive(Debug, Clone, PartialEq)]
pub struct WhisperSettings {
    /// CPU threads for one transcription; 0 lets CTranslate2 choose. Default 2.
    pub threads: usize,
    /// Precision. Default [`ComputeType::Int8`]: on 2 cores it ran a 23 s
    /// clip in 0.065 × real time against 0.108 for float32, same words.
    pub compute_type: ComputeType,
    /// Beam width; 1 is greedy decoding. Default 5 (faster-whisper's default):
    /// it cost about 10 % more than greedy here and is steadier on hard audio.
    pub beam_size: usize,
    /// Spoken language as a Whisper language code; used only by multilingual
    /// models (`.en` models are English-only). Default `en`.
    pub language: String,
}

impl Default for WhisperSettings {
    fn default() -> Self {
        WhisperSettings {
            threads: 2,
            compute_type: ComputeType::Int8,
            beam_size: 5,
            language: "en".to_string(),
        }
    }
}

/// The loaded model with its tokenizer, front end and prompt.
struct Engine {
    model: Model,
    tokenizer: Tokenizer,
    mel: MelFrontEnd,
    prompt: Vec<String>,
    beam_size: usize,
}

/// The embedded Whisper [`SttProvider`].
pub struct WhisperProvider {
    engine: Arc<Engine>,
    model: String,
    settings: WhisperSettings,
}

impl fmt::Debug for WhisperProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WhisperProvider")
            .field("model", &self.model)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Checks that `model_dir` holds every file in [`REQUIRED_FILES`], naming the
/// first one missing and how to fetch the model.
pub fn check_model_dir(model_dir: &Path) -> Result<(), SttError> {
    let fetch = format!(
        "fetch the model with `scripts/fetch-model {}`",
        model_dir.display()
    );
    if !model_dir.is_dir() {
        return Err(SttError::Permanent(format!(
            "the Whisper model folder {} does not exist; {fetch}",
            model_dir.display()
        )));
    }
    for name in REQUIRED_FILES {
        let path = model_dir.join(name);
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() && m.len() > 0 => {}
            Ok(_) => {
                return Err(SttError::Permanent(format!(
                    "the Whisper model file {} is empty or not a file; {fetch}",
                    path.display()
                )))
            }
            Err(e) => {
                return Err(SttError::Permanent(format!(
                    "the Whisper model file {} is missing ({e}); {fetch}",
                    path.display()
                )))
            }
        }
    }
    Ok(())
}

impl WhisperProvider {
    /// Loads the model in `model_dir` with `threads` CPU threads and the
    /// default [`WhisperSettings`] otherwise.
    pub fn load(model_dir: &Path, threads: usize) -> Result<Self, SttError> {
        Self::load_with(
            model_dir,
            WhisperSettings {
                threads,
                ..WhisperSettings::default()
            },
        )
    }

    /// Loads the model in `model_dir` with explicit settings. Slow (it reads
    /// and may quantize ~75 MB): call it once at start-up, off the async
    /// runtime's worker threads.
    pub fn load_with(model_dir: &Path, settings: WhisperSettings) -> Result<Self, SttError> {
        check_model_dir(model_dir)?;
        if settings.beam_size == 0 {
            return Err(SttError::Permanent(
                "the Whisper beam size must be at least 1".into(),
            ));
        }
        let language = settings.language.trim();
        if language.is_empty() || !language.chars().all(|c| c.is_ascii_lowercase()) {
            return Err(SttError::Permanent(format!(
                "the Whisper language {language:?} is not a language code such as \"en\""
            )));
        }
        let cannot_load = |e: anyhow::Error| {
            SttError::Permanent(format!(
                "cannot load the Whisper model from {}: {e:#}; re-fetch it with `scripts/fetch-model {}`",
                model_dir.display(),
                model_dir.display()
            ))
        };
        let config = ct2rs::Config {
            device: ct2rs::Device::CPU,
            compute_type: settings.compute_type.to_ct2(),
            num_threads_per_replica: settings.threads,
            ..ct2rs::Config::default()
        };
        let started = Instant::now();
        let model = Model::new(model_dir, config).map_err(cannot_load)?;
        let tokenizer = Tokenizer::new(model_dir).map_err(cannot_load)?;
        let n_mels = model.n_mels();
        if n_mels == 0 || n_mels > 256 {
            return Err(SttError::Permanent(format!(
                "the Whisper model in {} declares {n_mels} mel bands; re-fetch it with `scripts/fetch-model`",
                model_dir.display()
            )));
        }
        let mut prompt = vec!["<|startoftranscript|>".to_string()];
        if model.is_multilingual() {
            prompt.push(format!("<|{language}|>"));
            prompt.push("<|transcribe|>".to_string());
        }
        let name = model_name(model_dir);
        tracing::info!(
            model = %name,
            compute_type = %settings.compute_type,
            threads = settings.threads,
            beam_size = settings.beam_size,
            load_ms = started.elapsed().as_millis() as u64,
            "Whisper model loaded."
        );
        Ok(WhisperProvider {
            engine: Arc::new(Engine {
                model,
                tokenizer,
                mel: MelFrontEnd::new(n_mels),
                prompt,
                beam_size: settings.beam_size,
            }),
            model: name,
            settings,
        })
    }

    /// The settings the engine runs with.
    pub fn settings(&self) -> &WhisperSettings {
        &self.settings
    }

    /// Transcribes on the calling thread. Prefer [`SttProvider::transcribe`]
    /// in async code.
    pub fn transcribe_blocking(&self, samples: &[f32]) -> Result<Vec<SttSegment>, SttError> {
        self.engine.transcribe(samples)
    }
}

impl Engine {
    fn options(&self, beam_size: usize) -> ct2rs::WhisperOptions {
        ct2rs::WhisperOptions {
            beam_size,
            return_scores: true,
            return_no_speech_prob: true,
            ..ct2rs::WhisperOptions::default()
        }
    }

    /// Runs the model on up to [`BATCH_WINDOWS`] windows.
    fn generate(
        &self,
        windows: &[&[f32]],
        beam_size: usize,
    ) -> Result<Vec<ct2rs::sys::WhisperGenerationResult>, SttError> {
        let n_mels = self.mel.n_mels();
        let mut features = Vec::with_capacity(windows.len() * n_mels * WINDOW_FRAMES);
        for w in windows {
            self.mel.window_features(w, &mut features);
        }
        let shape = [windows.len(), n_mels, WINDOW_FRAMES];
        let failed = |e: anyhow::Error| SttError::Permanent(format!("Whisper failed: {e:#}"));
        let view = StorageView::new(&shape, &mut features, ct2rs::Device::CPU).map_err(failed)?;
        let prompts = vec![self.prompt.clone(); windows.len()];
        self.model
            .generate(&view, &prompts, &self.options(beam_size))
            .map_err(failed)
    }

    fn transcribe(&self, samples: &[f32]) -> Result<Vec<SttSegment>, SttError> {
        let audio_ms = samples_to_ms(samples.len());
        // Windows that are digital silence never reach the model: Whisper
        // hallucinates on them ("you").
        let windows: Vec<(usize, &[f32])> = samples
            .chunks(WINDOW_SAMPLES)
            .enumerate()
            .filter(|(_, w)| w.iter().any(|v| v.abs() >= SILENCE_PEAK))
            .collect();
        let mut segments = Vec::new();
        for batch in windows.chunks(BATCH_WINDOWS) {
            let audio: Vec<&[f32]> = batch.iter().map(|(_, w)| *w).collect();
            let results = self.generate(&audio, self.beam_size)?;
            if results.len() != batch.len() {
                return Err(SttError::Permanent(format!(
                    "Whisper returned {} result(s) for {} window(s)",
                    results.len(),
                    batch.len()
                )));
            }
            for (&(index, window), result) in batch.iter().zip(results) {
                let offset_ms = samples_to_ms(index * WINDOW_SAMPLES);
                let end_ms = offset_ms + samples_to_ms(window.len());
                segments.extend(self.finish_window(index, window, result, offset_ms, end_ms)?);
            }
        }
        Ok(clean_segments(segments, audio_ms))
    }

    /// Applies the repetition and silence checks to one window's result.
    fn finish_window(
        &self,
        index: usize,
        window: &[f32],
        mut result: ct2rs::sys::WhisperGenerationResult,
        offset_ms: u64,
        end_ms: u64,
    ) -> Result<Vec<SttSegment>, SttError> {
        let mut text = self.window_segments(&result, offset_ms, end_ms)?;
        if looks_degenerate(&text) && self.beam_size < FALLBACK_BEAM {
            tracing::debug!(
                window = index,
                "Whisper output repeats; decoding again with beam search."
            );
            if let Some(again) = self.generate(&[window], FALLBACK_BEAM)?.into_iter().next() {
                result = again;
                text = self.window_segments(&result, offset_ms, end_ms)?;
            }
        }
        if looks_degenerate(&text) {
            tracing::debug!(window = index, "Whisper output repeats; window dropped.");
            return Ok(Vec::new());
        }
        let logprob = result.scores.first().copied().unwrap_or(0.0);
        if result.no_speech_prob > NO_SPEECH_THRESHOLD && logprob < LOGPROB_THRESHOLD {
            tracing::debug!(
                window = index,
                no_speech_prob = result.no_speech_prob,
                logprob,
                "Whisper window is silence; dropped."
            );
            return Ok(Vec::new());
        }
        Ok(text)
    }

    /// Segments of one window from its best sequence's tokens: text between
    /// timestamp tokens (`<|1.20|>`) becomes a segment; other special tokens
    /// are dropped; text without timestamps runs to `end_ms`.
    fn window_segments(
        &self,
        result: &ct2rs::sys::WhisperGenerationResult,
        offset_ms: u64,
        end_ms: u64,
    ) -> Result<Vec<SttSegment>, SttError> {
        let Some(tokens) = result.sequences.first() else {
            return Ok(Vec::new());
        };
        let mut segments = Vec::new();
        let mut start = offset_ms;
        let mut run: Vec<String> = Vec::new();
        for token in tokens {
            let special = token.strip_prefix("<|").and_then(|t| t.strip_suffix("|>"));
            match special {
                None => run.push(token.clone()),
                Some(inner) => {
                    if let Ok(secs) = inner.parse::<f64>() {
                        let at = offset_ms.saturating_add(secs_to_ms(secs)).min(end_ms);
                        self.flush(&mut run, start, at, &mut segments)?;
                        start = at;
                    }
                }
            }
        }
        self.flush(&mut run, start, end_ms.max(start), &mut segments)?;
        Ok(segments)
    }

    fn flush(
        &self,
        run: &mut Vec<String>,
        start_ms: u64,
        end_ms: u64,
        out: &mut Vec<SttSegment>,
    ) -> Result<(), SttError> {
        if run.is_empty() {
            return Ok(());
        }
        let text = self
            .tokenizer
            .decode(std::mem::take(run))
            .map_err(|e| SttError::Permanent(format!("Whisper's tokenizer failed: {e:#}")))?;
        let text = text.trim();
        if !text.is_empty() {
            out.push(SttSegment {
                start_ms,
                end_ms,
                text: text.to_string(),
            });
        }
        Ok(())
    }
}

/// True when a window's text is a repetition loop (a known Whisper failure:
/// "¡¡¡¡…", "thank you thank you …"): long, with few distinct character trigrams.
fn looks_degenerate(segments: &[SttSegment]) -> bool {
    let text: Vec<char> = segments
        .iter()
        .flat_map(|s| s.text.chars().chain(std::iter::once(' ')))
        .collect();
    if text.len() < 60 {
        return false;
    }
    let trigrams: std::collections::HashSet<&[char]> = text.windows(3).collect();
    let total = text.len() - 2;
    trigrams.len() * 4 < total
}

/// The model's name for transcripts: the folder's name.
fn model_name(model_dir: &Path) -> String {
    let dir: PathBuf = model_dir
        .canonicalize()
        .unwrap_or_else(|_| model_dir.to_path_buf());
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "whisper".to_string())
}

#[async_trait]
impl SttProvider for WhisperProvider {
    fn name(&self) -> &str {
        "embedded"
    }

    fn model(&self) -> &str {
        &self.model
    }

    async fn transcribe(&self, samples: Arc<[f32]>) -> Result<Vec<SttSegment>, SttError> {
        if samples.is_empty() {
            return Ok(Vec::new());
        }
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || engine.transcribe(&samples))
            .await
            .map_err(|e| SttError::Permanent(format!("the Whisper task failed: {e}")))?
    }
}

/// Result of [`bench_rtf`].
#[derive(Debug, Clone)]
pub struct RtfReport {
    /// Settings measured.
    pub settings: WhisperSettings,
    /// Model load time.
    pub load: Duration,
    /// Length of the audio.
    pub audio: Duration,
    /// Wall time of each run.
    pub runs: Vec<Duration>,
    /// Real-time factor of the fastest run (wall time / audio time; lower is faster).
    pub best_rtf: f64,
    /// Real-time factor averaged over the runs.
    pub mean_rtf: f64,
    /// The last run's transcript, to check that the engine did real work.
    pub transcript: Vec<SttSegment>,
}

impl fmt::Display for RtfReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} threads={} beam={}: audio {:.1} s, load {:.2} s, runs {:?}, RTF best {:.3} mean {:.3}, {} segment(s), {} words",
            self.settings.compute_type,
            self.settings.threads,
            self.settings.beam_size,
            self.audio.as_secs_f64(),
            self.load.as_secs_f64(),
            self.runs
                .iter()
                .map(|d| format!("{:.2}s", d.as_secs_f64()))
                .collect::<Vec<_>>(),
            self.best_rtf,
            self.mean_rtf,
            self.transcript.len(),
            self.transcript
                .iter()
                .map(|s| s.text.split_whitespace().count())
                .sum::<usize>()
        )
    }
}

/// Measures the real-time factor of the embedded engine on a WAV file's
/// bytes (any layout; decoded in memory): loads the model with `settings`,
/// transcribes the audio `runs` times (at least once) and reports wall times.
/// Blocking; for a bench command.
pub fn bench_rtf(
    model_dir: &Path,
    wav: &[u8],
    settings: WhisperSettings,
    runs: usize,
) -> Result<RtfReport, SttError> {
    let samples = decode_wav(wav, Duration::from_secs(3600))
        .map_err(|e| SttError::Permanent(format!("cannot read the benchmark audio: {e}")))?;
    if samples.is_empty() {
        return Err(SttError::Permanent("the benchmark audio is empty".into()));
    }
    let audio = Duration::from_millis(samples_to_ms(samples.len()));
    let started = Instant::now();
    let provider = WhisperProvider::load_with(model_dir, settings)?;
    let load = started.elapsed();
    let mut times = Vec::new();
    let mut transcript = Vec::new();
    for _ in 0..runs.max(1) {
        let started = Instant::now();
        transcript = provider.transcribe_blocking(&samples)?;
        times.push(started.elapsed());
    }
    let audio_secs = audio.as_secs_f64().max(f64::MIN_POSITIVE);
    let best = times.iter().min().copied().unwrap_or_default();
    let mean = times.iter().map(Duration::as_secs_f64).sum::<f64>() / times.len() as f64;
    Ok(RtfReport {
        settings: provider.settings.clone(),
        load,
        audio,
        runs: times,
        best_rtf: best.as_secs_f64() / audio_secs,
        mean_rtf: mean / audio_secs,
        transcript,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(text: &str) -> SttSegment {
        SttSegment {
            start_ms: 0,
            end_ms: 1,
            text: text.to_string(),
        }
    }

    #[test]
    fn detects_repetition_loops() {
        assert!(looks_degenerate(&[seg(&"¡".repeat(100))]));
        assert!(looks_degenerate(&[seg(&"Thank you. ".repeat(12))]));
        assert!(!looks_degenerate(&[seg("Thank you. Thank you.")]));
        assert!(!looks_degenerate(&[seg(
            "Good morning everyone, thanks for joining the weekly planning meeting. \
             Today we will review the release schedule and the hiring plan."
        )]));
    }

    #[test]
    fn missing_model_names_the_file_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let err = WhisperProvider::load(&dir.path().join("nope"), 1).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("does not exist") && msg.contains("scripts/fetch-model"),
            "{msg}"
        );
        for name in REQUIRED_FILES.iter().skip(1) {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let msg = WhisperProvider::load(dir.path(), 1)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("model.bin") && msg.contains("missing"),
            "{msg}"
        );
        // Present but corrupt: a load error, not a panic.
        std::fs::write(dir.path().join("model.bin"), b"not a model").unwrap();
        let err = WhisperProvider::load(dir.path(), 1).unwrap_err();
        assert!(
            matches!(err, SttError::Permanent(ref m) if m.contains("cannot load")),
            "{err}"
        );
    }

    /// The model folder: `MEETBOT_MODEL_DIR` or the repository's default.
    fn model_dir() -> PathBuf {
        std::env::var_os("MEETBOT_MODEL_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_MODEL_DIR))
    }

    /// Loads the model or fails the test with instructions: a missing model is
    /// a broken test environment, never a skipped test.
    fn load(settings: WhisperSettings) -> WhisperProvider {
        let dir = model_dir();
        WhisperProvider::load_with(&dir, settings).unwrap_or_else(|e| {
            panic!(
                "the embedded Whisper test needs the model in {} (set MEETBOT_MODEL_DIR to use another folder); \
                 run `scripts/fetch-model` first. Error: {e}",
                dir.display()
            )
        })
    }

    /// Speech synthesized by espeak-ng as WAV bytes, in memory.
    fn espeak(text: &str) -> Vec<u8> {
        let out = std::process::Command::new("espeak-ng")
            .args(["-v", "en-us", "-s", "150", "--stdout", text])
            .output()
            .unwrap_or_else(|e| panic!("this test needs espeak-ng on PATH: {e}"));
        assert!(out.status.success(), "espeak-ng failed: {:?}", out.status);
        out.stdout
    }

    fn words(text: &str) -> Vec<String> {
        text.split_whitespace()
            .map(|w| {
                w.chars()
                    .filter(|c| c.is_alphanumeric())
                    .collect::<String>()
                    .to_lowercase()
            })
            .filter(|w| !w.is_empty())
            .collect()
    }

    const SENTENCE: &str = "The quick brown fox jumps over the lazy dog. \
        Please send the quarterly report to the finance team before Friday.";

    #[tokio::test]
    async fn transcribes_synthetic_speech() {
        let provider = load(WhisperSettings::default());
        assert_eq!(provider.name(), "embedded");
        assert!(!provider.model().is_empty());
        let samples = decode_wav(&espeak(SENTENCE), Duration::from_secs(60)).unwrap();
        let audio_ms = samples_to_ms(samples.len());
        let samples: Arc<[f32]> = Arc::from(samples);
        // Two at once: the engine is shared and CTranslate2 queues the calls.
        let (segments, again) = tokio::join!(
            provider.transcribe(samples.clone()),
            provider.transcribe(samples.clone())
        );
        let (segments, again) = (segments.unwrap(), again.unwrap());
        assert_eq!(segments, again, "the same audio gave different transcripts");
        // Two sentences: timestamp tokens split them, in order, within the audio.
        assert!(segments.len() >= 2, "{} segment(s)", segments.len());
        for pair in segments.windows(2) {
            assert!(pair[0].end_ms <= pair[1].start_ms, "{pair:?}");
        }
        for s in &segments {
            assert!(s.start_ms < s.end_ms && s.end_ms <= audio_ms, "{s:?}");
        }
        assert!(segments[0].start_ms < 1000, "{:?}", segments[0]);
        let heard = words(
            &segments
                .iter()
                .map(|s| s.text.as_str())
                .collect::<Vec<_>>()
                .join(" "),
        );
        let expected = words(SENTENCE);
        let found = expected.iter().filter(|w| heard.contains(w)).count();
        assert!(
            found * 10 >= expected.len() * 8,
            "recognised {found} of {} words: {heard:?}",
            expected.len()
        );
    }

    #[tokio::test]
    async fn serves_the_engine_to_the_openai_client() {
        use crate::stt::openai::{OpenAiConfig, OpenAiProvider};
        use crate::stt::serve::{serve, ServeOptions};

        let provider: Arc<dyn SttProvider> = Arc::new(load(WhisperSettings::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/v1", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            provider,
            ServeOptions::default(),
            async move {
                let _ = stopped.await;
            },
        ));
        let client = OpenAiProvider::new(OpenAiConfig::new(base)).unwrap();
        let samples = decode_wav(
            &espeak("Can you share the slides after the call?"),
            Duration::from_secs(60),
        )
        .unwrap();
        let segments = client.transcribe(Arc::from(samples)).await.unwrap();
        let heard = words(
            &segments
                .iter()
                .map(|s| s.text.as_str())
                .collect::<Vec<_>>()
                .join(" "),
        );
        for w in ["share", "after", "call"] {
            assert!(heard.iter().any(|h| h == w), "{w:?} missing from {heard:?}");
        }
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn silence_and_empty_input_give_no_segments() {
        let provider = load(WhisperSettings::default());
        assert!(provider
            .transcribe(Arc::from(Vec::new()))
            .await
            .unwrap()
            .is_empty());
        let silence: Arc<[f32]> = Arc::from(vec![0.0f32; 16_000 * 3]);
        let segs = provider.transcribe(silence).await.unwrap();
        assert!(segs.is_empty(), "silence gave {} segment(s)", segs.len());
        // Quiet white noise (±0.01, deterministic LCG).
        let mut state = 1u32;
        let noise: Vec<f32> = (0..16_000 * 3)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 8) as f32 / (1u32 << 24) as f32 * 0.02 - 0.01
            })
            .collect();
        let segs = provider.transcribe(Arc::from(noise)).await.unwrap();
        assert!(segs.is_empty(), "noise gave {} segment(s)", segs.len());
    }

    /// Prints real-time factors. Run with
    /// `cargo test --release --lib stt::whisper::tests::rtf -- --ignored --nocapture`.
    #[test]
    #[ignore = "benchmark; run explicitly"]
    fn rtf() {
        let text = "Good morning everyone, thanks for joining the weekly planning meeting. \
            Today we will review the release schedule, the open customer issues and the hiring plan. \
            First, the release is on track for the end of the month, but the installer still needs testing on older machines. \
            Second, two customers reported slow exports, and the fix is ready for review.";
        let long = espeak(text);
        let short = espeak("Can you share the slides after the call?");
        let dir = model_dir();
        for (label, wav) in [("long", &long), ("short", &short)] {
            for compute_type in [ComputeType::Float32, ComputeType::Int8] {
                for beam_size in [1, 5] {
                    let settings = WhisperSettings {
                        threads: 2,
                        compute_type,
                        beam_size,
                        ..WhisperSettings::default()
                    };
                    let report = bench_rtf(&dir, wav, settings, 3).unwrap();
                    println!("{label}: {report}");
                    for s in &report.transcript {
                        println!("    [{}..{}] {}", s.start_ms, s.end_ms, s.text);
                    }
                }
            }
        }
    }
}
