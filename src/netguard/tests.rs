use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn resolver() -> StaticResolver {
    StaticResolver::new()
        .with("janus.example.com", &[ip("93.184.216.34")])
        .with(
            "hooks.example.com",
            &[
                ip("93.184.216.34"),
                ip("2606:2800:220:1:248:1893:25c8:1946"),
            ],
        )
        .with("evil.example.com", &[ip("10.0.0.5")])
        .with("rebind.example.com", &[ip("1.1.1.1"), ip("127.0.0.1")])
        .with("mapped.example.com", &[ip("::ffff:127.0.0.1")])
        .with("meta.example.com", &[ip("169.254.169.254")])
        .with("wire.example.com", &[ip("168.63.129.16")])
        .with("nat64meta.example.com", &[ip("64:ff9b::a9fe:a9fe")])
        .with("ula.example.com", &[ip("fd12:3456::1")])
        .with("zero.example.com", &[ip("0.0.0.0")])
        .with("empty.example.com", &[])
        .with("127.0.0.1.nip.io", &[ip("127.0.0.1")])
        .with("localtest.me", &[ip("127.0.0.1")])
        .with("janus.corp.example", &[ip("10.9.9.9")])
        .with("metaname.corp.example", &[ip("169.254.169.254")])
        .with("localhost", &[ip("127.0.0.1")])
        .with("metadata.google.internal", &[ip("169.254.169.254")])
}

fn policy(allow: &[&str]) -> UrlPolicy {
    UrlPolicy::new(allow)
        .expect("test allow list")
        .with_resolver(Arc::new(resolver()))
}

/// Hosts that must be refused in both meeting and webhook URLs (with no allow list).
const HOSTILE_HOSTS: &[&str] = &[
    // Loopback in every spelling.
    "127.0.0.1",
    "127.0.0.1.",
    "127.1",
    "127.0.1",
    "127.255.255.254",
    "2130706433",
    "0x7f000001",
    "0x7f.1",
    "0x7f.0x0.0x0.0x1",
    "0X7F.0.0.1",
    "017700000001",
    "0177.0.0.1",
    "0177.0.0.01",
    "00000000177.0.0.1",
    "%31%32%37.0.0.1",
    "%6c%6f%63%61%6c%68%6f%73%74",
    "\u{ff11}\u{ff12}\u{ff17}.0.0.1",
    "\u{2460}\u{2461}\u{2466}.0.0.1",
    "localhost",
    "LOCALHOST",
    "localhost.",
    "LocalHost.",
    "\u{ff4c}\u{ff4f}\u{ff43}\u{ff41}\u{ff4c}\u{ff48}\u{ff4f}\u{ff53}\u{ff54}",
    "foo.localhost",
    "a.b.localhost.",
    "localhost.localdomain",
    "ip6-localhost",
    "ip6-loopback",
    "[::1]",
    "[0:0:0:0:0:0:0:1]",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "[::127.0.0.1]",
    "[::ffff:0:127.0.0.1]",
    "[64:ff9b::127.0.0.1]",
    "[2002:7f00:1::]",
    "[2001:0:4136:e378:8000:63bf:80ff:fffe]",
    // Unspecified, broadcast, multicast, reserved.
    "0.0.0.0",
    "0",
    "0x0",
    "0.1.2.3",
    "[::]",
    "[0::]",
    "255.255.255.255",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "[ff02::1]",
    // Private, CGNAT, link-local, protocol, documentation, benchmarking.
    "10.0.0.1",
    "10.255.255.255",
    "012.0.0.1",
    "167772161",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.0.1",
    "192.168.1.1.",
    "0xc0a80001",
    "100.64.0.1",
    "100.127.255.255",
    "169.254.0.1",
    "192.0.0.8",
    "192.0.2.1",
    "198.18.0.1",
    "198.19.255.255",
    "198.51.100.7",
    "203.0.113.9",
    "192.88.99.1",
    "[fe80::1]",
    "[febf::1]",
    "[fc00::1]",
    "[fd00::1]",
    "[fec0::1]",
    "[2001:db8::1]",
    "[3fff::1]",
    "[100::1]",
    "[5f00::1]",
    "[64:ff9b:1::1]",
    "[::ffff:10.0.0.1]",
    "[::ffff:192.168.0.1]",
    "[2002:c0a8:1::1]",
    "[2002:a00:1::]",
    "[::ffff:0.0.0.0]",
    "[4000::1]",
    // Cloud metadata.
    "169.254.169.254",
    "169.254.170.2",
    "0xa9fea9fe",
    "2852039166",
    "0251.0376.0251.0376",
    "169.254.43518",
    "168.63.129.16",
    "100.100.100.200",
    "192.0.0.192",
    "[fd00:ec2::254]",
    "[::ffff:169.254.169.254]",
    "[::ffff:a9fe:a9fe]",
    "[64:ff9b::a9fe:a9fe]",
    "[64:ff9b::169.254.169.254]",
    "[2002:a9fe:a9fe::]",
    "metadata",
    "metadata.google.internal",
    "METADATA.GOOGLE.INTERNAL.",
    "metadata.goog",
    "instance-data",
    "instance-data.ec2.internal",
    "ip-10-0-0-1.ec2.internal",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
    "redis.prod.svc",
    "printer.local",
    "router.home.arpa",
    "1.0.0.127.in-addr.arpa",
    "something.onion",
    "x.invalid",
    "intranet",
    // Names that resolve inside.
    "evil.example.com",
    "rebind.example.com",
    "mapped.example.com",
    "meta.example.com",
    "wire.example.com",
    "nat64meta.example.com",
    "ula.example.com",
    "zero.example.com",
    "127.0.0.1.nip.io",
    "localtest.me",
    // Names that do not resolve, and malformed names.
    "empty.example.com",
    "nonexistent.example.com",
    "1.2.3.4.5",
    "256.0.0.1",
    "1.2.3.0x100",
    "4294967296",
    "0x1ffffffff",
    "09.0.0.1",
    "a..example.com",
    "under!score.example.com",
];

fn meeting(host: &str) -> String {
    format!("janus+ws://{host}:8188/1234?pin=secretpin")
}

fn webhook(host: &str) -> String {
    format!("https://{host}/hooks/meetbot?token=secrettoken")
}

#[tokio::test]
async fn hostile_hosts_are_refused_for_meetings_and_webhooks() {
    let p = policy(&[]);
    for host in HOSTILE_HOSTS {
        for url in [
            meeting(host),
            webhook(host),
            webhook(&format!("{host}:8443")),
        ] {
            let result = if url.starts_with("janus") {
                p.check_meeting_url(&url).await
            } else {
                p.check_webhook_url(&url).await
            };
            let err = match result {
                Ok(c) => panic!("{url} was accepted: {:?}", c.addrs),
                Err(e) => e,
            };
            let msg = err.to_string();
            assert!(
                !msg.contains("secretpin")
                    && !msg.contains("secrettoken")
                    && !msg.contains("hooks/"),
                "{url}: message leaks the URL: {msg}"
            );
            assert!(!err.code().is_empty());
        }
    }
}

#[tokio::test]
async fn hostile_urls_beyond_the_host_are_refused() {
    let p = policy(&[]);
    let meeting_cases: &[(&str, &str)] = &[
        ("replay:/etc/passwd", "url_scheme"),
        ("replay:manifest.json", "url_scheme"),
        ("REPLAY:manifest.json", "url_scheme"),
        ("file:///etc/passwd", "url_scheme"),
        ("http://janus.example.com/1", "url_scheme"),
        ("ws://janus.example.com/1", "url_scheme"),
        ("gopher://janus.example.com/1", "url_scheme"),
        ("javascript:alert(1)", "url_scheme"),
        ("janus.example.com/1", "url_scheme"),
        ("//janus.example.com/1", "url_scheme"),
        ("", "url_empty"),
        ("   ", "url_empty"),
        ("janus+ws://user:pass@janus.example.com/1", "url_userinfo"),
        ("janus+ws://user@janus.example.com/1", "url_userinfo"),
        ("janus+ws://janus.example.com@127.0.0.1/1", "url_userinfo"),
        ("janus+ws:///1", "url_syntax"),
        ("janus+ws://janus.example.com:0/1", "url_port"),
        ("janus+ws://janus.example.com:99999/1", "url_syntax"),
        ("janus+ws://[fe80::1%25eth0]/1", "url_syntax"),
        ("janus+ws://[fe80::1%eth0]/1", "url_syntax"),
        ("janus+ws://[::1/1", "url_syntax"),
        ("janus+ws://janus.example.com", "url_syntax"),
        ("janus+ws://janus.example.com/1#x", "url_syntax"),
    ];
    for (url, code) in meeting_cases {
        let err = p.check_meeting_url(url).await.expect_err(url);
        assert_eq!(err.code(), *code, "{url}: {err}");
    }
    let long = format!(
        "janus+wss://janus.example.com/{}",
        "a".repeat(MAX_URL_BYTES)
    );
    assert_eq!(
        p.check_meeting_url(&long).await.unwrap_err().code(),
        "url_too_long"
    );

    let webhook_cases: &[(&str, &str)] = &[
        ("http://hooks.example.com/x", "url_insecure"),
        ("http://93.184.216.34/x", "url_insecure"),
        ("ftp://hooks.example.com/x", "url_scheme"),
        ("file:///etc/passwd", "url_scheme"),
        ("data:text/plain,hi", "url_scheme"),
        ("gopher://127.0.0.1:6379/_", "url_scheme"),
        ("janus+wss://janus.example.com/1", "url_scheme"),
        ("https://user:pass@hooks.example.com/x", "url_userinfo"),
        ("https://hooks.example.com@127.0.0.1/x", "url_userinfo"),
        ("https://:pass@hooks.example.com/x", "url_userinfo"),
        ("https://hooks.example.com/x#frag", "url_fragment"),
        ("https://hooks.example.com:0/x", "url_port"),
        ("https:///x", "url_blocked_host"),
        ("https://", "url_syntax"),
        ("https://[fe80::1%25eth0]/x", "url_syntax"),
        ("https://hooks.example.com:65536/x", "url_syntax"),
        ("https:\\\\127.0.0.1\\x", "url_blocked_address"),
        ("https://127.0.0.1\t/x", "url_blocked_address"),
        ("https://127.0.0.1%2f@hooks.example.com/", "url_userinfo"),
    ];
    for (url, code) in webhook_cases {
        let err = p.check_webhook_url(url).await.expect_err(url);
        assert_eq!(err.code(), *code, "{url}: {err}");
    }
    let long = format!("https://hooks.example.com/{}", "a".repeat(MAX_URL_BYTES));
    assert_eq!(
        p.check_webhook_url(&long).await.unwrap_err().code(),
        "url_too_long"
    );
}

#[tokio::test]
async fn public_urls_pass_with_their_addresses() {
    let p = policy(&[]);
    let c = p
        .check_meeting_url(" janus+wss://JANUS.Example.COM./room/1234?pin=x ")
        .await
        .unwrap();
    assert_eq!(c.host.expose(), "janus.example.com");
    assert_eq!(c.port, 443);
    assert_eq!(c.addrs, vec![sa("93.184.216.34:443")]);
    assert!(!c.allow_listed);
    assert_eq!(
        c.url.expose(),
        "janus+wss://JANUS.Example.COM./room/1234?pin=x"
    );

    let c = p
        .check_meeting_url("janus+ws://93.184.216.34:8188/1")
        .await
        .unwrap();
    assert_eq!(c.addrs, vec![sa("93.184.216.34:8188")]);
    let c = p
        .check_meeting_url("janus+ws://[2606:2800:220:1:248:1893:25c8:1946]/1")
        .await
        .unwrap();
    assert_eq!(c.port, 80);
    assert_eq!(c.host.expose(), "2606:2800:220:1:248:1893:25c8:1946");
    // A mapped or NAT64 form of a public address is that public address.
    p.check_meeting_url("janus+ws://[::ffff:93.184.216.34]/1")
        .await
        .unwrap();
    p.check_webhook_url("https://[64:ff9b::5db8:d822]/x")
        .await
        .unwrap();
    // Public look-alikes of internal ranges.
    for host in [
        "172.32.0.1",
        "100.128.0.1",
        "192.169.0.1",
        "11.0.0.1",
        "169.255.0.1",
        "8.8.8.8",
    ] {
        p.check_webhook_url(&webhook(host))
            .await
            .unwrap_or_else(|e| panic!("{host}: {e}"));
    }

    let c = p
        .check_webhook_url("https://hooks.example.com:8443/x?y=1")
        .await
        .unwrap();
    assert_eq!(c.port, 8443);
    assert_eq!(c.addrs.len(), 2);
    assert!(c.addrs.iter().all(|a| a.port() == 8443));
}

#[tokio::test]
async fn allow_list_admits_self_hosted_servers_only() {
    let p = policy(&[
        "10.1.0.0/16",
        "127.0.0.1/32",
        "::1/128",
        "Janus.Corp.Example.",
        "fd00:1234::/32",
    ]);
    let c = p
        .check_meeting_url("janus+ws://10.1.2.3:8188/1")
        .await
        .unwrap();
    assert!(c.allow_listed);
    let c = p
        .check_meeting_url("janus+wss://janus.corp.example/1")
        .await
        .unwrap();
    assert!(c.allow_listed, "allowed by name, resolving to 10.9.9.9");
    assert_eq!(c.addrs, vec![sa("10.9.9.9:443")]);
    p.check_meeting_url("janus+ws://127.0.0.1:8188/1")
        .await
        .unwrap();
    p.check_meeting_url("janus+ws://[::1]:8188/1")
        .await
        .unwrap();
    p.check_meeting_url("janus+ws://[::ffff:127.0.0.1]:8188/1")
        .await
        .unwrap();
    p.check_meeting_url("janus+ws://[fd00:1234::5]/1")
        .await
        .unwrap();
    // Plain http to an allowed receiver; not to a public one.
    let c = p.check_webhook_url("http://127.0.0.1/hook").await.unwrap();
    assert!(c.allow_listed);
    p.check_webhook_url("http://janus.corp.example/hook")
        .await
        .unwrap();
    assert_eq!(
        p.check_webhook_url("http://hooks.example.com/x")
            .await
            .unwrap_err(),
        UrlError::InsecureWebhook
    );
    // Still refused: outside the networks, other loopback addresses, names, metadata.
    for url in [
        "janus+ws://10.2.0.1/1",
        "janus+ws://127.0.0.2/1",
        "janus+ws://localhost/1",
        "janus+ws://evil.example.com/1",
        "janus+ws://169.254.169.254/1",
        "janus+ws://metaname.corp.example/1",
        "janus+ws://0.0.0.0/1",
        "janus+ws://[::]/1",
    ] {
        assert!(p.check_meeting_url(url).await.is_err(), "{url}");
    }
}

#[tokio::test]
async fn metadata_needs_an_exact_entry_and_never_is_never() {
    let wide = policy(&[
        "169.254.0.0/16",
        "168.63.0.0/16",
        "0.0.0.0/8",
        "224.0.0.0/4",
    ]);
    wide.check_meeting_url("janus+ws://169.254.1.1/1")
        .await
        .unwrap();
    for url in [
        "janus+ws://169.254.169.254/1",
        "janus+ws://168.63.129.16/1",
        "janus+ws://[::ffff:169.254.169.254]/1",
        "janus+ws://0.0.0.0/1",
        "janus+ws://224.0.0.1/1",
    ] {
        let err = wide.check_meeting_url(url).await.unwrap_err();
        assert_eq!(err.code(), "url_blocked_address", "{url}");
    }
    let exact = policy(&[
        "169.254.169.254/32",
        "localhost",
        "metadata.google.internal",
    ]);
    exact
        .check_meeting_url("janus+ws://169.254.169.254/1")
        .await
        .unwrap();
    exact
        .check_meeting_url("janus+ws://metadata.google.internal/1")
        .await
        .unwrap();
    // Allowed by name: the name rules and internal addresses no longer apply.
    exact
        .check_meeting_url("janus+ws://localhost:8188/1")
        .await
        .unwrap();
    let err = policy(&["metaname.corp.example"])
        .check_meeting_url("janus+ws://metaname.corp.example/1")
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "host \"metaname.corp.example\" resolves to a cloud metadata address; \
         internal addresses are not allowed"
    );
}

#[test]
fn bad_allow_entries_are_named() {
    for (entry, needle) in [
        ("10.1.2.3/16", "did you mean 10.1.0.0/16"),
        ("10.0.0.0/33", "prefix length must be 0..=32"),
        ("::/0", "switches SSRF protection off"),
        ("0.0.0.0/0", "switches SSRF protection off"),
        ("fd00::1/8", "did you mean fd00::/8"),
        ("https://janus.corp.example", "not a CIDR"),
        ("janus.corp.example:0", "not a number from 1 to 65535"),
        ("10.0.0.1:65536", "not a number from 1 to 65535"),
        ("10.0.0.1:", "not a number from 1 to 65535"),
        ("10.0.0.1:http", "not a number from 1 to 65535"),
        ("10.0.0.1:+80", "not a number from 1 to 65535"),
        ("[10.0.0.1]:80", "brackets are only for IPv6"),
        ("[fd00::1", "without a closing ]"),
        ("[fd00::1]8188", "only :PORT may follow"),
        ("[janus.corp.example]:80", "brackets are only for IPv6"),
        ("janus.corp.example:80:90", "not a CIDR"),
        ("*.corp.example", "not a CIDR"),
        ("", "empty entry"),
        ("a..b", "not a CIDR"),
        ("127.1", "looks like an IP address"),
        ("10.0.0.0/x", "prefix length"),
        ("hello/8", "not a CIDR"),
    ] {
        let err = UrlPolicy::new(&[entry]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&format!("{entry:?}")), "{msg}");
        assert!(msg.contains(needle), "{entry}: {msg}");
    }
    assert!(UrlPolicy::new::<&str>(&[]).is_ok());
    assert!(UrlPolicy::new(&["10.0.0.1", "[::1]", "fe80::/10"]).is_ok());
    assert!(UrlPolicy::new(&[
        "10.0.0.5:8188",
        "[fd00::1]:8188",
        "[fd00::/64]:*",
        "10.1.0.0/16:443",
        "host.example:443",
        "host.example:*",
        "127.0.0.1:65535",
    ])
    .is_ok());
}

#[tokio::test]
async fn errors_read_well() {
    let p = policy(&[]);
    let cases = [
        (
            "janus+ws://evil.example.com/1",
            "host \"evil.example.com\" resolves to a private address (RFC 1918); \
             internal addresses are not allowed",
        ),
        (
            "janus+ws://0x7f.1/1",
            "host \"127.0.0.1\" is 127.0.0.1, a loopback address; internal addresses are not allowed",
        ),
        (
            "janus+ws://rebind.example.com/1",
            "host \"rebind.example.com\" resolves to a loopback address; internal \
             addresses are not allowed",
        ),
        (
            "janus+ws://localhost/1",
            "host \"localhost\" is not allowed: it names this machine or a cloud-internal service",
        ),
        ("janus+ws://nonexistent.example.com/1", "cannot resolve host \"nonexistent.example.com\": no such host"),
        ("janus+ws://empty.example.com/1", "host \"empty.example.com\" has no addresses"),
        (
            "replay:/etc/passwd",
            "replay: URLs name local files and are not accepted here; use janus+ws:// or janus+wss://",
        ),
    ];
    for (url, want) in cases {
        assert_eq!(
            p.check_meeting_url(url).await.unwrap_err().to_string(),
            want
        );
    }
}

struct SlowResolver;

#[async_trait::async_trait]
impl Resolve for SlowResolver {
    async fn resolve(&self, _host: &str, _port: u16) -> std::io::Result<Vec<SocketAddr>> {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok(vec![])
    }
}

#[tokio::test(start_paused = true)]
async fn resolution_is_bounded() {
    let p = UrlPolicy::new::<&str>(&[])
        .unwrap()
        .with_resolver(Arc::new(SlowResolver))
        .with_dns_timeout(Duration::from_secs(5));
    let err = p
        .check_webhook_url("https://hooks.example.com/x")
        .await
        .unwrap_err();
    assert_eq!(err.code(), "url_resolve_timeout");
    assert!(err.is_transient());
    assert_eq!(
        err.to_string(),
        "resolving host \"hooks.example.com\" timed out after 5s"
    );
}

#[tokio::test]
async fn system_resolver_is_used_for_literals_without_dns() {
    // IP literals never reach the resolver; the default policy refuses loopback.
    let p = UrlPolicy::default();
    assert_eq!(
        p.check_webhook_url("https://127.0.0.1/x")
            .await
            .unwrap_err()
            .code(),
        "url_blocked_address"
    );
    let p = UrlPolicy::new(&["127.0.0.0/8:*"]).unwrap();
    let c = p.check_webhook_url("http://127.0.0.1:9/x").await.unwrap();
    assert_eq!(c.addrs, vec![sa("127.0.0.1:9")]);
}

#[test]
fn debug_redacts_urls_hosts_and_addresses() {
    let c = CheckedUrl {
        url: Pii::new("janus+wss://janus.example.com/1?pin=topsecret".into()),
        host: Pii::new("janus.example.com".into()),
        port: 443,
        addrs: vec![sa("93.184.216.34:443")],
        allow_listed: false,
    };
    let dbg = format!("{c:?}");
    for leak in ["janus.example", "topsecret", "93.184"] {
        assert!(!dbg.contains(leak), "{dbg}");
    }
}

#[test]
fn legacy_ipv4_forms() {
    type Parsed = Option<Result<[u8; 4], ()>>;
    let cases: &[(&str, Parsed)] = &[
        ("127.0.0.1", Some(Ok([127, 0, 0, 1]))),
        ("127.1", Some(Ok([127, 0, 0, 1]))),
        ("127.0.1", Some(Ok([127, 0, 0, 1]))),
        ("2130706433", Some(Ok([127, 0, 0, 1]))),
        ("0x7f000001", Some(Ok([127, 0, 0, 1]))),
        ("0x7f.1", Some(Ok([127, 0, 0, 1]))),
        ("017700000001", Some(Ok([127, 0, 0, 1]))),
        ("0177.0.0.1.", Some(Ok([127, 0, 0, 1]))),
        ("0x", Some(Ok([0, 0, 0, 0]))),
        ("0", Some(Ok([0, 0, 0, 0]))),
        ("255.255.255.255", Some(Ok([255, 255, 255, 255]))),
        ("4294967295", Some(Ok([255, 255, 255, 255]))),
        ("4294967296", Some(Err(()))),
        ("256.1", Some(Err(()))),
        ("1.2.3.256", Some(Err(()))),
        ("1.2.3.4.5", Some(Err(()))),
        ("09", Some(Err(()))),
        ("a.1", Some(Err(()))),
        ("1..1", Some(Err(()))),
        ("0x99999999999999999999", Some(Err(()))),
        ("example.com", None),
        ("1.example", None),
        ("0xg", None),
        ("", None),
    ];
    for (input, want) in cases {
        let got = parse_legacy_ipv4(input).map(|r| r.map(|a| a.octets()));
        assert_eq!(got, *want, "{input}");
    }
}

#[test]
fn classification_table() {
    for (addr, want_public) in [
        ("93.184.216.34", true),
        ("1.1.1.1", true),
        ("2606:4700::1111", true),
        ("2001:4860:4860::8888", true),
        ("2002:5db8:d822::1", true),
        ("2001:0:4136:e378:8000:63bf:a247:2dcb", true), // Teredo, public server and client
        ("100.63.255.255", true),
        ("100.128.0.0", true),
        ("172.15.255.255", true),
        ("172.32.0.0", true),
        ("198.17.255.255", true),
        ("198.20.0.0", true),
        ("223.255.255.255", true),
        ("127.0.0.1", false),
        ("2002:a9fe:a9fe::1", false),
        ("2001:0:a9fe:a9fe::1", false), // Teredo server in link-local
        ("::ffff:0:a00:1", false),
        ("::1.2.3.4", true),
        ("::0.0.0.2", false),
        ("1000::1", false),
        ("e000::1", false),
    ] {
        let class = classify(ip(addr));
        assert_eq!(class == Class::Public, want_public, "{addr}: {class:?}");
    }
}

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("test socket address")
}

/// Errors never show an address a name resolved to (it would map the inside network for the
/// API caller, and reach records, webhooks and logs through the worker's `fatal` reason).
#[tokio::test]
async fn resolved_addresses_are_never_shown() {
    let p = policy(&[]);
    for (url, addr) in [
        ("janus+ws://evil.example.com/1", "10.0.0.5"),
        ("janus+ws://rebind.example.com/1", "127.0.0.1"),
        ("janus+ws://mapped.example.com/1", "127.0.0.1"),
        ("janus+ws://meta.example.com/1", "169.254.169.254"),
        ("janus+ws://nat64meta.example.com/1", "a9fe"),
        ("janus+ws://ula.example.com/1", "fd12"),
        ("janus+ws://zero.example.com/1", "0.0.0.0"),
        ("https://evil.example.com/x", "10.0.0.5"),
        ("https://meta.example.com/x", "169.254"),
    ] {
        let e = if url.starts_with("https") {
            p.check_webhook_url(url).await.unwrap_err()
        } else {
            p.check_meeting_url(url).await.unwrap_err()
        };
        assert_eq!(e.code(), "url_blocked_address", "{url}");
        let msg = e.to_string();
        assert!(!msg.contains(addr), "{url}: {msg}");
        assert!(msg.contains("resolves to"), "{url}: {msg}");
    }
    // An address the caller wrote may be echoed.
    let e = p
        .check_meeting_url("janus+ws://10.0.0.5/1")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("10.0.0.5"), "{e}");
}

/// Records the names it is asked about.
#[derive(Default)]
struct RecordingResolver(std::sync::Mutex<Vec<String>>);

#[async_trait::async_trait]
impl Resolve for RecordingResolver {
    async fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        self.0.lock().unwrap().push(host.to_string());
        Ok(vec![SocketAddr::new(ip("93.184.216.34"), port)])
    }
}

/// Names are resolved as absolute names (trailing dot), so a DNS search list
/// (`svc.cluster.local`, a corporate domain) cannot turn them into inside services; the host
/// the caller sees is unchanged.
#[tokio::test]
async fn names_are_resolved_as_absolute_names() {
    let r = Arc::new(RecordingResolver::default());
    let p = UrlPolicy::default().with_resolver(r.clone());
    let c = p
        .check_meeting_url("janus+wss://db.internal-name/1")
        .await
        .unwrap();
    assert_eq!(c.host.expose(), "db.internal-name");
    p.check_webhook_url("https://Hooks.Example.COM./x")
        .await
        .unwrap();
    assert_eq!(
        *r.0.lock().unwrap(),
        ["db.internal-name.", "hooks.example.com."]
    );
}

/// An allow entry names a port, every port (`:*`), or none: then only the scheme's default
/// port and, for meeting URLs, Janus's 8188 and 8989.
#[tokio::test]
async fn allow_entries_admit_only_their_ports() {
    let p = policy(&[
        "10.0.0.5:8188",
        "10.0.0.6",
        "[fd00:1234::1]:8188",
        "janus.corp.example:443",
        "127.0.0.1:*",
        "10.2.0.0/16:9000",
    ]);
    for ok in [
        "janus+ws://10.0.0.5:8188/1",
        "janus+ws://10.0.0.6/1",
        "janus+ws://10.0.0.6:8188/1",
        "janus+wss://10.0.0.6:8989/1",
        "janus+wss://10.0.0.6/1",
        "janus+ws://[fd00:1234::1]:8188/1",
        "janus+wss://janus.corp.example/1",
        "janus+ws://janus.corp.example:443/1",
        "janus+ws://127.0.0.1:1234/1",
        "janus+ws://10.2.3.4:9000/1",
    ] {
        p.check_meeting_url(ok)
            .await
            .unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    for (bad, port) in [
        ("janus+ws://10.0.0.5/1", 80),
        ("janus+ws://10.0.0.5:8189/1", 8189),
        ("janus+ws://10.0.0.6:22/1", 22),
        ("janus+ws://10.0.0.6:6379/1", 6379),
        ("janus+ws://[fd00:1234::1]:8189/1", 8189),
        ("janus+ws://janus.corp.example:8188/1", 8188),
        ("janus+ws://10.2.3.4:8188/1", 8188),
    ] {
        let e = p.check_meeting_url(bad).await.unwrap_err();
        assert_eq!(e.code(), "url_port_not_allowed", "{bad}: {e}");
        assert!(
            e.to_string().contains(&format!("not on port {port}")),
            "{e}"
        );
        assert!(!e.is_transient());
    }
    // Webhooks: no Janus ports.
    p.check_webhook_url("http://10.0.0.6/x").await.unwrap();
    p.check_webhook_url("https://10.0.0.6/x").await.unwrap();
    for bad in ["http://10.0.0.6:8188/x", "https://10.0.0.6:8443/x"] {
        let e = p.check_webhook_url(bad).await.unwrap_err();
        assert_eq!(e.code(), "url_port_not_allowed", "{bad}");
    }
    // Outside every entry: still an internal address, whatever the port.
    let e = p
        .check_meeting_url("janus+ws://10.0.0.7:8188/1")
        .await
        .unwrap_err();
    assert_eq!(e.code(), "url_blocked_address");
    // Public addresses need no entry, on any port.
    p.check_meeting_url("janus+ws://93.184.216.34:7000/1")
        .await
        .unwrap();
    // Media (ICE candidates): an entry admits its addresses on every port.
    assert_eq!(p.check_media_addr(ip("10.0.0.5"), false), Ok(()));
    assert_eq!(p.check_media_addr(ip("10.2.9.9"), false), Ok(()));
    assert_eq!(
        p.check_media_addr(ip("10.0.0.7"), false),
        Err("a private address (RFC 1918)")
    );
    assert_eq!(p.check_media_addr(ip("10.0.0.7"), true), Ok(()));
    assert_eq!(
        p.check_media_addr(ip("169.254.169.254"), true),
        Err("a cloud metadata address")
    );
    assert_eq!(
        p.check_media_addr(ip("255.255.255.255"), true),
        Err("the broadcast address")
    );
}
