//! Measurements of the per-participant audio path, for `meetbot bench` and
//! for tests that guard its cost.
//!
//! [`audio_path`] replays one Opus packet stream as if `participants` people
//! had each sent it, on the calling thread, and reports speed as "× realtime
//! per core": seconds of audio processed (all participants together) per
//! second of wall time on that one thread. Two paths are timed in the same
//! run, alternately, and each figure is the median of several repeats:
//!
//! * **decode**: Opus decoding alone at 16 kHz (the rate the pipeline decodes
//!   at), the floor any pipeline pays;
//! * **full**: everything the bot does per packet — the caller's per-packet
//!   hook (where the recording's encryption goes), then
//!   [`ParticipantPipeline::push`] (decode at 16 kHz, VAD, utterance cut).
//!
//! Time is read with [`std::time::Instant`]; the bench is not part of the
//! sans-IO core.

use std::fmt;
use std::path::Path;
use std::time::Instant;

use crate::core::audio::ParticipantPipeline;
use crate::core::media::{OpusPacket, ParticipantId};
use crate::core::vad::VadConfig;
use crate::platform::PlatformError;

/// Repeats used by [`audio_path`].
pub const DEFAULT_REPEATS: usize = 5;

/// What [`audio_path`] measured.
#[derive(Clone, Debug, PartialEq)]
pub struct AudioBenchReport {
    /// Simulated participants, each sending the whole packet stream.
    pub participants: usize,
    /// Timed repeats of each path.
    pub repeats: usize,
    /// Audio in the packet stream, seconds (one participant).
    pub audio_seconds: f64,
    /// Opus decode alone, × realtime on one core (median).
    pub decode_x_realtime: f64,
    /// Hook + decode + resample + VAD, × realtime on one core (median).
    pub full_x_realtime: f64,
    /// `full_x_realtime / decode_x_realtime` (1.0 = the rest is free).
    pub full_to_decode: f64,
    /// Utterances cut in one full-path run, all participants.
    pub utterances: usize,
}

impl fmt::Display for AudioBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} participant(s) × {:.1} s audio, median of {}: decode {:.0}× realtime/core, \
             full path {:.0}× realtime/core ({:.2} of decode), {} utterance(s)",
            self.participants,
            self.audio_seconds,
            self.repeats,
            self.decode_x_realtime,
            self.full_x_realtime,
            self.full_to_decode,
            self.utterances
        )
    }
}

/// Measures the audio path with [`DEFAULT_REPEATS`] repeats and no
/// per-packet hook. See the module documentation.
pub fn audio_path(packets: &[OpusPacket], participants: usize) -> AudioBenchReport {
    audio_path_with_hook(packets, participants, DEFAULT_REPEATS, &mut |_| {})
}

/// Measures the audio path; `per_packet` runs once per packet and
/// participant inside the timed full path, before the pipeline sees the
/// packet (the place of the recording's encryption).
pub fn audio_path_with_hook(
    packets: &[OpusPacket],
    participants: usize,
    repeats: usize,
    per_packet: &mut dyn FnMut(&OpusPacket),
) -> AudioBenchReport {
    let participants = participants.max(1);
    let repeats = repeats.max(1);
    let mut decode_secs = Vec::with_capacity(repeats);
    let mut full_secs = Vec::with_capacity(repeats);
    let mut samples = 0u64;
    let mut utterances = 0;
    for _ in 0..repeats {
        let (secs, n) = time_decode(packets, participants);
        decode_secs.push(secs);
        samples = n;
        let (secs, u) = time_full(packets, participants, per_packet);
        full_secs.push(secs);
        utterances = u;
    }
    let audio_seconds = samples as f64 / 16_000.0;
    let total = audio_seconds * participants as f64;
    let speed = |secs: f64| if secs > 0.0 { total / secs } else { 0.0 };
    let decode_x_realtime = speed(median(&mut decode_secs));
    let full_x_realtime = speed(median(&mut full_secs));
    AudioBenchReport {
        participants,
        repeats,
        audio_seconds,
        decode_x_realtime,
        full_x_realtime,
        full_to_decode: if decode_x_realtime > 0.0 {
            full_x_realtime / decode_x_realtime
        } else {
            0.0
        },
        utterances,
    }
}

/// Encodes a WAV into 20 ms Opus packets with the replay platform's encoder
/// (any supported WAV; mono 48 kHz VoIP, 32 kb/s), all kept in memory.
pub fn opus_packets_from_wav(path: &Path) -> Result<Vec<OpusPacket>, PlatformError> {
    crate::platform::replay::encode_wav(path)
}

/// Decodes every packet for every participant; returns the seconds taken and
/// the samples one participant decoded.
fn time_decode(packets: &[OpusPacket], participants: usize) -> (f64, u64) {
    let mut decoders: Vec<opus::Decoder> = (0..participants)
        .filter_map(|_| opus::Decoder::new(16_000, opus::Channels::Mono).ok())
        .collect();
    let mut pcm = vec![0.0f32; 1_920];
    let mut samples = 0u64;
    let t = Instant::now();
    for packet in packets {
        for (i, d) in decoders.iter_mut().enumerate() {
            let n = d
                .decode_float(&packet.payload, &mut pcm, false)
                .unwrap_or(0);
            if i == 0 {
                samples += n as u64;
            }
        }
    }
    std::hint::black_box(&pcm);
    (t.elapsed().as_secs_f64(), samples)
}

/// Runs every packet through a pipeline per participant; returns the seconds
/// taken and the utterances produced.
fn time_full(
    packets: &[OpusPacket],
    participants: usize,
    per_packet: &mut dyn FnMut(&OpusPacket),
) -> (f64, usize) {
    let cfg = VadConfig::default();
    let mut pipes: Vec<ParticipantPipeline> = (0..participants)
        .filter_map(|i| ParticipantPipeline::new(ParticipantId(format!("p{}", i + 1)), &cfg).ok())
        .collect();
    let mut utterances = 0;
    let t = Instant::now();
    for packet in packets {
        for p in pipes.iter_mut() {
            per_packet(packet);
            utterances += p.push(packet).len();
        }
    }
    for p in pipes.iter_mut() {
        utterances += usize::from(p.finish().is_some());
    }
    (t.elapsed().as_secs_f64(), utterances)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::vad::testutil::espeak_wav;

    const TEXT: &str = "We reviewed the budget for the next quarter. \
        The team agreed to move the launch by two weeks, \
        and Sam will send the updated plan to everyone on Monday.";

    #[test]
    fn bench_reports_consistent_figures() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wav = espeak_wav(dir.path(), "bench", TEXT);
        let packets = opus_packets_from_wav(&wav).expect("encodes");
        assert!(packets.len() > 200);
        let mut hooked = 0;
        let r = audio_path_with_hook(&packets, 2, 1, &mut |_| hooked += 1);
        assert_eq!(
            hooked,
            packets.len() * 2,
            "hook runs per packet and participant"
        );
        assert_eq!(r.participants, 2);
        assert!((r.audio_seconds - packets.len() as f64 * 0.02).abs() < 1e-9);
        assert!(r.decode_x_realtime > 1.0 && r.full_x_realtime > 1.0, "{r}");
        assert!(r.utterances >= 2, "{r}");
        assert!((r.full_to_decode - r.full_x_realtime / r.decode_x_realtime).abs() < 1e-9);
    }

    #[test]
    fn missing_wav_is_an_error() {
        let err = opus_packets_from_wav(Path::new("/nonexistent/x.wav")).expect_err("missing");
        assert!(err.to_string().contains("x.wav: file not found"), "{err}");
    }

    /// Prints the figures: `cargo test --release --lib bench::tests::figures -- --ignored --nocapture`.
    #[test]
    #[ignore = "measurement; run on a quiet machine"]
    fn figures() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wav = espeak_wav(dir.path(), "bench", TEXT);
        let mut packets = opus_packets_from_wav(&wav).expect("encodes");
        // About a minute: the clip six times, 2 s apart, on one clock.
        let one = packets.clone();
        for k in 1..6u64 {
            let shift = k * (one.len() as u64 * 20 + 2_000);
            for p in &one {
                let seq = packets.len() as u16;
                packets.push(OpusPacket {
                    seq,
                    at_ms: p.at_ms + shift,
                    payload: p.payload.clone(),
                });
            }
        }
        for participants in [1, 10] {
            let r = audio_path(&packets, participants);
            println!("{r}");
        }
    }
}
