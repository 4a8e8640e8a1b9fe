//! Janus VideoRoom signalling: the sans-IO session driven by scripted Janus JSON in virtual
//! time (whole flow, renegotiation, errors, timeouts, keepalives, hostile input), and the real
//! client against a real Janus started on 127.0.0.1 by the test.

use std::time::{Duration, Instant};

use meetbot::pii::{Pii, Secret};
use meetbot::platform::janus::signalling::{
    AnswerError, FatalKind, FeedId, JanusSession, Offer, SessionConfig, SigEvent, SigOutput,
};
use meetbot::platform::janus::url::{JanusUrl, RoomId};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const S: u64 = 7_000_001; // session id
const P: u64 = 8_000_001; // publisher handle
const Q: u64 = 9_000_001; // subscriber handle

/// A session plus everything it said, in virtual time.
struct H {
    s: JanusSession,
    now: Instant,
    sent: Vec<Value>,
    events: Vec<SigEvent>,
    offers: Vec<Offer>,
}

fn cfg(pin: Option<&str>) -> SessionConfig {
    SessionConfig::new(
        "meetbot".into(),
        RoomId::Num(1234),
        pin.map(|p| Secret::new(p.to_string())),
    )
}

impl H {
    fn new(cfg: SessionConfig) -> H {
        let now = Instant::now();
        let mut h = H {
            s: JanusSession::new(cfg, now, 42),
            now,
            sent: vec![],
            events: vec![],
            offers: vec![],
        };
        h.drain();
        h
    }

    fn drain(&mut self) {
        while let Some(o) = self.s.poll_output() {
            match o {
                SigOutput::Transmit(t) => self
                    .sent
                    .push(serde_json::from_str(&t).expect("transmits are JSON")),
                SigOutput::NeedAnswer(o) => self.offers.push(o),
                SigOutput::Event(e) => self.events.push(e),
            }
        }
    }

    fn recv(&mut self, v: Value) {
        self.s.handle_message(self.now, &v.to_string());
        self.drain();
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.s.handle_timeout(self.now);
        self.drain();
    }

    /// The last request sent, checked to be of `janus` type (and body `request`, if given).
    fn last(&self, janus: &str, request: Option<&str>) -> Value {
        let v = self.sent.last().expect("something was sent").clone();
        assert_eq!(v["janus"], janus, "{v}");
        if let Some(r) = request {
            assert_eq!(v["body"]["request"], r, "{v}");
        }
        v
    }

    fn txn(v: &Value) -> String {
        v["transaction"].as_str().expect("transaction").to_string()
    }

    fn take_events(&mut self) -> Vec<SigEvent> {
        std::mem::take(&mut self.events)
    }

    /// create → attach → join → joined(publishers) → attach subscriber.
    fn joined_with(cfg: SessionConfig, publishers: Value) -> H {
        let mut h = H::new(cfg);
        let create = h.last("create", None);
        h.recv(json!({"janus":"success","transaction":H::txn(&create),"data":{"id":S}}));
        let attach = h.last("attach", None);
        assert_eq!(attach["plugin"], "janus.plugin.videoroom");
        assert_eq!(attach["session_id"], S);
        h.recv(
            json!({"janus":"success","session_id":S,"transaction":H::txn(&attach),"data":{"id":P}}),
        );
        let join = h.last("message", Some("join"));
        h.recv(json!({"janus":"ack","session_id":S,"transaction":H::txn(&join)}));
        h.recv(event(
            Some(&join),
            P,
            json!({"videoroom":"joined","room":1234,"id":555,"private_id":777,"publishers":publishers}),
            None,
        ));
        let attach_sub = h.last("attach", None);
        h.recv(json!({"janus":"success","session_id":S,"transaction":H::txn(&attach_sub),"data":{"id":Q}}));
        h
    }

    fn answer_last_offer(&mut self) {
        let id = self.offers.last().expect("an offer").offer_id;
        self.s
            .answered(self.now, id, format!("v=0 answer {id}"))
            .expect("answer accepted");
        self.drain();
        let start = self.last("message", Some("start"));
        assert_eq!(start["jsep"]["type"], "answer");
        assert_eq!(start["handle_id"], Q);
        self.recv(event(
            Some(&start),
            Q,
            json!({"videoroom":"event","started":"ok"}),
            None,
        ));
    }
}

fn event(req: Option<&Value>, sender: u64, data: Value, jsep: Option<Value>) -> Value {
    let mut v = json!({"janus":"event","session_id":S,"sender":sender,
        "plugindata":{"plugin":"janus.plugin.videoroom","data":data}});
    if let Some(r) = req {
        v["transaction"] = r["transaction"].clone();
    }
    if let Some(j) = jsep {
        v["jsep"] = j;
    }
    v
}

fn offer_jsep(tag: &str) -> Option<Value> {
    Some(json!({"type":"offer","sdp":format!("v=0\r\no=- {tag} 1 IN IP4 127.0.0.1\r\n")}))
}

fn publisher(id: u64, name: &str, mids: &[(&str, &str)]) -> Value {
    let streams: Vec<Value> = mids
        .iter()
        .enumerate()
        .map(|(i, (ty, mid))| json!({"type":ty,"mindex":i,"mid":mid,"codec":"opus"}))
        .collect();
    json!({"id":id,"display":name,"streams":streams})
}

fn stream(mid: &str, feed: u64, name: &str) -> Value {
    json!({"type":"audio","active":true,"mindex":0,"mid":mid,"ready":false,"send":true,
        "feed_id":feed,"feed_mid":"0","feed_display":name,"codec":"opus"})
}

fn joined(id: u64, name: &str) -> SigEvent {
    SigEvent::PublisherJoined {
        feed_id: FeedId::Num(id),
        display: Pii::new(name.into()),
    }
}

fn left(id: u64) -> SigEvent {
    SigEvent::PublisherLeft {
        feed_id: FeedId::Num(id),
    }
}

fn mids_of(o: &Offer) -> Vec<(String, FeedId, String)> {
    o.streams
        .iter()
        .map(|s| (s.mid.clone(), s.feed_id.clone(), s.display.expose().clone()))
        .collect()
}

fn fatal_kind(events: &[SigEvent]) -> Option<FatalKind> {
    events.iter().find_map(|e| match e {
        SigEvent::Fatal { kind, .. } => Some(*kind),
        _ => None,
    })
}

#[test]
fn whole_flow_with_renegotiation_keepalive_and_leave() {
    let mut h = H::new(cfg(Some("s3cret")));
    // create
    let create = h.last("create", None);
    assert!(create.get("session_id").is_none());
    h.recv(json!({"janus":"success","transaction":H::txn(&create),"data":{"id":S}}));
    // attach the publisher handle
    let attach = h.last("attach", None);
    h.recv(json!({"janus":"success","session_id":S,"transaction":H::txn(&attach),"data":{"id":P}}));
    // join as a publisher that never publishes
    let join = h.last("message", Some("join"));
    assert_eq!(join["handle_id"], P);
    assert_eq!(join["session_id"], S);
    assert_eq!(
        join["body"],
        json!({"request":"join","ptype":"publisher","room":1234,"display":"meetbot","pin":"s3cret"})
    );
    assert!(join.get("jsep").is_none(), "the bot never publishes");
    h.recv(json!({"janus":"ack","session_id":S,"transaction":H::txn(&join)}));
    h.recv(event(
        Some(&join),
        P,
        json!({"videoroom":"joined","room":1234,"id":555,"private_id":777,"publishers":[
            publisher(11, "Alice", &[("audio","0"),("video","1")]),
            publisher(12, "Bob", &[("audio","0")]),
            publisher(14, "Screen", &[("video","0")]),
        ]}),
        None,
    ));
    assert_eq!(
        h.take_events(),
        vec![
            joined(11, "Alice"),
            joined(12, "Bob"),
            joined(14, "Screen"),
            SigEvent::Joined,
        ]
    );
    // one subscriber handle
    let attach_sub = h.last("attach", None);
    h.recv(
        json!({"janus":"success","session_id":S,"transaction":H::txn(&attach_sub),"data":{"id":Q}}),
    );
    let sub_join = h.last("message", Some("join"));
    assert_eq!(sub_join["handle_id"], Q);
    assert_eq!(
        sub_join["body"],
        json!({"request":"join","ptype":"subscriber","room":1234,"autoupdate":false,
            "private_id":777,"pin":"s3cret","streams":[{"feed":11,"mid":"0"}]})
    );
    h.recv(event(
        Some(&sub_join),
        Q,
        json!({"videoroom":"attached","room":1234,"streams":[stream("0", 11, "Alice")]}),
        offer_jsep("1"),
    ));
    assert_eq!(h.offers.len(), 1);
    assert_eq!(
        mids_of(&h.offers[0]),
        vec![("0".into(), FeedId::Num(11), "Alice".into())]
    );
    // the second audio feed goes in with `subscribe` (video-only publishers are skipped)
    let sub = h.last("message", Some("subscribe"));
    assert_eq!(sub["body"]["streams"], json!([{"feed":12,"mid":"0"}]));
    h.recv(event(
        Some(&sub),
        Q,
        json!({"videoroom":"updating","room":1234}),
        None,
    ));
    let sent_before = h.sent.len();
    h.answer_last_offer();
    assert_eq!(h.sent.len(), sent_before + 1, "only the start request");
    // Janus sends the postponed offer once the first answer is in
    h.recv(event(
        None,
        Q,
        json!({"videoroom":"updated","room":1234,"streams":[stream("0", 11, "Alice"), stream("1", 12, "Bob")]}),
        offer_jsep("2"),
    ));
    assert_eq!(h.offers.len(), 2);
    assert_eq!(h.offers[1].offer_id, 2);
    assert_eq!(
        mids_of(&h.offers[1]),
        vec![
            ("0".into(), FeedId::Num(11), "Alice".into()),
            ("1".into(), FeedId::Num(12), "Bob".into())
        ]
    );
    h.answer_last_offer();
    h.recv(json!({"janus":"webrtcup","session_id":S,"sender":Q}));
    h.recv(json!({"janus":"media","session_id":S,"sender":Q,"mid":"0","type":"audio","receiving":true}));
    h.recv(json!({"janus":"slowlink","session_id":S,"sender":Q,"mid":"0","media":"audio","uplink":true,"lost":3}));
    assert_eq!(
        h.take_events(),
        vec![
            SigEvent::WebrtcUp,
            SigEvent::Media {
                mid: Some("0".into()),
                receiving: true
            }
        ]
    );

    // A publisher joins later → subscribe → renegotiation.
    h.recv(event(
        None,
        P,
        json!({"videoroom":"event","room":1234,"publishers":[publisher(13, "Carol", &[("audio","0")])]}),
        None,
    ));
    assert_eq!(h.take_events(), vec![joined(13, "Carol")]);
    let sub = h.last("message", Some("subscribe"));
    assert_eq!(sub["body"]["streams"], json!([{"feed":13,"mid":"0"}]));
    h.recv(event(
        Some(&sub),
        Q,
        json!({"videoroom":"updated","room":1234,"streams":[
            stream("0", 11, "Alice"), stream("1", 12, "Bob"), stream("2", 13, "Carol")]}),
        offer_jsep("3"),
    ));
    assert_eq!(h.offers.last().unwrap().streams.len(), 3);
    h.answer_last_offer();

    // A publisher leaves (unpublished, then leaving): one PublisherLeft, one unsubscribe.
    h.recv(event(
        None,
        P,
        json!({"videoroom":"event","room":1234,"unpublished":12}),
        None,
    ));
    h.recv(event(
        None,
        P,
        json!({"videoroom":"event","room":1234,"leaving":12}),
        None,
    ));
    assert_eq!(h.take_events(), vec![left(12)]);
    let unsub = h.last("message", Some("unsubscribe"));
    assert_eq!(unsub["body"]["streams"], json!([{"feed":12}]));
    let mut inactive = stream("1", 12, "Bob");
    inactive["active"] = json!(false);
    h.recv(event(
        Some(&unsub),
        Q,
        json!({"videoroom":"updated","room":1234,"streams":[
            stream("0", 11, "Alice"), inactive, stream("2", 13, "Carol")]}),
        offer_jsep("4"),
    ));
    assert_eq!(
        mids_of(h.offers.last().unwrap()),
        vec![
            ("0".into(), FeedId::Num(11), "Alice".into()),
            ("2".into(), FeedId::Num(13), "Carol".into())
        ]
    );
    h.answer_last_offer();
    // kicked by the host: another PublisherLeft
    h.recv(event(
        None,
        P,
        json!({"videoroom":"event","room":1234,"kicked":13}),
        None,
    ));
    assert_eq!(h.take_events(), vec![left(13)]);
    let unsub = h.last("message", Some("unsubscribe"));
    h.recv(event(
        Some(&unsub),
        Q,
        json!({"videoroom":"updated","room":1234}),
        None,
    ));

    // Keepalives every 25 s, acked.
    for _ in 0..5 {
        let wake = h.s.poll_timeout().expect("a deadline");
        assert!(wake <= h.now + Duration::from_secs(25));
        h.advance(Duration::from_secs(25));
        let ka = h.last("keepalive", None);
        assert_eq!(ka["session_id"], S);
        h.recv(json!({"janus":"ack","session_id":S,"transaction":H::txn(&ka)}));
        assert!(h.events.is_empty(), "{:?}", h.events);
    }

    // Leave: leave, detach ×2, destroy; Left once destroy succeeds.
    let n = h.sent.len();
    h.s.leave(h.now);
    h.drain();
    let tail: Vec<(String, Option<u64>, Option<String>)> = h.sent[n..]
        .iter()
        .map(|v| {
            (
                v["janus"].as_str().unwrap().to_string(),
                v["handle_id"].as_u64(),
                v["body"]["request"].as_str().map(String::from),
            )
        })
        .collect();
    assert_eq!(
        tail,
        vec![
            ("message".into(), Some(P), Some("leave".into())),
            ("detach".into(), Some(Q), None),
            ("detach".into(), Some(P), None),
            ("destroy".into(), None, None),
        ]
    );
    let destroy = h.last("destroy", None);
    h.recv(json!({"janus":"detached","session_id":S,"sender":Q}));
    h.recv(json!({"janus":"success","session_id":S,"transaction":H::txn(&destroy)}));
    assert_eq!(h.take_events(), vec![SigEvent::Left]);
    assert!(h.s.is_closed());
    assert_eq!(h.s.poll_timeout(), None);
    // transaction ids were unique
    let mut txns: Vec<String> = h.sent.iter().map(H::txn).collect();
    let total = txns.len();
    txns.sort();
    txns.dedup();
    assert_eq!(txns.len(), total);
    // the PIN appears only in the two join requests
    let with_pin = h
        .sent
        .iter()
        .filter(|v| v.to_string().contains("s3cret"))
        .count();
    assert_eq!(with_pin, 2);
}

#[test]
fn join_errors_map_to_clear_fatal_reasons() {
    let cases: &[(Option<&str>, i64, FatalKind, &str)] = &[
        (None, 426, FatalKind::NoSuchRoom, "no such room"),
        (Some("wrong"), 433, FatalKind::Unauthorized, "wrong PIN"),
        (None, 429, FatalKind::PinRequired, "needs a PIN"),
        (None, 432, FatalKind::RoomFull, "full"),
        (None, 499, FatalKind::Rejected, "rejected"),
    ];
    for (pin, code, kind, needle) in cases {
        let mut h = H::new(cfg(*pin));
        let create = h.last("create", None);
        h.recv(json!({"janus":"success","transaction":H::txn(&create),"data":{"id":S}}));
        let attach = h.last("attach", None);
        h.recv(
            json!({"janus":"success","session_id":S,"transaction":H::txn(&attach),"data":{"id":P}}),
        );
        let join = h.last("message", Some("join"));
        h.recv(json!({"janus":"ack","session_id":S,"transaction":H::txn(&join)}));
        h.recv(event(
            Some(&join),
            P,
            json!({"videoroom":"event","error_code":code,"error":"No such room (1234)"}),
            None,
        ));
        let events = h.take_events();
        assert_eq!(fatal_kind(&events), Some(*kind), "code {code}: {events:?}");
        let SigEvent::Fatal { reason, .. } = &events[0] else {
            unreachable!()
        };
        assert!(reason.contains(needle), "{reason}");
        assert!(reason.contains(&code.to_string()), "{reason}");
        assert!(
            !reason.contains("1234"),
            "Janus's own text stays out: {reason}"
        );
        assert!(h.s.is_closed());
        // best effort: the server-side session is destroyed
        assert_eq!(h.last("destroy", None)["session_id"], S);
    }
    assert!(!FatalKind::NoSuchRoom.is_retryable());
    assert!(!FatalKind::Unauthorized.is_retryable());
    assert!(FatalKind::ConnectionLost.is_retryable());
}

#[test]
fn core_errors_and_string_room_fallback() {
    // A core error on create.
    let mut h = H::new(cfg(None));
    let create = h.last("create", None);
    h.recv(json!({"janus":"error","transaction":H::txn(&create),
        "error":{"code":472,"reason":"Not accepting new sessions"}}));
    assert_eq!(fatal_kind(&h.take_events()), Some(FatalKind::Unavailable));

    // The VideoRoom plugin is missing.
    let mut h = H::new(cfg(None));
    let create = h.last("create", None);
    h.recv(json!({"janus":"success","transaction":H::txn(&create),"data":{"id":S}}));
    let attach = h.last("attach", None);
    h.recv(
        json!({"janus":"error","session_id":S,"transaction":H::txn(&attach),
        "error":{"code":460,"reason":"No such plugin"}}),
    );
    assert_eq!(fatal_kind(&h.take_events()), Some(FatalKind::Unavailable));

    // A string_ids server rejects the numeric room with 430: one retry as "1234".
    let mut h = H::new(cfg(None));
    let create = h.last("create", None);
    h.recv(json!({"janus":"success","transaction":H::txn(&create),"data":{"id":S}}));
    let attach = h.last("attach", None);
    h.recv(json!({"janus":"success","session_id":S,"transaction":H::txn(&attach),"data":{"id":P}}));
    let join = h.last("message", Some("join"));
    h.recv(event(
        Some(&join),
        P,
        json!({"videoroom":"event","error_code":430,"error":"Invalid element type (room should be a string)"}),
        None,
    ));
    assert!(h.events.is_empty(), "{:?}", h.events);
    let join2 = h.last("message", Some("join"));
    assert_eq!(join2["body"]["room"], "1234");
    h.recv(event(
        Some(&join2),
        P,
        json!({"videoroom":"event","error_code":430,"error":"still wrong"}),
        None,
    ));
    assert_eq!(fatal_kind(&h.take_events()), Some(FatalKind::Rejected));
}

#[test]
fn string_feed_ids_are_echoed_as_strings() {
    let pubs =
        json!([{"id":"alice-uuid","display":"Alice","streams":[{"type":"audio","mid":"a0"}]}]);
    let mut h = H::joined_with(
        SessionConfig::new("bot".into(), RoomId::Str("standup".into()), None),
        pubs,
    );
    let join = h.last("message", Some("join"));
    assert_eq!(join["body"]["room"], "standup");
    assert_eq!(
        join["body"]["streams"],
        json!([{"feed":"alice-uuid","mid":"a0"}])
    );
    let mut st = stream("0", 1, "Alice");
    st["feed_id"] = json!("alice-uuid");
    h.recv(event(
        Some(&join),
        Q,
        json!({"videoroom":"attached","streams":[st]}),
        offer_jsep("1"),
    ));
    assert_eq!(
        h.offers[0].streams[0].feed_id,
        FeedId::Str("alice-uuid".into())
    );
}

#[test]
fn publisher_gone_before_subscribe_is_skipped() {
    let mut h = H::joined_with(
        cfg(None),
        json!([
            publisher(11, "Alice", &[("audio", "0")]),
            publisher(12, "Bob", &[("audio", "0")])
        ]),
    );
    h.take_events();
    // Janus: 428 no such feed for Alice's join → Alice is gone, Bob is tried next.
    let join = h.last("message", Some("join"));
    assert_eq!(join["body"]["streams"][0]["feed"], 11);
    h.recv(event(
        Some(&join),
        Q,
        json!({"videoroom":"event","error_code":428,"error":"No such feed (11)"}),
        None,
    ));
    assert_eq!(h.take_events(), vec![left(11)]);
    let join = h.last("message", Some("join"));
    assert_eq!(join["body"]["streams"], json!([{"feed":12,"mid":"0"}]));
    h.recv(event(
        Some(&join),
        Q,
        json!({"videoroom":"attached","streams":[stream("0", 12, "Bob")]}),
        offer_jsep("1"),
    ));
    assert_eq!(h.offers.len(), 1);
    assert!(!h.s.is_closed());
}

#[test]
fn request_timeouts_are_fatal_and_bounded() {
    // No reply to create.
    let mut h = H::new(cfg(None));
    let t0 = h.now;
    assert_eq!(h.s.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    h.advance(Duration::from_millis(9_999));
    assert!(h.events.is_empty());
    h.advance(Duration::from_millis(1));
    let events = h.take_events();
    assert_eq!(fatal_kind(&events), Some(FatalKind::RequestTimeout));
    let SigEvent::Fatal { reason, .. } = &events[0] else {
        unreachable!()
    };
    assert!(reason.contains("create"), "{reason}");

    // A join acked but never answered.
    let mut h = H::new(cfg(None));
    let create = h.last("create", None);
    h.recv(json!({"janus":"success","transaction":H::txn(&create),"data":{"id":S}}));
    let attach = h.last("attach", None);
    h.recv(json!({"janus":"success","session_id":S,"transaction":H::txn(&attach),"data":{"id":P}}));
    let join = h.last("message", Some("join"));
    h.recv(json!({"janus":"ack","session_id":S,"transaction":H::txn(&join)}));
    h.advance(Duration::from_secs(10));
    assert_eq!(
        fatal_kind(&h.take_events()),
        Some(FatalKind::RequestTimeout)
    );

    // A keepalive that is never acked.
    let mut h = H::joined_with(cfg(None), json!([]));
    h.take_events();
    h.advance(Duration::from_secs(25));
    h.last("keepalive", None);
    h.advance(Duration::from_secs(9));
    assert!(h.events.is_empty());
    h.advance(Duration::from_secs(1));
    assert_eq!(
        fatal_kind(&h.take_events()),
        Some(FatalKind::RequestTimeout)
    );

    // Leave without any reply still ends within the request timeout.
    let mut h = H::joined_with(cfg(None), json!([]));
    h.take_events();
    h.s.leave(h.now);
    h.drain();
    h.advance(Duration::from_secs(10));
    assert_eq!(h.take_events(), vec![SigEvent::Left]);
}

#[test]
fn session_ends_on_timeout_disconnect_kick_and_destroy() {
    let end = |msg: Value| {
        let mut h = H::joined_with(cfg(None), json!([publisher(11, "A", &[("audio", "0")])]));
        h.take_events();
        h.recv(msg);
        assert!(h.s.is_closed());
        h.take_events()
    };
    let ev = end(json!({"janus":"timeout","session_id":S}));
    assert_eq!(fatal_kind(&ev), Some(FatalKind::SessionLost));
    let ev = end(event(
        None,
        P,
        json!({"videoroom":"event","room":1234,"leaving":"ok","reason":"kicked"}),
        None,
    ));
    assert_eq!(ev, vec![SigEvent::Kicked]);
    let ev = end(event(
        None,
        P,
        json!({"videoroom":"destroyed","room":1234}),
        None,
    ));
    assert_eq!(ev, vec![SigEvent::RoomDestroyed]);
    let ev = end(json!({"janus":"detached","session_id":S,"sender":P}));
    assert_eq!(fatal_kind(&ev), Some(FatalKind::SessionLost));

    let mut h = H::joined_with(cfg(None), json!([]));
    h.take_events();
    let n = h.sent.len();
    h.s.handle_disconnect(h.now);
    h.drain();
    assert_eq!(
        fatal_kind(&h.take_events()),
        Some(FatalKind::ConnectionLost)
    );
    assert_eq!(h.sent.len(), n, "nothing is sent on a dead socket");

    // a hangup of the subscriber PeerConnection is reported, not fatal
    let mut h = H::joined_with(cfg(None), json!([]));
    h.take_events();
    h.recv(json!({"janus":"hangup","session_id":S,"sender":Q,"reason":"ICE failed"}));
    assert_eq!(
        h.take_events(),
        vec![SigEvent::Hangup {
            reason: "ICE failed".into()
        }]
    );
    assert!(!h.s.is_closed());
}

#[test]
fn stale_answers_are_refused() {
    let mut h = H::joined_with(cfg(None), json!([publisher(11, "A", &[("audio", "0")])]));
    let join = h.last("message", Some("join"));
    h.recv(event(
        Some(&join),
        Q,
        json!({"videoroom":"attached","streams":[stream("0", 11, "A")]}),
        offer_jsep("1"),
    ));
    // A (hostile) second offer before the first is answered supersedes it.
    h.recv(event(
        None,
        Q,
        json!({"videoroom":"updated","streams":[stream("0", 11, "A")]}),
        offer_jsep("2"),
    ));
    assert_eq!(h.offers.len(), 2);
    assert_eq!(
        h.s.answered(h.now, 1, "v=0".into()),
        Err(AnswerError::NotPending(1))
    );
    assert_eq!(h.s.answered(h.now, 2, "v=0".into()), Ok(()));
    assert_eq!(
        h.s.answered(h.now, 2, "v=0".into()),
        Err(AnswerError::NotPending(2)),
        "an offer is answered once"
    );
}

#[test]
fn hostile_messages_are_ignored_and_capped() {
    let mut h = H::joined_with(cfg(None), json!([]));
    h.take_events();
    let n = h.sent.len();
    let junk = [
        "".to_string(),
        "null".into(),
        "[]".into(),
        "{".into(),
        "\"event\"".into(),
        json!({"janus": 5}).to_string(),
        json!({"janus":"event"}).to_string(),
        json!({"janus":"event","sender":P,"plugindata":"x"}).to_string(),
        json!({"janus":"event","sender":P,"plugindata":{"data":{"videoroom":"event","publishers":"x"}}}).to_string(),
        json!({"janus":"event","sender":P,"plugindata":{"data":{"videoroom":"event","publishers":[1,null,{"id":-1},{"id":1.5},{"id":{}},{"id":0}]}}}).to_string(),
        json!({"janus":"event","sender":P,"plugindata":{"data":{"videoroom":"event","leaving":[1]}}}).to_string(),
        json!({"janus":"event","sender":Q,"plugindata":{"data":{"videoroom":"updated","streams":{"a":1}}},"jsep":{"type":"offer","sdp":5}}).to_string(),
        json!({"janus":"event","sender":Q,"plugindata":{"data":{"videoroom":"updated"}},"jsep":{"type":"answer","sdp":"v=0"}}).to_string(),
        json!({"janus":"success","transaction":"nope","data":{"id":"x"}}).to_string(),
        json!({"janus":"error","transaction":"nope","error":"x"}).to_string(),
        json!({"janus":"timeout","session_id":S + 1}).to_string(),
        json!({"janus":"event","session_id":S + 1,"sender":P,"plugindata":{"data":{"videoroom":"destroyed"}}}).to_string(),
        json!({"janus":"webrtcup","sender":12345}).to_string(),
        json!({"janus":"trickle","sender":Q,"candidate":{"completed":true}}).to_string(),
        json!({"janus":"server_info"}).to_string(),
        json!({"janus":"brand-new-type","whatever":[1,2,3]}).to_string(),
        format!("{}{}{}", "[".repeat(10_000), "1", "]".repeat(10_000)),
        "x".repeat(2 << 20),
    ];
    for j in &junk {
        h.s.handle_message(h.now, j);
        h.drain();
    }
    assert!(h.events.is_empty(), "{:?}", h.events);
    assert_eq!(h.offers.len(), 0);
    assert_eq!(h.sent.len(), n, "junk provokes no requests");
    assert!(!h.s.is_closed());

    // A huge publishers array: capped at max_publishers, names cut, control characters gone.
    let long_name = format!("Eve\u{7}\n{}", "x".repeat(10_000));
    let six = [
        ("audio", "0"),
        ("audio", "1"),
        ("audio", "2"),
        ("audio", "3"),
        ("audio", "4"),
        ("audio", "5"),
    ];
    let pubs: Vec<Value> = (1..=2_000u64)
        .map(|i| publisher(i, if i == 1 { &long_name } else { "p" }, &six))
        .collect();
    h.recv(event(
        None,
        P,
        json!({"videoroom":"event","publishers":pubs}),
        None,
    ));
    let joined: Vec<&SigEvent> = h
        .events
        .iter()
        .filter(|e| matches!(e, SigEvent::PublisherJoined { .. }))
        .collect();
    assert_eq!(joined.len(), 64);
    let SigEvent::PublisherJoined { display, .. } = joined[0] else {
        unreachable!()
    };
    assert_eq!(display.expose().chars().count(), 256);
    assert!(display.expose().starts_with("Evex"));
    // at most 4 audio streams per publisher are requested
    let join = h.last("message", Some("join"));
    assert_eq!(join["body"]["streams"].as_array().unwrap().len(), 4);
}

/// A corpus of real Janus message shapes (from the flow above) to mutate.
fn corpus() -> Vec<Value> {
    vec![
        json!({"janus":"success","transaction":"t","data":{"id":S}}),
        json!({"janus":"ack","session_id":S,"transaction":"t"}),
        event(
            None,
            P,
            json!({"videoroom":"joined","room":1234,"id":555,"private_id":777,"publishers":[publisher(11, "Alice", &[("audio","0"),("video","1")])]}),
            None,
        ),
        event(
            None,
            P,
            json!({"videoroom":"event","room":1234,"publishers":[publisher(13, "Carol", &[("audio","0")])]}),
            None,
        ),
        event(
            None,
            P,
            json!({"videoroom":"event","room":1234,"unpublished":11}),
            None,
        ),
        event(
            None,
            P,
            json!({"videoroom":"event","room":1234,"leaving":11}),
            None,
        ),
        event(
            None,
            P,
            json!({"videoroom":"event","room":1234,"kicked":13}),
            None,
        ),
        event(
            None,
            P,
            json!({"videoroom":"event","error_code":426,"error":"No such room"}),
            None,
        ),
        event(
            None,
            Q,
            json!({"videoroom":"attached","room":1234,"streams":[stream("0", 11, "Alice")]}),
            offer_jsep("1"),
        ),
        event(
            None,
            Q,
            json!({"videoroom":"updated","room":1234,"streams":[stream("0", 11, "Alice"), stream("1", 13, "Carol")]}),
            offer_jsep("2"),
        ),
        event(None, Q, json!({"videoroom":"updating","room":1234}), None),
        event(None, Q, json!({"videoroom":"event","started":"ok"}), None),
        json!({"janus":"webrtcup","session_id":S,"sender":Q}),
        json!({"janus":"media","session_id":S,"sender":Q,"mid":"0","type":"audio","receiving":true}),
        json!({"janus":"hangup","session_id":S,"sender":Q,"reason":"DTLS alert"}),
        json!({"janus":"error","session_id":S,"transaction":"t","error":{"code":458,"reason":"No such session"}}),
    ]
}

fn random_value(rng: &mut impl Rng, depth: u32) -> Value {
    match rng.gen_range(0..if depth > 2 { 6 } else { 8 }) {
        0 => Value::Null,
        1 => json!(rng.gen::<bool>()),
        2 => json!(rng.gen::<i64>()),
        3 => json!(rng.gen::<u64>() % 20_000_000),
        4 => json!(rng.gen::<f64>()),
        5 => json!(
            ["ok", "0", "audio", "offer", "", "kicked", "joined", "updated"][rng.gen_range(0..8)]
        ),
        6 => Value::Array(
            (0..rng.gen_range(0..5))
                .map(|_| random_value(rng, depth + 1))
                .collect(),
        ),
        _ => {
            let mut m = serde_json::Map::new();
            for _ in 0..rng.gen_range(0..4) {
                let k = [
                    "id",
                    "mid",
                    "type",
                    "feed_id",
                    "streams",
                    "sdp",
                    "videoroom",
                    "x",
                ][rng.gen_range(0..8)];
                m.insert(k.into(), random_value(rng, depth + 1));
            }
            Value::Object(m)
        }
    }
}

/// Replaces, deletes or duplicates one random node of `v`.
fn mutate(v: &mut Value, rng: &mut impl Rng) {
    match v {
        Value::Object(m) if !m.is_empty() && rng.gen_bool(0.7) => {
            let keys: Vec<String> = m.keys().cloned().collect();
            let k = &keys[rng.gen_range(0..keys.len())];
            match rng.gen_range(0..4) {
                0 => {
                    m.remove(k);
                }
                1 => {
                    m.insert(k.clone(), random_value(rng, 0));
                }
                _ => mutate(m.get_mut(k).expect("key exists"), rng),
            }
        }
        Value::Array(a) if !a.is_empty() && rng.gen_bool(0.7) => {
            let i = rng.gen_range(0..a.len());
            match rng.gen_range(0..4) {
                0 => {
                    a.remove(i);
                }
                1 => {
                    let dup = a[i].clone();
                    for _ in 0..rng.gen_range(1..50) {
                        a.push(dup.clone());
                    }
                }
                _ => mutate(&mut a[i], rng),
            }
        }
        other => *other = random_value(rng, 0),
    }
}

/// Seeded mutation fuzz: the scripted flow with mutated real message shapes (structure-aware
/// and byte-level) injected before every step, with plausible transactions and handles. The
/// session must never panic, must keep a deadline while open, and must only ever transmit
/// JSON objects with a transaction.
#[test]
fn mutation_fuzz_never_panics() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x0003_5eed);
    let corpus = corpus();
    let mut closed_runs = 0;
    for run in 0..400 {
        let mut h = H::new(cfg(if run % 2 == 0 { Some("pin") } else { None }));
        for step in 0..60 {
            let mut v = corpus[rng.gen_range(0..corpus.len())].clone();
            // Point the message at a real pending transaction half the time.
            if rng.gen_bool(0.5) {
                if let Some(last) = h.sent.last() {
                    v["transaction"] = last["transaction"].clone();
                }
            }
            for _ in 0..rng.gen_range(0..4) {
                mutate(&mut v, &mut rng);
            }
            let mut text = v.to_string();
            if rng.gen_bool(0.2) && !text.is_empty() {
                let mut bytes = text.into_bytes();
                for _ in 0..rng.gen_range(1..4) {
                    let i = rng.gen_range(0..bytes.len());
                    bytes[i] = rng.gen();
                }
                text = String::from_utf8_lossy(&bytes).into_owned();
            }
            h.s.handle_message(h.now, &text);
            h.drain();
            if rng.gen_bool(0.1) {
                h.advance(Duration::from_millis(rng.gen_range(0..30_000)));
            }
            if let Some(o) = h.offers.last() {
                let _ = h.s.answered(h.now, o.offer_id, "v=0".into());
                h.drain();
            }
            if step == 50 && rng.gen_bool(0.5) {
                h.s.leave(h.now);
                h.drain();
            }
            if h.s.is_closed() {
                assert_eq!(h.s.poll_timeout(), None);
                closed_runs += 1;
                break;
            }
            assert!(
                h.s.poll_timeout().is_some(),
                "an open session always has a deadline"
            );
        }
        for v in &h.sent {
            assert!(v["transaction"].is_string(), "{v}");
        }
        // Whatever happened, leaving ends the session within the request timeout.
        h.s.leave(h.now);
        h.drain();
        h.advance(Duration::from_secs(10));
        assert!(h.s.is_closed());
    }
    assert!(closed_runs > 0);
}

// ---- the real thing ------------------------------------------------------------------------

mod common;

mod real_janus {
    use super::common::Workspace;
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::path::Path;
    use std::process::{Child, Command, Stdio};

    use meetbot::platform::janus::jitter::JitterConfig;
    use meetbot::platform::janus::platform::{JanusPlatform, RejoinPolicy};
    use meetbot::platform::janus::transport::TransportConfig;
    use meetbot::platform::janus::ws::{ClientEvent, JanusClient, JanusOptions};
    use meetbot::platform::{MeetingPlatform, PlatformEvent};
    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

    const JANUS: &str = "/usr/bin/janus";

    /// Janus's module folder from the Debian package (multiarch path).
    fn libdir() -> String {
        std::fs::read_dir("/usr/lib")
            .expect("/usr/lib")
            .flatten()
            .map(|e| e.path().join("janus"))
            .find(|p| p.join("plugins/libjanus_videoroom.so").exists())
            .expect("the janus package's plugins (scripts/test installs janus)")
            .display()
            .to_string()
    }

    /// A Janus started by the test. Dropping it kills Janus on every exit path (also when a
    /// test panics); if the test process itself is killed, the guard shell sees its stdin
    /// close and kills Janus.
    struct JanusProcess {
        guard: Child,
        janus_pid: i32,
        port: u16,
        _dir: tempfile::TempDir,
    }

    impl Drop for JanusProcess {
        fn drop(&mut self) {
            if let Some(pid) = rustix::process::Pid::from_raw(self.janus_pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
            // Closing stdin lets the guard shell reap Janus and exit; bounded, then forced.
            drop(self.guard.stdin.take());
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.guard.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = self.guard.kill();
            let _ = self.guard.wait();
        }
    }

    fn free_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    }

    fn write(path: &Path, text: &str) {
        std::fs::write(path, text).expect("write config");
    }

    fn start_janus() -> JanusProcess {
        start_janus_on(free_port())
    }

    /// Starts Janus with its WebSocket on `port` (to restart one on the same address).
    fn start_janus_on(port: u16) -> JanusProcess {
        assert!(
            Path::new(JANUS).exists(),
            "{JANUS} is missing: the Janus integration test needs the Debian package janus \
             (scripts/test installs it)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("conf");
        let plugins = dir.path().join("plugins");
        let transports = dir.path().join("transports");
        let empty = dir.path().join("empty");
        for d in [&conf, &plugins, &transports, &empty] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        // Only the VideoRoom plugin and the WebSocket transport are loaded.
        let libdir = libdir();
        std::os::unix::fs::symlink(
            format!("{libdir}/plugins/libjanus_videoroom.so"),
            plugins.join("libjanus_videoroom.so"),
        )
        .expect("symlink plugin");
        std::os::unix::fs::symlink(
            format!("{libdir}/transports/libjanus_websockets.so"),
            transports.join("libjanus_websockets.so"),
        )
        .expect("symlink transport");
        write(
            &conf.join("janus.jcfg"),
            &format!(
                "general: {{\n configs_folder = \"{c}\"\n plugins_folder = \"{p}\"\n \
                 transports_folder = \"{t}\"\n events_folder = \"{e}\"\n loggers_folder = \"{e}\"\n \
                 debug_level = 3\n session_timeout = 60\n}}\n\
                 media: {{\n rtp_port_range = \"40000-40100\"\n}}\n\
                 nat: {{\n nice_debug = false\n ignore_mdns = true\n}}\n",
                c = conf.display(),
                p = plugins.display(),
                t = transports.display(),
                e = empty.display()
            ),
        );
        write(
            &conf.join("janus.transport.websockets.jcfg"),
            &format!(
                "general: {{\n json = \"compact\"\n ws = true\n ws_port = {port}\n ws_ip = \"127.0.0.1\"\n wss = false\n}}\n\
                 admin: {{\n admin_ws = false\n admin_wss = false\n}}\n"
            ),
        );
        write(
            &conf.join("janus.plugin.videoroom.jcfg"),
            "general: {\n}\n\
             room-1234: {\n description = \"Demo Room\"\n publishers = 6\n audiocodec = \"opus\"\n}\n\
             room-4321: {\n description = \"Locked\"\n pin = \"letmein\"\n publishers = 6\n}\n",
        );
        let log = std::fs::File::create(dir.path().join("janus.log")).expect("log file");
        let mut guard = Command::new("sh")
            .arg("-c")
            .arg("\"$@\" & pid=$!; echo $pid; read _unused; kill -9 $pid 2>/dev/null; wait $pid")
            .arg("sh")
            .arg(JANUS)
            .arg("-F")
            .arg(&conf)
            .arg("-C")
            .arg(conf.join("janus.jcfg"))
            .arg("--disable-colors")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log.try_clone().expect("clone log"))
            .spawn()
            .expect("spawn janus");
        let mut first = String::new();
        BufReader::new(guard.stdout.as_mut().expect("stdout"))
            .read_line(&mut first)
            .expect("janus pid");
        let janus_pid: i32 = first.trim().parse().expect("numeric pid");
        // Janus's own output goes after the pid line; keep the pipe drained into the log.
        let mut out = guard.stdout.take().expect("stdout");
        let mut log2 = log;
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut out, &mut log2);
            let _ = log2.flush();
        });
        let p = JanusProcess {
            guard,
            janus_pid,
            port,
            _dir: dir,
        };
        // Ready when the WebSocket port accepts connections (bounded).
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "Janus did not open its WebSocket port in 10 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        p
    }

    async fn next_event(rx: &mut tokio::sync::mpsc::Receiver<ClientEvent>) -> ClientEvent {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("an event within 10 s")
            .expect("the event stream is open")
    }

    fn platform_event_name(ev: &PlatformEvent) -> &'static str {
        match ev {
            PlatformEvent::Waiting => "waiting",
            PlatformEvent::Admitted => "admitted",
            PlatformEvent::ParticipantJoined { .. } => "joined",
            PlatformEvent::ParticipantLeft { .. } => "left",
            PlatformEvent::Audio { .. } => "audio",
            PlatformEvent::Interrupted { .. } => "interrupted",
            PlatformEvent::Resumed { .. } => "resumed",
            PlatformEvent::Ended { .. } => "ended",
        }
    }

    async fn next_platform_event(rx: &mut mpsc::Receiver<PlatformEvent>) -> PlatformEvent {
        tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("an event within 20 s")
            .expect("the event stream is open")
    }

    fn quick_rejoin(window: Duration) -> RejoinPolicy {
        RejoinPolicy {
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_millis(800),
            window,
            ..RejoinPolicy::default()
        }
    }

    /// `meetbot join` against a real Janus: a room that does not exist, a wrong PIN and a
    /// missing PIN each end `fatal` at once with the reason, leaving only the deletion
    /// receipt (no spool, no transcript).
    #[test]
    fn join_fails_fast_on_a_wrong_room_or_pin_and_leaves_nothing_behind() {
        let janus = start_janus();
        for (room, want) in [
            ("999", "no_such_room"),
            ("4321?pin=nope", "unauthorized"),
            ("4321", "pin_required"),
        ] {
            let ws = Workspace::new();
            let url = format!("janus+ws://127.0.0.1:{}/{room}", janus.port);
            let t0 = Instant::now();
            // The openai provider is never called: nothing is said.
            let run = ws.join(
                &url,
                &["--stt", "openai", "--stt-url", "http://127.0.0.1:9/v1"],
            );
            let took = t0.elapsed();
            assert_ne!(run.code, Some(0), "{}", run.describe());
            let last = run.last();
            assert_eq!(last["status"], "fatal", "{}", run.describe());
            let reason = last["reason"].as_str().unwrap_or_default();
            assert!(reason.contains(want), "{room}: {reason}");
            assert!(
                !reason.contains("127.0.0.1") && !reason.contains("nope"),
                "{reason}"
            );
            assert!(took < Duration::from_secs(15), "{room}: took {took:?}");
            assert!(ws.spool_files().is_empty(), "{:?}", ws.spool_files());
            assert!(
                !ws.data().join("transcripts").exists()
                    || super::common::walk(&ws.data().join("transcripts")).is_empty()
            );
            assert!(!run.stderr.contains(&url), "stderr leaks the URL");
        }
    }

    /// Janus dies mid-meeting and comes back on the same address: the platform reports
    /// the interruption, rejoins the same room by itself, and reports when it is back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_platform_rejoins_after_janus_restarts() {
        let janus = start_janus();
        let port = janus.port;
        let url = Pii::new(format!("janus+ws://127.0.0.1:{port}/1234"));
        let loopback = TransportConfig {
            udp_bind: vec!["127.0.0.1:0".into()],
            ..TransportConfig::default()
        };
        let p = JanusPlatform::open(&url, "meetbot-test")
            .expect("valid URL")
            .with_options(
                JanusOptions::default(),
                loopback,
                JitterConfig::default(),
                quick_rejoin(Duration::from_secs(30)),
            );
        let (tx, mut rx) = mpsc::channel(64);
        let leave = CancellationToken::new();
        let task = tokio::spawn(Box::new(p).run(tx, leave.clone()));
        assert_eq!(
            platform_event_name(&next_platform_event(&mut rx).await),
            "admitted"
        );
        drop(janus);
        let PlatformEvent::Interrupted { at_ms, reason } = next_platform_event(&mut rx).await
        else {
            panic!("expected Interrupted");
        };
        assert!(reason.contains("connection_lost"), "{reason}");
        // Down for a while: the first attempts fail and back off.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let _janus = start_janus_on(port);
        let PlatformEvent::Resumed { at_ms: back_ms } = next_platform_event(&mut rx).await else {
            panic!("expected Resumed");
        };
        assert!(
            back_ms >= at_ms + 1400,
            "the gap spans the outage: {at_ms}..{back_ms}"
        );
        leave.cancel();
        let res = tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .expect("leaving is bounded")
            .expect("no panic");
        assert!(res.is_ok(), "{res:?}");
    }

    /// Janus dies for good: the platform gives up once the rejoin window has passed, with
    /// a reason, and never hangs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_platform_gives_up_when_janus_stays_down() {
        let janus = start_janus();
        let url = Pii::new(format!("janus+ws://127.0.0.1:{}/1234", janus.port));
        let p = JanusPlatform::open(&url, "meetbot-test")
            .expect("valid URL")
            .with_options(
                JanusOptions::default(),
                TransportConfig {
                    udp_bind: vec!["127.0.0.1:0".into()],
                    ..TransportConfig::default()
                },
                JitterConfig::default(),
                quick_rejoin(Duration::from_secs(3)),
            );
        let (tx, mut rx) = mpsc::channel(64);
        let task = tokio::spawn(Box::new(p).run(tx, CancellationToken::new()));
        assert_eq!(
            platform_event_name(&next_platform_event(&mut rx).await),
            "admitted"
        );
        drop(janus);
        let t0 = Instant::now();
        assert_eq!(
            platform_event_name(&next_platform_event(&mut rx).await),
            "interrupted"
        );
        let res = tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("giving up is bounded")
            .expect("no panic");
        let err = res.expect_err("Janus never came back").to_string();
        assert!(err.contains("could not rejoin within 3s"), "{err}");
        // The window counts from the loss, a moment before `t0`.
        assert!(
            t0.elapsed() >= Duration::from_millis(2800),
            "{:?}",
            t0.elapsed()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connects_to_the_pinned_address_not_what_the_name_resolves_to() {
        let janus = start_janus();
        // `janus.invalid` never resolves: only the pinned (vetted) address can
        // be what the client connects to.
        let url = JanusUrl::parse("janus+ws://janus.invalid:8188/1234").unwrap();
        let opts = JanusOptions {
            pinned_addrs: vec![
                // A dead address first: the next one is tried.
                format!("127.0.0.1:{}", super::common::free_port())
                    .parse()
                    .unwrap(),
                format!("127.0.0.1:{}", janus.port).parse().unwrap(),
            ],
            ..JanusOptions::default()
        };
        let (client, mut rx) = JanusClient::connect(&url, "meetbot-test", &opts)
            .await
            .expect("connect via the pinned address");
        match next_event(&mut rx).await {
            ClientEvent::Event(SigEvent::Joined) => {}
            other => panic!("expected Joined, got {other:?}"),
        }
        client.leave().await;
        // Without pinning the same URL cannot connect at all.
        assert!(
            JanusClient::connect(&url, "meetbot-test", &JanusOptions::default())
                .await
                .is_err()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn joins_a_real_janus_room_and_leaves() {
        let janus = start_janus();
        let opts = JanusOptions::default();

        // The default room: Joined, then a clean leave.
        let url = JanusUrl::parse(&format!("janus+ws://127.0.0.1:{}/1234", janus.port)).unwrap();
        let (client, mut rx) = JanusClient::connect(&url, "meetbot-test", &opts)
            .await
            .expect("connect");
        let t0 = Instant::now();
        match next_event(&mut rx).await {
            ClientEvent::Event(SigEvent::Joined) => {}
            other => panic!("expected Joined, got {other:?}"),
        }
        let joined_in = t0.elapsed();
        client.leave().await;
        match next_event(&mut rx).await {
            ClientEvent::Event(SigEvent::Left) => {}
            other => panic!("expected Left, got {other:?}"),
        }
        assert!(rx.recv().await.is_none(), "the stream ends after Left");
        client.closed().await;
        eprintln!("janus join took {joined_in:?}");

        // A room that does not exist.
        let url = JanusUrl::parse(&format!("janus+ws://127.0.0.1:{}/999", janus.port)).unwrap();
        let (_client, mut rx) = JanusClient::connect(&url, "meetbot-test", &opts)
            .await
            .expect("connect");
        match next_event(&mut rx).await {
            ClientEvent::Event(SigEvent::Fatal { kind, .. }) => {
                assert_eq!(kind, FatalKind::NoSuchRoom)
            }
            other => panic!("expected Fatal, got {other:?}"),
        }

        // A PIN-protected room: no PIN, wrong PIN, right PIN.
        for (query, want) in [
            ("", Some(FatalKind::PinRequired)),
            ("?pin=nope", Some(FatalKind::Unauthorized)),
            ("?pin=letmein", None),
        ] {
            let url = JanusUrl::parse(&format!("janus+ws://127.0.0.1:{}/4321{query}", janus.port))
                .unwrap();
            let (client, mut rx) = JanusClient::connect(&url, "meetbot-test", &opts)
                .await
                .expect("connect");
            match (next_event(&mut rx).await, want) {
                (ClientEvent::Event(SigEvent::Fatal { kind, .. }), Some(w)) => {
                    assert_eq!(kind, w, "{query}")
                }
                (ClientEvent::Event(SigEvent::Joined), None) => {
                    drop(client); // dropping the client leaves
                    match next_event(&mut rx).await {
                        ClientEvent::Event(SigEvent::Left) => {}
                        other => panic!("expected Left, got {other:?}"),
                    }
                }
                (other, w) => panic!("{query}: expected {w:?}, got {other:?}"),
            }
        }

        // Janus dies mid-session: ConnectionLost, promptly.
        let url = JanusUrl::parse(&format!("janus+ws://127.0.0.1:{}/1234", janus.port)).unwrap();
        let (_client, mut rx) = JanusClient::connect(&url, "meetbot-test", &opts)
            .await
            .expect("connect");
        assert!(matches!(
            next_event(&mut rx).await,
            ClientEvent::Event(SigEvent::Joined)
        ));
        drop(janus);
        match next_event(&mut rx).await {
            ClientEvent::Event(SigEvent::Fatal { kind, .. }) => {
                assert_eq!(kind, FatalKind::ConnectionLost)
            }
            other => panic!("expected ConnectionLost, got {other:?}"),
        }
        assert!(rx.recv().await.is_none());

        // Nothing listens here: a bounded, clear connect error.
        let url = JanusUrl::parse(&format!("janus+ws://127.0.0.1:{}/1234", free_port())).unwrap();
        let err = JanusClient::connect(&url, "meetbot-test", &opts)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("cannot connect"), "{err}");
    }

    /// A server that accepts TCP but never answers the WebSocket handshake: the connect
    /// timeout bounds the wait.
    #[tokio::test]
    async fn connect_timeout_bounds_a_silent_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hold = tokio::spawn(async move {
            let (_sock, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let opts = JanusOptions {
            connect_timeout: Duration::from_millis(300),
            ..JanusOptions::default()
        };
        let url = JanusUrl::parse(&format!("janus+ws://127.0.0.1:{port}/1234")).unwrap();
        let t0 = Instant::now();
        let err = JanusClient::connect(&url, "meetbot-test", &opts)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("timed out"), "{err}");
        assert!(t0.elapsed() < Duration::from_secs(2));
        hold.abort();
    }
}
