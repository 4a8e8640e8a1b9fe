//! SSRF-safe validation of user-supplied URLs: meeting URLs and webhook URLs.
//!
//! The worker runs inside a cloud network and connects to URLs that API callers give it. A
//! hostile caller could point it at the cloud's metadata service (credentials), at the cluster's
//! internal services or at the pod itself. [`UrlPolicy`] decides, before any connection, whether
//! a URL may be used, and returns a [`CheckedUrl`] carrying the vetted socket addresses so the
//! caller can **pin** its connection to them (a second DNS lookup at connect time could answer
//! differently: DNS rebinding).
//!
//! # What is checked
//!
//! - **Structure.** Meeting URLs: `janus+ws://` and `janus+wss://` only, parsed by
//!   [`JanusUrl::parse`] (room, PIN, no user info, no fragment). `replay:` reads local files and
//!   is never accepted here. Webhook URLs: `https://`, and `http://` only for a host the allow
//!   list names (a self-hosted or test receiver). No user info, no fragment, no port 0, at most
//!   [`MAX_URL_BYTES`] bytes.
//! - **Host names.** Hosts are parsed the way browsers (WHATWG) parse `ws`/`http` hosts:
//!   percent-decoded, IDNA-mapped to ASCII, lower-cased. A name that *ends in a number*
//!   (`2130706433`, `0x7f.1`, `017700000001`, `127.1`) is an IPv4 address in the legacy
//!   inet_aton forms, exactly as `getaddrinfo` reads it; we decode those ourselves rather than
//!   trust the URL library, and reject the ones that do not decode. Names must be fully
//!   qualified (contain a dot): a single label such as `metadata` or `kubernetes` resolves
//!   through the pod's DNS search list to cluster-internal services. Names made only of
//!   letters, digits, `-` and `_`. Refused outright, because they name this machine, its link or
//!   a cloud's internal DNS: `localhost`, `*.localhost`, `localhost.localdomain`,
//!   `ip6-localhost`, `ip6-loopback` (and the other Debian `ip6-*` aliases),
//!   `*.localdomain`, `*.local` (mDNS, `*.svc.cluster.local`), `*.internal`
//!   (`metadata.google.internal`, `*.ec2.internal`, ICANN's private-use TLD), `*.home.arpa`,
//!   `*.arpa`, `*.svc`, `*.onion`, `*.invalid`, `metadata.goog`, `instance-data`, `kubernetes.default.svc`.
//! - **Addresses.** An IP literal is checked as written; a name is resolved as an absolute name
//!   (`name.`: a DNS search list such as a pod's `svc.cluster.local` cannot turn
//!   `db.internal-name` into an inside service) through the [`Resolve`] seam, bounded by a
//!   timeout, and **every** address must pass: one internal
//!   address among public ones (`rebind.example → [1.1.1.1, 127.0.0.1]`) refuses the URL.
//!   Internal means loopback, unspecified, RFC 1918, CGNAT `100.64/10`, link-local, `0/8`,
//!   `192.0.0/24`, documentation and benchmarking ranges, `240/4`, broadcast, multicast, the
//!   6to4 relay anycast; for IPv6 anything outside global unicast `2000::/3`, unique-local
//!   `fc00::/7`, link-local, site-local, multicast, documentation (`2001:db8::/32`,
//!   `3fff::/20`), the IETF protocol block `2001::/23`, SRv6 `5f00::/16`, discard `100::/64`,
//!   local-use NAT64 `64:ff9b:1::/48`. IPv6 forms that embed an IPv4 address — IPv4-mapped
//!   `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, SIIT `::ffff:0:a.b.c.d`, NAT64
//!   `64:ff9b::/96`, 6to4 `2002::/16`, Teredo `2001::/32` (server and client) — are judged by
//!   the IPv4 address they embed.
//!
//! # The allow list (`urls.allow`)
//!
//! Self-hosted meeting servers and test receivers live on internal addresses. Each allow entry
//! is a CIDR (`10.1.0.0/16`, `127.0.0.1/32`, `::1/128`; a bare address means a single address)
//! or an exact host name (`janus.corp.example`, case-insensitive, trailing dot ignored), with
//! an optional port: `10.0.0.5:8188`, `[fd00::1]:8188`, `[fd00::/64]:8188`,
//! `janus.corp.example:443`, or `:*` for every port. An entry without a port admits only the
//! scheme's default port (80 for `janus+ws`/`http`, 443 for `janus+wss`/`https`) and, for
//! meeting URLs, [`JANUS_PORTS`] (8188, 8989). An address inside an allowed CIDR passes on the
//! entry's ports; a host whose name is allowed passes whatever internal addresses it resolves
//! to, and passes the name rules above. A URL an entry admits only on other ports fails with
//! [`UrlError::PortNotAllowed`]. An empty list allows nothing internal.
//!
//! Media: [`UrlPolicy::check_media_addr`] judges ICE candidate addresses (see
//! `platform::janus::candidates`) with the same classification and entries, on any port.
//!
//! Two exceptions, on purpose:
//! - **Cloud metadata addresses** (169.254.169.254, 169.254.170.2 (ECS), 168.63.129.16 (Azure
//!   wireserver), 100.100.100.200 (Alibaba), 192.0.0.192 (Oracle), fd00:ec2::254) are never
//!   allowed by a wider CIDR nor by an allowed name: only an entry naming exactly that single
//!   address (`169.254.169.254/32`) allows it. Allowing `169.254.0.0/16` for a link-local
//!   test network must not hand out the instance's credentials.
//! - **Unspecified, broadcast and multicast** addresses are never allowed: `0.0.0.0` connects
//!   to this machine on Linux, and the others are not unicast destinations.
//!
//! A `/0` entry is refused: it would switch the protection off; list the networks you mean.
//!
//! # Invariants
//!
//! - Checks never panic, whatever the input (fuzzed in `tests/fuzz_inputs.rs`).
//! - Errors carry a message fit to return to the API caller (and so to records, webhooks and
//!   logs): it may name the offending host or an address the caller wrote, never an address a
//!   name resolved to (only its kind; the address is logged at debug), nor the rest of the URL
//!   (PINs, webhook tokens). Do not log an error's `Display` at info or above; log
//!   [`UrlError::code`].
//! - `Debug` of [`CheckedUrl`] redacts the URL, the host and the addresses.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::pii::Pii;
use crate::platform::janus::url::{JanusUrl, JanusUrlError};

/// Longest accepted URL, bytes (meeting or webhook).
pub const MAX_URL_BYTES: usize = 2048;
/// Default bound on one DNS resolution.
pub const DEFAULT_DNS_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest host name echoed back in an error message, characters.
const MAX_ECHO: usize = 100;

/// Cloud metadata endpoints: allowed only by an allow entry naming exactly that address.
const METADATA_V4: [Ipv4Addr; 5] = [
    Ipv4Addr::new(169, 254, 169, 254), // AWS, GCP, Azure IMDS, DigitalOcean, Oracle, OpenStack
    Ipv4Addr::new(169, 254, 170, 2),   // AWS ECS task metadata and credentials
    Ipv4Addr::new(168, 63, 129, 16),   // Azure wireserver (a public address!)
    Ipv4Addr::new(100, 100, 100, 200), // Alibaba Cloud
    Ipv4Addr::new(192, 0, 0, 192),     // Oracle Cloud (legacy)
];
const METADATA_V6: [Ipv6Addr; 1] = [
    Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254), // AWS IMDS over IPv6
];

/// Host names refused outright (unless allowed by name), after lower-casing and dropping a
/// trailing dot.
const BLOCKED_NAMES: &[&str] = &[
    "localhost",
    "localhost.localdomain",
    "ip6-localhost",
    "ip6-loopback",
    "ip6-localnet",
    "ip6-mcastprefix",
    "ip6-allnodes",
    "ip6-allrouters",
    "broadcasthost",
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "metadata.azure.com",
    "metadata.tencentyun.com",
    "instance-data",
    "instance-data.ec2.internal",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
];
/// Name suffixes refused outright (unless the full name is allowed).
const BLOCKED_SUFFIXES: &[&str] = &[
    ".localhost",
    ".localdomain",
    ".local",
    ".internal",
    ".arpa",
    ".svc",
    ".onion",
    ".invalid",
];

/// A rejected allow-list entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid urls.allow entry {entry:?}: {reason}")]
pub struct PolicyError {
    /// The entry as written (truncated).
    pub entry: String,
    /// Why.
    pub reason: String,
}

/// Why a URL was refused. `Display` is a sentence fit for the API caller; it may name the host
/// or an address, never the rest of the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// Longer than [`MAX_URL_BYTES`].
    #[error("URL is too long ({0} bytes, at most {MAX_URL_BYTES})")]
    TooLong(usize),
    /// Empty input.
    #[error("URL is empty")]
    Empty,
    /// A scheme this kind of URL does not support.
    #[error("unsupported URL scheme {got:?}: {expected}")]
    Scheme {
        /// The scheme given (truncated).
        got: String,
        /// What is supported.
        expected: &'static str,
    },
    /// `replay:` outside the command line.
    #[error(
        "replay: URLs name local files and are not accepted here; use janus+ws:// or janus+wss://"
    )]
    ReplayNotAllowed,
    /// Malformed.
    #[error("invalid URL: {0}")]
    Syntax(String),
    /// `user:pass@host`.
    #[error("URL must not contain user info (user:pass@)")]
    UserInfo,
    /// `#…` in a webhook URL.
    #[error("webhook URL must not contain a fragment (#…)")]
    Fragment,
    /// No host.
    #[error("URL has no host")]
    NoHost,
    /// Port 0.
    #[error("URL port 0 is not a valid destination")]
    BadPort,
    /// `http://` to a host the allow list does not name.
    #[error(
        "plain http:// webhook URLs are accepted only for hosts in the allow list; use https://"
    )]
    InsecureWebhook,
    /// The host name is malformed or refused by the name rules.
    #[error("host {host:?} is not allowed: {reason}")]
    BlockedName {
        /// The host (truncated).
        host: String,
        /// Why.
        reason: &'static str,
    },
    /// The host is, or resolves to, an address that is not allowed. `Display` names the
    /// address only when the caller wrote it (an IP literal); a resolved address is never shown
    /// (it would map the inside network for the caller), only its kind.
    #[error("host {host:?} {}", blocked_address(verb, addr, reason))]
    BlockedAddress {
        /// The host (truncated).
        host: String,
        /// "is" for an address literal, "resolves to" for a name.
        verb: &'static str,
        /// The offending address. Never shown for a resolved name; do not log it above debug.
        addr: IpAddr,
        /// What kind of address it is.
        reason: &'static str,
    },
    /// The host or its address is in `urls.allow`, but the entry does not admit this port.
    #[error("host {host:?} is allowed by urls.allow only on other ports, not on port {port}")]
    PortNotAllowed {
        /// The host (truncated).
        host: String,
        /// The URL's port.
        port: u16,
    },
    /// Resolution failed.
    #[error("cannot resolve host {host:?}: {detail}")]
    Resolve {
        /// The host (truncated).
        host: String,
        /// The resolver's message.
        detail: String,
    },
    /// Resolution returned nothing.
    #[error("host {host:?} has no addresses")]
    NoAddresses {
        /// The host (truncated).
        host: String,
    },
    /// Resolution did not finish in time.
    #[error("resolving host {host:?} timed out after {after:?}")]
    ResolveTimeout {
        /// The host (truncated).
        host: String,
        /// The bound.
        after: Duration,
    },
}

impl UrlError {
    /// A stable machine-readable code for the API's JSON error and for logs.
    pub fn code(&self) -> &'static str {
        match self {
            UrlError::TooLong(_) => "url_too_long",
            UrlError::Empty => "url_empty",
            UrlError::Scheme { .. } | UrlError::ReplayNotAllowed => "url_scheme",
            UrlError::Syntax(_) => "url_syntax",
            UrlError::UserInfo => "url_userinfo",
            UrlError::Fragment => "url_fragment",
            UrlError::NoHost => "url_no_host",
            UrlError::BadPort => "url_port",
            UrlError::InsecureWebhook => "url_insecure",
            UrlError::BlockedName { .. } => "url_blocked_host",
            UrlError::BlockedAddress { .. } => "url_blocked_address",
            UrlError::PortNotAllowed { .. } => "url_port_not_allowed",
            UrlError::Resolve { .. } | UrlError::NoAddresses { .. } => "url_unresolvable",
            UrlError::ResolveTimeout { .. } => "url_resolve_timeout",
        }
    }

    /// Whether the same URL could pass later (DNS answers change): resolution failures and
    /// resolved addresses. Syntax, scheme and name refusals are permanent.
    pub fn is_transient(&self) -> bool {
        match self {
            UrlError::Resolve { .. }
            | UrlError::NoAddresses { .. }
            | UrlError::ResolveTimeout { .. } => true,
            UrlError::BlockedAddress { verb, .. } => *verb == RESOLVES_TO,
            _ => false,
        }
    }
}

const IS: &str = "is";
const RESOLVES_TO: &str = "resolves to";

fn blocked_address(verb: &str, addr: &IpAddr, reason: &str) -> String {
    if verb == IS {
        format!("is {addr}, {reason}; internal addresses are not allowed")
    } else {
        format!("{verb} {reason}; internal addresses are not allowed")
    }
}

/// Ports a meeting URL may use on an allow entry that names no port, besides the scheme's
/// default (80 for `janus+ws`, 443 for `janus+wss`): Janus's WebSocket ports, 8188 (`ws`) and
/// 8989 (`wss`).
pub const JANUS_PORTS: [u16; 2] = [8188, 8989];

/// The ports an allow entry admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ports {
    /// No port written: the URL scheme's default port and, for meeting URLs, [`JANUS_PORTS`].
    Default,
    /// `:N`: that port only.
    One(u16),
    /// `:*`: every port.
    Any,
}

impl fmt::Display for Ports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ports::Default => Ok(()),
            Ports::One(p) => write!(f, ":{p}"),
            Ports::Any => f.write_str(":*"),
        }
    }
}

/// What an address is checked for: a URL's connection (its port must be admitted), or media
/// (ICE candidates: the SFU picks the UDP ports, so an entry admits its addresses on any port).
#[derive(Clone, Copy)]
enum Target<'a> {
    Url { port: u16, defaults: &'a [u16] },
    Media,
}

impl Target<'_> {
    fn admits(&self, ports: Ports) -> bool {
        match (self, ports) {
            (Target::Media, _) | (_, Ports::Any) => true,
            (Target::Url { port, .. }, Ports::One(p)) => *port == p,
            (Target::Url { port, defaults }, Ports::Default) => defaults.contains(port),
        }
    }
}

/// Splits an allow entry into its address or name part and its ports: `10.0.0.5:8188`,
/// `[fd00::1]:8188`, `[fd00::/64]:*`, `host.example:443`; a bare IPv6 address or network
/// (`fd00::1`, `fd00::/8`) has no port (write it in brackets to give one).
fn split_entry_port(entry: &str) -> Result<(&str, Ports), String> {
    if let Some(rest) = entry.strip_prefix('[') {
        let Some((inner, after)) = rest.split_once(']') else {
            return Err("an opening [ without a closing ]".into());
        };
        if !inner.contains(':') {
            return Err("brackets are only for IPv6 addresses, e.g. [fd00::1]:8188".into());
        }
        let ports = if after.is_empty() {
            Ports::Default
        } else if let Some(p) = after.strip_prefix(':') {
            parse_entry_port(p)?
        } else {
            return Err("only :PORT may follow the closing ]".into());
        };
        return Ok((inner, ports));
    }
    match entry.split_once(':') {
        None => Ok((entry, Ports::Default)),
        Some((host, port)) if !port.contains(':') => Ok((host, parse_entry_port(port)?)),
        // Two colons or more: a bare IPv6 address or network.
        Some(_) => Ok((entry, Ports::Default)),
    }
}

fn parse_entry_port(p: &str) -> Result<Ports, String> {
    if p == "*" {
        return Ok(Ports::Any);
    }
    let n = (!p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
        .then(|| p.parse::<u32>().ok())
        .flatten()
        .filter(|n| (1..=65535).contains(n));
    match n {
        Some(n) => Ok(Ports::One(n as u16)),
        None => Err(format!(
            "port {:?} is not a number from 1 to 65535 or * (every port)",
            p.chars().take(16).collect::<String>()
        )),
    }
}

/// The scheme's default port (`ws`/`http` 80, `wss`/`https` 443).
fn scheme_default_port(url: &url::Url) -> Option<u16> {
    match url.scheme() {
        "ws" | "http" => Some(80),
        "wss" | "https" => Some(443),
        _ => None,
    }
}

/// A URL that passed the policy, with the addresses it may be connected to.
#[derive(Clone)]
pub struct CheckedUrl {
    /// The URL as given (trimmed). Personal data.
    pub url: Pii<String>,
    /// The normalized host: lower-case ASCII name without trailing dot, or the IP address
    /// (IPv6 without brackets). Personal data: it names the meeting server.
    pub host: Pii<String>,
    /// The port to connect to (the scheme's default when the URL has none).
    pub port: u16,
    /// Every vetted address (with `port`). Connect only to these.
    pub addrs: Vec<SocketAddr>,
    /// Whether the host passed because of the allow list (by name, or every address inside an
    /// allowed network) rather than because it is public.
    pub allow_listed: bool,
}

impl fmt::Debug for CheckedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckedUrl")
            .field("url", &self.url)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("addrs", &format_args!("<{} redacted>", self.addrs.len()))
            .field("allow_listed", &self.allow_listed)
            .finish()
    }
}

/// The DNS seam: production uses [`SystemResolver`], tests a [`StaticResolver`].
#[async_trait::async_trait]
pub trait Resolve: Send + Sync + 'static {
    /// All addresses of `host` (an ASCII host name, never an IP literal), with `port`.
    async fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>>;
}

/// `getaddrinfo` through [`tokio::net::lookup_host`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

#[async_trait::async_trait]
impl Resolve for SystemResolver {
    async fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        Ok(tokio::net::lookup_host((host, port)).await?.collect())
    }
}

/// A fixed name → addresses map, for tests. Unknown names fail like NXDOMAIN; names are
/// matched case-insensitively, without a trailing dot.
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    map: HashMap<String, Vec<IpAddr>>,
}

impl StaticResolver {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }
    /// Maps `name` to `addrs` (an empty list answers "no addresses").
    pub fn with(mut self, name: &str, addrs: &[IpAddr]) -> Self {
        self.map.insert(normalize_name(name), addrs.to_vec());
        self
    }
}

#[async_trait::async_trait]
impl Resolve for StaticResolver {
    async fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        match self.map.get(&normalize_name(host)) {
            Some(addrs) => Ok(addrs.iter().map(|ip| SocketAddr::new(*ip, port)).collect()),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "name not known",
            )),
        }
    }
}

/// An allowed network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask_eq(u32::from(net).into(), u32::from(ip).into(), self.prefix, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask_eq(u128::from(net), u128::from(ip), self.prefix, 128)
            }
            _ => false,
        }
    }
    fn is_single(&self) -> bool {
        self.prefix == if self.addr.is_ipv4() { 32 } else { 128 }
    }
}

fn mask_eq(a: u128, b: u128, prefix: u8, bits: u8) -> bool {
    if prefix == 0 {
        return true;
    }
    let shift = u32::from(bits - prefix.min(bits));
    (a >> shift) == (b >> shift)
}

/// Which URLs the worker may connect to. Cheap to clone.
#[derive(Clone)]
pub struct UrlPolicy {
    nets: Vec<(Cidr, Ports)>,
    names: HashMap<String, Vec<Ports>>,
    resolver: Arc<dyn Resolve>,
    dns_timeout: Duration,
}

impl fmt::Debug for UrlPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The allow list is operator configuration, not personal data.
        f.debug_struct("UrlPolicy")
            .field(
                "nets",
                &self
                    .nets
                    .iter()
                    .map(|(c, p)| format!("{}/{}{p}", c.addr, c.prefix))
                    .collect::<Vec<_>>(),
            )
            .field("names", &self.names)
            .field("dns_timeout", &self.dns_timeout)
            .finish()
    }
}

impl Default for UrlPolicy {
    /// Nothing internal allowed, system resolver, [`DEFAULT_DNS_TIMEOUT`].
    fn default() -> Self {
        UrlPolicy {
            nets: Vec::new(),
            names: HashMap::new(),
            resolver: Arc::new(SystemResolver),
            dns_timeout: DEFAULT_DNS_TIMEOUT,
        }
    }
}

impl UrlPolicy {
    /// Builds a policy from allow entries (CIDRs, addresses or exact host names, each with an
    /// optional `:PORT` or `:*`); see the module docs.
    pub fn new<S: AsRef<str>>(allow: &[S]) -> Result<UrlPolicy, PolicyError> {
        let mut policy = UrlPolicy::default();
        for entry in allow {
            let entry = entry.as_ref();
            let err = |reason: &str| PolicyError {
                entry: entry.chars().take(MAX_ECHO).collect(),
                reason: reason.to_string(),
            };
            let trimmed = entry.trim();
            if trimmed.is_empty() {
                return Err(err("empty entry"));
            }
            if trimmed.contains("://") {
                return Err(err(
                    "not a CIDR and not a host name (no scheme); write e.g. 10.1.0.0/16, 10.1.2.3:8188 or janus.corp.example",
                ));
            }
            let (trimmed, ports) = split_entry_port(trimmed).map_err(|r| err(&r))?;
            if let Some((addr, prefix)) = trimmed.split_once('/') {
                let addr: IpAddr = addr.parse().map_err(|_| {
                    err("not a CIDR (no IP address before the /) and not a host name")
                })?;
                let bits = if addr.is_ipv4() { 32 } else { 128 };
                let prefix: u8 = prefix
                    .parse()
                    .ok()
                    .filter(|p| *p <= bits)
                    .ok_or_else(|| err(&format!("prefix length must be 0..={bits}")))?;
                if prefix == 0 {
                    return Err(err(
                        "a /0 network allows everything and switches SSRF protection off; list the networks you mean",
                    ));
                }
                let net = Cidr { addr, prefix };
                if canonical_network(addr, prefix) != addr {
                    return Err(err(&format!(
                        "host bits are set; did you mean {}/{prefix}?",
                        canonical_network(addr, prefix)
                    )));
                }
                policy.nets.push((net, ports));
            } else if let Ok(addr) = trimmed.parse::<IpAddr>() {
                let prefix = if addr.is_ipv4() { 32 } else { 128 };
                policy.nets.push((Cidr { addr, prefix }, ports));
            } else {
                let name = normalize_name(trimmed);
                if let Err(reason) = check_name_syntax(&name) {
                    return Err(err(&format!(
                        "not a CIDR and not a host name ({reason}); write e.g. 10.1.0.0/16, 10.1.2.3:8188 or janus.corp.example"
                    )));
                }
                if ends_in_number(&name) {
                    return Err(err(
                        "looks like an IP address; write it in CIDR form, e.g. 10.1.2.3/32",
                    ));
                }
                policy.names.entry(name).or_default().push(ports);
            }
        }
        Ok(policy)
    }

    /// Replaces the resolver (tests map names to addresses with a [`StaticResolver`]).
    pub fn with_resolver(mut self, resolver: Arc<dyn Resolve>) -> UrlPolicy {
        self.resolver = resolver;
        self
    }

    /// Replaces the DNS timeout.
    pub fn with_dns_timeout(mut self, timeout: Duration) -> UrlPolicy {
        self.dns_timeout = timeout;
        self
    }

    /// Checks a meeting URL (`janus+ws://` / `janus+wss://`) and resolves its host.
    pub async fn check_meeting_url(&self, raw: &str) -> Result<CheckedUrl, UrlError> {
        let raw = precheck(raw)?;
        let scheme = scheme_of(raw);
        match scheme.as_deref() {
            Some("janus+ws") | Some("janus+wss") => {}
            Some("replay") => return Err(UrlError::ReplayNotAllowed),
            other => {
                return Err(UrlError::Scheme {
                    got: other.unwrap_or("").chars().take(32).collect(),
                    expected:
                        "a meeting URL must be janus+ws://host[:port]/<room> or janus+wss://…",
                })
            }
        }
        let janus = JanusUrl::parse(raw).map_err(|e| match e {
            JanusUrlError::TooLong(n) => UrlError::TooLong(n),
            JanusUrlError::UserInfo => UrlError::UserInfo,
            JanusUrlError::NoHost => UrlError::NoHost,
            JanusUrlError::Syntax(s) => UrlError::Syntax(s),
            // The Janus parser names the unknown key; a mangled `pin…` key can hold the PIN.
            JanusUrlError::UnknownQueryKey(_) => UrlError::Syntax(
                "unknown query parameter in Janus URL (only pin is allowed)".into(),
            ),
            other => UrlError::Syntax(other.to_string()),
        })?;
        // The Janus parser rebuilt the URL with the `ws`/`wss` scheme, so the host went through
        // the WHATWG host parser (IPv4 forms, IDNA, percent-decoding).
        let ws =
            url::Url::parse(janus.ws_url.expose()).map_err(|e| UrlError::Syntax(e.to_string()))?;
        let (host, port) = host_and_port(&ws)?;
        let mut defaults = JANUS_PORTS.to_vec();
        defaults.extend(scheme_default_port(&ws));
        let (addrs, allow_listed) = self.check_host(&host, port, &defaults).await?;
        Ok(CheckedUrl {
            url: Pii::new(raw.to_string()),
            host: Pii::new(host_string(&host)),
            port,
            addrs,
            allow_listed,
        })
    }

    /// Checks a webhook URL (`https://`, or `http://` for allow-listed hosts) and resolves its
    /// host.
    pub async fn check_webhook_url(&self, raw: &str) -> Result<CheckedUrl, UrlError> {
        let raw = precheck(raw)?;
        let scheme = scheme_of(raw);
        let secure = match scheme.as_deref() {
            Some("https") => true,
            Some("http") => false,
            other => {
                return Err(UrlError::Scheme {
                    got: other.unwrap_or("").chars().take(32).collect(),
                    expected: "a webhook URL must be https://…",
                })
            }
        };
        let url = url::Url::parse(raw).map_err(|e| UrlError::Syntax(e.to_string()))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlError::UserInfo);
        }
        if url.fragment().is_some() {
            return Err(UrlError::Fragment);
        }
        let (host, port) = host_and_port(&url)?;
        let defaults: Vec<u16> = scheme_default_port(&url).into_iter().collect();
        let (addrs, allow_listed) = self.check_host(&host, port, &defaults).await?;
        if !secure && !allow_listed {
            return Err(UrlError::InsecureWebhook);
        }
        Ok(CheckedUrl {
            url: Pii::new(raw.to_string()),
            host: Pii::new(host_string(&host)),
            port,
            addrs,
            allow_listed,
        })
    }

    /// Whether the worker may send media to `ip` (a remote ICE candidate's address): the same
    /// classification and allow list as URLs, except that an allow entry admits its addresses
    /// on every port (the SFU picks its media ports). `server_addr` says `ip` is an address the
    /// meeting URL's host was vetted to (allowed by name), which passes like the host itself.
    /// `Err` is the kind of address refused, never the address.
    pub fn check_media_addr(&self, ip: IpAddr, server_addr: bool) -> Result<(), &'static str> {
        match self.check_addr("", IS, ip, server_addr, Target::Media) {
            Ok(_) => Ok(()),
            Err(UrlError::BlockedAddress { reason, .. }) => Err(reason),
            Err(_) => Err("not allowed by urls.allow"),
        }
    }

    /// Checks one host (already WHATWG-parsed) on `port` (`defaults`: the ports an allow entry
    /// without a port admits) and returns its vetted addresses and whether the allow list was
    /// needed.
    async fn check_host(
        &self,
        host: &Host,
        port: u16,
        defaults: &[u16],
    ) -> Result<(Vec<SocketAddr>, bool), UrlError> {
        let target = Target::Url { port, defaults };
        let name = match host {
            Host::Ip(ip) => {
                let allowed = self.check_addr(&host_string(host), IS, *ip, false, target)?;
                return Ok((vec![SocketAddr::new(*ip, port)], allowed));
            }
            Host::Name(name) => name,
        };
        let echo = echo(name);
        check_name_syntax(name).map_err(|reason| UrlError::BlockedName {
            host: echo.clone(),
            reason,
        })?;
        // `getaddrinfo` reads `127.1`, `0x7f.1`, `2130706433`, `0177.0.0.1` as IPv4.
        match parse_legacy_ipv4(name) {
            Some(Ok(ip)) => {
                let ip = IpAddr::V4(ip);
                let allowed = self.check_addr(&echo, IS, ip, false, target)?;
                return Ok((vec![SocketAddr::new(ip, port)], allowed));
            }
            Some(Err(())) => {
                return Err(UrlError::BlockedName {
                    host: echo,
                    reason: "it ends in a number but is not a valid IPv4 address",
                })
            }
            None => {}
        }
        let listed = self.names.get(name.as_str());
        let by_name = listed.is_some_and(|ps| ps.iter().any(|p| target.admits(*p)));
        // Listed, but for other ports: say so rather than "internal address".
        let wrong_port = |e: UrlError| {
            if listed.is_some() && !by_name {
                UrlError::PortNotAllowed {
                    host: echo.clone(),
                    port,
                }
            } else {
                e
            }
        };
        if !by_name {
            if let Some(reason) = blocked_name(name) {
                return Err(wrong_port(UrlError::BlockedName {
                    host: echo.clone(),
                    reason,
                }));
            }
        }
        // As an absolute name (trailing dot): the resolver's search list (a pod's
        // `svc.cluster.local`, a corporate domain) must not turn `db.internal-name` into an
        // inside service.
        let absolute = format!("{name}.");
        let resolved =
            tokio::time::timeout(self.dns_timeout, self.resolver.resolve(&absolute, port))
                .await
                .map_err(|_| UrlError::ResolveTimeout {
                    host: echo.clone(),
                    after: self.dns_timeout,
                })?
                .map_err(|e| UrlError::Resolve {
                    host: echo.clone(),
                    detail: resolve_detail(&e),
                })?;
        let mut addrs: Vec<SocketAddr> = Vec::with_capacity(resolved.len());
        let mut all_allowed = true;
        for a in resolved {
            let ip = a.ip();
            let allowed = self
                .check_addr(&echo, RESOLVES_TO, ip, by_name, target)
                .map_err(|e| {
                    tracing::debug!(host = %echo, addr = %ip, "A resolved address was refused.");
                    wrong_port(e)
                })?;
            all_allowed &= allowed;
            let a = SocketAddr::new(ip, port);
            if !addrs.contains(&a) {
                addrs.push(a);
            }
        }
        if addrs.is_empty() {
            return Err(UrlError::NoAddresses { host: echo });
        }
        Ok((addrs, by_name || all_allowed))
    }

    /// Whether `ip` may be connected to: `Ok(true)` when it needed the allow list,
    /// `Ok(false)` when it is public.
    fn check_addr(
        &self,
        host: &str,
        verb: &'static str,
        ip: IpAddr,
        allowed_by_name: bool,
        target: Target<'_>,
    ) -> Result<bool, UrlError> {
        let host: String = host.chars().take(MAX_ECHO).collect();
        match self.decide(ip, allowed_by_name, target) {
            Ok(allowed) => Ok(allowed),
            // Allowed by an entry that does not admit this port.
            Err(_)
                if matches!(target, Target::Url { .. })
                    && self.decide(ip, allowed_by_name, Target::Media).is_ok() =>
            {
                let port = match target {
                    Target::Url { port, .. } => port,
                    Target::Media => 0,
                };
                Err(UrlError::PortNotAllowed { host, port })
            }
            Err(reason) => Err(UrlError::BlockedAddress {
                host,
                verb,
                addr: ip,
                reason,
            }),
        }
    }

    /// [`Self::check_addr`]'s decision; `Err` is the kind of address refused.
    fn decide(
        &self,
        ip: IpAddr,
        allowed_by_name: bool,
        target: Target<'_>,
    ) -> Result<bool, &'static str> {
        let canon = canonical(ip);
        let listed = |exact: bool| {
            self.nets.iter().any(|(n, p)| {
                target.admits(*p)
                    && if exact {
                        n.is_single() && (n.addr == ip || n.addr == canon)
                    } else {
                        n.contains(ip) || n.contains(canon)
                    }
            })
        };
        match classify(ip) {
            Class::Public => Ok(listed(false)),
            Class::Never(reason) => Err(reason),
            Class::Metadata if listed(true) => Ok(true),
            Class::Metadata => Err("a cloud metadata address"),
            Class::Internal(_) if allowed_by_name || listed(false) => Ok(true),
            Class::Internal(reason) => Err(reason),
        }
    }
}

/// A parsed host.
enum Host {
    Ip(IpAddr),
    /// Lower-case ASCII, no trailing dot.
    Name(String),
}

fn host_string(host: &Host) -> String {
    match host {
        Host::Ip(ip) => ip.to_string(),
        Host::Name(n) => n.clone(),
    }
}

fn echo(s: &str) -> String {
    s.chars().take(MAX_ECHO).collect()
}

/// Length, emptiness and trimming, before any parsing.
fn precheck(raw: &str) -> Result<&str, UrlError> {
    if raw.len() > MAX_URL_BYTES {
        return Err(UrlError::TooLong(raw.len()));
    }
    // WHATWG trims C0 controls and spaces at both ends.
    let raw = raw.trim_matches(|c: char| c <= ' ');
    if raw.is_empty() {
        return Err(UrlError::Empty);
    }
    Ok(raw)
}

/// The lower-cased scheme, if the input starts with one.
fn scheme_of(raw: &str) -> Option<String> {
    let (scheme, _) = raw.split_once(':')?;
    let ok = scheme
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    ok.then(|| scheme.to_ascii_lowercase())
}

fn host_and_port(url: &url::Url) -> Result<(Host, u16), UrlError> {
    let host = match url.host() {
        None => return Err(UrlError::NoHost),
        Some(url::Host::Ipv4(a)) => Host::Ip(IpAddr::V4(a)),
        Some(url::Host::Ipv6(a)) => Host::Ip(IpAddr::V6(a)),
        Some(url::Host::Domain(d)) => {
            let name = normalize_name(d);
            if name.is_empty() {
                return Err(UrlError::NoHost);
            }
            Host::Name(name)
        }
    };
    let port = url.port_or_known_default().ok_or(UrlError::BadPort)?;
    if port == 0 {
        return Err(UrlError::BadPort);
    }
    Ok((host, port))
}

/// Lower-case, without one trailing dot.
fn normalize_name(name: &str) -> String {
    let lower = name.trim().to_ascii_lowercase();
    match lower.strip_suffix('.') {
        Some(s) => s.to_string(),
        None => lower,
    }
}

/// DNS syntax: 1..=253 characters, labels 1..=63 of `[a-z0-9_-]`.
fn check_name_syntax(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 253 {
        return Err("a host name must be 1 to 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("a host name label must be 1 to 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return Err("a host name may contain only letters, digits, '-' and '_'");
        }
    }
    Ok(())
}

/// Why a (syntactically valid, lower-case) name is refused, if it is.
fn blocked_name(name: &str) -> Option<&'static str> {
    if BLOCKED_NAMES.contains(&name) {
        return Some("it names this machine or a cloud-internal service");
    }
    if BLOCKED_SUFFIXES.iter().any(|s| name.ends_with(s)) || name == "home.arpa" {
        return Some("it is in a local or internal-only DNS zone");
    }
    if !name.contains('.') {
        return Some(
            "a single-label name resolves through the local DNS search list; use a fully qualified name",
        );
    }
    None
}

/// The WHATWG "ends in a number" test: a name whose last label is a number is an IPv4
/// address (or invalid), never a DNS name.
fn ends_in_number(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    let Some(last) = name.rsplit('.').next() else {
        return false;
    };
    if !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    // `0x` followed by hex digits (or nothing), whatever its size.
    last.strip_prefix("0x")
        .or_else(|| last.strip_prefix("0X"))
        .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Parses the inet_aton / WHATWG IPv4 forms: 1 to 4 dot-separated numbers, each decimal,
/// `0x` hex or `0`-prefixed octal, the last filling the remaining bytes (`127.1`,
/// `2130706433`, `0x7f.0.0.1`, `0177.0.0.01`). `None` when the name does not end in a
/// number (a DNS name); `Some(Err)` when it does but is not a valid address.
pub fn parse_legacy_ipv4(name: &str) -> Option<Result<Ipv4Addr, ()>> {
    if !ends_in_number(name) {
        return None;
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() > 4 {
        return Some(Err(()));
    }
    let mut nums = Vec::with_capacity(parts.len());
    for p in &parts {
        match parse_ipv4_number(p) {
            Some(n) => nums.push(n),
            None => return Some(Err(())),
        }
    }
    // `nums` has 1..=4 entries: `parts` is never empty and at most 4 long.
    let (last, init) = nums.split_last()?;
    if init.iter().any(|n| *n > 255) {
        return Some(Err(()));
    }
    let last_bits = 8 * (5 - nums.len()) as u32;
    if *last >= 1u64 << last_bits {
        return Some(Err(()));
    }
    let mut value: u64 = *last;
    for (i, n) in init.iter().enumerate() {
        value += n << (8 * (3 - i));
    }
    // value < 2^32: each leading byte ≤ 255 in its own position, the last below its room.
    Some(u32::try_from(value).map(Ipv4Addr::from).map_err(|_| ()))
}

/// One IPv4 part: decimal, `0x` hex (may be empty after the prefix: 0), or octal with a
/// leading `0`. `None` when not a number or above 2^32.
fn parse_ipv4_number(p: &str) -> Option<u64> {
    if p.is_empty() {
        return None;
    }
    let (digits, radix) = if let Some(h) = p.strip_prefix("0x").or_else(|| p.strip_prefix("0X")) {
        (h, 16)
    } else if p.len() > 1 && p.starts_with('0') {
        (&p[1..], 8)
    } else {
        (p, 10)
    };
    if digits.is_empty() {
        return Some(0);
    }
    if !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    // Leading zeros do not change the value; bound the rest so u64 cannot overflow.
    let significant = digits.trim_start_matches('0');
    if significant.len() > 12 {
        return None;
    }
    let v = u64::from_str_radix(
        if significant.is_empty() {
            "0"
        } else {
            significant
        },
        radix,
    )
    .ok()?;
    (v <= u64::from(u32::MAX)).then_some(v)
}

fn resolve_detail(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such host".to_string(),
        _ => {
            // getaddrinfo messages ("failed to lookup address information: Name or service
            // not known") do not contain the URL.
            let s = e.to_string();
            s.chars().take(160).collect()
        }
    }
}

/// What an address is, for the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Public,
    /// Allowed by the allow list.
    Internal(&'static str),
    /// Allowed only by an exact single-address entry.
    Metadata,
    /// Never allowed.
    Never(&'static str),
}

/// `::ffff:a.b.c.d` as `a.b.c.d`; anything else unchanged.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

fn canonical_network(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let mask = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix.min(32)))
            };
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) => {
            let mask = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix.min(128)))
            };
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
        }
    }
}

fn classify(ip: IpAddr) -> Class {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u8) -> bool {
    mask_eq(
        u32::from(Ipv4Addr::from(net)).into(),
        u32::from(ip).into(),
        prefix,
        32,
    )
}

fn classify_v4(ip: Ipv4Addr) -> Class {
    if METADATA_V4.contains(&ip) {
        return Class::Metadata;
    }
    if ip.is_unspecified() {
        return Class::Never("the unspecified address (this machine)");
    }
    if ip.is_broadcast() {
        return Class::Never("the broadcast address");
    }
    if ip.is_multicast() {
        return Class::Never("a multicast address");
    }
    const RANGES: &[([u8; 4], u8, &str)] = &[
        ([0, 0, 0, 0], 8, "an address in 0.0.0.0/8 (this network)"),
        ([10, 0, 0, 0], 8, "a private address (RFC 1918)"),
        (
            [100, 64, 0, 0],
            10,
            "a carrier-grade NAT address (100.64.0.0/10)",
        ),
        ([127, 0, 0, 0], 8, "a loopback address"),
        ([169, 254, 0, 0], 16, "a link-local address"),
        ([172, 16, 0, 0], 12, "a private address (RFC 1918)"),
        (
            [192, 0, 0, 0],
            24,
            "an IETF protocol address (192.0.0.0/24)",
        ),
        ([192, 0, 2, 0], 24, "a documentation address"),
        ([192, 31, 196, 0], 24, "an AS112 address"),
        ([192, 52, 193, 0], 24, "an AMT address"),
        ([192, 88, 99, 0], 24, "a 6to4 relay anycast address"),
        ([192, 168, 0, 0], 16, "a private address (RFC 1918)"),
        ([192, 175, 48, 0], 24, "an AS112 address"),
        ([198, 18, 0, 0], 15, "a benchmarking address"),
        ([198, 51, 100, 0], 24, "a documentation address"),
        ([203, 0, 113, 0], 24, "a documentation address"),
        ([240, 0, 0, 0], 4, "a reserved address (240.0.0.0/4)"),
    ];
    for (net, prefix, reason) in RANGES {
        if in_v4(ip, *net, *prefix) {
            return Class::Internal(reason);
        }
    }
    Class::Public
}

fn in_v6(ip: Ipv6Addr, net: u128, prefix: u8) -> bool {
    mask_eq(net, u128::from(ip), prefix, 128)
}

/// The IPv4 address an IPv6 address embeds, for the transition forms.
fn embedded_v4(ip: Ipv6Addr) -> Option<Vec<Ipv4Addr>> {
    let v = u128::from(ip);
    let low32 = Ipv4Addr::from((v & 0xffff_ffff) as u32);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(vec![v4]); // ::ffff:a.b.c.d
    }
    if in_v6(ip, 0, 96) {
        return Some(vec![low32]); // ::a.b.c.d (IPv4-compatible; :: and ::1 handled before)
    }
    if in_v6(ip, 0xffff_0000_u128 << 32, 96) {
        return Some(vec![low32]); // ::ffff:0:a.b.c.d (SIIT, IPv4-translated)
    }
    if in_v6(ip, 0x0064_ff9b_u128 << 96, 96) {
        return Some(vec![low32]); // 64:ff9b::a.b.c.d (NAT64 well-known prefix)
    }
    if in_v6(ip, 0x2002_u128 << 112, 16) {
        return Some(vec![Ipv4Addr::from(((v >> 80) & 0xffff_ffff) as u32)]); // 2002:AABB:CCDD::
    }
    if in_v6(ip, 0x2001_0000_u128 << 96, 32) {
        // Teredo: server IPv4 in bits 32..64, client IPv4 inverted in the low 32 bits.
        let server = Ipv4Addr::from(((v >> 64) & 0xffff_ffff) as u32);
        let client = Ipv4Addr::from(!((v & 0xffff_ffff) as u32));
        return Some(vec![server, client]);
    }
    None
}

fn classify_v6(ip: Ipv6Addr) -> Class {
    if METADATA_V6.contains(&ip) {
        return Class::Metadata;
    }
    if ip.is_unspecified() {
        return Class::Never("the unspecified address (this machine)");
    }
    if ip.is_loopback() {
        return Class::Internal("a loopback address");
    }
    if ip.is_multicast() {
        return Class::Never("a multicast address");
    }
    if let Some(embedded) = embedded_v4(ip) {
        let mut worst = Class::Public;
        for v4 in embedded {
            match classify_v4(v4) {
                Class::Public => {}
                Class::Metadata => return Class::Metadata,
                Class::Never(_) | Class::Internal(_) => {
                    worst = Class::Internal("an IPv6 address embedding an internal IPv4 address")
                }
            }
        }
        return worst;
    }
    const RANGES: &[(u128, u8, &str)] = &[
        (0x0064_ff9b_0001_u128 << 80, 48, "a local-use NAT64 address"),
        (0x0100_u128 << 112, 64, "a discard-only address"),
        (
            0x2001_u128 << 112,
            23,
            "an IETF protocol address (2001::/23)",
        ),
        (0x2001_0db8_u128 << 96, 32, "a documentation address"),
        (0x3fff_u128 << 112, 20, "a documentation address"),
        (0x5f00_u128 << 112, 16, "an SRv6 address"),
        (0xfc00_u128 << 112, 7, "a unique-local address (fc00::/7)"),
        (0xfe80_u128 << 112, 10, "a link-local address"),
        (0xfec0_u128 << 112, 10, "a site-local address"),
    ];
    for (net, prefix, reason) in RANGES {
        if in_v6(ip, *net, *prefix) {
            return Class::Internal(reason);
        }
    }
    if !in_v6(ip, 0x2000_u128 << 112, 3) {
        return Class::Internal("an address outside IPv6 global unicast (2000::/3)");
    }
    Class::Public
}

#[cfg(test)]
mod tests;
