//! Energy-based voice activity detection that cuts one participant's 16 kHz
//! mono audio into utterances.
//!
//! The detector looks at 20 ms frames. A frame is *voiced* when its level is
//! both [`VadConfig::threshold_db`] above the adaptive noise floor and above
//! the absolute [`VadConfig::abs_threshold_dbfs`]. The noise floor is the
//! minimum frame level over the last [`VadConfig::noise_window`] (minimum
//! statistics): it follows a rising background within that window, drops at
//! once when the room gets quieter, and ignores speech because speech always
//! has quieter moments.
//!
//! An utterance starts after [`VadConfig::min_speech`] of consecutive voiced
//! frames, keeps [`VadConfig::pre_roll`] of audio before them, and ends after
//! [`VadConfig::end_silence`] without a voiced frame (a long silence, so that a
//! sentence's internal pauses do not split it: speech-to-text does better on
//! whole sentences). It keeps [`VadConfig::post_roll`] after the last voiced
//! frame. Shorter than [`VadConfig::min_utterance`] of speech and it is
//! dropped (clicks, coughs). Longer than [`VadConfig::max_utterance`] and it is
//! cut at the quietest 100 ms of its last quarter; the rest continues as a new
//! utterance.
//!
//! The detector is sans-IO: samples in, [`VadSegment`]s out, positions counted
//! in samples since the stream began. Memory is bounded by the longest
//! utterance.
//!
//! Known limit: after digital silence (a muted microphone sending zeros) the
//! noise floor sits at its minimum for one noise window, so a background above
//! the absolute threshold that appears then counts as speech until the window
//! has passed.

use std::collections::VecDeque;
use std::time::Duration;

/// Sample rate the detector works at.
pub const SAMPLE_RATE: u32 = 16_000;
/// Samples per 20 ms analysis frame.
pub const FRAME_SAMPLES: usize = 320;
/// Frame length in milliseconds.
const FRAME_MS: u64 = 20;
/// Lowest level the detector reports, dBFS (digital silence).
const MIN_DB: f32 = -100.0;

/// Voice-activity-detection settings (`[vad]` in the configuration).
/// Durations are rounded up to whole 20 ms frames.
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VadConfig {
    /// How far above the noise floor a frame must be to count as speech, dB.
    pub threshold_db: f32,
    /// Once speaking, frames down to `threshold_db - hysteresis_db` (and
    /// `abs_threshold_dbfs - hysteresis_db`) still count as speech, dB.
    pub hysteresis_db: f32,
    /// Frames quieter than this never count as speech, dB relative to full scale.
    pub abs_threshold_dbfs: f32,
    /// Window over which the noise floor is the minimum frame level.
    #[serde(with = "humantime_serde")]
    pub noise_window: Duration,
    /// Consecutive speech needed to start an utterance.
    #[serde(with = "humantime_serde")]
    pub min_speech: Duration,
    /// Silence that ends an utterance. Pauses shorter than this stay inside it.
    #[serde(with = "humantime_serde")]
    pub end_silence: Duration,
    /// Audio kept before the detected start of speech.
    #[serde(with = "humantime_serde")]
    pub pre_roll: Duration,
    /// Audio kept after the last speech frame (at most `end_silence`).
    #[serde(with = "humantime_serde")]
    pub post_roll: Duration,
    /// Utterances with less speech than this (first to last speech frame) are dropped.
    #[serde(with = "humantime_serde")]
    pub min_utterance: Duration,
    /// Longest utterance, pre-roll included; longer speech is cut at a quiet point.
    /// At most 30 s, Whisper's window.
    #[serde(with = "humantime_serde")]
    pub max_utterance: Duration,
}

impl Default for VadConfig {
    fn default() -> Self {
        VadConfig {
            threshold_db: 10.0,
            hysteresis_db: 3.0,
            abs_threshold_dbfs: -65.0,
            noise_window: Duration::from_secs(5),
            min_speech: Duration::from_millis(80),
            end_silence: Duration::from_millis(700),
            pre_roll: Duration::from_millis(240),
            post_roll: Duration::from_millis(200),
            min_utterance: Duration::from_millis(300),
            max_utterance: Duration::from_secs(20),
        }
    }
}

impl VadConfig {
    /// Checks every field; the error starts with the offending field's name.
    pub fn validate(&self) -> Result<(), String> {
        fn range_db(name: &str, v: f32, lo: f32, hi: f32) -> Result<(), String> {
            if v.is_finite() && (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(format!("{name}: must be between {lo} and {hi} dB, got {v}"))
            }
        }
        fn range_ms(name: &str, v: Duration, lo: u64, hi: u64) -> Result<(), String> {
            let ms = v.as_millis();
            if (u128::from(lo)..=u128::from(hi)).contains(&ms) {
                Ok(())
            } else {
                Err(format!(
                    "{name}: must be between {lo}ms and {hi}ms, got {ms}ms"
                ))
            }
        }
        range_db("threshold_db", self.threshold_db, 1.0, 60.0)?;
        range_db("hysteresis_db", self.hysteresis_db, 0.0, 30.0)?;
        if self.hysteresis_db >= self.threshold_db {
            return Err(format!(
                "hysteresis_db: must be less than threshold_db ({}), got {}",
                self.threshold_db, self.hysteresis_db
            ));
        }
        range_db("abs_threshold_dbfs", self.abs_threshold_dbfs, -90.0, -10.0)?;
        range_ms("noise_window", self.noise_window, 500, 60_000)?;
        range_ms("min_speech", self.min_speech, 20, 1_000)?;
        range_ms("end_silence", self.end_silence, 100, 5_000)?;
        range_ms("pre_roll", self.pre_roll, 0, 1_000)?;
        range_ms("post_roll", self.post_roll, 0, 5_000)?;
        if self.post_roll > self.end_silence {
            return Err(format!(
                "post_roll: must not exceed end_silence ({}ms), got {}ms",
                self.end_silence.as_millis(),
                self.post_roll.as_millis()
            ));
        }
        range_ms("max_utterance", self.max_utterance, 2_000, 30_000)?;
        range_ms("min_utterance", self.min_utterance, 0, 10_000)?;
        if self.min_utterance + self.pre_roll >= self.max_utterance {
            return Err(format!(
                "min_utterance: min_utterance + pre_roll must be less than max_utterance ({}ms)",
                self.max_utterance.as_millis()
            ));
        }
        Ok(())
    }
}

/// Whole 20 ms frames covering `d` (rounded up).
fn frames(d: Duration) -> usize {
    let ms = d.as_millis();
    usize::try_from(ms.div_ceil(u128::from(FRAME_MS))).unwrap_or(usize::MAX)
}

/// One utterance cut by the detector.
pub struct VadSegment {
    /// Position of the first sample, in samples since the stream began
    /// (gaps included).
    pub start_sample: u64,
    /// The audio, 16 kHz mono. Plaintext audio: memory only, never logged.
    pub samples: Vec<f32>,
}

impl VadSegment {
    /// Position just after the last sample.
    pub fn end_sample(&self) -> u64 {
        self.start_sample.saturating_add(self.samples.len() as u64)
    }
}

impl std::fmt::Debug for VadSegment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VadSegment")
            .field("start_sample", &self.start_sample)
            .field("samples", &self.samples.len())
            .finish()
    }
}

/// What the detector knows about one buffered frame.
#[derive(Clone, Copy)]
struct FrameInfo {
    /// Level, dBFS.
    db: f32,
    /// Counted as speech.
    voiced: bool,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum State {
    /// Not in an utterance; `run` consecutive voiced frames so far.
    Idle { run: usize },
    /// In an utterance. Frame indices refer to `Vad::frames`.
    Speech {
        /// First voiced frame.
        first_voiced: usize,
        /// One past the last voiced frame.
        last_voiced_end: usize,
        /// Unvoiced frames since then.
        silence: usize,
    },
}

/// Minimum-statistics noise floor: the lowest frame level over a sliding
/// window, kept as per-block minima so each update is O(1) amortised.
struct NoiseFloor {
    block_frames: usize,
    max_blocks: usize,
    blocks: VecDeque<f32>,
    cur_min: f32,
    cur_count: usize,
}

impl NoiseFloor {
    fn new(window_frames: usize) -> Self {
        let max_blocks = 10;
        NoiseFloor {
            block_frames: window_frames.div_ceil(max_blocks).max(1),
            max_blocks,
            blocks: VecDeque::with_capacity(max_blocks + 1),
            cur_min: f32::INFINITY,
            cur_count: 0,
        }
    }

    fn update(&mut self, db: f32) {
        self.cur_min = self.cur_min.min(db);
        self.cur_count += 1;
        if self.cur_count == self.block_frames {
            self.blocks.push_back(self.cur_min);
            if self.blocks.len() > self.max_blocks {
                self.blocks.pop_front();
            }
            self.cur_min = f32::INFINITY;
            self.cur_count = 0;
        }
    }

    /// The floor; `None` before the first frame.
    fn floor(&self) -> Option<f32> {
        let m = self.blocks.iter().copied().fold(self.cur_min, f32::min);
        m.is_finite().then_some(m)
    }
}

/// The streaming detector. Feed 16 kHz mono samples with [`Vad::push`],
/// report missing audio with [`Vad::push_gap`], flush with [`Vad::finish`].
pub struct Vad {
    threshold_db: f32,
    hysteresis_db: f32,
    abs_threshold_dbfs: f32,
    start_frames: usize,
    end_frames: usize,
    pre_frames: usize,
    post_frames: usize,
    min_frames: usize,
    max_frames: usize,
    noise: NoiseFloor,
    /// Samples of the next, incomplete frame (< FRAME_SAMPLES).
    pending: Vec<f32>,
    /// Stream position just after the last complete frame.
    pos: u64,
    /// Audio of the buffered frames: the pre-roll ring when idle, the
    /// utterance so far when speaking. Ends at `pos`.
    buf: Vec<f32>,
    /// One entry per buffered frame.
    frames: Vec<FrameInfo>,
    state: State,
}

impl Vad {
    /// A detector with the given settings.
    pub fn new(cfg: &VadConfig) -> Result<Self, String> {
        cfg.validate()?;
        Ok(Vad {
            threshold_db: cfg.threshold_db,
            hysteresis_db: cfg.hysteresis_db,
            abs_threshold_dbfs: cfg.abs_threshold_dbfs,
            start_frames: frames(cfg.min_speech).max(1),
            end_frames: frames(cfg.end_silence).max(1),
            pre_frames: frames(cfg.pre_roll),
            post_frames: frames(cfg.post_roll),
            min_frames: frames(cfg.min_utterance),
            max_frames: frames(cfg.max_utterance),
            noise: NoiseFloor::new(frames(cfg.noise_window)),
            pending: Vec::with_capacity(FRAME_SAMPLES),
            pos: 0,
            buf: Vec::new(),
            frames: Vec::new(),
            state: State::Idle { run: 0 },
        })
    }

    /// Stream position (samples) after everything pushed so far that forms
    /// complete frames.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// True while an utterance is in progress.
    pub fn in_speech(&self) -> bool {
        matches!(self.state, State::Speech { .. })
    }

    /// Adds audio; completed utterances are appended to `out`.
    pub fn push(&mut self, mut samples: &[f32], out: &mut Vec<VadSegment>) {
        if !self.pending.is_empty() {
            let take = (FRAME_SAMPLES - self.pending.len()).min(samples.len());
            self.pending.extend_from_slice(&samples[..take]);
            samples = &samples[take..];
            if self.pending.len() < FRAME_SAMPLES {
                return;
            }
            let frame = std::mem::take(&mut self.pending);
            self.frame(&frame, false, out);
            self.pending = frame;
            self.pending.clear();
        }
        let mut chunks = samples.chunks_exact(FRAME_SAMPLES);
        for frame in &mut chunks {
            self.frame(frame, false, out);
        }
        self.pending.extend_from_slice(chunks.remainder());
    }

    /// Advances the stream by `n` samples of missing audio (a network gap).
    /// Gap frames are silent, never speech, and do not move the noise floor.
    /// Cost is bounded however long the gap.
    pub fn push_gap(&mut self, mut n: u64, out: &mut Vec<VadSegment>) {
        const ZEROS: [f32; FRAME_SAMPLES] = [0.0; FRAME_SAMPLES];
        if !self.pending.is_empty() {
            let room = FRAME_SAMPLES - self.pending.len();
            let take = usize::try_from(n).unwrap_or(usize::MAX).min(room);
            self.pending.extend_from_slice(&ZEROS[..take]);
            n -= take as u64;
            if self.pending.len() < FRAME_SAMPLES {
                return;
            }
            let frame = std::mem::take(&mut self.pending);
            self.frame(&frame, true, out);
            self.pending = frame;
            self.pending.clear();
        }
        let mut whole = n / FRAME_SAMPLES as u64;
        // Enough gap frames to end any utterance and refill the pre-roll ring;
        // past that, nothing changes but the position.
        let walk = (self.end_frames + self.pre_frames + self.start_frames + 1) as u64;
        for _ in 0..whole.min(walk) {
            self.frame(&ZEROS, true, out);
        }
        whole = whole.saturating_sub(walk);
        if whole > 0 {
            // Walking `end_frames` silent frames has ended any utterance.
            debug_assert!(!self.in_speech());
            self.buf.clear();
            self.frames.clear();
            self.state = State::Idle { run: 0 };
            self.pos = self
                .pos
                .saturating_add(whole.saturating_mul(FRAME_SAMPLES as u64));
        }
        let rest = (n % FRAME_SAMPLES as u64) as usize;
        self.pending.extend_from_slice(&ZEROS[..rest]);
    }

    /// Ends the stream: returns the utterance in progress, if long enough.
    pub fn finish(&mut self) -> Option<VadSegment> {
        self.pending.clear();
        let seg = match self.state {
            State::Speech {
                first_voiced,
                last_voiced_end,
                ..
            } => self.end_utterance(first_voiced, last_voiced_end),
            State::Idle { .. } => None,
        };
        self.buf.clear();
        self.frames.clear();
        self.state = State::Idle { run: 0 };
        seg
    }

    /// Level of a frame, dBFS (a full-scale sine is −3 dBFS).
    fn level_db(frame: &[f32]) -> f32 {
        let energy: f32 = frame.iter().map(|&s| s * s).sum::<f32>() / frame.len() as f32;
        if energy.is_finite() {
            (10.0 * (energy + 1e-12).log10()).max(MIN_DB)
        } else {
            // NaN or infinite samples: treat the frame as silence.
            MIN_DB
        }
    }

    fn frame(&mut self, frame: &[f32], gap: bool, out: &mut Vec<VadSegment>) {
        let speaking = self.in_speech();
        let (db, voiced) = if gap {
            (MIN_DB, false)
        } else {
            let db = Self::level_db(frame);
            self.noise.update(db);
            let floor = self.noise.floor().unwrap_or(db);
            let slack = if speaking { self.hysteresis_db } else { 0.0 };
            let threshold = (floor + self.threshold_db).max(self.abs_threshold_dbfs) - slack;
            (db, db > threshold)
        };
        self.buf.extend_from_slice(frame);
        self.frames.push(FrameInfo { db, voiced });
        self.pos = self.pos.saturating_add(FRAME_SAMPLES as u64);

        match self.state {
            State::Idle { run } => {
                let run = if voiced { run + 1 } else { 0 };
                if run >= self.start_frames {
                    // Keep the pre-roll before the run, then speak.
                    let keep = (self.pre_frames + run).min(self.frames.len());
                    self.drop_front(self.frames.len() - keep);
                    let first_voiced = self.frames.len() - run;
                    self.state = State::Speech {
                        first_voiced,
                        last_voiced_end: self.frames.len(),
                        silence: 0,
                    };
                } else {
                    self.state = State::Idle { run };
                    // Bound the ring; trim in batches to keep the copying cheap.
                    let cap = self.pre_frames + self.start_frames;
                    if self.frames.len() > cap + 16 {
                        self.drop_front(self.frames.len() - cap);
                    }
                }
            }
            State::Speech {
                first_voiced,
                mut last_voiced_end,
                mut silence,
            } => {
                if voiced {
                    last_voiced_end = self.frames.len();
                    silence = 0;
                } else {
                    silence += 1;
                }
                if silence >= self.end_frames {
                    if let Some(seg) = self.end_utterance(first_voiced, last_voiced_end) {
                        out.push(seg);
                    }
                } else if self.frames.len() >= self.max_frames {
                    out.push(self.cut_long(first_voiced, last_voiced_end, silence));
                } else {
                    self.state = State::Speech {
                        first_voiced,
                        last_voiced_end,
                        silence,
                    };
                }
            }
        }
    }

    /// Removes the oldest `n` frames from the buffer.
    fn drop_front(&mut self, n: usize) {
        if n > 0 {
            self.buf.drain(..n * FRAME_SAMPLES);
            self.frames.drain(..n);
        }
    }

    /// Closes the utterance: trims it to the last speech plus post-roll,
    /// keeps what follows as the next pre-roll, and returns it unless too
    /// short. Leaves the detector idle.
    fn end_utterance(&mut self, first_voiced: usize, last_voiced_end: usize) -> Option<VadSegment> {
        let end = (last_voiced_end + self.post_frames).min(self.frames.len());
        let start_sample = self.pos - self.buf.len() as u64;
        let long_enough = last_voiced_end.saturating_sub(first_voiced) >= self.min_frames;
        // The frames after the utterance become the pre-roll ring.
        let ring_from = end.max(self.frames.len().saturating_sub(self.pre_frames));
        let ring = self.buf[ring_from * FRAME_SAMPLES..].to_vec();
        let ring_frames = self.frames[ring_from..].to_vec();
        let mut samples = std::mem::replace(&mut self.buf, ring);
        self.frames = ring_frames;
        self.state = State::Idle { run: 0 };
        if !long_enough {
            return None;
        }
        samples.truncate(end * FRAME_SAMPLES);
        Some(VadSegment {
            start_sample,
            samples,
        })
    }

    /// Cuts an utterance that reached the maximum length at the quietest
    /// 100 ms of its last quarter; the rest stays buffered as the start of
    /// the next utterance.
    fn cut_long(
        &mut self,
        first_voiced: usize,
        last_voiced_end: usize,
        silence: usize,
    ) -> VadSegment {
        let len = self.frames.len();
        let lo = (len - len / 4).max(first_voiced + 1).min(len - 1);
        const SMOOTH: usize = 2; // ±2 frames: a 100 ms window
        let mut best = len;
        let mut best_db = f32::INFINITY;
        for c in lo..len {
            let a = c.saturating_sub(SMOOTH);
            let b = (c + SMOOTH + 1).min(len);
            let avg = self.frames[a..b].iter().map(|f| f.db).sum::<f32>() / (b - a) as f32;
            // `<=` prefers the later of equally quiet points.
            if avg <= best_db {
                best_db = avg;
                best = c;
            }
        }
        let start_sample = self.pos - self.buf.len() as u64;
        let rest = self.buf.split_off(best * FRAME_SAMPLES);
        let rest_frames = self.frames.split_off(best);
        let samples = std::mem::replace(&mut self.buf, rest);
        self.frames = rest_frames;
        let first = self.frames.iter().position(|f| f.voiced).unwrap_or(0);
        self.state = State::Speech {
            first_voiced: first,
            last_voiced_end: last_voiced_end.saturating_sub(best),
            silence,
        };
        VadSegment {
            start_sample,
            samples,
        }
    }
}

/// Test audio shared by the audio-pipeline tests.
#[cfg(test)]
pub(crate) mod testutil {
    use std::path::Path;
    use std::process::Command;

    /// Speaks `text` with espeak-ng into `dir/<name>.wav` at its native rate
    /// (22.05 kHz) and returns the path. Panics if espeak-ng is missing: these
    /// tests need real speech.
    pub fn espeak_wav(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.join(format!("{name}.wav"));
        let status = Command::new("espeak-ng")
            .args(["-v", "en-us", "-s", "140", "-w"])
            .arg(&path)
            .arg(text)
            .status()
            .expect("espeak-ng is required for these tests (apt install espeak-ng)");
        assert!(status.success(), "espeak-ng failed");
        path
    }

    /// Reads a mono 16-bit WAV as f32 plus its rate.
    pub fn read_wav(path: &Path) -> (Vec<f32>, u32) {
        let mut r = hound::WavReader::open(path).expect("test WAV opens");
        let spec = r.spec();
        assert_eq!(spec.channels, 1);
        let s = r
            .samples::<i16>()
            .map(|s| f32::from(s.expect("test WAV reads")) / 32768.0)
            .collect();
        (s, spec.sample_rate)
    }

    /// Speech as 48 kHz mono f32 (espeak-ng, converted with sox).
    pub fn espeak_48k(dir: &Path, name: &str, text: &str) -> Vec<f32> {
        let raw = espeak_wav(dir, name, text);
        let out = dir.join(format!("{name}-48k.wav"));
        let status = Command::new("sox")
            .arg(&raw)
            .args(["-r", "48000", "-c", "1", "-b", "16"])
            .arg(&out)
            .status()
            .expect("sox is required for these tests (apt install sox)");
        assert!(status.success(), "sox failed");
        let (s, rate) = read_wav(&out);
        assert_eq!(rate, 48_000);
        s
    }

    /// Deterministic white noise (xorshift), uniform in ±`amp`.
    pub fn noise(n: usize, amp: f32, seed: u64) -> Vec<f32> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                ((x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * amp
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;
    use crate::core::resample::Decimator48To16;

    const MS: usize = 16; // samples per ms at 16 kHz

    fn run(cfg: &VadConfig, audio: &[f32], piece: usize) -> Vec<VadSegment> {
        let mut vad = Vad::new(cfg).expect("valid config");
        let mut out = Vec::new();
        for chunk in audio.chunks(piece) {
            vad.push(chunk, &mut out);
        }
        out.extend(vad.finish());
        out
    }

    /// A vowel-like tone: 150 Hz fundamental with harmonics, at `amp`.
    fn voice(ms: usize, amp: f32) -> Vec<f32> {
        (0..ms * MS)
            .map(|i| {
                let t = i as f32 / 16_000.0;
                let mut v = 0.0;
                for h in 1..=8 {
                    v += (2.0 * std::f32::consts::PI * 150.0 * h as f32 * t).sin() / h as f32;
                }
                v * amp / 2.0
            })
            .collect()
    }

    fn with_noise(mut x: Vec<f32>, amp: f32) -> Vec<f32> {
        let hiss = noise(x.len(), amp, 7);
        for (s, n) in x.iter_mut().zip(hiss) {
            *s += n;
        }
        x
    }

    fn ms_of(sample: u64) -> u64 {
        sample / MS as u64
    }

    #[test]
    fn default_config_is_valid_and_deserializes_from_empty() {
        VadConfig::default().validate().expect("defaults valid");
        let c: VadConfig = serde_json::from_str("{}").expect("empty config");
        assert_eq!(c, VadConfig::default());
        let c: VadConfig =
            serde_json::from_str(r#"{"end_silence":"1s","threshold_db":12}"#).expect("parses");
        assert_eq!(c.end_silence, Duration::from_secs(1));
        assert_eq!(c.threshold_db, 12.0);
        assert!(serde_json::from_str::<VadConfig>(r#"{"bogus":1}"#).is_err());
    }

    #[test]
    fn validate_names_the_bad_field() {
        type Mutate = Box<dyn Fn(&mut VadConfig)>;
        let cases: Vec<(&str, Mutate)> = vec![
            ("threshold_db", Box::new(|c| c.threshold_db = f32::NAN)),
            ("hysteresis_db", Box::new(|c| c.hysteresis_db = 20.0)),
            (
                "abs_threshold_dbfs",
                Box::new(|c| c.abs_threshold_dbfs = 3.0),
            ),
            (
                "noise_window",
                Box::new(|c| c.noise_window = Duration::ZERO),
            ),
            (
                "min_speech",
                Box::new(|c| c.min_speech = Duration::from_secs(5)),
            ),
            (
                "end_silence",
                Box::new(|c| c.end_silence = Duration::from_millis(10)),
            ),
            (
                "pre_roll",
                Box::new(|c| c.pre_roll = Duration::from_secs(2)),
            ),
            (
                "post_roll",
                Box::new(|c| c.post_roll = Duration::from_secs(1)),
            ),
            (
                "max_utterance",
                Box::new(|c| c.max_utterance = Duration::from_secs(31)),
            ),
            (
                "min_utterance",
                Box::new(|c| c.min_utterance = Duration::from_secs(24_900)),
            ),
        ];
        for (field, mutate) in cases {
            let mut c = VadConfig::default();
            mutate(&mut c);
            let err = c.validate().expect_err(field);
            assert!(err.starts_with(&format!("{field}:")), "{field}: {err}");
            assert!(Vad::new(&c).is_err());
        }
    }

    #[test]
    fn silence_and_noise_give_nothing() {
        let cfg = VadConfig::default();
        assert!(run(&cfg, &vec![0.0; 10 * 16_000], 320).is_empty());
        // Loud steady noise (−25 dBFS): above the absolute threshold, but it is the floor.
        assert!(run(&cfg, &noise(20 * 16_000, 0.1, 1), 333).is_empty());
    }

    #[test]
    fn tone_burst_in_noise_is_one_utterance_with_bounds() {
        let cfg = VadConfig::default();
        let mut audio = vec![0.0; 1000 * MS];
        audio.extend(voice(1500, 0.3));
        audio.extend(vec![0.0; 2000 * MS]);
        let audio = with_noise(audio, 0.003);
        let segs = run(&cfg, &audio, 480);
        assert_eq!(segs.len(), 1, "{segs:?}");
        let s = &segs[0];
        let (start, end) = (ms_of(s.start_sample), ms_of(s.end_sample()));
        // Speech 1000..2500 ms; pre-roll 240 ms, post-roll 200 ms.
        assert!((740..=780).contains(&start), "start {start}");
        assert!((2680..=2720).contains(&end), "end {end}");
        assert_eq!(s.samples.len() as u64, s.end_sample() - s.start_sample);
        // The samples are the audio at those positions.
        let at = s.start_sample as usize + 500 * MS;
        assert_eq!(s.samples[500 * MS], audio[at]);
    }

    #[test]
    fn short_pause_does_not_split_but_long_pause_does() {
        let cfg = VadConfig::default();
        let mut audio = vec![0.0; 500 * MS];
        audio.extend(voice(800, 0.3));
        audio.extend(vec![0.0; 400 * MS]); // a pause inside a sentence
        audio.extend(voice(800, 0.3));
        audio.extend(vec![0.0; 1500 * MS]); // between sentences
        audio.extend(voice(800, 0.3));
        audio.extend(vec![0.0; 1000 * MS]);
        let audio = with_noise(audio, 0.002);
        let segs = run(&cfg, &audio, 777);
        assert_eq!(segs.len(), 2, "{segs:?}");
        assert!(ms_of(segs[0].end_sample()) > 2500);
        assert!(ms_of(segs[1].start_sample) > 3500);
    }

    #[test]
    fn clicks_are_dropped() {
        let cfg = VadConfig::default();
        let mut audio = vec![0.0; 1000 * MS];
        audio.extend(voice(120, 0.5)); // 120 ms: starts, but under min_utterance
        audio.extend(vec![0.0; 2000 * MS]);
        assert!(run(&cfg, &with_noise(audio, 0.002), 320).is_empty());
    }

    #[test]
    fn long_speech_is_cut_at_a_quiet_point() {
        let cfg = VadConfig::default();
        let mut audio = vec![0.0; 500 * MS];
        // 40 s of speech: 2.5 s phrases separated by 300 ms dips (below end_silence).
        for _ in 0..14 {
            audio.extend(voice(2500, 0.3));
            audio.extend(vec![0.0; 300 * MS]);
        }
        audio.extend(vec![0.0; 1000 * MS]);
        let audio = with_noise(audio, 0.002);
        let segs = run(&cfg, &audio, 960);
        assert!(segs.len() >= 2, "{segs:?}");
        for w in segs.windows(2) {
            assert!(w[0].end_sample() <= w[1].start_sample + 1, "{segs:?}");
        }
        let first = &segs[0];
        let len_ms = ms_of(first.samples.len() as u64);
        // Cut in the last quarter of the allowed length.
        let max_ms = cfg.max_utterance.as_millis() as u64;
        assert!(len_ms <= max_ms, "{len_ms} > {max_ms}");
        assert!(len_ms >= max_ms * 3 / 4 - 500, "{len_ms} (max {max_ms})");
        // The cut falls in a dip: the 60 ms around it are quiet.
        let cut = first.end_sample() as usize;
        let around = &audio[cut - 30 * MS..cut + 30 * MS];
        let loud = around.iter().filter(|s| s.abs() > 0.05).count();
        assert!(
            loud < around.len() / 4,
            "cut at {} ms is not quiet",
            cut / MS
        );
        // Nothing is lost at the cut.
        assert_eq!(segs[1].start_sample, first.end_sample());
    }

    #[test]
    fn gaps_end_utterances_and_keep_positions() {
        let cfg = VadConfig::default();
        let mut vad = Vad::new(&cfg).expect("valid");
        let mut out = Vec::new();
        vad.push(&with_noise(vec![0.0; 1000 * MS], 0.002), &mut out);
        vad.push(&voice(1000, 0.3), &mut out);
        assert!(vad.in_speech());
        vad.push(&[0.0; 100], &mut out); // partial frame before the gap
        vad.push_gap(10 * 60 * 16_000, &mut out); // ten minutes
        assert_eq!(out.len(), 1);
        assert!(!vad.in_speech());
        let expected = (2000 * MS + 100 + 10 * 60 * 16_000) as u64;
        assert_eq!(vad.position(), expected / 320 * 320);
        vad.push(&with_noise(vec![0.0; 1000 * MS], 0.002), &mut out);
        vad.push(&voice(1000, 0.3), &mut out);
        out.extend(vad.finish());
        assert_eq!(out.len(), 2);
        let start = ms_of(out[1].start_sample);
        let speech_at = (expected / MS as u64) + 1000;
        assert!(
            (speech_at - 260..=speech_at).contains(&start),
            "{start} vs {speech_at}"
        );
    }

    #[test]
    fn split_input_gives_identical_segments() {
        let cfg = VadConfig::default();
        let mut audio = vec![0.0; 700 * MS];
        audio.extend(voice(900, 0.2));
        audio.extend(vec![0.0; 1000 * MS]);
        let audio = with_noise(audio, 0.001);
        let a = run(&cfg, &audio, 320);
        let b = run(&cfg, &audio, 17);
        assert_eq!(a.len(), 1);
        assert_eq!(a.len(), b.len());
        assert_eq!(a[0].start_sample, b[0].start_sample);
        assert_eq!(a[0].samples, b[0].samples);
    }

    fn to_16k(x48: &[f32]) -> Vec<f32> {
        let mut d = Decimator48To16::new();
        let mut out = Vec::new();
        d.process(x48, &mut out);
        out
    }

    #[test]
    fn espeak_two_sentences_with_a_pause_are_two_utterances() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = to_16k(&espeak_48k(
            dir.path(),
            "a",
            "The quarterly numbers look good.",
        ));
        let b = to_16k(&espeak_48k(
            dir.path(),
            "b",
            "Let us ship the release on Friday.",
        ));
        let lead = 1000 * MS;
        let pause = 1500 * MS;
        let mut audio = vec![0.0; lead];
        audio.extend(&a);
        audio.extend(vec![0.0; pause]);
        audio.extend(&b);
        audio.extend(vec![0.0; 1000 * MS]);
        let audio = with_noise(audio, 0.001); // about −65 dBFS of hiss
        let segs = run(&VadConfig::default(), &audio, 320);
        assert_eq!(segs.len(), 2, "{segs:?}");
        // espeak pads its clips with a little silence; allow for that.
        let a_start = lead as u64;
        let a_end = (lead + a.len()) as u64;
        let b_start = a_end + pause as u64;
        let b_end = b_start + b.len() as u64;
        let tol = 400 * MS as u64;
        assert!(segs[0].start_sample + tol >= a_start && segs[0].start_sample <= a_start + tol);
        assert!(segs[0].end_sample() <= a_end + tol && segs[0].end_sample() + tol >= a_end);
        assert!(segs[1].start_sample + tol >= b_start && segs[1].start_sample <= b_start + tol);
        assert!(segs[1].end_sample() <= b_end + tol && segs[1].end_sample() + tol >= b_end);
        // Each utterance holds most of its sentence.
        assert!(segs[0].samples.len() > a.len() * 3 / 4);
        assert!(segs[1].samples.len() > b.len() * 3 / 4);
    }

    #[test]
    fn noise_only_gives_no_utterance() {
        // Noise that changes level (a fan switching speed) but carries no speech.
        let mut audio = noise(8 * 16_000, 0.01, 3);
        audio.extend(noise(8 * 16_000, 0.012, 4));
        audio.extend(noise(8 * 16_000, 0.008, 5));
        assert!(run(&VadConfig::default(), &audio, 320).is_empty());
    }

    #[test]
    fn garbage_samples_do_not_panic() {
        let mut audio = vec![f32::NAN; 16_000];
        audio.extend(vec![f32::INFINITY; 16_000]);
        audio.extend(vec![1e30; 16_000]);
        let _ = run(&VadConfig::default(), &audio, 100);
    }
}
