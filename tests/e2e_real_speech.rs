//! Accuracy on real recorded human speech (not synthetic): three speakers
//! from public-domain recordings fetched by `scripts/fetch-test-speech`
//! (scripts/test runs it), two of them overlapping in time, through
//! `meetbot join replay:…` with the embedded Whisper model and default settings.

mod common;

use std::path::PathBuf;

use common::*;

fn speech_dir() -> PathBuf {
    let dir = std::env::var_os("MEETBOT_TEST_SPEECH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/test-speech")
        });
    assert!(
        dir.join(".complete").exists(),
        "real test speech missing at {}: run scripts/fetch-test-speech (scripts/test does)",
        dir.display()
    );
    dir
}

#[test]
fn real_speakers_are_transcribed_and_attributed() {
    let dir = speech_dir();
    let refs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("references.json")).unwrap())
            .unwrap();
    let ws = Workspace::new();
    let austen = dir.join("austen.wav");
    let jfk = dir.join("jfk.wav");
    let cards = dir.join("cards.wav");
    // The reader and JFK overlap for several seconds; the cards speaker comes last.
    let m = ws.manifest(
        &[
            ("Reader", &austen, 0),
            ("President", &jfk, 20_000),
            ("Dealer", &cards, 33_000),
        ],
        "fast",
    );
    let run = ws.join(&format!("replay:{}", m.display()), &[]);
    assert_eq!(run.code, Some(0), "{}", run.describe());
    let t = transcript_of(&run.last());
    let mut report = String::new();
    for (speaker, file, max_wer) in [
        ("Reader", "austen.wav", 0.15),
        ("President", "jfk.wav", 0.15),
        // Isolated short words ("four", "queen of clubs") are tiny.en's weak spot.
        ("Dealer", "cards.wav", 0.25),
    ] {
        let hyp = speaker_text(&t, speaker);
        let w = wer(refs[file].as_str().unwrap(), &hyp);
        report.push_str(&format!("{speaker}: WER {w:.3}: {hyp}\n"));
        assert!(w <= max_wer, "{speaker} WER {w:.3} > {max_wer}\n{report}");
    }
    eprintln!("{report}");
    // Attribution: each speaker's distinctive words appear only under them.
    for (speaker, word) in [
        ("Reader", "dashwood"),
        ("President", "americans"),
        ("Dealer", "spades"),
    ] {
        for other in ["Reader", "President", "Dealer"] {
            let has = words(&speaker_text(&t, other)).contains(&word.to_string());
            assert_eq!(has, other == speaker, "{word:?} under {other}\n{report}");
        }
    }
    let speakers: Vec<&str> = t["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["speaker"].as_str().unwrap())
        .collect();
    assert!(
        speakers
            .iter()
            .all(|s| ["Reader", "President", "Dealer"].contains(s)),
        "{speakers:?}"
    );
}
