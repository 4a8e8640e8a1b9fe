//! In-memory WAV encoding and decoding for the STT providers.
//!
//! [`encode_wav`] turns 16 kHz mono samples into a 16-bit PCM WAV for an
//! upload; [`decode_wav`] turns an uploaded WAV of any PCM or float layout,
//! rate and channel count into 16 kHz mono samples for the engine.
//!
//! Everything stays in memory: plaintext audio never touches the disk. The
//! decoder is a small hand-written RIFF parser rather than a general-purpose
//! reader so that every length and index it takes from the bytes is checked:
//! it returns an error for junk and never panics.

use std::time::Duration;

use rubato::{
    Resampler, SincFixedIn, SincInterpolationParameters, SincInterpolationType, WindowFunction,
};

/// The sample rate the STT engines take and [`decode_wav`] produces.
pub const SAMPLE_RATE: u32 = 16_000;

/// Lowest input sample rate [`decode_wav`] accepts.
pub const MIN_INPUT_RATE: u32 = 1_000;
/// Highest input sample rate [`decode_wav`] accepts.
pub const MAX_INPUT_RATE: u32 = 768_000;
/// Most channels [`decode_wav`] accepts (a 7.1.4 layout has 12).
pub const MAX_CHANNELS: u16 = 32;

/// Why WAV bytes could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WavError {
    /// The bytes do not start with a RIFF/WAVE header.
    #[error("not a WAV file (no RIFF/WAVE header)")]
    NotWav,
    /// A chunk header claims more bytes than the file holds, before `fmt ` or `data`.
    #[error("the WAV file is truncated inside its {0} chunk")]
    Truncated(&'static str),
    /// No `fmt ` chunk before the `data` chunk.
    #[error("the WAV file has no 'fmt ' chunk before its audio data")]
    MissingFormat,
    /// No `data` chunk.
    #[error("the WAV file has no 'data' chunk")]
    MissingData,
    /// A format tag other than PCM or IEEE float (e.g. ADPCM, A-law).
    #[error("unsupported WAV encoding (format tag {0:#06x}); use PCM or IEEE float")]
    UnsupportedEncoding(u16),
    /// A sample width this decoder does not read.
    #[error("unsupported WAV sample format: {bits}-bit {kind}")]
    UnsupportedSampleFormat {
        /// Bits per sample from the header.
        bits: u16,
        /// "integer" or "float".
        kind: &'static str,
    },
    /// Channel count zero or above [`MAX_CHANNELS`].
    #[error("unsupported WAV channel count {0} (1 to {MAX_CHANNELS} supported)")]
    BadChannels(u16),
    /// Sample rate outside [`MIN_INPUT_RATE`]..=[`MAX_INPUT_RATE`].
    #[error(
        "unsupported WAV sample rate {0} Hz ({MIN_INPUT_RATE} to {MAX_INPUT_RATE} Hz supported)"
    )]
    BadRate(u32),
    /// The header's block alignment disagrees with channels × sample width.
    #[error("inconsistent WAV header: block align {block_align} for {channels} channel(s) of {bits} bits")]
    BadBlockAlign {
        /// Block alignment from the header.
        block_align: u16,
        /// Channels from the header.
        channels: u16,
        /// Bits per sample from the header.
        bits: u16,
    },
    /// The audio is longer than the caller allows.
    #[error("the audio lasts {seconds:.0} s, more than the {max_seconds} s allowed")]
    TooLong {
        /// Duration of the audio.
        seconds: f64,
        /// The limit.
        max_seconds: u64,
    },
    /// Too many samples to fit a WAV's 32-bit length fields.
    #[error("{0} samples do not fit in one WAV file")]
    TooManySamples(usize),
    /// The resampler refused the input (should not happen for accepted rates).
    #[error("resampling to 16 kHz failed: {0}")]
    Resample(String),
}

/// Encodes 16 kHz mono samples in [-1, 1] as a 16-bit PCM WAV file in memory.
///
/// Out-of-range values are clipped and NaN becomes silence.
pub fn encode_wav(samples: &[f32]) -> Result<Vec<u8>, WavError> {
    const HEADER_LEN: usize = 44;
    let data_len = samples
        .len()
        .checked_mul(2)
        .and_then(|n| u32::try_from(n).ok())
        // RIFF size = data + 36 must also fit in 32 bits.
        .filter(|n| n.checked_add(36).is_some())
        .ok_or(WavError::TooManySamples(samples.len()))?;
    let mut out = Vec::with_capacity(HEADER_LEN + data_len as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(data_len + 36).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes()); // fmt chunk length
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&SAMPLE_RATE.to_le_bytes());
    out.extend_from_slice(&(SAMPLE_RATE * 2).to_le_bytes()); // byte rate
    out.extend_from_slice(&2u16.to_le_bytes()); // block align
    out.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for &s in samples {
        // `as` saturates and maps NaN to 0, which is what we want here.
        let v = (s.clamp(-1.0, 1.0) * 32767.0).round() as i16;
        out.extend_from_slice(&v.to_le_bytes());
    }
    Ok(out)
}

/// Sample encodings the decoder reads.
#[derive(Debug, Clone, Copy, PartialEq)]
enum SampleFormat {
    U8,
    I16,
    I24,
    I32,
    F32,
    F64,
}

impl SampleFormat {
    fn bytes(self) -> usize {
        match self {
            SampleFormat::U8 => 1,
            SampleFormat::I16 => 2,
            SampleFormat::I24 => 3,
            SampleFormat::I32 | SampleFormat::F32 => 4,
            SampleFormat::F64 => 8,
        }
    }

    /// Reads one sample; `b` has exactly `self.bytes()` bytes.
    fn read(self, b: &[u8]) -> f32 {
        let v = match (self, b) {
            (SampleFormat::U8, [a]) => (f32::from(*a) - 128.0) / 128.0,
            (SampleFormat::I16, [a, b]) => f32::from(i16::from_le_bytes([*a, *b])) / 32768.0,
            (SampleFormat::I24, [a, b, c]) => {
                // Place the 24 bits at the top of an i32, then shift back to sign-extend.
                (i32::from_le_bytes([0, *a, *b, *c]) >> 8) as f32 / 8_388_608.0
            }
            (SampleFormat::I32, [a, b, c, d]) => {
                i32::from_le_bytes([*a, *b, *c, *d]) as f32 / 2_147_483_648.0
            }
            (SampleFormat::F32, [a, b, c, d]) => f32::from_le_bytes([*a, *b, *c, *d]),
            (SampleFormat::F64, [a, b, c, d, e, f, g, h]) => {
                f64::from_le_bytes([*a, *b, *c, *d, *e, *f, *g, *h]) as f32
            }
            // Unreachable by construction (callers slice exactly `bytes()`); silence is harmless.
            _ => 0.0,
        };
        if v.is_finite() {
            v.clamp(-1.0, 1.0)
        } else {
            0.0
        }
    }
}

/// The parsed `fmt ` chunk.
#[derive(Debug, Clone, Copy)]
struct Format {
    sample: SampleFormat,
    channels: u16,
    rate: u32,
    block_align: usize,
}

const WAVE_FORMAT_PCM: u16 = 0x0001;
const WAVE_FORMAT_IEEE_FLOAT: u16 = 0x0003;
const WAVE_FORMAT_EXTENSIBLE: u16 = 0xFFFE;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn parse_format(body: &[u8]) -> Result<Format, WavError> {
    let truncated = WavError::Truncated("'fmt '");
    let mut tag = u16_at(body, 0).ok_or(truncated.clone())?;
    let channels = u16_at(body, 2).ok_or(truncated.clone())?;
    let rate = u32_at(body, 4).ok_or(truncated.clone())?;
    let block_align = u16_at(body, 12).ok_or(truncated.clone())?;
    let bits = u16_at(body, 14).ok_or(truncated.clone())?;
    if tag == WAVE_FORMAT_EXTENSIBLE {
        // cbSize(2) validBits(2) channelMask(4) then the sub-format GUID, whose
        // first two bytes are the real format tag.
        tag = u16_at(body, 24).ok_or(truncated)?;
    }
    let sample = match (tag, bits) {
        (WAVE_FORMAT_PCM, 8) => SampleFormat::U8,
        (WAVE_FORMAT_PCM, 16) => SampleFormat::I16,
        (WAVE_FORMAT_PCM, 24) => SampleFormat::I24,
        (WAVE_FORMAT_PCM, 32) => SampleFormat::I32,
        (WAVE_FORMAT_IEEE_FLOAT, 32) => SampleFormat::F32,
        (WAVE_FORMAT_IEEE_FLOAT, 64) => SampleFormat::F64,
        (WAVE_FORMAT_PCM, bits) => {
            return Err(WavError::UnsupportedSampleFormat {
                bits,
                kind: "integer",
            })
        }
        (WAVE_FORMAT_IEEE_FLOAT, bits) => {
            return Err(WavError::UnsupportedSampleFormat {
                bits,
                kind: "float",
            })
        }
        (tag, _) => return Err(WavError::UnsupportedEncoding(tag)),
    };
    if channels == 0 || channels > MAX_CHANNELS {
        return Err(WavError::BadChannels(channels));
    }
    if !(MIN_INPUT_RATE..=MAX_INPUT_RATE).contains(&rate) {
        return Err(WavError::BadRate(rate));
    }
    // channels <= 32 and bytes <= 8, so this cannot overflow.
    let frame = usize::from(channels) * sample.bytes();
    if usize::from(block_align) != frame {
        return Err(WavError::BadBlockAlign {
            block_align,
            channels,
            bits,
        });
    }
    Ok(Format {
        sample,
        channels,
        rate,
        block_align: frame,
    })
}

/// Finds the format and the audio bytes. A `data` chunk whose declared length
/// runs past the end (streamed WAVs declare 0xFFFFFFFF) is taken up to the end.
fn parse_riff(bytes: &[u8]) -> Result<(Format, &[u8]), WavError> {
    if bytes.get(0..4) != Some(b"RIFF") || bytes.get(8..12) != Some(b"WAVE") {
        return Err(WavError::NotWav);
    }
    let mut format = None;
    let mut pos = 12usize;
    loop {
        let (Some(id), Some(len)) = (
            bytes.get(pos..pos.saturating_add(4)),
            u32_at(bytes, pos + 4),
        ) else {
            return Err(if format.is_some() {
                WavError::MissingData
            } else {
                WavError::MissingFormat
            });
        };
        let body_start = pos + 8;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        let body_end = body_start.saturating_add(len);
        match id {
            b"fmt " => {
                let body = bytes
                    .get(body_start..body_end)
                    .ok_or(WavError::Truncated("'fmt '"))?;
                format = Some(parse_format(body)?);
            }
            b"data" => {
                let format = format.ok_or(WavError::MissingFormat)?;
                let body = bytes
                    .get(body_start..body_end.min(bytes.len()))
                    .unwrap_or_default();
                return Ok((format, body));
            }
            _ => {}
        }
        // Chunks are padded to an even length.
        pos = body_end.saturating_add(len & 1);
        if pos >= bytes.len() {
            return Err(if format.is_some() {
                WavError::MissingData
            } else {
                WavError::MissingFormat
            });
        }
    }
}

/// Decodes a WAV file (8/16/24/32-bit integer or 32/64-bit float PCM, any
/// channel count up to [`MAX_CHANNELS`], any rate in
/// [`MIN_INPUT_RATE`]..=[`MAX_INPUT_RATE`]) into 16 kHz mono samples in [-1, 1].
///
/// Channels are averaged. Audio longer than `max_duration` is refused before
/// any sample is converted, so memory stays bounded by the limit. A trailing
/// partial frame is ignored.
pub fn decode_wav(bytes: &[u8], max_duration: Duration) -> Result<Vec<f32>, WavError> {
    let (format, data) = parse_riff(bytes)?;
    let frames = data.len() / format.block_align;
    let seconds = frames as f64 / f64::from(format.rate);
    if seconds > max_duration.as_secs_f64() {
        return Err(WavError::TooLong {
            seconds,
            max_seconds: max_duration.as_secs(),
        });
    }
    let width = format.sample.bytes();
    let channels = usize::from(format.channels);
    let mono: Vec<f32> = data
        .chunks_exact(format.block_align)
        .map(|frame| {
            let sum: f32 = frame
                .chunks_exact(width)
                .map(|s| format.sample.read(s))
                .sum();
            sum / channels as f32
        })
        .collect();
    resample_to_16k(&mono, format.rate)
}

/// Resamples mono audio from `rate` to [`SAMPLE_RATE`], keeping its duration.
fn resample_to_16k(input: &[f32], rate: u32) -> Result<Vec<f32>, WavError> {
    if rate == SAMPLE_RATE || input.is_empty() {
        return Ok(input.to_vec());
    }
    let ratio = f64::from(SAMPLE_RATE) / f64::from(rate);
    let expected = (input.len() as f64 * ratio).round() as usize;
    let params = SincInterpolationParameters {
        sinc_len: 128,
        f_cutoff: 0.95,
        interpolation: SincInterpolationType::Linear,
        oversampling_factor: 128,
        window: WindowFunction::BlackmanHarris2,
    };
    const CHUNK: usize = 1024;
    let err = |e: &dyn std::fmt::Display| WavError::Resample(e.to_string());
    let mut resampler =
        SincFixedIn::<f32>::new(ratio, 1.0, params, CHUNK, 1).map_err(|e| err(&e))?;
    // Rubato's `SincFixedIn` already aligns its output with the input (an
    // impulse at input time t comes out at output time t; see the test), so
    // there is no filter delay to trim here.
    let mut out = Vec::with_capacity(expected + resampler.output_frames_max());
    let mut chunks = input.chunks_exact(CHUNK);
    for chunk in chunks.by_ref() {
        let o = resampler.process(&[chunk], None).map_err(|e| err(&e))?;
        out.extend_from_slice(o.first().map(Vec::as_slice).unwrap_or_default());
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let o = resampler
            .process_partial(Some(&[rest]), None)
            .map_err(|e| err(&e))?;
        out.extend_from_slice(o.first().map(Vec::as_slice).unwrap_or_default());
    }
    // Flush the filter with silence until the tail is out.
    while out.len() < expected {
        let o = resampler
            .process_partial::<&[f32]>(None, None)
            .map_err(|e| err(&e))?;
        let o = o.first().map(Vec::as_slice).unwrap_or_default();
        if o.is_empty() {
            break;
        }
        out.extend_from_slice(o);
    }
    out.truncate(expected);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(600);

    fn sine(rate: u32, secs: f32, hz: f32) -> Vec<f32> {
        let n = (rate as f32 * secs) as usize;
        (0..n)
            .map(|i| 0.5 * (2.0 * std::f32::consts::PI * hz * i as f32 / rate as f32).sin())
            .collect()
    }

    /// Writes `frames` (per-channel samples) with hound, the reference writer.
    fn hound_wav(spec: hound::WavSpec, frames: &[Vec<f32>]) -> Vec<u8> {
        let mut cursor = std::io::Cursor::new(Vec::new());
        let mut w = hound::WavWriter::new(&mut cursor, spec).expect("in-memory writer");
        for frame in frames {
            for &s in frame {
                match (spec.sample_format, spec.bits_per_sample) {
                    (hound::SampleFormat::Float, _) => w.write_sample(s).expect("write"),
                    (hound::SampleFormat::Int, 8) => {
                        w.write_sample((s * 127.0) as i8).expect("write")
                    }
                    (hound::SampleFormat::Int, 16) => {
                        w.write_sample((s * 32767.0) as i16).expect("write")
                    }
                    (hound::SampleFormat::Int, 24) => {
                        w.write_sample((s * 8_388_607.0) as i32).expect("write")
                    }
                    (hound::SampleFormat::Int, _) => w
                        .write_sample((s as f64 * 2_147_483_647.0) as i32)
                        .expect("write"),
                }
            }
        }
        w.finalize().expect("finalize");
        cursor.into_inner()
    }

    #[test]
    fn round_trip_is_close_and_keeps_length() {
        let samples = sine(16_000, 1.0, 440.0);
        let wav = encode_wav(&samples).unwrap();
        assert_eq!(wav.len(), 44 + samples.len() * 2);
        let back = decode_wav(&wav, LONG).unwrap();
        assert_eq!(back.len(), samples.len());
        let max_err = samples
            .iter()
            .zip(&back)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(max_err < 1.0 / 16_000.0, "max error {max_err}");
    }

    #[test]
    fn encode_clips_and_silences_nan() {
        let wav = encode_wav(&[2.0, -2.0, f32::NAN, f32::INFINITY]).unwrap();
        let back = decode_wav(&wav, LONG).unwrap();
        assert!((back[0] - 32767.0 / 32768.0).abs() < 1e-6);
        assert!((back[1] + 32767.0 / 32768.0).abs() < 1e-6);
        assert_eq!(back[2], 0.0);
        assert!((back[3] - 32767.0 / 32768.0).abs() < 1e-6);
    }

    #[test]
    fn hound_can_read_what_we_write() {
        let wav = encode_wav(&sine(16_000, 0.1, 300.0)).unwrap();
        let r = hound::WavReader::new(std::io::Cursor::new(wav)).unwrap();
        assert_eq!(r.spec().sample_rate, 16_000);
        assert_eq!(r.spec().channels, 1);
        assert_eq!(r.spec().bits_per_sample, 16);
        assert_eq!(r.len(), 1600);
    }

    #[test]
    fn decodes_every_layout_to_16k_mono() {
        let layouts = [
            (hound::SampleFormat::Int, 8, 8_000, 1),
            (hound::SampleFormat::Int, 16, 44_100, 2),
            (hound::SampleFormat::Int, 24, 48_000, 2),
            (hound::SampleFormat::Int, 32, 22_050, 1),
            (hound::SampleFormat::Float, 32, 16_000, 3),
            (hound::SampleFormat::Float, 32, 96_000, 1),
        ];
        for (fmt, bits, rate, channels) in layouts {
            let spec = hound::WavSpec {
                channels,
                sample_rate: rate,
                bits_per_sample: bits,
                sample_format: fmt,
            };
            let tone = sine(rate, 0.5, 440.0);
            // Same tone on every channel, so the downmix must reproduce it.
            let frames: Vec<Vec<f32>> = tone.iter().map(|&s| vec![s; channels.into()]).collect();
            let wav = hound_wav(spec, &frames);
            let out = decode_wav(&wav, LONG)
                .unwrap_or_else(|e| panic!("{bits}-bit {rate} Hz x{channels}: {e}"));
            assert_eq!(out.len(), 8_000, "{bits}-bit {rate} Hz x{channels}");
            // Same loudness and pitch as the ideal tone, away from the edges
            // (timing is checked by `resampling_keeps_timing`).
            let mid = &out[1000..7000];
            let rms = (mid.iter().map(|v| v * v).sum::<f32>() / mid.len() as f32).sqrt();
            let ideal_rms = 0.5 / 2f32.sqrt();
            assert!(
                (rms - ideal_rms).abs() < 0.02,
                "{bits}-bit {rate} Hz x{channels}: rms {rms}"
            );
            let crossings = mid
                .windows(2)
                .filter(|w| (w[0] < 0.0) != (w[1] < 0.0))
                .count();
            // 6000 samples = 0.375 s of 440 Hz: 330 crossings.
            assert!(
                crossings.abs_diff(330) <= 2,
                "{bits}-bit {rate} Hz x{channels}: {crossings} zero crossings"
            );
        }
    }

    #[test]
    fn downmix_averages_channels() {
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 16_000,
            bits_per_sample: 32,
            sample_format: hound::SampleFormat::Float,
        };
        let wav = hound_wav(spec, &[vec![0.5, -0.5], vec![0.25, 0.75]]);
        assert_eq!(decode_wav(&wav, LONG).unwrap(), vec![0.0, 0.5]);
    }

    #[test]
    fn streamed_wav_with_oversized_data_length_is_read_to_the_end() {
        let mut wav = encode_wav(&[0.5; 100]).unwrap();
        wav[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
        wav[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        wav.push(0x7f); // a trailing half frame is ignored
        assert_eq!(decode_wav(&wav, LONG).unwrap().len(), 100);
    }

    #[test]
    fn skips_unknown_chunks_with_padding() {
        let wav = encode_wav(&[0.25; 10]).unwrap();
        let mut with_list = wav[..36].to_vec();
        with_list.extend_from_slice(b"LIST");
        with_list.extend_from_slice(&3u32.to_le_bytes());
        with_list.extend_from_slice(b"abc\0"); // 3 bytes + 1 pad byte
        with_list.extend_from_slice(&wav[36..]);
        assert_eq!(decode_wav(&with_list, LONG).unwrap().len(), 10);
    }

    #[test]
    fn refuses_audio_longer_than_the_limit() {
        let wav = encode_wav(&vec![0.0; 16_000 * 3]).unwrap();
        let err = decode_wav(&wav, Duration::from_secs(2)).unwrap_err();
        assert!(
            matches!(err, WavError::TooLong { max_seconds: 2, .. }),
            "{err}"
        );
        assert!(decode_wav(&wav, Duration::from_secs(3)).is_ok());
    }

    #[test]
    fn names_the_problem_with_bad_headers() {
        assert_eq!(decode_wav(b"", LONG), Err(WavError::NotWav));
        assert_eq!(decode_wav(b"ID3\x03 some mp3", LONG), Err(WavError::NotWav));
        let good = encode_wav(&[0.0; 4]).unwrap();
        let patch = |at: usize, v: &[u8]| {
            let mut w = good.clone();
            w[at..at + v.len()].copy_from_slice(v);
            w
        };
        assert_eq!(
            decode_wav(&patch(20, &2u16.to_le_bytes()), LONG),
            Err(WavError::UnsupportedEncoding(2))
        );
        assert_eq!(
            decode_wav(&patch(22, &0u16.to_le_bytes()), LONG),
            Err(WavError::BadChannels(0))
        );
        assert_eq!(
            decode_wav(&patch(24, &0u32.to_le_bytes()), LONG),
            Err(WavError::BadRate(0))
        );
        assert!(matches!(
            decode_wav(&patch(32, &7u16.to_le_bytes()), LONG),
            Err(WavError::BadBlockAlign { .. })
        ));
        assert!(matches!(
            decode_wav(&patch(34, &12u16.to_le_bytes()), LONG),
            Err(WavError::UnsupportedSampleFormat { bits: 12, .. })
        ));
        assert_eq!(
            decode_wav(&patch(36, b"junk"), LONG),
            Err(WavError::MissingData)
        );
        assert_eq!(
            decode_wav(&patch(12, b"junk"), LONG),
            Err(WavError::MissingFormat)
        );
        // The message names the problem.
        assert!(WavError::BadRate(5).to_string().contains("5 Hz"));
    }

    #[test]
    fn never_panics_on_truncations_or_mutations() {
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 44_100,
            bits_per_sample: 24,
            sample_format: hound::SampleFormat::Int,
        };
        let frames: Vec<Vec<f32>> = sine(44_100, 0.01, 200.0)
            .into_iter()
            .map(|s| vec![s, -s])
            .collect();
        let wav = hound_wav(spec, &frames);
        for cut in 0..wav.len() {
            let _ = decode_wav(&wav[..cut], LONG);
        }
        // Deterministic pseudo-random byte flips over the header area.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..3_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut w = wav.clone();
            let at = (state % 80) as usize;
            w[at] = (state >> 32) as u8;
            let _ = decode_wav(&w, LONG);
        }
        // Pure noise.
        for len in [0usize, 3, 12, 44, 1000] {
            let noise: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            assert!(decode_wav(&noise, LONG).is_err());
        }
    }

    #[test]
    fn empty_data_decodes_to_no_samples() {
        let wav = encode_wav(&[]).unwrap();
        assert_eq!(decode_wav(&wav, LONG).unwrap(), Vec::<f32>::new());
    }

    #[test]
    fn resampling_keeps_timing() {
        for rate in [8_000u32, 11_025, 22_050, 32_000, 44_100, 48_000] {
            let mut x = vec![0.0f32; rate as usize];
            x[rate as usize / 2] = 1.0;
            let out = resample_to_16k(&x, rate).unwrap();
            assert_eq!(out.len(), 16_000, "{rate} Hz");
            let peak = out
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
                .map(|(i, _)| i)
                .unwrap();
            assert!(
                peak.abs_diff(8_000) <= 1,
                "{rate} Hz: impulse moved to {peak}"
            );
        }
    }
}
