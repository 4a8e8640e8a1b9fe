//! Seeded mutation fuzzing of every parser that takes external input, in the
//! normal test suite: each target gets thousands of mutated inputs derived
//! from valid ones and must answer with `Ok` or `Err`, never a panic.
//!
//! The seed is fixed so failures reproduce; set `MEETBOT_FUZZ_SEED` and
//! `MEETBOT_FUZZ_ITERS` to explore further.

use std::path::Path;

use meetbot::core::audio::ParticipantPipeline;
use meetbot::core::media::{OpusPacket, ParticipantId};
use meetbot::core::vad::VadConfig;

/// xorshift64*: tiny, deterministic, good enough to drive mutations.
struct Rng(u64);
impl Rng {
    fn new(salt: u64) -> Self {
        let seed = std::env::var("MEETBOT_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x5eed_u64);
        Rng((seed ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn iters(default: usize) -> usize {
    std::env::var("MEETBOT_FUZZ_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

const INTERESTING: &[&[u8]] = &[
    b"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"null",
    b"-1",
    b"1e309",
    b"18446744073709551616",
    b"\\u0000",
    b"\xff\xfe",
    b"\"\\ud800\"",
    b"true",
    b"0",
    b"../",
    b"/",
    b"%00",
    b"\n",
    b"=",
    b"\"\"",
];

/// One random mutation: flip, insert, delete, splice an interesting token, or duplicate a range.
fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..=rng.below(4) {
        let pos = rng.below(v.len() + 1);
        match rng.below(5) {
            0 if !v.is_empty() => {
                let p = pos.min(v.len() - 1);
                v[p] ^= 1 << rng.below(8);
            }
            1 => v.insert(pos, rng.next() as u8),
            2 if !v.is_empty() => {
                let end = (pos + rng.below(8)).min(v.len());
                v.drain(pos.min(end)..end);
            }
            3 => {
                let tok = INTERESTING[rng.below(INTERESTING.len())];
                v.splice(pos..pos, tok.iter().copied());
            }
            _ if !v.is_empty() => {
                let a = rng.below(v.len());
                let b = (a + rng.below(16)).min(v.len());
                let chunk = v[a..b].to_vec();
                v.splice(pos.min(v.len())..pos.min(v.len()), chunk);
            }
            _ => {}
        }
    }
    v
}

fn write_wav(path: &Path, secs: f32) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for i in 0..(secs * 16_000.0) as usize {
        let t = i as f32 / 16_000.0;
        w.write_sample(((t * 440.0 * std::f32::consts::TAU).sin() * 8000.0) as i16)
            .unwrap();
    }
    w.finalize().unwrap();
}

#[test]
fn replay_manifests() {
    let dir = tempfile::tempdir().unwrap();
    write_wav(&dir.path().join("a.wav"), 0.2);
    let valid = br#"{"participants":[{"name":"Host","wav":"a.wav","offset_ms":0},{"name":"Guest","wav":"a.wav","offset_ms":250}],"pace":"fast"}"#;
    let mut rng = Rng::new(1);
    let path = dir.path().join("m.json");
    let mut ok = 0;
    for _ in 0..iters(3000) {
        let input = mutate(&mut rng, valid);
        std::fs::write(&path, &input).unwrap();
        if meetbot::platform::replay::ReplayPlatform::open(&path).is_ok() {
            ok += 1;
        }
    }
    // The mutator must leave some inputs valid, or it tests nothing but the JSON parser.
    assert!(ok > 0, "no mutated manifest was accepted");
}

#[test]
fn wav_files_in_a_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.wav");
    write_wav(&good, 0.1);
    let valid = std::fs::read(&good).unwrap();
    std::fs::write(
        dir.path().join("m.json"),
        br#"{"participants":[{"name":"A","wav":"x.wav"}],"pace":"fast"}"#,
    )
    .unwrap();
    let mut rng = Rng::new(2);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for i in 0..iters(400) {
        // Mutate mostly the header, where the parser's decisions are.
        let mut input = valid.clone();
        let head = mutate(&mut rng, &input[..64]);
        input.splice(..64, head);
        std::fs::write(dir.path().join("x.wav"), &input).unwrap();
        let Ok(p) = meetbot::platform::replay::ReplayPlatform::open(&dir.path().join("m.json"))
        else {
            continue;
        };
        if i % 8 != 0 {
            continue; // running every accepted file is slow; a sample suffices
        }
        use meetbot::platform::MeetingPlatform;
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        let leave = tokio_util::sync::CancellationToken::new();
        rt.block_on(async move {
            let run = tokio::spawn(Box::new(p).run(tx, leave));
            while rx.recv().await.is_some() {}
            let _ = run.await.expect("replay task must not panic");
        });
    }
}

#[test]
fn opus_packets_into_the_audio_pipeline() {
    let mut rng = Rng::new(3);
    let mut p = ParticipantPipeline::new(ParticipantId("p".into()), &VadConfig::default()).unwrap();
    let mut seq: u16 = 0;
    let mut at: u64 = 0;
    for _ in 0..iters(20_000) {
        let len = rng.below(300);
        let payload: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        // Mostly in-order packets, with jumps, reorders, wraps and absurd clocks.
        match rng.below(10) {
            0 => seq = rng.next() as u16,
            1 => at = rng.next(),
            2 => at = at.saturating_sub(rng.below(5000) as u64),
            _ => {
                seq = seq.wrapping_add(1);
                at = at.saturating_add(20);
            }
        }
        let _ = p.push(&OpusPacket {
            seq,
            at_ms: at,
            payload: payload.into(),
        });
    }
    let _ = p.finish();
}

#[test]
fn configuration_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let valid = b"[stt]\nprovider = \"openai\"\nurl = \"http://127.0.0.1:1/v1\"\n[vad]\nend_silence = \"700ms\"\n[lifecycle]\ngrace = \"5s\"\n";
    let mut rng = Rng::new(4);
    for _ in 0..iters(3000) {
        std::fs::write(&path, mutate(&mut rng, valid)).unwrap();
        let _ = meetbot::config::Config::load(Some(&path), Vec::<(String, String)>::new());
    }
}

#[test]
fn audit_logs() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let audit = meetbot::audit::AuditLog::open(&log).unwrap();
    for i in 0..3 {
        let receipt = meetbot::audit::DeletionReceipt {
            recording_id: format!("r{i}"),
            meeting_id: "m".into(),
            tenant: "t".into(),
            chunk_count: i,
            ciphertext_bytes: 10 * i,
            manifest_sha256: "0".repeat(64),
            transcript_committed: i % 2 == 0,
            transcript_sha256: None,
            transcript_location: None,
            reason: None,
            deleted_at: "2026-01-01T00:00:00Z".into(),
            method: "crypto-shred+unlink".into(),
        };
        audit.append(&receipt).unwrap();
    }
    let valid = std::fs::read(&log).unwrap();
    let target = dir.path().join("fuzz.jsonl");
    let mut rng = Rng::new(5);
    let mut rejected = 0;
    for _ in 0..iters(3000) {
        let m = mutate(&mut rng, &valid);
        std::fs::write(&target, &m).unwrap();
        if meetbot::audit::verify(&target).is_err() {
            rejected += 1;
        } else {
            // A log that verifies is the original or a truncation of it (cutting
            // whole entries off the end is the chain's documented blind spot).
            assert!(
                valid.starts_with(&m),
                "accepted an edited log:\n{}",
                String::from_utf8_lossy(&m)
            );
        }
    }
    assert!(rejected > 0);
}

#[test]
fn transcript_documents() {
    let valid = br#"{"schema":"meetbot.transcript.v1","meeting_id":"m","tenant":"t","recording_id":"r","started_at":"a","ended_at":"b","participants":[{"id":"p1","name":"A"}],"segments":[{"speaker":"A","speaker_id":"p1","start_ms":0,"end_ms":10,"text":"hi"}],"provider":"x","model":"y","language":"en","complete":true}"#;
    let mut rng = Rng::new(6);
    for _ in 0..iters(5000) {
        let m = mutate(&mut rng, valid);
        if let Ok(doc) = serde_json::from_slice::<meetbot::transcript::TranscriptDoc>(&m) {
            let _ = doc.to_vtt();
            let _ = doc.to_json();
        }
    }
}

#[test]
fn meeting_and_webhook_urls() {
    use std::net::IpAddr;
    use std::sync::Arc;
    // A test resolver only: fuzzed names must never reach real DNS.
    let resolver = meetbot::netguard::StaticResolver::new()
        .with("janus.example.com", &[IpAddr::from([93, 184, 216, 34])])
        .with("evil.example.com", &[IpAddr::from([10, 0, 0, 5])])
        .with(
            "rebind.example.com",
            &[IpAddr::from([1, 1, 1, 1]), IpAddr::from([127, 0, 0, 1])],
        );
    let policy = meetbot::netguard::UrlPolicy::new(&["10.1.0.0/16", "janus.corp.example"])
        .unwrap()
        .with_resolver(Arc::new(resolver));
    let seeds: &[&[u8]] = &[
        b"janus+wss://janus.example.com/janus-ws/1234?pin=s3cret",
        b"janus+ws://10.1.2.3:8188/team%20standup",
        b"janus+ws://[::ffff:127.0.0.1]:8188/1",
        b"janus+ws://0x7f.1/1",
        b"https://janus.example.com/hooks?token=abc",
        b"http://evil.example.com:8080/x",
        b"https://rebind.example.com./x#f",
        b"https://user:pw@[fe80::1%25eth0]:0/",
        b"replay:/etc/passwd",
    ];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut rng = Rng::new(7);
    rt.block_on(async {
        for i in 0..iters(6000) {
            let m = mutate(&mut rng, seeds[i % seeds.len()]);
            let text = String::from_utf8_lossy(&m);
            for result in [
                policy.check_meeting_url(&text).await,
                policy.check_webhook_url(&text).await,
            ] {
                match result {
                    Ok(c) => {
                        // Whatever passes is pinned to vetted addresses: public or allowed.
                        assert!(!c.addrs.is_empty(), "{text}");
                        for a in &c.addrs {
                            let ip = a.ip();
                            let internal = ip.is_loopback()
                                || ip.is_unspecified()
                                || ip.is_multicast()
                                || match ip {
                                    IpAddr::V4(v4) => {
                                        (v4.is_private() && v4.octets()[..2] != [10, 1])
                                            || v4.is_link_local()
                                            || v4.is_broadcast()
                                    }
                                    IpAddr::V6(v6) => {
                                        v6.to_ipv4_mapped().is_some()
                                            && !v6.to_ipv4_mapped().is_some_and(|v4| {
                                                !v4.is_private() && !v4.is_loopback()
                                            })
                                    }
                                };
                            assert!(!internal, "{text} -> {ip}");
                        }
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        // A resolved address is never shown (evil.example.com is 10.0.0.5).
                        if !text.contains("10.0.0.5") {
                            assert!(!msg.contains("10.0.0.5"), "{text}: {msg}");
                        }
                        // The host may be echoed (the caller wrote it), the rest of the URL not.
                        assert!(!msg.contains("?pin=") && !msg.contains("?token="), "{msg}");
                        assert!(
                            !msg.contains("janus-ws/") && !msg.contains("/hooks"),
                            "{msg}"
                        );
                    }
                }
            }
            let _ = meetbot::netguard::parse_legacy_ipv4(&text);
            // The same text as an allow entry (host, CIDR, [v6]:port, name:port).
            let _ = meetbot::netguard::UrlPolicy::new(&[text.as_ref()]);
            let _ = meetbot::webhook::WebhookSecret::parse(&text);
            let _ = meetbot::webhook::parse_retry_after(&text, std::time::SystemTime::now());
        }
    });
}

/// SDP offers from a (hostile) meeting server through the ICE candidate filter: never a panic,
/// and what it lets through has nothing refused left in it (filtering it again removes nothing),
/// however the lines are mangled.
#[test]
fn ice_candidates_in_sdp_offers() {
    use meetbot::netguard::UrlPolicy;
    use meetbot::platform::janus::candidates::{CandidateFilter, MediaPolicy};
    let policy = || MediaPolicy::Guarded {
        policy: UrlPolicy::new(&["10.231.0.1:8188", "[fd00::1]"]).unwrap(),
        server: vec![std::net::IpAddr::from([10, 9, 9, 9])],
    };
    let offer = "v=0\r\no=- 1 1 IN IP4 10.231.0.1\r\ns=VideoRoom 1234\r\nt=0 0\r\n\
a=group:BUNDLE a v\r\na=ice-options:trickle\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 10.231.0.1\r\na=mid:a\r\na=sendonly\r\n\
a=ice-ufrag:x\r\na=ice-pwd:y\r\na=rtpmap:111 opus/48000/2\r\n\
a=candidate:1 1 udp 2015363327 10.231.0.1 20000 typ host\r\n\
a=candidate:2 1 udp 2015363327 127.0.0.1 20000 typ host\r\n\
a=candidate:3 1 udp 1679819007 169.254.169.254 20001 typ srflx raddr 10.231.0.1 rport 20000\r\n\
a=candidate:4 1 tcp 1015023359 10.9.9.9 9 typ host tcptype active\r\n\
a=candidate:5 1 udp 2015363327 fd00::1 20002 typ host\r\n\
a=candidate:6 1 udp 2015363327 f3a1c2d4-0000-4000-8000-000000000000.local 20003 typ host\r\n\
a=candidate:7 1 udp 2015363327 janus.example.com 20004 typ host\r\n\
a=end-of-candidates\r\n\
m=video 0 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:v\r\na=inactive\r\n";
    let seeds: Vec<Vec<u8>> = vec![
        offer.as_bytes().to_vec(),
        offer.replace("\r\n", "\n").into_bytes(),
        offer.replace(' ', "\t").into_bytes(),
        b"a=candidate:1 1 udp 1 ::ffff:127.0.0.1 5000 typ host\r\n".to_vec(),
    ];
    let mut rng = Rng::new(11);
    for i in 0..iters(4000) {
        let m = mutate(&mut rng, &seeds[i % seeds.len()]);
        let text = String::from_utf8_lossy(&m);
        let mut filter = CandidateFilter::new(policy());
        let out = filter.filter_offer(&text);
        let again = CandidateFilter::new(policy()).filter_offer(&out.sdp);
        assert_eq!(again.rejected.total(), 0, "{text:?} -> {:?}", out.sdp);
        assert_eq!(again.sdp, out.sdp);
    }
}

/// Job documents: queue message text, `MEETBOT_JOB` and `--job-file`.
#[test]
fn job_documents() {
    use meetbot::fleet::job::Job;
    let seeds: &[&[u8]] = &[
        br#"{"version":1,"bot_id":"b-1","tenant":"acme","meeting_id":"standup-2026-11-23","meeting_url":"janus+wss://meet.example.com/1234?pin=42","bot_name":"Acme Notetaker","join_at":"2026-11-23T17:00:00Z","stt":{"provider":"embedded","language":"en"},"webhook":{"url":"https://hooks.acme.example/meetbot","secret_ref":"main"},"retention_days":30}"#,
        br#"{"tenant":"acme","meeting_id":"m1","meeting_url":"janus+wss://meet.example.com/1234"}"#,
        br#"{"tenant":"t.1","meeting_id":"m_2","meeting_url":"replay:/tmp/m.json","stt":{"provider":"openai"},"join_at":"2026-01-01T00:00:00.5+01:00"}"#,
        br#"{"version":1,"tenant":"acme","meeting_id":"m1","meeting_url":"janus+ws://10.1.2.3:8188/9","webhook":{"url":"https://h.example/x?token=abc","secret_ref":"k-2"},"bot_name":"N\u00e9 \ud83d\ude00"}"#,
    ];
    let mut rng = Rng::new(8);
    let (mut ok, mut rejected) = (0, 0);
    for i in 0..iters(20_000) {
        let input = mutate(&mut rng, seeds[i % seeds.len()]);
        match Job::parse(&input) {
            Ok(job) => {
                ok += 1;
                // What parsed is valid, and what the API enqueues (to_json)
                // the worker reads back as the same job.
                assert_eq!(job.validate(), Ok(()));
                let again = Job::parse(job.to_json().as_bytes())
                    .unwrap_or_else(|e| panic!("{e}: {}", job.to_json()));
                assert_eq!(again, job, "{}", String::from_utf8_lossy(&input));
                assert!(job.to_json().len() <= meetbot::fleet::job::MAX_JOB_BYTES);
                assert!(!job.bot_id().is_empty());
                // Debug (what logs see) never shows the meeting or webhook URL.
                let dbg = format!("{job:?}");
                let shown = format!(
                    "{} {} {:?} {:?}",
                    job.tenant, job.meeting_id, job.bot_id, job.join_at
                );
                if job.meeting_url.len() >= 8 && !shown.contains(&job.meeting_url) {
                    assert!(!dbg.contains(&job.meeting_url), "{dbg}");
                }
                if let Some(w) = &job.webhook {
                    assert!(!format!("{w:?}").contains(&w.url) || w.url.len() < 8);
                }
                let _ = job.join_at_time();
            }
            Err(e) => {
                rejected += 1;
                assert!(!e.0.is_empty());
            }
        }
    }
    eprintln!("accepted {ok}, rejected {rejected}");
    assert!(ok > 0 && rejected > 0, "ok {ok}, rejected {rejected}");
}

/// The tenants file (operator input, holds webhook secrets).
#[test]
fn tenants_files() {
    use meetbot::fleet::tenants::Tenants;
    const SECRET_B64: &str = "C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    let seeds: &[&[u8]] = &[
        b"[tenants.acme]\ntoken_sha256 = [\"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"]\nretention = \"7days\"\nwebhook_transcript = true\n[tenants.acme.webhook_secrets]\nmain = \"whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD\"\n\n[tenants.globex]\ntoken_sha256 = [\"60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752\"]\n",
        b"[tenants.acme]\ntoken_sha256 = [\"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"]\nretention = \"30days\"\nwebhook_transcript = false\n[tenants.acme.webhook_secrets]\nmain = \"whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD\"\nold = \"whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD\"\n",
        b"tenants = { a = { token_sha256 = [], webhook_secrets = { main = \"whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD\" } } }\n",
    ];
    // A secret written under the wrong key is named, never quoted.
    let s = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    for text in [
        format!("[tenants.a]\nwebhook_secrets = \"{s}\"\n"),
        format!("[tenants.a]\nretention = \"{s}\"\n"),
        format!("[tenants.a]\nwebhook_transcript = \"{s}\"\n"),
        format!("[tenants.a]\ntoken_sha256 = \"{s}\"\n"),
        format!("[tenants.a]\ntoken_sha256 = [\"{s}\"]\n"),
        format!("[tenants.a.webhook_secrets]\nmain = [\"{s}\"]\n"),
        format!("[tenants.a.webhook_secrets]\nmain = \"{}\"\n", &s[..30]),
    ] {
        let e = Tenants::parse(&text).unwrap_err();
        assert!(!e.contains(&s[6..30]), "{e}");
    }
    let mut rng = Rng::new(9);
    let (mut ok, mut rejected) = (0, 0);
    for i in 0..iters(10_000) {
        let input = mutate(&mut rng, seeds[i % seeds.len()]);
        let text = String::from_utf8_lossy(&input);
        match Tenants::parse(&text) {
            Ok(t) => {
                ok += 1;
                // Secrets are redacted in Debug, and every secret parses.
                assert!(!format!("{t:?}").contains(SECRET_B64));
                for token in ["test", "test2", "", "x"] {
                    if let Some(tenant) = t.authenticate(token) {
                        assert_eq!(t.get(&tenant.id).map(|x| &x.id), Some(&tenant.id));
                        assert!(tenant.retention.is_none_or(|r| r.as_secs() >= 60));
                        for s in tenant.webhook_secrets.values() {
                            meetbot::webhook::WebhookSecret::parse(s.expose()).unwrap();
                        }
                    }
                }
            }
            Err(e) => {
                rejected += 1;
                // An intact secret line is never echoed by an error about
                // something else in the file.
                if text.contains(&format!("\"whsec_{SECRET_B64}\"")) {
                    assert!(!e.contains(SECRET_B64), "{e}\n{text}");
                }
            }
        }
    }
    eprintln!("accepted {ok}, rejected {rejected}");
    assert!(ok > 0 && rejected > 0, "ok {ok}, rejected {rejected}");
}

/// `POST /v1/bots` bodies: what serve accepts (schema and validation, as
/// `create_bot` builds the job), the worker must read back unchanged.
#[test]
fn api_request_bodies() {
    use meetbot::fleet::api::CreateBot;
    use meetbot::fleet::job::{Job, JOB_VERSION};
    let seeds: &[&[u8]] = &[
        br#"{"meeting_url":"janus+wss://1.1.1.1:8989/1234","meeting_id":"weekly-1","bot_name":"Acme Notes","webhook":{"url":"https://hooks.example/x","secret_ref":"main"},"retention_days":7}"#,
        br#"{"meeting_url":"janus+wss://meet.example.com/1"}"#,
        br#"{"meeting_url":"replay:/tmp/m.json","join_at":"2026-11-23T17:00:00Z","stt":{"provider":"embedded","language":"de"}}"#,
    ];
    let mut rng = Rng::new(10);
    let (mut ok, mut rejected) = (0, 0);
    for i in 0..iters(20_000) {
        let input = mutate(&mut rng, seeds[i % seeds.len()]);
        let de = &mut serde_json::Deserializer::from_slice(&input);
        let Ok(req) = serde_path_to_error::deserialize::<_, CreateBot>(de) else {
            rejected += 1;
            continue;
        };
        let job = Job {
            version: JOB_VERSION,
            bot_id: Some("b-0123456789abcdef0123456789abcdef".into()),
            tenant: "acme".into(),
            meeting_id: req.meeting_id.unwrap_or_else(|| "m-0".into()),
            meeting_url: req.meeting_url,
            bot_name: req.bot_name,
            join_at: req.join_at,
            stt: req.stt,
            webhook: req.webhook,
            retention_days: req.retention_days,
        };
        if job.validate().is_err() {
            rejected += 1;
            continue;
        }
        ok += 1;
        let text = job.to_json();
        assert_eq!(
            Job::parse(text.as_bytes()).as_ref(),
            Ok(&job),
            "serve would enqueue a job the worker cannot read: {text}"
        );
    }
    eprintln!("accepted {ok}, rejected {rejected}");
    assert!(ok > 0 && rejected > 0, "ok {ok}, rejected {rejected}");
}

/// Webhook outbox messages (`PendingDelivery` JSON in the outbox queue).
#[test]
fn webhook_outbox_messages() {
    use meetbot::webhook::{
        message_id, Decision, Delivery, Outcome, PendingDelivery, Schedule, WebhookEvent,
        WebhookSecret,
    };
    use std::sync::Arc;
    let secret = WebhookSecret::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
    let event = WebhookEvent::status(
        message_id("b-1/1", 3),
        serde_json::json!({"bot_id": "b-1", "status": "call_ended", "sequence": 3}),
    );
    let d = Delivery::new(
        &event,
        "b-1/1",
        meetbot::pii::Pii::new("https://hooks.example/x?token=abc".to_string()),
        "acme/main",
        Arc::from(vec![secret]),
    );
    let valid = serde_json::to_string(&d.pending).unwrap();
    assert!(!valid.contains("C2FVsBQIhrscChlQIMV"), "{valid}");
    let schedule = Schedule::standard();
    let mut rng = Rng::new(11);
    let mut ok = 0;
    for _ in 0..iters(10_000) {
        let m = mutate(&mut rng, valid.as_bytes());
        let Ok(p) = serde_json::from_slice::<PendingDelivery>(&m) else {
            continue;
        };
        ok += 1;
        let text = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<PendingDelivery>(&text).unwrap(), p);
        // Debug (logs) never shows the URL or the body.
        let dbg = format!("{p:?}");
        let shown = format!("{} {} {} {}", p.id, p.stream, p.event_type, p.secret_ref);
        for hidden in [p.url.expose(), p.body.expose()] {
            if hidden.len() >= 8 && !shown.contains(hidden.as_str()) {
                assert!(!dbg.contains(hidden.as_str()), "{dbg}");
            }
        }
        // Whatever the attempt number, the schedule answers without panicking.
        for outcome in [
            Outcome::Connect,
            Outcome::Status {
                code: 503,
                retry_after: Some(std::time::Duration::from_secs(u64::MAX / 4)),
            },
        ] {
            match schedule.decide(p.attempt, &outcome, rng.next() as f64 / u64::MAX as f64) {
                Decision::Retry { attempt, .. } => assert_eq!(attempt, p.attempt + 1),
                Decision::GiveUp(_) => assert!(p.attempt as usize >= schedule.delays.len()),
                d => panic!("{d:?}"),
            }
        }
    }
    assert!(ok > 0);
}
