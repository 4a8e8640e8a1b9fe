//! `meetbot stt-serve` refuses a non-loopback listen address without an API key, up front
//! and with a message that says what to do. Every run here points the model at a missing
//! directory, so a start that gets past the check stops at the model before it binds
//! anything: no test opens a socket on a non-loopback address.

mod common;

use std::process::Output;

use common::Workspace;

fn stt_serve(ws: &Workspace, listen: &str, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = ws.command();
    c.args(["stt-serve", "--listen", listen]).args(extra);
    c.env("MEETBOT_STT__MODEL_DIR", ws.path().join("no-model-here"));
    c.env_remove("MEETBOT_STT_SERVE__API_KEY");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

#[test]
fn no_key_off_loopback_is_refused_with_what_to_do() {
    let ws = Workspace::new();
    for listen in ["0.0.0.0:8799", "[::]:8799", "10.1.2.3:8799"] {
        let out = stt_serve(&ws, listen, &[], &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{listen}: {stderr}");
        assert!(
            stderr.contains("refusing to listen on a non-loopback address without an API key"),
            "{listen}: {stderr}"
        );
        for hint in [
            "MEETBOT_STT_SERVE__API_KEY",
            "MEETBOT_STT__API_KEY",
            "127.0.0.1:8799",
            "--insecure-no-auth",
        ] {
            assert!(stderr.contains(hint), "{listen}: no {hint:?} in {stderr}");
        }
        // Refused before the model is loaded.
        assert!(!stderr.contains("embedded STT"), "{stderr}");
    }
}

#[test]
fn a_key_loopback_or_the_explicit_flag_pass_the_check() {
    let ws = Workspace::new();
    type Case<'a> = (&'a str, &'a [&'a str], &'a [(&'a str, &'a str)]);
    let cases: [Case; 3] = [
        (
            "0.0.0.0:8799",
            &[],
            &[("MEETBOT_STT_SERVE__API_KEY", "sk-exposure-test-key")],
        ),
        ("0.0.0.0:8799", &["--insecure-no-auth"], &[]),
        ("127.0.0.1:8799", &[], &[]),
    ];
    for (listen, extra, env) in cases {
        let out = stt_serve(&ws, listen, extra, env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{listen} {extra:?}: {stderr}");
        assert!(!stderr.contains("refusing"), "{listen} {extra:?}: {stderr}");
        // It went on to load the (missing) model.
        assert!(
            stderr.contains("embedded STT"),
            "{listen} {extra:?}: {stderr}"
        );
        assert!(!stderr.contains("sk-exposure-test-key"), "{stderr}");
    }
}
