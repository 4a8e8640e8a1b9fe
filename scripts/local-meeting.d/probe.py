#!/usr/bin/env python3
"""Janus VideoRoom probe for the local meeting sandbox (standard library only).

    probe.py [URL] [--expect N] [--timeout S] [--display NAME]
        Joins the room of URL (default $MEETING_URL, janus+ws://host:port/<room>[?pin=…]) as a
        publisher that never publishes and prints one JSON line per room event:
          {"event":"joined","room":1234,"id":…}                       the probe is in the room
          {"event":"attendee","id":…,"display":"host"}                 someone joined (notify_joining)
          {"event":"publisher","id":…,"display":"host","audio_mids":["0"],"streams":[…]}
          {"event":"unpublished","id":…,"display":"host"}
          {"event":"left","id":…,"display":"host"}                     `leaving` received
          {"event":"done","publishers":2}
        --show-offer: for each new publisher, also attach a subscriber handle, print
          {"event":"subscriber_offer","feed":…,"streams":[…],"sdp":"v=0…"} (what a bot receives;
          never answered) and detach it.
        Exits 0 once N publishers (default 2) have published and all of them have left, 1 on
        timeout (default 300 s) or a Janus error.

    probe.py [URL] --wait-participants N [--publishing] [--timeout S]
        Polls `listparticipants` without joining; exits 0 as soon as the room has at least N
        participants (publishing or not; with --publishing, only those whose media is up),
        1 on timeout. Used by scripts/local-meeting and scripts/bench-meeting.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from janus_ws import Janus, JanusError, parse_meeting_url  # noqa: E402


def out(**kv):
    kv["t"] = round(time.time(), 3)
    print(json.dumps(kv), flush=True)


def wait_participants(ws_url, room, n, timeout, publishing=False):
    deadline = time.monotonic() + timeout
    last_err = None
    while time.monotonic() < deadline:
        try:
            j = Janus(ws_url, timeout=3)
            try:
                h = j.attach()
                while time.monotonic() < deadline:
                    data, _ = j.message(h, {"request": "listparticipants", "room": room})
                    ps = data.get("participants", [])
                    if publishing:
                        ps = [p for p in ps if p.get("publisher")]
                    if len(ps) >= n:
                        return 0
                    time.sleep(0.2)
            finally:
                j.destroy()
        except (OSError, JanusError) as e:
            last_err = e
            time.sleep(0.2)
    what = "publishing participant(s)" if publishing else "participant(s)"
    print(f"probe: room {room} did not reach {n} {what} within {timeout} s"
          + (f" (last error: {last_err})" if last_err else ""), file=sys.stderr)
    return 1


def show_offer(j, room, pin, feed):
    h = j.attach()
    body = {"request": "join", "ptype": "subscriber", "room": room, "streams": [{"feed": feed}]}
    if pin:
        body["pin"] = pin
    data, m = j.message(h, body)
    out(event="subscriber_offer", feed=feed, videoroom=data.get("videoroom"),
        streams=data.get("streams"), sdp=m.get("jsep", {}).get("sdp"))
    j.request({"janus": "detach", "handle_id": h})


def probe(ws_url, room, pin, expect, timeout, display, offers=False):
    deadline = time.monotonic() + timeout
    j = Janus(ws_url, timeout=5)
    names = {}
    published, gone = set(), set()

    def on_publishers(pubs):
        for p in pubs:
            pid = p["id"]
            names[pid] = p.get("display")
            if pid in published:
                continue
            published.add(pid)
            streams = p.get("streams", [])
            out(event="publisher", id=pid, display=p.get("display"),
                audio_mids=[s["mid"] for s in streams if s.get("type") == "audio" and not s.get("disabled")],
                streams=streams)
            if offers:
                show_offer(j, room, pin, pid)

    try:
        h = j.attach()
        body = {"request": "join", "ptype": "publisher", "room": room, "display": display}
        if pin:
            body["pin"] = pin
        data, _ = j.message(h, body)
        if data.get("videoroom") != "joined":
            raise JanusError(f"unexpected join reply: {data}")
        out(event="joined", room=room, id=data.get("id"))
        for a in data.get("attendees", []):
            out(event="attendee", id=a["id"], display=a.get("display"))
        on_publishers(data.get("publishers", []))
        while True:
            if len(published) >= expect and published <= gone:
                out(event="done", publishers=len(published))
                return 0
            left = deadline - time.monotonic()
            if left <= 0:
                print(f"probe: timeout after {timeout} s: published={sorted(published)} "
                      f"left={sorted(gone)} expected {expect}", file=sys.stderr)
                return 1
            m = j.next_event(min(left, 1.0))
            if m is None:
                continue
            if m.get("janus") == "timeout" or (m.get("janus") in ("hangup", "detached") and m.get("sender") == h):
                raise JanusError(f"session/handle ended: {m}")
            d = m.get("plugindata", {}).get("data", {})
            if d.get("videoroom") != "event":
                continue
            if "joining" in d:
                a = d["joining"]
                names[a["id"]] = a.get("display")
                out(event="attendee", id=a["id"], display=a.get("display"))
            if "publishers" in d:
                on_publishers(d["publishers"])
            if "unpublished" in d and d["unpublished"] != "ok":
                pid = d["unpublished"]
                out(event="unpublished", id=pid, display=names.get(pid))
            if "leaving" in d and d["leaving"] != "ok":
                pid = d["leaving"]
                out(event="left", id=pid, display=names.get(pid))
                gone.add(pid)
    finally:
        try:
            j.message(h, {"request": "leave"})
        except Exception:
            pass
        j.destroy()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("url", nargs="?", default=os.environ.get("MEETING_URL"))
    ap.add_argument("--expect", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--display", default="probe")
    ap.add_argument("--wait-participants", type=int)
    ap.add_argument("--publishing", action="store_true")
    ap.add_argument("--show-offer", action="store_true")
    a = ap.parse_args()
    if not a.url:
        ap.error("no URL and no $MEETING_URL")
    try:
        ws_url, room, pin = parse_meeting_url(a.url)
        if a.wait_participants is not None:
            return wait_participants(ws_url, room, a.wait_participants, a.timeout, a.publishing)
        return probe(ws_url, room, pin, a.expect, a.timeout, a.display, a.show_offer)
    except (OSError, JanusError) as e:
        print(f"probe: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
