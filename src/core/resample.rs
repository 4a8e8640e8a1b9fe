//! Fixed 48 kHz → 16 kHz decimation for the per-participant hot path.
//!
//! Opus decodes to 48 kHz; the VAD and speech-to-text want 16 kHz. The ratio is
//! exactly 3, so a single linear-phase FIR low-pass followed by keeping every
//! third sample does the job. Only the kept outputs are computed (the polyphase
//! saving): each output is one dot product of [`TAPS`] coefficients with a
//! contiguous window of input, which the compiler vectorises.
//!
//! The filter is a Kaiser-windowed sinc: −6 dB at 7.3 kHz, about 70 dB of
//! stop-band rejection from roughly 8.4 kHz, unity gain at DC. Its group delay
//! is `(TAPS - 1) / 2` input samples (just under 1 ms), small enough that callers
//! ignore it when timestamping.

/// Number of filter coefficients (a multiple of 8 so the dot product runs in
/// whole vector lanes).
pub const TAPS: usize = 96;

/// The decimation factor.
const FACTOR: usize = 3;

/// −6 dB cut-off, Hz, at the 48 kHz input rate.
const CUTOFF_HZ: f64 = 7_300.0;

/// Kaiser window shape: about 70 dB of side-lobe rejection.
const KAISER_BETA: f64 = 7.0;

/// A streaming 48 kHz → 16 kHz decimator.
///
/// Feed any number of samples per call; state carries across calls, so
/// splitting a signal into arbitrary pieces gives bit-identical output to
/// processing it at once. After `n` input samples in total, exactly `n / 3`
/// (rounded down) output samples have been produced.
#[derive(Clone)]
pub struct Decimator48To16 {
    /// Filter coefficients. The filter is symmetric, so no reversal is needed.
    taps: [f32; TAPS],
    /// Input not yet fully consumed: the filter history plus new samples.
    /// Never longer than `TAPS + FACTOR` samples between calls.
    buf: Vec<f32>,
}

impl Default for Decimator48To16 {
    fn default() -> Self {
        Self::new()
    }
}

impl Decimator48To16 {
    /// A decimator with silent history.
    pub fn new() -> Self {
        let mut buf = Vec::with_capacity(4096);
        // TAPS - FACTOR zeros of history: output m then ends at input 3m + 2,
        // which gives exactly floor(n / 3) outputs after n inputs.
        buf.resize(TAPS - FACTOR, 0.0);
        Decimator48To16 {
            taps: design_taps(),
            buf,
        }
    }

    /// Forgets the history, as if newly created.
    pub fn reset(&mut self) {
        self.buf.clear();
        self.buf.resize(TAPS - FACTOR, 0.0);
    }

    /// Decimates `input` (48 kHz) and appends the 16 kHz result to `out`.
    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) {
        self.buf.extend_from_slice(input);
        let mut start = 0;
        if self.buf.len() >= TAPS {
            out.reserve((self.buf.len() - TAPS) / FACTOR + 1);
        }
        while start + TAPS <= self.buf.len() {
            out.push(dot(&self.buf[start..start + TAPS], &self.taps));
            start += FACTOR;
        }
        // Keep only the history the next outputs need (< TAPS + FACTOR samples).
        self.buf.drain(..start);
    }
}

/// Dot product in eight independent lanes so the compiler can vectorise it
/// (floating-point addition is not associative, so one accumulator would
/// force a serial chain).
#[inline]
fn dot(window: &[f32], taps: &[f32; TAPS]) -> f32 {
    let mut acc = [0.0f32; 8];
    for (w, t) in window.chunks_exact(8).zip(taps.chunks_exact(8)) {
        for lane in 0..8 {
            acc[lane] += w[lane] * t[lane];
        }
    }
    acc.iter().sum()
}

/// Kaiser-windowed sinc low-pass, normalised to unity DC gain.
fn design_taps() -> [f32; TAPS] {
    let fc = CUTOFF_HZ / 48_000.0; // cycles per sample
    let centre = (TAPS as f64 - 1.0) / 2.0;
    let i0_beta = bessel_i0(KAISER_BETA);
    let mut h = [0.0f64; TAPS];
    for (n, v) in h.iter_mut().enumerate() {
        let x = n as f64 - centre;
        let sinc = if x == 0.0 {
            2.0 * fc
        } else {
            (2.0 * std::f64::consts::PI * fc * x).sin() / (std::f64::consts::PI * x)
        };
        let r = x / centre;
        let window = bessel_i0(KAISER_BETA * (1.0 - r * r).max(0.0).sqrt()) / i0_beta;
        *v = sinc * window;
    }
    let sum: f64 = h.iter().sum();
    let mut taps = [0.0f32; TAPS];
    for (t, v) in taps.iter_mut().zip(h) {
        *t = (v / sum) as f32;
    }
    taps
}

/// Modified Bessel function of the first kind, order 0 (power series).
fn bessel_i0(x: f64) -> f64 {
    let mut sum = 1.0;
    let mut term = 1.0;
    let half = x / 2.0;
    for k in 1..50 {
        term *= (half / k as f64) * (half / k as f64);
        sum += term;
        if term < sum * 1e-12 {
            break;
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(freq: f64, amp: f64, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (amp * (2.0 * std::f64::consts::PI * freq * i as f64 / 48_000.0).sin()) as f32)
            .collect()
    }

    fn rms(x: &[f32]) -> f64 {
        (x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / x.len() as f64).sqrt()
    }

    fn decimate(input: &[f32]) -> Vec<f32> {
        let mut d = Decimator48To16::new();
        let mut out = Vec::new();
        d.process(input, &mut out);
        out
    }

    #[test]
    fn output_count_is_a_third_of_input() {
        let mut d = Decimator48To16::new();
        let mut out = Vec::new();
        d.process(&[0.0; 10], &mut out);
        assert_eq!(out.len(), 3);
        d.process(&[0.0; 2], &mut out);
        assert_eq!(out.len(), 4);
        d.process(&[0.0; 960], &mut out);
        assert_eq!(out.len(), 324);
    }

    #[test]
    fn one_khz_passes_with_unity_gain() {
        let input = sine(1_000.0, 0.5, 48_000);
        let out = decimate(&input);
        // Skip the filter's start-up transient.
        let gain = rms(&out[200..]) / rms(&input[600..]);
        assert!((gain - 1.0).abs() < 0.01, "gain at 1 kHz = {gain}");
    }

    #[test]
    fn speech_band_edge_is_kept() {
        let input = sine(6_000.0, 0.5, 48_000);
        let out = decimate(&input);
        let gain = rms(&out[200..]) / rms(&input[600..]);
        assert!(gain > 0.9, "gain at 6 kHz = {gain}");
    }

    #[test]
    fn ten_khz_is_strongly_attenuated() {
        let input = sine(10_000.0, 0.5, 48_000);
        let out = decimate(&input);
        let gain_db = 20.0 * (rms(&out[200..]) / rms(&input[600..])).log10();
        assert!(gain_db < -60.0, "10 kHz attenuated only {gain_db:.1} dB");
    }

    #[test]
    fn dc_gain_is_unity() {
        let out = decimate(&[0.25; 3000]);
        assert!((out[500] - 0.25).abs() < 1e-5, "{}", out[500]);
    }

    #[test]
    fn streaming_in_odd_pieces_equals_one_shot() {
        let input: Vec<f32> = sine(440.0, 0.3, 9_001)
            .iter()
            .zip(sine(3_100.0, 0.2, 9_001))
            .map(|(a, b)| a + b)
            .collect();
        let whole = decimate(&input);
        let mut d = Decimator48To16::new();
        let mut pieces = Vec::new();
        let mut rest = &input[..];
        for size in [1usize, 2, 7, 960, 13, 5, 1000, 479].iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let take = (*size).min(rest.len());
            d.process(&rest[..take], &mut pieces);
            rest = &rest[take..];
        }
        assert_eq!(whole.len(), 9_001 / 3);
        assert_eq!(whole, pieces);
    }

    #[test]
    fn reset_forgets_history() {
        let mut d = Decimator48To16::new();
        let mut out = Vec::new();
        d.process(&[1.0; 500], &mut out);
        d.reset();
        out.clear();
        d.process(&[0.0; 300], &mut out);
        assert!(out.iter().all(|&v| v == 0.0));
    }
}
