//! Shared helpers for the end-to-end tests: speech synthesis, a scratch
//! workspace with its own configuration, running the real binary, WER, and
//! plaintext scans.
#![allow(dead_code)]

pub mod azurite;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_meetbot");

/// Synthesizes `text` with espeak-ng as a 48 kHz mono 16-bit WAV at `out`.
pub fn espeak(voice: &str, text: &str, out: &Path) {
    let raw = out.with_extension("raw.wav");
    let st = Command::new("espeak-ng")
        .args(["-v", voice, "-s", "145", "-w"])
        .arg(&raw)
        .arg(text)
        .status()
        .expect("espeak-ng must be installed (scripts/test installs it)");
    assert!(st.success(), "espeak-ng failed");
    // -D: no dither. sox seeds its dither from the clock, so without it every
    // run would feed the model slightly different audio.
    let st = Command::new("sox")
        .args(["-q", "-D"])
        .arg(&raw)
        .args(["-r", "48000", "-c", "1", "-b", "16"])
        .arg(out)
        .args(["pad", "0.2", "0.4"])
        .status()
        .expect("sox must be installed (scripts/test installs it)");
    assert!(st.success(), "sox failed");
    let _ = std::fs::remove_file(raw);
}

/// Concatenates WAVs with sox (no dither, so the result is reproducible).
pub fn concat(parts: &[PathBuf], out: &Path) {
    let st = Command::new("sox")
        .arg("-D")
        .args(parts)
        .arg(out)
        .status()
        .unwrap();
    assert!(st.success());
}

/// Writes `secs` of digital silence as a 48 kHz mono 16-bit WAV (sox, no dither).
pub fn silence(secs: f64, out: &Path) {
    let st = Command::new("sox")
        .args(["-q", "-D", "-n", "-r", "48000", "-c", "1", "-b", "16"])
        .arg(out)
        .args(["trim", "0", &secs.to_string()])
        .status()
        .expect("sox must be installed (scripts/test installs it)");
    assert!(st.success(), "sox failed");
}

/// The Whisper model directory; tests fail (not skip) when it is missing.
pub fn model_dir() -> PathBuf {
    let dir = std::env::var_os("MEETBOT_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("models/faster-whisper-tiny.en")
        });
    assert!(
        dir.join("model.bin").exists(),
        "Whisper model missing at {}: run scripts/fetch-model (scripts/test does)",
        dir.display()
    );
    dir
}

/// A scratch directory with a config file that keeps every path inside it.
pub struct Workspace {
    pub dir: tempfile::TempDir,
    pub extra_config: String,
}

impl Workspace {
    pub fn new() -> Self {
        Workspace {
            dir: tempfile::tempdir().unwrap(),
            extra_config: String::new(),
        }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn data(&self) -> PathBuf {
        self.path().join("data")
    }
    pub fn spool(&self) -> PathBuf {
        self.data().join("spool")
    }
    pub fn audit_log(&self) -> PathBuf {
        self.data().join("audit/audit.jsonl")
    }
    pub fn key_file(&self) -> PathBuf {
        self.data().join("keys/kek.key")
    }
    /// Writes the config file and returns its path.
    pub fn config(&self) -> PathBuf {
        let p = self.path().join("meetbot.toml");
        let text = format!(
            "[paths]\ndata_dir = {:?}\n{}\n",
            self.data().display().to_string(),
            self.extra_config
        );
        std::fs::write(&p, text).unwrap();
        p
    }
    /// Writes a replay manifest for `(name, wav, offset_ms)` participants.
    pub fn manifest(&self, parts: &[(&str, &Path, u64)], pace: &str) -> PathBuf {
        let ps: Vec<_> = parts
            .iter()
            .map(|(n, w, o)| serde_json::json!({"name": n, "wav": w, "offset_ms": o}))
            .collect();
        let p = self.path().join("manifest.json");
        std::fs::write(
            &p,
            serde_json::json!({"participants": ps, "pace": pace}).to_string(),
        )
        .unwrap();
        p
    }
    pub fn command(&self) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--config").arg(self.config());
        c.env_remove("RUST_LOG");
        c.env("MEETBOT_STT__MODEL_DIR", model_dir());
        c.current_dir(self.path());
        c
    }
    /// `meetbot join URL --tenant acme --meeting-id m1 EXTRA…` (EXTRA may set its own meeting id).
    fn join_command(&self, url: &str, extra: &[&str]) -> Command {
        let mut c = self.command();
        c.args(["join", url]);
        if !extra.contains(&"--tenant") {
            c.args(["--tenant", "acme"]);
        }
        if !extra.contains(&"--meeting-id") {
            c.args(["--meeting-id", "m1"]);
        }
        c.args(extra);
        c
    }
    pub fn join(&self, url: &str, extra: &[&str]) -> Run {
        Run::from(self.join_command(url, extra).output().unwrap())
    }
    pub fn spawn_join(&self, url: &str, extra: &[&str]) -> Child {
        let mut c = self.join_command(url, extra);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        c.spawn().unwrap()
    }
    /// Every file under the data directory.
    pub fn files(&self) -> Vec<PathBuf> {
        walk(&self.data())
    }
    /// Spool files (recursively), except the spool's own empty lock file.
    pub fn spool_files(&self) -> Vec<PathBuf> {
        walk(&self.spool())
            .into_iter()
            .filter(|p| {
                !(p.parent() == Some(self.spool().as_path())
                    && p.ends_with(".lock")
                    && read(p).is_empty())
            })
            .collect()
    }
    /// Recording directories in the spool.
    pub fn recording_dirs(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.spool())
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect()
            })
            .unwrap_or_default()
    }
}

pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// A finished `meetbot` process.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    pub fn lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l}"))
            })
            .collect()
    }
    pub fn last(&self) -> serde_json::Value {
        self.lines()
            .pop()
            .unwrap_or_else(|| panic!("no status lines; stderr:\n{}", self.stderr))
    }
    pub fn statuses(&self) -> Vec<String> {
        self.lines()
            .iter()
            .map(|l| l["status"].as_str().unwrap_or("").to_string())
            .collect()
    }
    pub fn describe(&self) -> String {
        format!(
            "exit {:?}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Waits for a child with a bound; kills it if the bound passes.
pub fn wait_with_timeout(mut child: Child, limit: Duration) -> Run {
    let start = Instant::now();
    loop {
        if let Some(_st) = child.try_wait().unwrap() {
            break;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    Run::from(out)
}

/// Lower-case words without punctuation; "Mr" as "mister", numbers below
/// 100 as words (Whisper writes "10 of clubs" for "ten of clubs").
pub fn words(s: &str) -> Vec<String> {
    const ONES: [&str; 20] = [
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
    ];
    const TENS: [&str; 10] = [
        "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
    ];
    let mut out = Vec::new();
    for raw in s
        .to_lowercase()
        .split(|c: char| c.is_whitespace() || c == '-')
    {
        let w: String = raw.chars().filter(|c| c.is_alphanumeric()).collect();
        if w.is_empty() {
            continue;
        }
        match w.parse::<usize>() {
            Ok(n) if n < 20 => out.push(ONES[n].to_string()),
            Ok(n) if n < 100 => {
                out.push(TENS[n / 10].to_string());
                if n % 10 != 0 {
                    out.push(ONES[n % 10].to_string());
                }
            }
            _ if w == "mr" => out.push("mister".into()),
            _ => out.push(w),
        }
    }
    out
}

/// Word error rate of `hyp` against `reference`.
pub fn wer(reference: &str, hyp: &str) -> f64 {
    let r = words(reference);
    let h = words(hyp);
    if r.is_empty() {
        return if h.is_empty() { 0.0 } else { 1.0 };
    }
    let mut prev: Vec<usize> = (0..=h.len()).collect();
    for i in 1..=r.len() {
        let mut cur = vec![i; h.len() + 1];
        for j in 1..=h.len() {
            let sub = prev[j - 1] + usize::from(r[i - 1] != h[j - 1]);
            cur[j] = sub.min(prev[j] + 1).min(cur[j - 1] + 1);
        }
        prev = cur;
    }
    prev[h.len()] as f64 / r.len() as f64
}

/// The transcript document named by a final status line.
pub fn transcript_of(last: &serde_json::Value) -> serde_json::Value {
    let loc = last["transcript"]["location"]
        .as_str()
        .expect("transcript location on the last line");
    serde_json::from_str(&std::fs::read_to_string(loc).unwrap()).unwrap()
}

/// All text a speaker said, in order.
pub fn speaker_text(t: &serde_json::Value, speaker: &str) -> String {
    t["segments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["speaker"] == speaker)
        .map(|s| s["text"].as_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Reads a whole file.
pub fn read(p: &Path) -> Vec<u8> {
    let mut v = Vec::new();
    std::fs::File::open(p).unwrap().read_to_end(&mut v).unwrap();
    v
}

/// Whether `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Checks that `bytes` holds no recognisable plaintext audio: no WAV/Ogg/Opus
/// headers and no 32-byte run of the source PCM (`pcm`, 16-bit LE) from a
/// non-silent stretch.
pub fn assert_no_plaintext_audio(name: &str, bytes: &[u8], pcm: &[u8]) {
    for magic in [&b"RIFF"[..], b"WAVE", b"OggS", b"OpusHead", b"fmt "] {
        assert!(
            !contains(bytes, magic),
            "{name} contains {:?}",
            String::from_utf8_lossy(magic)
        );
    }
    // Sample the source at many offsets; skip near-silent windows.
    let mut checked = 0;
    let mut off = 0;
    while off + 32 <= pcm.len() {
        let w = &pcm[off..off + 32];
        let loud = w
            .chunks(2)
            .any(|s| i16::from_le_bytes([s[0], s[1]]).unsigned_abs() > 500);
        if loud {
            assert!(
                !contains(bytes, w),
                "{name} contains source PCM at offset {off}"
            );
            checked += 1;
        }
        off += 997;
    }
    assert!(checked > 10, "too few PCM windows checked");
}

/// The PCM bytes of a 16-bit WAV (after the 44-byte header).
pub fn wav_pcm(p: &Path) -> Vec<u8> {
    let b = read(p);
    b[44.min(b.len())..].to_vec()
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `127.0.0.1:port` accepts connections.
pub fn wait_port(port: u16, limit: Duration) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < limit, "port {port} never opened");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Kills a child on drop.
pub struct KillOnDrop(pub Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The Python with the PyPI `standardwebhooks` package (installed by
/// `scripts/test` into `$MEETBOT_PYENV`).
pub fn webhook_python() -> PathBuf {
    let venv = cached_venv("MEETBOT_PYENV", "pyenv");
    let py = venv.join("bin/python");
    let ok = Command::new(&py)
        .args(["-c", "import standardwebhooks"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "{} cannot import standardwebhooks: run scripts/test (or `. scripts/lib.sh; install_webhook_verifier`)", py.display());
    py
}

/// `tests/support/webhook_receiver.py`: verifies every POST with the
/// reference Standard Webhooks library and records it as a JSON line.
pub struct WebhookReceiver {
    pub port: u16,
    pub out: PathBuf,
    _dir: tempfile::TempDir,
    _child: KillOnDrop,
}

impl WebhookReceiver {
    pub fn start(secret: &str) -> WebhookReceiver {
        Self::spawn(secret, None)
    }

    /// A receiver on a given loopback port (e.g. one that was down before).
    pub fn start_on(secret: &str, port: u16) -> WebhookReceiver {
        Self::spawn(secret, Some(port))
    }

    fn spawn(secret: &str, port: Option<u16>) -> WebhookReceiver {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("received.jsonl");
        let mut child = Command::new(webhook_python())
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/support/webhook_receiver.py"
            ))
            .arg(secret)
            .arg(&out)
            .args(port.map(|p| p.to_string()))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .expect("PORT line")
            .parse()
            .unwrap();
        WebhookReceiver {
            port,
            out,
            _dir: dir,
            _child: KillOnDrop(child),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks/meetbot", self.port)
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Waits until at least `n` requests arrived.
    pub fn wait_for(&self, n: usize, limit: Duration) -> Vec<serde_json::Value> {
        let start = Instant::now();
        loop {
            let r = self.received();
            if r.len() >= n || start.elapsed() > limit {
                return r;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A Python venv scripts/lib.sh installs: `$<var>`, else `$XDG_CACHE_HOME` (or
/// `~/.cache`) `/meetbot/<name>`, as lib.sh computes it.
pub fn cached_venv(var: &str, name: &str) -> PathBuf {
    std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache"));
        cache.join("meetbot").join(name)
    })
}
