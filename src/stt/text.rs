//! Transcript text clean-up shared by the STT providers.

use super::SttSegment;

/// True when `text` carries no speech: empty, only punctuation or symbols, or
/// only non-speech annotations such as `[BLANK_AUDIO]`, `(music)`,
/// `*coughs*` or `♪ ♪` that Whisper emits for silence and noise.
pub fn is_non_speech(text: &str) -> bool {
    let mut depth_square = 0u32;
    let mut depth_round = 0u32;
    let mut in_stars = false;
    for c in text.chars() {
        match c {
            '[' => depth_square = depth_square.saturating_add(1),
            ']' => depth_square = depth_square.saturating_sub(1),
            '(' => depth_round = depth_round.saturating_add(1),
            ')' => depth_round = depth_round.saturating_sub(1),
            '*' => in_stars = !in_stars,
            c if c.is_alphanumeric() && depth_square == 0 && depth_round == 0 && !in_stars => {
                return false
            }
            _ => {}
        }
    }
    true
}

/// Trims each segment's text, drops segments without speech, repairs times
/// (`end >= start`, both within `audio_ms`) and orders segments by start.
pub fn clean_segments(segments: Vec<SttSegment>, audio_ms: u64) -> Vec<SttSegment> {
    let mut out: Vec<SttSegment> = segments
        .into_iter()
        .filter_map(|s| {
            let text = s.text.trim();
            if is_non_speech(text) {
                return None;
            }
            let start_ms = s.start_ms.min(audio_ms);
            let end_ms = s.end_ms.clamp(start_ms, audio_ms);
            Some(SttSegment {
                start_ms,
                end_ms,
                text: text.to_string(),
            })
        })
        .collect();
    out.sort_by_key(|s| (s.start_ms, s.end_ms));
    out
}

/// Duration in whole milliseconds of `n` samples at 16 kHz.
pub fn samples_to_ms(n: usize) -> u64 {
    (n as u64).saturating_mul(1000) / u64::from(super::wav::SAMPLE_RATE)
}

/// Converts seconds from an engine or a server into milliseconds, mapping
/// negative, NaN and infinite values to 0 and saturating huge ones.
pub fn secs_to_ms(secs: f64) -> u64 {
    if secs.is_finite() && secs > 0.0 {
        // `as` saturates at u64::MAX for values beyond its range.
        (secs * 1000.0).round() as u64
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_non_speech() {
        for t in [
            "",
            "   ",
            "[BLANK_AUDIO]",
            " (music)",
            "[Music] (applause)",
            "*coughs*",
            "♪ ♪",
            "...",
            "?",
            " - ",
        ] {
            assert!(is_non_speech(t), "{t:?} should be non-speech");
        }
        for t in [
            "Hello.",
            "[Music] Hello",
            "I",
            "42",
            "(laughs) yes",
            "Ünïcode",
            "unbalanced ] bracket",
        ] {
            assert!(!is_non_speech(t), "{t:?} should be speech");
        }
    }

    #[test]
    fn clean_segments_trims_drops_and_repairs() {
        let seg = |s, e, t: &str| SttSegment {
            start_ms: s,
            end_ms: e,
            text: t.to_string(),
        };
        let out = clean_segments(
            vec![
                seg(3000, 2000, " late "),
                seg(0, 500, "[BLANK_AUDIO]"),
                seg(100, 900_000, " Hello. "),
            ],
            5000,
        );
        assert_eq!(out, vec![seg(100, 5000, "Hello."), seg(3000, 3000, "late")]);
    }

    #[test]
    fn seconds_convert_safely() {
        assert_eq!(secs_to_ms(1.5), 1500);
        assert_eq!(secs_to_ms(-3.0), 0);
        assert_eq!(secs_to_ms(f64::NAN), 0);
        assert_eq!(secs_to_ms(f64::INFINITY), 0);
        assert_eq!(secs_to_ms(1e300), u64::MAX);
        assert_eq!(samples_to_ms(16_000), 1000);
        assert_eq!(samples_to_ms(8), 0);
    }
}
