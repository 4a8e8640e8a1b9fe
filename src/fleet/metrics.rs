//! Prometheus text exposition (format 0.0.4) for `serve` and `worker`:
//! counters and gauges with labels, no external registry.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// Content type of [`Metrics::render`].
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Default)]
struct Family {
    help: &'static str,
    kind: &'static str,
    values: BTreeMap<Vec<(&'static str, String)>, f64>,
}

/// A set of metric families.
#[derive(Default)]
pub struct Metrics {
    families: Mutex<BTreeMap<&'static str, Family>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    fn with(
        &self,
        name: &'static str,
        help: &'static str,
        kind: &'static str,
        f: impl FnOnce(&mut Family),
    ) {
        let mut fams = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let fam = fams.entry(name).or_default();
        fam.help = help;
        fam.kind = kind;
        f(fam);
    }

    /// Adds `by` to a counter.
    pub fn inc(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
        by: f64,
    ) {
        let key: Vec<_> = labels.iter().map(|(k, v)| (*k, v.to_string())).collect();
        self.with(name, help, "counter", |f| {
            *f.values.entry(key).or_insert(0.0) += by
        });
    }

    /// Sets a gauge.
    pub fn set(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
        v: f64,
    ) {
        let key: Vec<_> = labels.iter().map(|(k, v)| (*k, v.to_string())).collect();
        self.with(name, help, "gauge", |f| {
            f.values.insert(key, v);
        });
    }

    /// Sets a gauge family to exactly one labelled series (e.g. the current status).
    pub fn set_only(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
        v: f64,
    ) {
        let key: Vec<_> = labels.iter().map(|(k, v)| (*k, v.to_string())).collect();
        self.with(name, help, "gauge", |f| {
            f.values.clear();
            f.values.insert(key, v);
        });
    }

    /// The exposition text, with process gauges (resident memory, open fds).
    pub fn render(&self) -> String {
        if let Some(rss) = resident_bytes() {
            self.set(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                &[],
                rss as f64,
            );
        }
        let fams = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        for (name, fam) in fams.iter() {
            let _ = writeln!(out, "# HELP {name} {}", fam.help);
            let _ = writeln!(out, "# TYPE {name} {}", fam.kind);
            for (labels, v) in &fam.values {
                if labels.is_empty() {
                    let _ = writeln!(out, "{name} {v}");
                } else {
                    let l: Vec<String> = labels
                        .iter()
                        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                        .collect();
                    let _ = writeln!(out, "{name}{{{}}} {v}", l.join(","));
                }
            }
        }
        out
    }
}

fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * rustix::param::page_size() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.inc(
            "meetbot_http_requests_total",
            "HTTP requests.",
            &[("route", "/v1/bots"), ("status", "201")],
            1.0,
        );
        m.inc(
            "meetbot_http_requests_total",
            "HTTP requests.",
            &[("route", "/v1/bots"), ("status", "201")],
            1.0,
        );
        m.set_only(
            "meetbot_worker_status",
            "Current status.",
            &[("status", "joining")],
            1.0,
        );
        m.set_only(
            "meetbot_worker_status",
            "Current status.",
            &[("status", "done\"x")],
            1.0,
        );
        let t = m.render();
        assert!(
            t.contains("# TYPE meetbot_http_requests_total counter\n"),
            "{t}"
        );
        assert!(
            t.contains("meetbot_http_requests_total{route=\"/v1/bots\",status=\"201\"} 2\n"),
            "{t}"
        );
        assert!(
            t.contains("meetbot_worker_status{status=\"done\\\"x\"} 1\n"),
            "{t}"
        );
        assert!(!t.contains("joining"), "{t}");
        assert!(t.contains("process_resident_memory_bytes "), "{t}");
    }
}
