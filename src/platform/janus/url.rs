//! Janus meeting URLs: `janus+ws://host:port/<room>?pin=…` and `janus+wss://…`.
//!
//! - The scheme picks the WebSocket transport: `janus+ws` → `ws://`, `janus+wss` → `wss://`
//!   (TLS, rustls with the Mozilla roots). The port is optional (80 / 443 by default).
//! - The **last** path segment is the VideoRoom room id. A positive integer without leading
//!   zeros is a numeric room (Janus's default); anything else is a string room id (Janus with
//!   `string_ids = true`). Percent-encoding is decoded.
//! - Path segments before the room are the WebSocket path on the server, for a Janus behind a
//!   reverse proxy: `janus+wss://meet.example.org/janus-ws/1234` connects to
//!   `wss://meet.example.org/janus-ws` and joins room 1234. Without them the path is `/`.
//! - The only query parameter is `pin`, the room's PIN (optional, at most once).
//! - Rejected: user info (`user:pass@`), fragments, other query parameters, a missing room,
//!   bad ports, anything longer than [`MAX_URL_BYTES`].
//!
//! The PIN is decoded as a form value: write a literal `+` as `%2B` (a bare `+` means a space).
//!
//! The bot's display name is not part of the URL: it comes from the configuration.

use std::fmt;

use crate::pii::{Pii, Secret};

/// Longest accepted meeting URL, bytes.
pub const MAX_URL_BYTES: usize = 2048;
/// Longest accepted string room id, characters.
pub const MAX_ROOM_CHARS: usize = 128;
/// Longest accepted PIN, characters.
pub const MAX_PIN_CHARS: usize = 256;

/// A VideoRoom room id: numeric (Janus's default) or a string (`string_ids = true`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RoomId {
    /// A numeric room id (`room-1234` in `janus.plugin.videoroom.jcfg`).
    Num(u64),
    /// A string room id.
    Str(String),
}

impl RoomId {
    /// The id as Janus expects it in a request's `room` field.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            RoomId::Num(n) => serde_json::Value::from(*n),
            RoomId::Str(s) => serde_json::Value::from(s.as_str()),
        }
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RoomId::Num(n) => write!(f, "{n}"),
            RoomId::Str(s) => f.write_str(s),
        }
    }
}

/// A parsed Janus meeting URL. `Debug` redacts the server address and never prints the PIN.
#[derive(Clone)]
pub struct JanusUrl {
    /// The WebSocket URL to connect to (`ws://…` or `wss://…`). Personal data: it names the
    /// meeting server.
    pub ws_url: Pii<String>,
    /// The room to join.
    pub room: RoomId,
    /// The room's PIN, if the URL has one.
    pub pin: Option<Secret<String>>,
}

impl fmt::Debug for JanusUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JanusUrl")
            .field("tls", &self.is_tls())
            .field("ws_url", &self.ws_url)
            .field("room", &self.room)
            .field("pin", &self.pin.as_ref().map(|_| "<secret>"))
            .finish()
    }
}

/// Why a Janus URL was rejected. Messages never repeat the PIN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JanusUrlError {
    /// Longer than [`MAX_URL_BYTES`].
    #[error("Janus URL is too long ({0} bytes, at most {MAX_URL_BYTES})")]
    TooLong(usize),
    /// Not `janus+ws:` or `janus+wss:`.
    #[error("not a Janus URL: expected janus+ws://host:port/<room> or janus+wss://…")]
    Scheme,
    /// The URL library refused it (bad host, bad port, …).
    #[error("invalid Janus URL: {0}")]
    Syntax(String),
    /// `user:pass@host` is not supported.
    #[error("Janus URL must not contain user info (user:pass@)")]
    UserInfo,
    /// `#…` is not supported.
    #[error("Janus URL must not contain a fragment (#…)")]
    Fragment,
    /// No host.
    #[error("Janus URL has no host")]
    NoHost,
    /// No room segment.
    #[error("Janus URL has no room: expected janus+ws://host:port/<room>")]
    MissingRoom,
    /// The room segment is unusable.
    #[error("invalid room id: {0}")]
    BadRoom(&'static str),
    /// A query parameter other than `pin`.
    #[error("unknown query parameter {0:?} in Janus URL (only pin is allowed)")]
    UnknownQueryKey(String),
    /// `pin` given twice.
    #[error("pin given more than once in Janus URL")]
    DuplicatePin,
    /// The PIN is empty or too long.
    #[error("invalid pin: {0}")]
    BadPin(&'static str),
}

impl JanusUrl {
    /// Parses a `janus+ws://` / `janus+wss://` meeting URL.
    pub fn parse(raw: &str) -> Result<JanusUrl, JanusUrlError> {
        let raw = raw.trim();
        if raw.len() > MAX_URL_BYTES {
            return Err(JanusUrlError::TooLong(raw.len()));
        }
        let (scheme, rest) = raw.split_once("://").ok_or(JanusUrlError::Scheme)?;
        let ws_scheme = match scheme.to_ascii_lowercase().as_str() {
            "janus+ws" => "ws",
            "janus+wss" => "wss",
            _ => return Err(JanusUrlError::Scheme),
        };
        // `ws`/`wss` are special schemes for the URL standard: the library then parses the
        // host properly (IPv4/IPv6/IDNA) and validates the port.
        let url = url::Url::parse(&format!("{ws_scheme}://{rest}"))
            .map_err(|e| JanusUrlError::Syntax(e.to_string()))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(JanusUrlError::UserInfo);
        }
        if url.fragment().is_some() {
            return Err(JanusUrlError::Fragment);
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or(JanusUrlError::NoHost)?;

        let mut segments: Vec<&str> = url.path_segments().map(|s| s.collect()).unwrap_or_default();
        // A trailing slash (`/1234/`) leaves an empty last segment: ignore it once.
        if segments.last() == Some(&"") {
            segments.pop();
        }
        let room_raw = segments.pop().ok_or(JanusUrlError::MissingRoom)?;
        if room_raw.is_empty() {
            return Err(JanusUrlError::MissingRoom);
        }
        if segments.iter().any(|s| s.is_empty()) {
            return Err(JanusUrlError::Syntax("empty path segment".into()));
        }
        let room = parse_room(room_raw)?;

        let mut pin = None;
        for (key, value) in url.query_pairs() {
            if key != "pin" {
                return Err(JanusUrlError::UnknownQueryKey(
                    key.chars().take(32).collect(),
                ));
            }
            if pin.is_some() {
                return Err(JanusUrlError::DuplicatePin);
            }
            let value = value.into_owned();
            if value.is_empty() {
                return Err(JanusUrlError::BadPin("empty"));
            }
            if value.chars().count() > MAX_PIN_CHARS {
                return Err(JanusUrlError::BadPin("too long"));
            }
            if value.chars().any(char::is_control) {
                return Err(JanusUrlError::BadPin("control characters"));
            }
            pin = Some(Secret::new(value));
        }

        let host_part = match url.host() {
            Some(url::Host::Ipv6(a)) => format!("[{a}]"),
            _ => host.to_string(),
        };
        let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
        let ws_path = if segments.is_empty() {
            "/".to_string()
        } else {
            format!("/{}", segments.join("/"))
        };
        Ok(JanusUrl {
            ws_url: Pii::new(format!("{ws_scheme}://{host_part}{port}{ws_path}")),
            room,
            pin,
        })
    }

    /// Whether the WebSocket runs over TLS (`janus+wss`).
    pub fn is_tls(&self) -> bool {
        self.ws_url.expose().starts_with("wss://")
    }
}

fn parse_room(raw: &str) -> Result<RoomId, JanusUrlError> {
    let decoded = percent_decode(raw).ok_or(JanusUrlError::BadRoom("not valid UTF-8"))?;
    if decoded.is_empty() {
        return Err(JanusUrlError::MissingRoom);
    }
    if decoded.chars().count() > MAX_ROOM_CHARS {
        return Err(JanusUrlError::BadRoom("too long"));
    }
    if decoded.chars().any(char::is_control) {
        return Err(JanusUrlError::BadRoom("control characters"));
    }
    if decoded.bytes().all(|b| b.is_ascii_digit()) {
        if decoded.starts_with('0') {
            return Err(JanusUrlError::BadRoom(
                "a numeric room id must be a positive integer without leading zeros",
            ));
        }
        return decoded
            .parse::<u64>()
            .map(RoomId::Num)
            .map_err(|_| JanusUrlError::BadRoom("numeric room id does not fit in 64 bits"));
    }
    Ok(RoomId::Str(decoded))
}

/// Decodes `%XX` escapes; `None` when the result is not UTF-8. Malformed escapes stay literal,
/// as browsers do.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    // Indexing cannot go out of bounds: `i < len` in the loop, `i + 2 < len` before the slice.
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn ok(s: &str) -> JanusUrl {
        JanusUrl::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn numeric_room_with_pin() {
        let u = ok("janus+ws://127.0.0.1:8188/1234?pin=s3cret");
        assert_eq!(u.ws_url.expose(), "ws://127.0.0.1:8188/");
        assert_eq!(u.room, RoomId::Num(1234));
        assert_eq!(u.pin.as_ref().map(|p| p.expose().as_str()), Some("s3cret"));
        assert!(!u.is_tls());
    }

    #[test]
    fn wss_string_room_default_port_and_proxy_path() {
        let u = ok("janus+wss://Meet.Example.org/janus-ws/team%20standup");
        assert_eq!(u.ws_url.expose(), "wss://meet.example.org/janus-ws");
        assert_eq!(u.room, RoomId::Str("team standup".into()));
        assert!(u.pin.is_none());
        assert!(u.is_tls());
        let u = ok("JANUS+WSS://[::1]:8989/7/");
        assert_eq!(u.ws_url.expose(), "wss://[::1]:8989/");
        assert_eq!(u.room, RoomId::Num(7));
    }

    #[test]
    fn pin_is_percent_decoded_and_never_debug_printed() {
        let u = ok("janus+ws://h:1/1?pin=a%26b%3Dc");
        assert_eq!(u.pin.as_ref().unwrap().expose(), "a&b=c");
        let dbg = format!("{u:?}");
        assert!(!dbg.contains("a&b=c") && !dbg.contains("a%26b"), "{dbg}");
        assert!(!dbg.contains("h:1"), "{dbg}");
        assert!(dbg.contains("<secret>"), "{dbg}");
    }

    #[test]
    fn rejects_with_clear_errors() {
        use JanusUrlError::*;
        let cases: &[(&str, JanusUrlError)] = &[
            ("replay:x.json", Scheme),
            ("http://h:1/1", Scheme),
            ("janus+ws://h:8188", MissingRoom),
            ("janus+ws://h:8188/", MissingRoom),
            ("janus+ws://u:p@h:8188/1", UserInfo),
            ("janus+ws://u@h:8188/1", UserInfo),
            ("janus+ws://h:8188/1#frag", Fragment),
            ("janus+ws://h:8188/1?pin=a&pin=b", DuplicatePin),
            ("janus+ws://h:8188/1?pin=", BadPin("empty")),
            (
                "janus+ws://h:8188/1?display=x",
                UnknownQueryKey("display".into()),
            ),
            (
                "janus+ws://h:8188/0",
                BadRoom("a numeric room id must be a positive integer without leading zeros"),
            ),
            (
                "janus+ws://h:8188/0012",
                BadRoom("a numeric room id must be a positive integer without leading zeros"),
            ),
            (
                "janus+ws://h:8188/99999999999999999999",
                BadRoom("numeric room id does not fit in 64 bits"),
            ),
            ("janus+ws://h:8188/a%0Ab", BadRoom("control characters")),
            ("janus+ws://h:8188/%FF", BadRoom("not valid UTF-8")),
            ("janus+ws://h:8188//1", Syntax("empty path segment".into())),
        ];
        for (input, want) in cases {
            assert_eq!(JanusUrl::parse(input).unwrap_err(), *want, "{input}");
        }
        assert!(matches!(
            JanusUrl::parse("janus+ws://h:99999/1"),
            Err(Syntax(_))
        ));
        assert!(matches!(
            JanusUrl::parse("janus+ws://h:port/1"),
            Err(Syntax(_))
        ));
        assert!(JanusUrl::parse("janus+ws:///1").is_err());
        let long = format!("janus+ws://h:1/{}", "a".repeat(MAX_URL_BYTES));
        assert!(matches!(JanusUrl::parse(&long), Err(TooLong(_))));
        let long_room = format!("janus+ws://h:1/{}", "a".repeat(MAX_ROOM_CHARS + 1));
        assert_eq!(
            JanusUrl::parse(&long_room).unwrap_err(),
            BadRoom("too long")
        );
        // Error messages never echo the PIN.
        let e = JanusUrl::parse("janus+ws://h:1/1?pin=topsecret&x=1").unwrap_err();
        assert!(!e.to_string().contains("topsecret"));
    }

    /// Seeded mutation fuzz: byte flips, insertions, deletions and splices of valid URLs
    /// must give `Ok` or a typed error, never a panic.
    #[test]
    fn mutation_fuzz_never_panics() {
        let seeds = [
            "janus+ws://127.0.0.1:8188/1234?pin=s3cret",
            "janus+wss://meet.example.org/janus-ws/team%20standup",
            "janus+ws://[::1]:8188/7/",
        ];
        let alphabet = b"%:/?#@&=[]+.0123456789abcdefXYZ \t\n\x7f";
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed_0003);
        let mut oks = 0;
        for i in 0..20_000 {
            let mut s: Vec<u8> = seeds[i % seeds.len()].as_bytes().to_vec();
            for _ in 0..rng.gen_range(1..6) {
                let pos = rng.gen_range(0..=s.len());
                match rng.gen_range(0..4) {
                    0 if pos < s.len() => s[pos] = alphabet[rng.gen_range(0..alphabet.len())],
                    1 => s.insert(pos, alphabet[rng.gen_range(0..alphabet.len())]),
                    2 if pos < s.len() => {
                        s.remove(pos);
                    }
                    _ => s.insert(pos, rng.gen()),
                }
            }
            let text = String::from_utf8_lossy(&s);
            if let Ok(u) = JanusUrl::parse(&text) {
                oks += 1;
                // Whatever parses must be usable as a WebSocket URL again.
                assert!(u.ws_url.expose().starts_with("ws://") || u.is_tls());
                assert!(url::Url::parse(u.ws_url.expose()).is_ok(), "{text}");
            }
        }
        assert!(
            oks > 100,
            "the mutations should leave some URLs valid ({oks})"
        );
    }
}
