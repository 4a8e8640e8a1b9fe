//! Whisper's log-mel front end, as in OpenAI's reference (`whisper/audio.py`).
//!
//! `ct2rs`'s own front end normalises each frame by its own maximum and pads
//! with zeros in the log-mel domain; with tiny.en that lost most words of a
//! 23 s clip (observed). This module computes the features the model was
//! trained on: a periodic Hann window of 400, hop 160, centred STFT with
//! reflect padding, power spectrum, 80 Slaney mel filters, `log10` clamped at
//! 1e-10, floored at the window's maximum − 8, then `(x + 4) / 4`.

use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex};

/// Samples per second.
pub const SAMPLE_RATE: usize = 16_000;
/// FFT size (25 ms).
pub const N_FFT: usize = 400;
/// Hop between frames (10 ms).
pub const HOP: usize = 160;
/// Samples in one 30 s window.
pub const WINDOW_SAMPLES: usize = 480_000;
/// Frames in one 30 s window.
pub const WINDOW_FRAMES: usize = WINDOW_SAMPLES / HOP;

/// Computes log-mel features for 30 s windows.
pub struct MelFrontEnd {
    n_mels: usize,
    fft: Arc<dyn RealToComplex<f32>>,
    hann: Vec<f32>,
    /// Per mel band: the first FFT bin it covers and its weights from there.
    filters: Vec<(usize, Vec<f32>)>,
}

impl std::fmt::Debug for MelFrontEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MelFrontEnd")
            .field("n_mels", &self.n_mels)
            .finish_non_exhaustive()
    }
}

fn hz_to_mel(hz: f64) -> f64 {
    // Slaney's scale: linear below 1 kHz, logarithmic above.
    const F_SP: f64 = 200.0 / 3.0;
    const MIN_LOG_HZ: f64 = 1000.0;
    let min_log_mel = MIN_LOG_HZ / F_SP;
    let logstep = 6.4f64.ln() / 27.0;
    if hz >= MIN_LOG_HZ {
        min_log_mel + (hz / MIN_LOG_HZ).ln() / logstep
    } else {
        hz / F_SP
    }
}

fn mel_to_hz(mel: f64) -> f64 {
    const F_SP: f64 = 200.0 / 3.0;
    const MIN_LOG_HZ: f64 = 1000.0;
    let min_log_mel = MIN_LOG_HZ / F_SP;
    let logstep = 6.4f64.ln() / 27.0;
    if mel >= min_log_mel {
        MIN_LOG_HZ * (logstep * (mel - min_log_mel)).exp()
    } else {
        mel * F_SP
    }
}

/// librosa's `filters.mel(sr=16000, n_fft=400, n_mels, htk=False, norm="slaney")`,
/// stored sparsely.
fn mel_filters(n_mels: usize) -> Vec<(usize, Vec<f32>)> {
    let bins = N_FFT / 2 + 1;
    let fft_freqs: Vec<f64> = (0..bins)
        .map(|k| k as f64 * SAMPLE_RATE as f64 / N_FFT as f64)
        .collect();
    let max_mel = hz_to_mel(SAMPLE_RATE as f64 / 2.0);
    let points: Vec<f64> = (0..n_mels + 2)
        .map(|i| mel_to_hz(max_mel * i as f64 / (n_mels + 1) as f64))
        .collect();
    (0..n_mels)
        .map(|m| {
            // `points` has n_mels + 2 entries and m < n_mels: in bounds.
            let (lo, mid, hi) = (points[m], points[m + 1], points[m + 2]);
            let norm = 2.0 / (hi - lo);
            let weights: Vec<f64> = fft_freqs
                .iter()
                .map(|&f| {
                    let up = (f - lo) / (mid - lo);
                    let down = (hi - f) / (hi - mid);
                    up.min(down).max(0.0) * norm
                })
                .collect();
            let first = weights.iter().position(|&w| w > 0.0).unwrap_or(0);
            let last = weights.iter().rposition(|&w| w > 0.0).unwrap_or(0);
            let band = weights
                .get(first..=last.max(first))
                .unwrap_or_default()
                .iter()
                .map(|&w| w as f32)
                .collect();
            (first, band)
        })
        .collect()
}

impl MelFrontEnd {
    /// A front end producing `n_mels` bands (80 for tiny.en).
    pub fn new(n_mels: usize) -> Self {
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(N_FFT);
        let hann = (0..N_FFT)
            .map(|n| {
                0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / N_FFT as f64).cos() as f32
            })
            .collect();
        MelFrontEnd {
            n_mels,
            fft,
            hann,
            filters: mel_filters(n_mels),
        }
    }

    /// Mel bands per frame.
    pub fn n_mels(&self) -> usize {
        self.n_mels
    }

    /// Features of one window of at most [`WINDOW_SAMPLES`] samples (zero
    /// padded to 30 s), appended to `out` as `n_mels × WINDOW_FRAMES` values,
    /// band-major, as the encoder takes them.
    pub fn window_features(&self, samples: &[f32], out: &mut Vec<f32>) {
        let samples = &samples[..samples.len().min(WINDOW_SAMPLES)];
        // Reflect-pad by N_FFT/2 on both sides of the zero-padded window.
        let pad = N_FFT / 2;
        // Out-of-range input is clipped and NaN becomes silence, so the
        // features stay finite whatever the caller passes.
        let at = |i: usize| {
            samples
                .get(i)
                .copied()
                .filter(|v| !v.is_nan())
                .map_or(0.0, |v| v.clamp(-1.0, 1.0))
        };
        let padded_len = WINDOW_SAMPLES + 2 * pad;
        let padded = |j: usize| -> f32 {
            if j < pad {
                at(pad - j)
            } else if j >= pad + WINDOW_SAMPLES {
                // Mirror of the window's tail (index WINDOW_SAMPLES - 2 - k).
                let k = j - pad - WINDOW_SAMPLES;
                at(WINDOW_SAMPLES.saturating_sub(2 + k))
            } else {
                at(j - pad)
            }
        };
        debug_assert_eq!((padded_len - N_FFT) / HOP + 1, WINDOW_FRAMES + 1);

        // Indexing below stays in bounds: `out` is resized to hold n_mels ×
        // WINDOW_FRAMES values after `base`, every column has n_mels values
        // (one per filter) and t < WINDOW_FRAMES.
        let base = out.len();
        out.resize(base + self.n_mels * WINDOW_FRAMES, 0.0);
        let mut frame = self.fft.make_input_vec();
        let mut spectrum = self.fft.make_output_vec();
        let mut power = vec![0.0f32; N_FFT / 2 + 1];
        let mut max = f32::NEG_INFINITY;
        // Frames past the audio see only zeros; their features are the same,
        // so compute one and copy it.
        let mut silent: Option<Vec<f32>> = None;
        let last_audio_frame = (samples.len() + pad) / HOP + 1;
        for t in 0..WINDOW_FRAMES {
            if t > last_audio_frame {
                let column = match &silent {
                    Some(c) => c.clone(),
                    None => {
                        let c =
                            self.column(&vec![0.0; N_FFT], &mut frame, &mut spectrum, &mut power);
                        silent = Some(c.clone());
                        c
                    }
                };
                for (m, v) in column.into_iter().enumerate() {
                    max = max.max(v);
                    out[base + m * WINDOW_FRAMES + t] = v;
                }
                continue;
            }
            let start = t * HOP;
            let input: Vec<f32> = (start..start + N_FFT).map(padded).collect();
            let column = self.column(&input, &mut frame, &mut spectrum, &mut power);
            for (m, v) in column.into_iter().enumerate() {
                max = max.max(v);
                out[base + m * WINDOW_FRAMES + t] = v;
            }
        }
        let floor = max - 8.0;
        for v in &mut out[base..] {
            *v = (v.max(floor) + 4.0) / 4.0;
        }
    }

    /// `log10` mel energies of one frame of `N_FFT` samples.
    fn column(
        &self,
        input: &[f32],
        frame: &mut [f32],
        spectrum: &mut [realfft::num_complex::Complex<f32>],
        power: &mut [f32],
    ) -> Vec<f32> {
        for ((f, &x), &w) in frame.iter_mut().zip(input).zip(&self.hann) {
            *f = x * w;
        }
        // The buffers come from the same plan, so their lengths always match
        // and `process` cannot fail; silence is a safe answer if it ever did.
        if self.fft.process(frame, spectrum).is_err() {
            spectrum.iter_mut().for_each(|c| *c = Default::default());
        }
        for (p, c) in power.iter_mut().zip(spectrum.iter()) {
            *p = c.norm_sqr();
        }
        self.filters
            .iter()
            .map(|(first, weights)| {
                let energy: f32 = weights
                    .iter()
                    .zip(power.get(*first..).unwrap_or_default())
                    .map(|(w, p)| w * p)
                    .sum();
                energy.max(1e-10).log10()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slaney_mel_scale_round_trips() {
        for hz in [0.0, 100.0, 999.0, 1000.0, 4000.0, 8000.0] {
            assert!((mel_to_hz(hz_to_mel(hz)) - hz).abs() < 1e-6, "{hz}");
        }
        assert!((hz_to_mel(1000.0) - 15.0).abs() < 1e-9);
    }

    #[test]
    fn filters_match_librosa_shape() {
        let f = mel_filters(80);
        assert_eq!(f.len(), 80);
        // librosa (and Whisper's mel_filters.npz) give the first band one
        // non-zero weight, 0.02486259 at bin 1.
        let (first, w) = &f[0];
        assert_eq!((*first, w.len()), (1, 1));
        assert!((w[0] - 0.024_862_594).abs() < 1e-6, "{}", w[0]);
        // Every band covers at least one bin and the bands move up in frequency.
        for pair in f.windows(2) {
            assert!(!pair[0].1.is_empty());
            assert!(pair[1].0 >= pair[0].0);
        }
    }

    #[test]
    fn hostile_samples_give_finite_features() {
        let fe = MelFrontEnd::new(80);
        let mut junk = vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e30, -1e30];
        junk.extend(std::iter::repeat_n(0.5, 1000));
        let mut out = Vec::new();
        fe.window_features(&junk, &mut out);
        assert!(out.iter().all(|v| v.is_finite()));
        // Longer than a window: only the first 30 s are used.
        let mut out = Vec::new();
        fe.window_features(&vec![0.1; WINDOW_SAMPLES + 5], &mut out);
        assert_eq!(out.len(), 80 * WINDOW_FRAMES);
    }

    #[test]
    fn features_have_whisper_shape_and_range() {
        let fe = MelFrontEnd::new(80);
        let tone: Vec<f32> = (0..16_000)
            .map(|i| 0.3 * (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / 16_000.0).sin())
            .collect();
        let mut out = Vec::new();
        fe.window_features(&tone, &mut out);
        assert_eq!(out.len(), 80 * WINDOW_FRAMES);
        let max = out.iter().copied().fold(f32::MIN, f32::max);
        let min = out.iter().copied().fold(f32::MAX, f32::min);
        // (max + 4) / 4 at the top, 8 below it (= 2 after scaling) at the bottom.
        assert!((max - min - 2.0).abs() < 1e-4, "{min} {max}");
        // The 1 kHz band is loud during the tone and at the floor after it.
        let band = (0..80)
            .max_by(|&a, &b| out[a * WINDOW_FRAMES + 50].total_cmp(&out[b * WINDOW_FRAMES + 50]))
            .unwrap();
        assert!((out[band * WINDOW_FRAMES + 50] - max).abs() < 1e-4);
        assert!((out[band * WINDOW_FRAMES + 2000] - min).abs() < 1e-4);
    }
}
