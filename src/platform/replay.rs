//! Replay platform: a "meeting" played from WAV files, `replay:<manifest.json>`.
//!
//! ```json
//! {"participants": [{"name": "host", "wav": "host.wav", "offset_ms": 0},
//!                   {"name": "guest", "wav": "guest.wav", "offset_ms": 1500}],
//!  "pace": "realtime"}
//! ```
//!
//! WAV paths are relative to the manifest. Each participant's file is read
//! incrementally, mixed down to mono, resampled to 48 kHz (rubato) and encoded
//! into 20 ms Opus packets (VoIP, 32 kb/s), exactly what a live platform
//! delivers; the core then decodes them like live RTP, so a replay exercises
//! the live audio path. Only a few hundred milliseconds of audio per
//! participant are in memory at once.
//!
//! Events, all on one meeting clock (ms since `Admitted`): `Admitted`; per
//! participant `ParticipantJoined` at its offset, `Audio` packets with
//! `at_ms = offset + 20·i` and consecutive sequence numbers, and
//! `ParticipantLeft` when its file ends; then `Ended { ReplayFinished }`.
//! Participants are interleaved by meeting time. `pace: "realtime"` (default)
//! sends each event at its meeting time on the tokio clock; `"fast"` sends as
//! fast as the bounded channel accepts.
//!
//! Participant ids are `p1`, `p2`, … in manifest order. Errors name
//! participants by that index and their WAV's file name, never by name.

use std::collections::VecDeque;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use rubato::VecResampler;
use tracing::{debug, info};

use super::*;

/// At most this many participants in a manifest.
pub const MAX_PARTICIPANTS: usize = 64;
/// Largest accepted `offset_ms` (24 h).
pub const MAX_OFFSET_MS: u64 = 24 * 60 * 60 * 1000;
/// Largest accepted manifest file.
const MAX_MANIFEST_BYTES: u64 = 1 << 20;
/// Longest participant name, characters.
const MAX_NAME_CHARS: usize = 256;
/// Opus rate.
const RATE: u32 = 48_000;
/// Samples per 20 ms packet at 48 kHz.
pub(crate) const PACKET_SAMPLES: usize = 960;
/// Packet duration, ms.
const PACKET_MS: u64 = 20;
/// Packets encoded per refill (0.5 s of audio).
const CHUNK_PACKETS: usize = 25;
/// Encoder bitrate, bits per second.
const BITRATE: i32 = 32_000;

/// How fast a replay runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pace {
    /// Events at their meeting time on the (tokio) wall clock.
    #[default]
    Realtime,
    /// As fast as the consumer takes them.
    Fast,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    participants: Vec<ManifestEntry>,
    #[serde(default)]
    pace: Pace,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestEntry {
    name: String,
    wav: String,
    #[serde(default)]
    offset_ms: u64,
}

/// One validated participant, its WAV open and ready to stream.
struct Participant {
    /// "participant #2 (guest.wav)", for errors.
    label: String,
    id: ParticipantId,
    name: Pii<String>,
    offset_ms: u64,
    stream: Box<WavStream>,
}

/// A replay, validated and ready to run.
pub struct ReplayPlatform {
    pace: Pace,
    participants: Vec<Participant>,
}

impl std::fmt::Debug for ReplayPlatform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayPlatform")
            .field("pace", &self.pace)
            .field("participants", &self.participants.len())
            .finish()
    }
}

impl ReplayPlatform {
    /// Reads and checks the manifest and every WAV it names (existence,
    /// format, non-empty), so that a bad replay fails before anything is
    /// recorded.
    pub fn open(manifest: &Path) -> Result<Self, PlatformError> {
        let name = manifest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "(no file name)".into());
        let bad = |msg: String| PlatformError::Replay(msg);
        let meta = std::fs::metadata(manifest)
            .map_err(|e| bad(format!("cannot read the manifest {name}: {e}")))?;
        if !meta.is_file() {
            return Err(bad("the manifest is not a file".into()));
        }
        if meta.len() > MAX_MANIFEST_BYTES {
            return Err(bad(format!(
                "the manifest is {} bytes; at most {MAX_MANIFEST_BYTES} accepted",
                meta.len()
            )));
        }
        let raw = std::fs::read(manifest)
            .map_err(|e| bad(format!("cannot read the manifest {name}: {e}")))?;
        let m: Manifest =
            serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(&raw))
                .map_err(|e| {
                    let at = e.path().to_string();
                    let msg = redact_quoted(&e.inner().to_string());
                    if at == "." {
                        bad(format!("invalid manifest: {msg}"))
                    } else {
                        bad(format!("invalid manifest at {at}: {msg}"))
                    }
                })?;
        if m.participants.is_empty() {
            return Err(bad("the manifest lists no participants".into()));
        }
        if m.participants.len() > MAX_PARTICIPANTS {
            return Err(bad(format!(
                "the manifest lists {} participants; at most {MAX_PARTICIPANTS} supported",
                m.participants.len()
            )));
        }
        let base = manifest.parent().unwrap_or(Path::new("."));
        let mut participants = Vec::with_capacity(m.participants.len());
        for (i, entry) in m.participants.into_iter().enumerate() {
            let n = i + 1;
            let file = Path::new(&entry.wav)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_else(|| entry.wav.clone());
            let label = format!("participant #{n} ({file})");
            let name = entry.name.trim();
            if name.is_empty() {
                return Err(bad(format!("{label}: empty name")));
            }
            if name.chars().count() > MAX_NAME_CHARS {
                return Err(bad(format!(
                    "{label}: name longer than {MAX_NAME_CHARS} characters"
                )));
            }
            if let Some(j) = participants
                .iter()
                .position(|p: &Participant| p.name.expose() == name)
            {
                return Err(bad(format!("{label}: same name as participant #{}", j + 1)));
            }
            if entry.wav.trim().is_empty() {
                return Err(bad(format!("participant #{n}: empty wav path")));
            }
            if entry.offset_ms > MAX_OFFSET_MS {
                return Err(bad(format!(
                    "{label}: offset_ms {} is more than 24 hours",
                    entry.offset_ms
                )));
            }
            let stream = WavStream::open(&base.join(&entry.wav))
                .map_err(|e| bad(format!("{label}: {e}")))?;
            participants.push(Participant {
                label,
                id: ParticipantId(format!("p{n}")),
                name: Pii::new(name.to_string()),
                offset_ms: entry.offset_ms,
                stream: Box::new(stream),
            });
        }
        Ok(ReplayPlatform {
            pace: m.pace,
            participants,
        })
    }

    /// The pace the manifest asked for.
    pub fn pace(&self) -> Pace {
        self.pace
    }

    /// Overrides the pace.
    pub fn set_pace(&mut self, pace: Pace) {
        self.pace = pace;
    }

    /// Number of participants.
    pub fn participant_count(&self) -> usize {
        self.participants.len()
    }
}

/// Replaces the contents of double-quoted strings in a serde message (values
/// from the manifest, such as a participant's name) with `"…"`. Field names
/// (in backticks) stay.
fn redact_quoted(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut inside = false;
    for c in msg.chars() {
        if c == '"' {
            if inside {
                out.push_str("…\"");
            } else {
                out.push('"');
            }
            inside = !inside;
        } else if !inside {
            out.push(c);
        }
    }
    out
}

/// Where a participant is in the replay.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    NotJoined,
    Streaming,
    Done,
}

/// Run-time state of one participant.
struct Slot {
    label: String,
    id: ParticipantId,
    name: Option<Pii<String>>,
    offset_ms: u64,
    /// `None` after the end of the file.
    stream: Option<Box<WavStream>>,
    /// Encoded packets not yet sent.
    queue: VecDeque<Bytes>,
    /// Packets sent so far.
    sent: u64,
    seq: u16,
    phase: Phase,
}

impl Slot {
    /// Meeting time of this participant's next event.
    fn next_ms(&self) -> Option<u64> {
        match self.phase {
            Phase::NotJoined => Some(self.offset_ms),
            Phase::Streaming => Some(self.offset_ms + PACKET_MS * self.sent),
            Phase::Done => None,
        }
    }
}

/// Sends one event unless the bot is leaving; false when the run should stop
/// (leave requested or nobody listening).
async fn send(
    events: &mpsc::Sender<PlatformEvent>,
    leave: &CancellationToken,
    ev: PlatformEvent,
) -> bool {
    tokio::select! {
        biased;
        _ = leave.cancelled() => false,
        r = events.send(ev) => r.is_ok(),
    }
}

#[async_trait]
impl MeetingPlatform for ReplayPlatform {
    async fn run(
        self: Box<Self>,
        events: mpsc::Sender<PlatformEvent>,
        leave: CancellationToken,
    ) -> Result<(), PlatformError> {
        let pace = self.pace;
        let mut slots: Vec<Slot> = self
            .participants
            .into_iter()
            .map(|p| Slot {
                label: p.label,
                id: p.id,
                name: Some(p.name),
                offset_ms: p.offset_ms,
                stream: Some(p.stream),
                queue: VecDeque::with_capacity(CHUNK_PACKETS),
                sent: 0,
                seq: 0,
                phase: Phase::NotJoined,
            })
            .collect();
        info!(participants = slots.len(), ?pace, "Replay starting.");
        let start = tokio::time::Instant::now();
        if !send(&events, &leave, PlatformEvent::Admitted).await {
            return Ok(());
        }
        // Always the participant with the earliest next event (ties: manifest order).
        while let Some((i, _)) = slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.next_ms().map(|t| (i, t)))
            .min_by_key(|&(i, t)| (t, i))
        {
            let slot = &mut slots[i];
            if slot.phase == Phase::Streaming && slot.queue.is_empty() {
                if let Some(stream) = slot.stream.take() {
                    let refill = tokio::task::spawn_blocking(move || {
                        let mut stream = stream;
                        let r = stream.encode_packets(CHUNK_PACKETS);
                        (stream, r)
                    });
                    let joined = tokio::select! {
                        biased;
                        _ = leave.cancelled() => return Ok(()),
                        j = refill => j,
                    };
                    let (stream, result) = joined.map_err(|e| {
                        PlatformError::Replay(format!("{}: encoder task failed: {e}", slot.label))
                    })?;
                    let packets = result
                        .map_err(|e| PlatformError::Replay(format!("{}: {e}", slot.label)))?;
                    let ended = packets.len() < CHUNK_PACKETS;
                    slot.queue.extend(packets);
                    if !ended {
                        slot.stream = Some(stream);
                    }
                }
            }
            let Some(at_ms) = slot.next_ms() else {
                continue;
            };
            if pace == Pace::Realtime {
                let due = start + Duration::from_millis(at_ms);
                tokio::select! {
                    biased;
                    _ = leave.cancelled() => return Ok(()),
                    _ = tokio::time::sleep_until(due) => {}
                }
            }
            let ev = match slot.phase {
                Phase::NotJoined => {
                    slot.phase = Phase::Streaming;
                    debug!(participant = %slot.id, at_ms, "Replay participant joins.");
                    PlatformEvent::ParticipantJoined {
                        id: slot.id.clone(),
                        name: slot.name.take().unwrap_or_default(),
                    }
                }
                Phase::Streaming => match slot.queue.pop_front() {
                    Some(payload) => {
                        let packet = OpusPacket {
                            seq: slot.seq,
                            at_ms,
                            payload,
                        };
                        slot.seq = slot.seq.wrapping_add(1);
                        slot.sent += 1;
                        PlatformEvent::Audio {
                            id: slot.id.clone(),
                            packet,
                        }
                    }
                    None => {
                        slot.phase = Phase::Done;
                        debug!(participant = %slot.id, at_ms, "Replay participant leaves.");
                        PlatformEvent::ParticipantLeft {
                            id: slot.id.clone(),
                        }
                    }
                },
                Phase::Done => continue,
            };
            if !send(&events, &leave, ev).await {
                return Ok(());
            }
        }
        info!("Replay finished.");
        send(
            &events,
            &leave,
            PlatformEvent::Ended {
                reason: EndReason::ReplayFinished,
            },
        )
        .await;
        Ok(())
    }
}

/// How samples are stored in the WAV.
#[derive(Clone, Copy)]
enum SampleKind {
    /// Integers, scaled by this factor into [-1, 1].
    Int(f32),
    Float,
}

/// A WAV file streamed as 48 kHz mono 20 ms frames and Opus packets.
/// Holds a read buffer, the resampler's state and under 1 s of audio.
pub(crate) struct WavStream {
    reader: hound::WavReader<BufReader<File>>,
    channels: usize,
    kind: SampleKind,
    rate: u32,
    /// Source frames read so far.
    frames_read: u64,
    /// No more source frames.
    input_done: bool,
    resampler: Option<Box<dyn VecResampler<f32>>>,
    rs_in: Vec<Vec<f32>>,
    rs_out: Vec<Vec<f32>>,
    /// Resampler delay (output frames) still to discard.
    skip: usize,
    /// 48 kHz frames produced (after the delay).
    produced: u64,
    /// All output produced.
    finished: bool,
    /// Zero-padded flush calls made after the input ended.
    flushes: usize,
    /// 48 kHz mono samples ready to encode.
    ready: VecDeque<f32>,
    /// Interleaved read scratch.
    scratch: Vec<f32>,
    /// Mono read buffer for 48 kHz files.
    mono: Vec<f32>,
    encoder: opus::Encoder,
    encoded: Vec<u8>,
}

impl WavStream {
    /// Opens and checks a WAV; the error describes the problem without naming the file.
    pub(crate) fn open(path: &Path) -> Result<Self, String> {
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => return Err("not a file".into()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err("file not found".into())
            }
            Err(e) => return Err(format!("cannot read: {e}")),
        }
        let reader = hound::WavReader::open(path).map_err(|e| match e {
            hound::Error::IoError(e) => format!("cannot read: {e}"),
            hound::Error::Unsupported => "unsupported WAV encoding".to_string(),
            other => format!("not a readable WAV file: {other}"),
        })?;
        let spec = reader.spec();
        if !(1..=8).contains(&spec.channels) {
            return Err(format!("{} channels; 1 to 8 supported", spec.channels));
        }
        if !(8_000..=192_000).contains(&spec.sample_rate) {
            return Err(format!(
                "sample rate {} Hz; 8000 to 192000 Hz supported",
                spec.sample_rate
            ));
        }
        let kind = match (spec.sample_format, spec.bits_per_sample) {
            (hound::SampleFormat::Int, b @ (8 | 16 | 24 | 32)) => {
                SampleKind::Int(1.0 / (1u64 << (b - 1)) as f32)
            }
            (hound::SampleFormat::Int, b) => {
                return Err(format!(
                    "{b}-bit integer samples; 8, 16, 24 or 32-bit supported"
                ))
            }
            (hound::SampleFormat::Float, 32) => SampleKind::Float,
            (hound::SampleFormat::Float, b) => {
                return Err(format!(
                    "{b}-bit float samples; only 32-bit float supported"
                ))
            }
        };
        if reader.duration() == 0 {
            return Err("no audio (0 samples)".into());
        }
        let resampler = make_resampler(spec.sample_rate)?;
        let (rs_in, rs_out, skip) = match &resampler {
            Some(r) => (
                r.input_buffer_allocate(false),
                r.output_buffer_allocate(true),
                r.output_delay(),
            ),
            None => (Vec::new(), Vec::new(), 0),
        };
        let mut encoder = opus::Encoder::new(RATE, opus::Channels::Mono, opus::Application::Voip)
            .map_err(|e| format!("cannot create Opus encoder: {e}"))?;
        encoder
            .set_bitrate(opus::Bitrate::Bits(BITRATE))
            .map_err(|e| format!("cannot set Opus bitrate: {e}"))?;
        Ok(WavStream {
            reader,
            channels: usize::from(spec.channels),
            kind,
            rate: spec.sample_rate,
            frames_read: 0,
            input_done: false,
            resampler,
            rs_in,
            rs_out,
            skip,
            produced: 0,
            finished: false,
            flushes: 0,
            ready: VecDeque::with_capacity(4 * PACKET_SAMPLES),
            scratch: Vec::new(),
            mono: Vec::new(),
            encoder,
            encoded: vec![0; 1500],
        })
    }

    /// Encodes up to `max` more 20 ms packets; fewer means the file ended.
    pub(crate) fn encode_packets(&mut self, max: usize) -> Result<Vec<Bytes>, String> {
        let mut out = Vec::with_capacity(max);
        let mut frame = [0.0f32; PACKET_SAMPLES];
        while out.len() < max && self.next_frame(&mut frame)? {
            let n = self
                .encoder
                .encode_float(&frame, &mut self.encoded)
                .map_err(|e| format!("Opus encoding failed: {e}"))?;
            out.push(Bytes::copy_from_slice(&self.encoded[..n]));
        }
        Ok(out)
    }

    /// The next 20 ms of 48 kHz mono audio (the last one zero-padded); false
    /// at the end.
    pub(crate) fn next_frame(&mut self, frame: &mut [f32; PACKET_SAMPLES]) -> Result<bool, String> {
        loop {
            if self.ready.len() >= PACKET_SAMPLES {
                for (dst, src) in frame.iter_mut().zip(self.ready.drain(..PACKET_SAMPLES)) {
                    *dst = src;
                }
                return Ok(true);
            }
            if self.finished {
                if self.ready.is_empty() {
                    return Ok(false);
                }
                frame.fill(0.0);
                for (dst, src) in frame.iter_mut().zip(self.ready.drain(..)) {
                    *dst = src;
                }
                return Ok(true);
            }
            self.produce()?;
        }
    }

    /// Reads up to `want` source frames, mixed down to mono, into `dst`
    /// (cleared first). Fewer than asked means the end of the file.
    fn read_mono(&mut self, want: usize, dst: &mut Vec<f32>) -> Result<(), String> {
        dst.clear();
        self.scratch.clear();
        let n = want * self.channels;
        let at = self.frames_read as f64 / f64::from(self.rate);
        let fail = |e: hound::Error| format!("read failed at {at:.2} s: {e}");
        match self.kind {
            SampleKind::Int(scale) => {
                for s in self.reader.samples::<i32>().take(n) {
                    self.scratch.push(s.map_err(fail)? as f32 * scale);
                }
            }
            SampleKind::Float => {
                for s in self.reader.samples::<f32>().take(n) {
                    self.scratch.push(s.map_err(fail)?);
                }
            }
        }
        // A trailing partial frame (truncated file) is dropped.
        let inv = 1.0 / self.channels as f32;
        for f in self.scratch.chunks_exact(self.channels) {
            let v = f.iter().sum::<f32>() * inv;
            dst.push(if v.is_finite() {
                v.clamp(-1.0, 1.0)
            } else {
                0.0
            });
        }
        self.frames_read += dst.len() as u64;
        if dst.len() < want {
            self.input_done = true;
        }
        Ok(())
    }

    /// Moves some more audio into `ready`, or marks the stream finished.
    fn produce(&mut self) -> Result<(), String> {
        match self.resampler.take() {
            Some(mut rs) => {
                let r = self.resample_step(rs.as_mut());
                self.resampler = Some(rs);
                r
            }
            None => {
                // 48 kHz already: no resampling.
                let mut buf = std::mem::take(&mut self.mono);
                let r = self.read_mono(PACKET_SAMPLES, &mut buf);
                self.ready.extend(buf.iter());
                self.produced += buf.len() as u64;
                self.mono = buf;
                if self.input_done {
                    self.finished = true;
                }
                r
            }
        }
    }

    fn resample_step(&mut self, rs: &mut dyn VecResampler<f32>) -> Result<(), String> {
        let rs_err = |e: rubato::ResampleError| format!("resampling failed: {e}");
        let (_, got) = if !self.input_done {
            let need = rs.input_frames_next();
            let mut input = std::mem::take(&mut self.rs_in);
            if input.is_empty() {
                input.push(Vec::new());
            }
            let read = self.read_mono(need, &mut input[0]);
            let r = read.and_then(|()| {
                if input[0].len() == need {
                    rs.process_into_buffer(&input, &mut self.rs_out, None)
                        .map_err(rs_err)
                } else if input[0].is_empty() {
                    // rubato takes an empty channel as inactive; pass no input instead.
                    rs.process_partial_into_buffer(None::<&[Vec<f32>]>, &mut self.rs_out, None)
                        .map_err(rs_err)
                } else {
                    rs.process_partial_into_buffer(Some(&input), &mut self.rs_out, None)
                        .map_err(rs_err)
                }
            });
            self.rs_in = input;
            r?
        } else {
            self.flushes += 1;
            rs.process_partial_into_buffer(None::<&[Vec<f32>]>, &mut self.rs_out, None)
                .map_err(rs_err)?
        };
        let out = self
            .rs_out
            .first()
            .map(|c| &c[..got.min(c.len())])
            .unwrap_or(&[]);
        let drop = self.skip.min(out.len());
        self.skip -= drop;
        let out = &out[drop..];
        // Once the input has ended, only as much output as it accounts for.
        let wanted = if self.input_done {
            let total = (self.frames_read * u64::from(RATE)).div_ceil(u64::from(self.rate));
            total.saturating_sub(self.produced)
        } else {
            u64::MAX
        };
        let take = (out.len() as u64).min(wanted) as usize;
        self.ready.extend(out[..take].iter());
        self.produced += take as u64;
        // The flush limit is a backstop: the delay is under one chunk, so two
        // zero-padded calls always suffice.
        if self.input_done && (take as u64 == wanted || self.flushes > 8) {
            self.finished = true;
        }
        Ok(())
    }
}

/// A resampler from `rate` to 48 kHz producing 20 ms per call: FFT-based when
/// the rates share a large common factor (every common rate), windowed-sinc
/// otherwise (which keeps memory small for odd rates).
fn make_resampler(rate: u32) -> Result<Option<Box<dyn VecResampler<f32>>>, String> {
    if rate == RATE {
        return Ok(None);
    }
    let (a, b) = (rate as usize, RATE as usize);
    let mut g = (a, b);
    while g.1 != 0 {
        g = (g.1, g.0 % g.1);
    }
    let min_out = b / g.0;
    let err =
        |e: rubato::ResamplerConstructionError| format!("cannot resample from {rate} Hz: {e}");
    if min_out <= 4 * PACKET_SAMPLES {
        let r = rubato::FftFixedOut::<f32>::new(a, b, PACKET_SAMPLES, 1, 1).map_err(err)?;
        Ok(Some(Box::new(r)))
    } else {
        let params = rubato::SincInterpolationParameters {
            sinc_len: 128,
            f_cutoff: 0.925,
            oversampling_factor: 128,
            interpolation: rubato::SincInterpolationType::Linear,
            window: rubato::WindowFunction::BlackmanHarris2,
        };
        let r =
            rubato::SincFixedOut::<f32>::new(b as f64 / a as f64, 1.0, params, PACKET_SAMPLES, 1)
                .map_err(err)?;
        Ok(Some(Box::new(r)))
    }
}

/// Encodes a whole WAV into 20 ms Opus packets exactly as a replay would
/// (sequence from 0, `at_ms` from 0). For benchmarks and tests: the packets
/// are all kept in memory.
pub(crate) fn encode_wav(path: &Path) -> Result<Vec<OpusPacket>, PlatformError> {
    let label = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut stream =
        WavStream::open(path).map_err(|e| PlatformError::Replay(format!("{label}: {e}")))?;
    let mut packets = Vec::new();
    loop {
        let chunk = stream
            .encode_packets(CHUNK_PACKETS)
            .map_err(|e| PlatformError::Replay(format!("{label}: {e}")))?;
        let ended = chunk.len() < CHUNK_PACKETS;
        for payload in chunk {
            let i = packets.len() as u64;
            packets.push(OpusPacket {
                seq: i as u16,
                at_ms: i * PACKET_MS,
                payload,
            });
        }
        if ended {
            return Ok(packets);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::audio::ParticipantPipeline;
    use crate::core::media::Utterance;
    use crate::core::vad::testutil::espeak_wav;
    use crate::core::vad::VadConfig;

    fn spec(channels: u16, rate: u32, bits: u16, float: bool) -> hound::WavSpec {
        hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: bits,
            sample_format: if float {
                hound::SampleFormat::Float
            } else {
                hound::SampleFormat::Int
            },
        }
    }

    /// Writes `frames` frames of a 440 Hz tone (every channel) as 16-bit PCM.
    fn tone_wav(dir: &Path, name: &str, channels: u16, rate: u32, frames: usize) {
        let mut w = hound::WavWriter::create(dir.join(name), spec(channels, rate, 16, false))
            .expect("create WAV");
        for i in 0..frames {
            let v = (2.0 * std::f32::consts::PI * 440.0 * i as f32 / rate as f32).sin();
            for _ in 0..channels {
                w.write_sample((v * 8000.0) as i16).expect("write");
            }
        }
        w.finalize().expect("finalize");
    }

    fn manifest(dir: &Path, json: &str) -> std::path::PathBuf {
        let p = dir.join("manifest.json");
        std::fs::write(&p, json).expect("write manifest");
        p
    }

    fn open_err(dir: &Path, json: &str) -> String {
        match ReplayPlatform::open(&manifest(dir, json)) {
            Ok(_) => panic!("expected an error for {json}"),
            Err(e) => e.to_string(),
        }
    }

    /// Runs a replay to completion, collecting every event.
    async fn collect(p: ReplayPlatform) -> (Result<(), PlatformError>, Vec<PlatformEvent>) {
        let (tx, mut rx) = mpsc::channel(8);
        let task = tokio::spawn(Box::new(p).run(tx, CancellationToken::new()));
        let mut events = Vec::new();
        while let Some(ev) = rx.recv().await {
            events.push(ev);
        }
        (task.await.expect("run task"), events)
    }

    #[test]
    fn manifest_problems_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        tone_wav(d, "ok.wav", 1, 16_000, 1600);
        std::fs::write(d.join("text.wav"), b"this is not a wav file").expect("write");
        tone_wav(d, "nine.wav", 9, 16_000, 100);
        tone_wav(d, "slow.wav", 1, 4_000, 100);
        tone_wav(d, "empty.wav", 1, 16_000, 0);
        let mut w = hound::WavWriter::create(d.join("f64ish.wav"), spec(1, 16_000, 32, true))
            .expect("create");
        w.write_sample(0.5f32).expect("write");
        w.finalize().expect("finalize");
        let ok = r#"{"name":"Alice Secret","wav":"ok.wav"}"#;
        let cases = [
            (
                format!(r#"{{"participants":[{ok},{{"name":"B","wav":"missing.wav"}}]}}"#),
                "participant #2 (missing.wav): file not found",
            ),
            (
                format!(r#"{{"participants":[{ok},{{"name":"B","wav":"text.wav"}}]}}"#),
                "participant #2 (text.wav): not a readable WAV file",
            ),
            (
                r#"{"participants":[{"name":"B","wav":"nine.wav"}]}"#.into(),
                "participant #1 (nine.wav): 9 channels; 1 to 8 supported",
            ),
            (
                r#"{"participants":[{"name":"B","wav":"slow.wav"}]}"#.into(),
                "participant #1 (slow.wav): sample rate 4000 Hz",
            ),
            (
                r#"{"participants":[{"name":"B","wav":"empty.wav"}]}"#.into(),
                "participant #1 (empty.wav): no audio",
            ),
            (
                r#"{"participants":[{"name":"B","wav":"sub"}]}"#.into(),
                "participant #1 (sub): file not found",
            ),
            (
                format!(r#"{{"participants":[{ok},{ok}]}}"#),
                "participant #2 (ok.wav): same name as participant #1",
            ),
            (
                r#"{"participants":[{"name":"  ","wav":"ok.wav"}]}"#.into(),
                "participant #1 (ok.wav): empty name",
            ),
            (
                r#"{"participants":[{"name":"B","wav":""}]}"#.into(),
                "participant #1: empty wav path",
            ),
            (
                r#"{"participants":[{"name":"B","wav":"ok.wav","offset_ms":90000000}]}"#.into(),
                "participant #1 (ok.wav): offset_ms 90000000 is more than 24 hours",
            ),
            (r#"{"participants":[]}"#.into(), "no participants"),
            (
                format!(r#"{{"participants":[{ok}],"pace":"slow"}}"#),
                "invalid manifest at pace: unknown variant",
            ),
            (
                format!(r#"{{"participants":[{ok}],"extra":1}}"#),
                "unknown field `extra`",
            ),
            (
                r#"{"participants":[{"name":"B","wav":"ok.wav","offset_ms":"Alice Secret"}]}"#
                    .into(),
                "invalid manifest at participants[0].offset_ms: invalid type: string",
            ),
            (
                r#"{"participants":[{"name":"B","wav":"ok.wav""#.into(),
                "EOF while parsing",
            ),
        ];
        for (json, want) in &cases {
            let err = open_err(d, json);
            assert!(err.contains(want), "{json}\n  got:  {err}\n  want: {want}");
            assert!(!err.contains("Alice"), "a name leaked: {err}");
        }
        let many: Vec<String> = (0..65)
            .map(|i| format!(r#"{{"name":"n{i}","wav":"ok.wav"}}"#))
            .collect();
        let err = open_err(d, &format!(r#"{{"participants":[{}]}}"#, many.join(",")));
        assert!(err.contains("65 participants; at most 64"), "{err}");
        let err = ReplayPlatform::open(&d.join("nope.json"))
            .expect_err("missing manifest")
            .to_string();
        assert!(err.contains("cannot read the manifest"), "{err}");
        // Other formats are accepted.
        let p = ReplayPlatform::open(&manifest(
            d,
            r#"{"participants":[{"name":"B","wav":"f64ish.wav"}]}"#,
        ))
        .expect("32-bit float is supported");
        assert_eq!(p.pace(), Pace::Realtime);
    }

    #[tokio::test]
    async fn fast_replay_interleaves_participants_on_one_clock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        tone_wav(d, "host.wav", 1, 48_000, 48_000); // 1 s
        tone_wav(d, "guest.wav", 2, 22_050, 11_025); // 0.5 s, stereo
        let m = manifest(
            d,
            r#"{"participants":[{"name":"host","wav":"host.wav"},
                {"name":"guest","wav":"guest.wav","offset_ms":300}],"pace":"fast"}"#,
        );
        let p = ReplayPlatform::open(&m).expect("valid manifest");
        assert_eq!(p.participant_count(), 2);
        let (result, events) = collect(p).await;
        result.expect("replay succeeds");
        assert!(matches!(events.first(), Some(PlatformEvent::Admitted)));
        assert!(matches!(
            events.last(),
            Some(PlatformEvent::Ended {
                reason: EndReason::ReplayFinished
            })
        ));
        let mut last_at = 0;
        let mut per: std::collections::BTreeMap<String, (u16, u64, bool, bool)> =
            Default::default();
        for ev in &events {
            match ev {
                PlatformEvent::ParticipantJoined { id, name } => {
                    let e = per.entry(id.0.clone()).or_default();
                    e.2 = true;
                    assert_eq!(name.expose(), if id.0 == "p1" { "host" } else { "guest" });
                }
                PlatformEvent::Audio { id, packet } => {
                    let e = per.get_mut(&id.0).expect("joined before audio");
                    assert!(e.2 && !e.3, "audio outside join/leave");
                    let offset = if id.0 == "p1" { 0 } else { 300 };
                    assert_eq!(packet.seq, e.0);
                    assert_eq!(packet.at_ms, offset + 20 * u64::from(e.0));
                    assert!(packet.at_ms >= last_at, "events out of meeting-time order");
                    last_at = packet.at_ms;
                    e.0 += 1;
                    e.1 = packet.at_ms + 20;
                    assert!(!packet.payload.is_empty());
                }
                PlatformEvent::ParticipantLeft { id } => {
                    per.get_mut(&id.0).expect("joined").3 = true;
                }
                _ => {}
            }
        }
        assert_eq!(per["p1"].0, 50, "1 s = 50 packets");
        assert_eq!(per["p2"].0, 25, "0.5 s = 25 packets");
        assert!(per["p1"].3 && per["p2"].3, "both left");
        assert_eq!(per["p2"].1, 800);
    }

    #[tokio::test(start_paused = true)]
    async fn realtime_replay_follows_the_clock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        tone_wav(d, "a.wav", 1, 44_100, 44_100 * 2); // 2 s
        let m = manifest(
            d,
            r#"{"participants":[{"name":"a","wav":"a.wav","offset_ms":1000}]}"#,
        );
        let p = ReplayPlatform::open(&m).expect("valid");
        let (tx, mut rx) = mpsc::channel(64);
        let start = tokio::time::Instant::now();
        let task = tokio::spawn(Box::new(p).run(tx, CancellationToken::new()));
        while let Some(ev) = rx.recv().await {
            let now = start.elapsed().as_millis() as u64;
            match ev {
                PlatformEvent::Audio { packet, .. } => {
                    assert!(
                        now >= packet.at_ms && now <= packet.at_ms + 5,
                        "{now} vs {}",
                        packet.at_ms
                    );
                }
                PlatformEvent::ParticipantJoined { .. } => assert!((1000..1005).contains(&now)),
                PlatformEvent::Ended { .. } => assert!((3000..3005).contains(&now), "{now}"),
                _ => {}
            }
        }
        task.await.expect("task").expect("replay ok");
    }

    #[tokio::test(start_paused = true)]
    async fn leave_stops_promptly_and_closed_channel_is_ok() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        tone_wav(d, "a.wav", 1, 16_000, 16_000 * 60);
        let m = manifest(d, r#"{"participants":[{"name":"a","wav":"a.wav"}]}"#);
        let (tx, mut rx) = mpsc::channel(64);
        let leave = CancellationToken::new();
        let task =
            tokio::spawn(Box::new(ReplayPlatform::open(&m).expect("valid")).run(tx, leave.clone()));
        let mut got = 0;
        while got < 10 {
            if let Some(PlatformEvent::Audio { .. }) = rx.recv().await {
                got += 1;
            }
        }
        let t0 = tokio::time::Instant::now();
        leave.cancel();
        task.await.expect("task").expect("leave is Ok");
        assert!(t0.elapsed() < Duration::from_millis(50));

        // The consumer going away ends the run with Ok.
        let (tx, rx) = mpsc::channel(4);
        drop(rx);
        let p = ReplayPlatform::open(&m).expect("valid");
        Box::new(p)
            .run(tx, CancellationToken::new())
            .await
            .expect("closed channel is Ok");
    }

    #[tokio::test]
    async fn a_wav_failing_mid_stream_is_an_error_naming_the_participant() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        tone_wav(d, "host.wav", 1, 16_000, 16_000);
        tone_wav(d, "guest.wav", 1, 16_000, 16_000 * 3);
        // Cut the file short: the header still promises 3 s.
        let path = d.join("guest.wav");
        let len = std::fs::metadata(&path).expect("meta").len();
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open");
        f.set_len(len / 2).expect("truncate");
        let m = manifest(
            d,
            r#"{"participants":[{"name":"h","wav":"host.wav"},{"name":"g","wav":"guest.wav"}],"pace":"fast"}"#,
        );
        let (result, events) = collect(ReplayPlatform::open(&m).expect("header is fine")).await;
        let err = result.expect_err("mid-stream failure").to_string();
        assert!(
            err.starts_with("replay: participant #2 (guest.wav): read failed at"),
            "{err}"
        );
        assert!(!events
            .iter()
            .any(|e| matches!(e, PlatformEvent::Ended { .. })));
    }

    #[test]
    fn resampling_keeps_duration_and_level_for_odd_rates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        for (rate, channels) in [
            (8_000, 1),
            (44_100, 2),
            (44_101, 1),
            (96_000, 8),
            (192_000, 1),
        ] {
            let name = format!("r{rate}.wav");
            tone_wav(d, &name, channels, rate, rate as usize * 3 / 2); // 1.5 s
            let mut s = WavStream::open(&d.join(&name)).expect("opens");
            let mut frame = [0.0; PACKET_SAMPLES];
            let mut audio = Vec::new();
            while s.next_frame(&mut frame).expect("reads") {
                audio.extend_from_slice(&frame);
            }
            assert_eq!(
                audio.len(),
                75 * PACKET_SAMPLES,
                "{rate} Hz: 1.5 s = 75 frames"
            );
            // The tone (amplitude 8000/32768) keeps its level in the middle.
            let mid = &audio[24_000..48_000];
            let rms = (mid.iter().map(|v| v * v).sum::<f32>() / mid.len() as f32).sqrt();
            let want = 8000.0 / 32768.0 / 2f32.sqrt();
            assert!(
                (rms / want - 1.0).abs() < 0.05,
                "{rate} Hz: rms {rms} vs {want}"
            );
            // And starts on time: the first 10 ms are not silent, resampler delay removed.
            assert!(
                audio[..480].iter().any(|v| v.abs() > 0.1),
                "{rate} Hz starts late"
            );
        }
    }

    /// The replay feeds the live pipeline: speech comes out as an utterance at
    /// the participant's offset on the meeting clock.
    #[tokio::test]
    async fn replayed_speech_becomes_timed_utterances() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        // espeak-ng writes 22.05 kHz: this goes through rubato.
        espeak_wav(d, "speech", "Please send me the slides after the call.");
        let (samples, _) = crate::core::vad::testutil::read_wav(&d.join("speech.wav"));
        let first = samples.iter().position(|s| s.abs() > 0.02).expect("speech") as u64;
        let last = samples
            .iter()
            .rposition(|s| s.abs() > 0.02)
            .expect("speech") as u64;
        let m = manifest(
            d,
            r#"{"participants":[{"name":"a","wav":"speech.wav","offset_ms":2000},
                {"name":"b","wav":"speech.wav","offset_ms":7000}],"pace":"fast"}"#,
        );
        let utterances = replay_utterances(&m).await;
        assert_eq!(utterances.len(), 2, "{utterances:?}");
        for (u, offset, who) in [(&utterances[0], 2000, "p1"), (&utterances[1], 7000, "p2")] {
            assert_eq!(u.participant.0, who);
            let s = offset + first * 1000 / 22_050;
            let e = offset + last * 1000 / 22_050;
            assert!(
                u.start_ms + 300 >= s && u.start_ms <= s,
                "start {} vs {s}",
                u.start_ms
            );
            assert!(
                u.end_ms + 100 >= e && u.end_ms <= e + 300,
                "end {} vs {e}",
                u.end_ms
            );
        }
        // Deterministic: the same file gives bit-identical audio whichever
        // participant plays it, and so does a second run of the replay.
        assert_eq!(utterances[0].samples, utterances[1].samples);
        let again = replay_utterances(&m).await;
        assert_eq!(utterances[0].samples, again[0].samples);
        assert_eq!(utterances[1].samples, again[1].samples);
    }

    /// Runs a replay through the live pipelines; its utterances in order.
    async fn replay_utterances(m: &Path) -> Vec<Utterance> {
        let (result, events) = collect(ReplayPlatform::open(m).expect("valid")).await;
        result.expect("ok");
        let mut pipes: std::collections::BTreeMap<ParticipantId, ParticipantPipeline> =
            Default::default();
        let mut utterances: Vec<Utterance> = Vec::new();
        for ev in events {
            match ev {
                PlatformEvent::Audio { id, packet } => {
                    let p = pipes.entry(id.clone()).or_insert_with(|| {
                        ParticipantPipeline::new(id, &VadConfig::default()).expect("pipeline")
                    });
                    utterances.extend(p.push(&packet));
                }
                PlatformEvent::ParticipantLeft { id } => {
                    utterances.extend(pipes.get_mut(&id).and_then(|p| p.finish()));
                }
                _ => {}
            }
        }
        utterances
    }

    /// Peak memory of a 10-participant replay feeding the live pipelines:
    /// `cargo test --release --lib replay::tests::memory -- --ignored --nocapture`.
    #[tokio::test]
    #[ignore = "measurement; prints the process's peak RSS"]
    async fn memory_of_ten_participant_replay() {
        fn hwm_kib() -> u64 {
            std::fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find(|l| l.starts_with("VmHWM:"))
                        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
                })
                .unwrap_or(0)
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let mut entries = Vec::new();
        for i in 0..10 {
            let name = format!("p{i}.wav");
            tone_wav(d, &name, 2, 44_100, 44_100 * 120); // 2 min stereo each
            entries.push(format!(
                r#"{{"name":"n{i}","wav":"{name}","offset_ms":{}}}"#,
                i * 1000
            ));
        }
        let m = manifest(
            d,
            &format!(
                r#"{{"participants":[{}],"pace":"fast"}}"#,
                entries.join(",")
            ),
        );
        let before = hwm_kib();
        let p = ReplayPlatform::open(&m).expect("valid");
        let (tx, mut rx) = mpsc::channel(64);
        let task = tokio::spawn(Box::new(p).run(tx, CancellationToken::new()));
        let mut pipes: std::collections::BTreeMap<ParticipantId, ParticipantPipeline> =
            Default::default();
        let mut packets = 0u64;
        while let Some(ev) = rx.recv().await {
            if let PlatformEvent::Audio { id, packet } = ev {
                packets += 1;
                let p = pipes.entry(id.clone()).or_insert_with(|| {
                    ParticipantPipeline::new(id, &VadConfig::default()).expect("pipeline")
                });
                let _ = p.push(&packet);
            }
        }
        task.await.expect("task").expect("ok");
        println!(
            "{packets} packets; peak RSS {} KiB before the replay, {} KiB after",
            before,
            hwm_kib()
        );
    }
}
