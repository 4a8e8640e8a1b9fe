//! Remote ICE candidates through the URL guard (sans-IO).
//!
//! The signalling connection is pinned to addresses [`UrlPolicy`] vetted, but the SFU's offer
//! names the addresses the worker will send media (STUN, then DTLS/SRTP) to: a hostile meeting
//! server could list 169.254.169.254, loopback or any inside address. [`CandidateFilter`]
//! judges every `a=candidate` line of an offer (first offer and re-offers alike) before
//! webrtc-rs sees it, and removes the ones refused:
//!
//! - **Addresses** go through the same classification and allow list as the meeting URL
//!   ([`UrlPolicy::check_media_addr`]): public addresses pass; internal ones only inside a
//!   `urls.allow` entry (on any port: the SFU picks its media ports) or when they are one of the
//!   addresses the meeting URL's host was vetted to (a host allowed by name); cloud metadata
//!   addresses only by an entry naming exactly that address; unspecified, broadcast and
//!   multicast never.
//! - **mDNS** (`*.local`) and **FQDN** candidates are dropped, never resolved.
//! - Lines that do not parse (fewer than 8 fields, a port that is not 1–65535, a transport other
//!   than UDP or TCP, an unknown type) are dropped: webrtc-rs would refuse the whole offer for
//!   one of them.
//! - At most [`MAX_REMOTE_CANDIDATES`] distinct candidates (transport, address, port) are
//!   accepted per session; a re-offer repeating accepted candidates does not count them again.
//!
//! [`MediaPolicy::Operator`] (`meetbot join`, where the operator chose the server) admits
//! internal addresses but still refuses metadata, unspecified, broadcast and multicast addresses,
//! mDNS and FQDN candidates, and applies the cap.
//!
//! Trickled candidates: Janus's `trickle` messages are never applied (the worker answers with a
//! complete SDP and [`super::transport::MediaTransport`] has no way to add a candidate), so the
//! offer's candidates are the only ones webrtc-rs ever sees.
//!
//! Never panics, whatever the input (fuzzed in `tests/fuzz_inputs.rs`). Counts only at info;
//! addresses only at debug.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

use crate::netguard::UrlPolicy;

/// Most distinct remote candidates accepted in one session (one WebRTC connection). Janus
/// offers one host candidate per interface and address family, plus a server-reflexive or
/// relay candidate or two: 32 leaves room for a multi-homed server without letting an offer
/// make the worker probe hundreds of addresses.
pub const MAX_REMOTE_CANDIDATES: usize = 32;

/// How candidate addresses are judged.
#[derive(Debug, Clone)]
pub enum MediaPolicy {
    /// A meeting URL from a job (worker, API): `policy` is the one the URL passed, `server`
    /// the addresses its host was vetted to.
    Guarded {
        /// The URL policy (`urls.allow`).
        policy: UrlPolicy,
        /// The meeting host's vetted addresses.
        server: Vec<IpAddr>,
    },
    /// `meetbot join`: the operator chose the server, so internal addresses pass; metadata
    /// (unless `urls.allow` names it exactly), unspecified, broadcast and multicast do not.
    Operator {
        /// The URL policy (`urls.allow`).
        policy: UrlPolicy,
    },
}

impl Default for MediaPolicy {
    fn default() -> Self {
        MediaPolicy::Operator {
            policy: UrlPolicy::default(),
        }
    }
}

impl MediaPolicy {
    fn check(&self, ip: IpAddr) -> Result<(), &'static str> {
        match self {
            MediaPolicy::Guarded { policy, server } => {
                let canon = canonical(ip);
                let is_server = server.iter().any(|s| canonical(*s) == canon);
                policy.check_media_addr(ip, is_server)
            }
            MediaPolicy::Operator { policy } => policy.check_media_addr(ip, true),
        }
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// Why a candidate line was removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Its address is refused by the URL policy (the kind of address).
    Policy(&'static str),
    /// An mDNS name (`*.local`).
    Mdns,
    /// A host name (never resolved).
    Fqdn,
    /// It does not parse.
    Malformed,
    /// The session already accepted [`MAX_REMOTE_CANDIDATES`].
    OverCap,
}

/// Counts of removed candidates, by cause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rejected {
    /// Refused by the URL policy.
    pub policy: usize,
    /// mDNS names.
    pub mdns: usize,
    /// Host names.
    pub fqdn: usize,
    /// Unparsable lines.
    pub malformed: usize,
    /// Beyond the cap.
    pub over_cap: usize,
}

impl Rejected {
    /// All removed candidates.
    pub fn total(&self) -> usize {
        self.policy + self.mdns + self.fqdn + self.malformed + self.over_cap
    }

    fn count(&mut self, r: Rejection) {
        match r {
            Rejection::Policy(_) => self.policy += 1,
            Rejection::Mdns => self.mdns += 1,
            Rejection::Fqdn => self.fqdn += 1,
            Rejection::Malformed => self.malformed += 1,
            Rejection::OverCap => self.over_cap += 1,
        }
    }
}

/// One filtered offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filtered {
    /// The offer without the removed candidate lines (other lines unchanged).
    pub sdp: String,
    /// Candidate lines kept.
    pub kept: usize,
    /// Candidate lines removed, by cause.
    pub rejected: Rejected,
    /// Each removed line's cause and, when it had one, address (for debug logs only).
    pub details: Vec<(Rejection, Option<SocketAddr>)>,
}

impl Filtered {
    /// The reason to end the join with when nothing is left to connect to.
    pub fn no_candidate_reason(&self) -> String {
        format!(
            "the meeting server offered no ICE candidate this worker may connect to \
             ({} rejected by the URL policy, {} mDNS or host-name candidates, {} malformed, \
             {} over the limit of {MAX_REMOTE_CANDIDATES})",
            self.rejected.policy,
            self.rejected.mdns + self.rejected.fqdn,
            self.rejected.malformed,
            self.rejected.over_cap,
        )
    }
}

/// The per-session candidate filter.
#[derive(Debug, Clone)]
pub struct CandidateFilter {
    policy: MediaPolicy,
    cap: usize,
    accepted: HashSet<(bool, SocketAddr)>,
}

impl CandidateFilter {
    /// A fresh filter (one per session) with the [`MAX_REMOTE_CANDIDATES`] cap.
    pub fn new(policy: MediaPolicy) -> CandidateFilter {
        CandidateFilter {
            policy,
            cap: MAX_REMOTE_CANDIDATES,
            accepted: HashSet::new(),
        }
    }

    /// Distinct candidates accepted so far in this session.
    pub fn accepted(&self) -> usize {
        self.accepted.len()
    }

    /// Filters one offer's `a=candidate` lines; every other line is kept as it is.
    pub fn filter_offer(&mut self, sdp: &str) -> Filtered {
        let mut out = String::with_capacity(sdp.len());
        let mut kept = 0;
        let mut rejected = Rejected::default();
        let mut details = Vec::new();
        // webrtc-rs reads lines up to '\n' (a '\r' before it is trimmed with the value).
        for line in sdp.split_inclusive('\n') {
            let Some(value) = candidate_value(line) else {
                out.push_str(line);
                continue;
            };
            match self.judge(value) {
                Ok(()) => {
                    kept += 1;
                    out.push_str(line);
                }
                Err((why, addr)) => {
                    rejected.count(why);
                    details.push((why, addr));
                }
            }
        }
        Filtered {
            sdp: out,
            kept,
            rejected,
            details,
        }
    }

    fn judge(&mut self, value: &str) -> Result<(), (Rejection, Option<SocketAddr>)> {
        // The same split as webrtc-rs's `unmarshal_candidate`.
        let f: Vec<&str> = value.split_whitespace().collect();
        if f.len() < 8 || f[6] != "typ" || !matches!(f[7], "host" | "srflx" | "prflx" | "relay") {
            return Err((Rejection::Malformed, None));
        }
        let tcp = match f[2].to_ascii_lowercase().as_str() {
            "udp" => false,
            "tcp" => true,
            _ => return Err((Rejection::Malformed, None)),
        };
        let port = match f[5].parse::<u16>() {
            Ok(p) if p != 0 => p,
            _ => return Err((Rejection::Malformed, None)),
        };
        if f[1].parse::<u16>().is_err() || f[3].parse::<u32>().is_err() {
            return Err((Rejection::Malformed, None));
        }
        let ip: IpAddr = match f[4].parse() {
            Ok(ip) => ip,
            Err(_) => {
                let name = f[4].trim_end_matches('.').to_ascii_lowercase();
                return Err((
                    if name.ends_with(".local") || name == "local" {
                        Rejection::Mdns
                    } else {
                        Rejection::Fqdn
                    },
                    None,
                ));
            }
        };
        let addr = SocketAddr::new(ip, port);
        self.policy
            .check(ip)
            .map_err(|why| (Rejection::Policy(why), Some(addr)))?;
        let key = (tcp, addr);
        if !self.accepted.contains(&key) {
            if self.accepted.len() >= self.cap {
                return Err((Rejection::OverCap, Some(addr)));
            }
            self.accepted.insert(key);
        }
        Ok(())
    }
}

/// The candidate's value (after `candidate:`) when `line` is an `a=candidate` attribute as
/// webrtc-rs's SDP lexer reads it: leading `\r`/`\n` skipped, `a=`, the value trimmed, the key
/// up to the first `:`.
fn candidate_value(line: &str) -> Option<&str> {
    let rest = line.trim_start_matches(['\r', '\n']).strip_prefix("a=")?;
    let value = rest.trim();
    let (key, v) = match value.split_once(':') {
        Some((k, v)) => (k, v),
        None => (value, ""),
    };
    (key == "candidate").then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "v=0\r\no=- 1 1 IN IP4 10.231.0.1\r\ns=-\r\nt=0 0\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:a\r\n";

    fn cand(addr: &str, port: u16) -> String {
        format!("a=candidate:1 1 udp 2013266431 {addr} {port} typ host\r\n")
    }

    fn offer(cands: &[String]) -> String {
        format!("{HEAD}{}a=end-of-candidates\r\n", cands.concat())
    }

    fn guarded(allow: &[&str], server: &[&str]) -> CandidateFilter {
        CandidateFilter::new(MediaPolicy::Guarded {
            policy: UrlPolicy::new(allow).unwrap(),
            server: server.iter().map(|s| s.parse().unwrap()).collect(),
        })
    }

    #[test]
    fn internal_metadata_loopback_mdns_and_fqdn_candidates_are_removed() {
        let mut f = guarded(&["10.231.0.1"], &[]);
        let sdp = offer(&[
            cand("10.231.0.1", 20000),
            cand("127.0.0.1", 20000),
            cand("169.254.169.254", 80),
            cand("::1", 20000),
            cand("::ffff:127.0.0.1", 20000),
            cand("10.0.0.7", 20000),
            cand("192.168.1.1", 20000),
            cand("0.0.0.0", 20000),
            cand("224.0.0.1", 20000),
            cand("93.184.216.34", 20000),
            cand("0c4f3d1e-aaaa-bbbb-cccc-123456789abc.local", 20000),
            cand("janus.example.com", 20000),
        ]);
        let out = f.filter_offer(&sdp);
        assert_eq!(out.kept, 2);
        assert_eq!(
            out.rejected,
            Rejected {
                policy: 8,
                mdns: 1,
                fqdn: 1,
                malformed: 0,
                over_cap: 0
            }
        );
        assert_eq!(
            out.sdp,
            offer(&[cand("10.231.0.1", 20000), cand("93.184.216.34", 20000)])
        );
        for gone in [
            "127.0.0.1",
            "169.254",
            "::1",
            "10.0.0.7",
            ".local",
            "janus.",
        ] {
            assert!(!out.sdp.contains(gone), "{gone} left in\n{}", out.sdp);
        }
        assert!(out.details.contains(&(
            Rejection::Policy("a loopback address"),
            Some("127.0.0.1:20000".parse().unwrap())
        )));
    }

    #[test]
    fn the_meeting_hosts_vetted_addresses_pass_and_metadata_needs_an_exact_entry() {
        // Allowed by name: the host resolved to 10.9.9.9, which passes; its neighbour does not.
        let mut f = guarded(&["janus.corp.example"], &["10.9.9.9"]);
        let out = f.filter_offer(&offer(&[cand("10.9.9.9", 30000), cand("10.9.9.8", 30000)]));
        assert_eq!((out.kept, out.rejected.policy), (1, 1));
        // A wide network never admits the metadata address; an exact entry does.
        let mut f = guarded(&["169.254.0.0/16"], &[]);
        let out = f.filter_offer(&offer(&[
            cand("169.254.169.254", 30000),
            cand("169.254.1.1", 30000),
        ]));
        assert_eq!((out.kept, out.rejected.policy), (1, 1));
        let mut f = guarded(&["169.254.169.254:8188"], &[]);
        assert_eq!(
            f.filter_offer(&offer(&[cand("169.254.169.254", 30000)]))
                .kept,
            1
        );
        // The operator's own server (`meetbot join`): internal passes, metadata does not.
        let mut f = CandidateFilter::new(MediaPolicy::default());
        let out = f.filter_offer(&offer(&[
            cand("127.0.0.1", 30000),
            cand("10.1.1.1", 30000),
            cand("169.254.169.254", 30000),
            cand("0.0.0.0", 30000),
            cand("x.local", 30000),
        ]));
        assert_eq!(out.kept, 2);
        assert_eq!(out.rejected.total(), 3);
    }

    #[test]
    fn every_candidate_refused_gives_a_clear_reason_without_addresses() {
        let mut f = guarded(&["10.231.0.1"], &[]);
        let out = f.filter_offer(&offer(&[
            cand("127.0.0.1", 20000),
            cand("127.0.0.1", 20001),
        ]));
        assert_eq!(out.kept, 0);
        let reason = out.no_candidate_reason();
        assert!(
            reason.starts_with(
                "the meeting server offered no ICE candidate this worker may connect to (2 rejected by the URL policy"
            ),
            "{reason}"
        );
        assert!(!reason.contains("127.0.0.1"), "{reason}");
    }

    #[test]
    fn the_cap_counts_distinct_candidates_per_session() {
        let mut f = guarded(&["10.0.0.0/8"], &[]);
        let many: Vec<String> = (0..40)
            .map(|i| cand(&format!("10.0.0.{i}"), 20000))
            .collect();
        let out = f.filter_offer(&offer(&many));
        assert_eq!(out.kept, MAX_REMOTE_CANDIDATES);
        assert_eq!(out.rejected.over_cap, 40 - MAX_REMOTE_CANDIDATES);
        // A re-offer repeating accepted candidates keeps them; new ones stay over the cap.
        let again = f.filter_offer(&offer(&many[..5]));
        assert_eq!(again.kept, 5);
        let new = f.filter_offer(&offer(&[cand("10.0.1.1", 20000)]));
        assert_eq!((new.kept, new.rejected.over_cap), (0, 1));
        assert_eq!(f.accepted(), MAX_REMOTE_CANDIDATES);
    }

    #[test]
    fn lines_are_read_the_way_webrtc_rs_reads_them() {
        let mut f = guarded(&[], &[]);
        for line in [
            // Leading CRs are skipped by the lexer, the value is trimmed, tabs split fields.
            "\ra=candidate:1 1 udp 1 127.0.0.1 5000 typ host\r\n",
            "a=candidate:1\t1\tudp\t1\t127.0.0.1\t5000\ttyp\thost\n",
            "a= candidate:1 1 udp 1 127.0.0.1 5000 typ host\r\n",
            "a=candidate:1 1 UDP 1 127.0.0.1 5000 typ host raddr 0.0.0.0 rport 0\r\n",
            "a=candidate:1 1 tcp 1 127.0.0.1 9 typ host tcptype active\r\n",
        ] {
            let out = f.filter_offer(&format!("{HEAD}{line}"));
            assert_eq!((out.kept, out.rejected.policy), (0, 1), "{line:?}");
            assert_eq!(out.sdp, HEAD, "{line:?}");
        }
        for line in [
            "a=candidate:1 1 udp 1 8.8.8.8 0 typ host\r\n",
            "a=candidate:1 1 udp 1 8.8.8.8 70000 typ host\r\n",
            "a=candidate:1 1 sctp 1 8.8.8.8 5000 typ host\r\n",
            "a=candidate:1 1 udp 1 8.8.8.8 5000 host\r\n",
            "a=candidate:1 1 udp 1 8.8.8.8 5000 typ nat\r\n",
            "a=candidate:1 1 udp\r\n",
            "a=candidate\r\n",
        ] {
            let out = f.filter_offer(&format!("{HEAD}{line}"));
            assert_eq!((out.kept, out.rejected.malformed), (0, 1), "{line:?}");
        }
        // Not candidates: other attributes are untouched.
        let other = "a=candidates:1 1 udp 1 127.0.0.1 5000 typ host\r\na=x-candidate:1\r\n";
        let out = f.filter_offer(&format!("{HEAD}{other}"));
        assert_eq!(out.sdp, format!("{HEAD}{other}"));
    }

    #[test]
    fn hostile_text_never_panics() {
        let mut f = guarded(&["10.0.0.0/8"], &[]);
        let base = offer(&[cand("10.1.2.3", 20000), cand("127.0.0.1", 1)]);
        let bytes = base.as_bytes();
        for cut in 0..bytes.len() {
            let _ = f.filter_offer(&String::from_utf8_lossy(&bytes[..cut]));
        }
        for i in 0..bytes.len() {
            for b in [b'\r', b'\n', b' ', b':', b'=', b'.', 0xff] {
                let mut m = bytes.to_vec();
                m[i] = b;
                let out = f.filter_offer(&String::from_utf8_lossy(&m));
                // Whatever is left passes as it is: nothing refused hides in it.
                let again = guarded(&["10.0.0.0/8"], &[]).filter_offer(&out.sdp);
                assert_eq!(again.rejected.total(), 0, "{:?}", out.sdp);
                assert_eq!(again.sdp, out.sdp);
            }
        }
    }
}
