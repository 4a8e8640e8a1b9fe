//! The Helm chart (charts/meetbot), rendered by the real Helm engine and checked object by
//! object: tests/chart/test_chart.py, run with the deployment tools venv scripts/test
//! creates (PyPI helm-python-sdk, kubernetes-validate, jsonschema). The meetbot binary
//! checks the configuration the chart's pods would load.

mod common;

use std::path::PathBuf;
use std::process::Command;

fn deployenv_python() -> PathBuf {
    let python = common::cached_venv("MEETBOT_DEPLOYENV", "deployenv").join("bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/test (it installs the deployment tools venv), or set MEETBOT_DEPLOYENV",
        python.display()
    );
    python
}

#[test]
fn helm_chart_renders_validates_and_is_locked_down() {
    let out = Command::new(deployenv_python())
        .args(["-m", "unittest", "-v", "tests/chart/test_chart.py"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("MEETBOT_BIN", env!("CARGO_BIN_EXE_meetbot"))
        .output()
        .expect("run python");
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "chart tests failed:\n{report}");
    // The run really ran the tests (a broken import or discovery would run none).
    let ran: usize = report
        .lines()
        .find_map(|l| {
            l.strip_prefix("Ran ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    assert!(ran >= 20, "only {ran} chart tests ran:\n{report}");
    eprintln!("{report}");
}
