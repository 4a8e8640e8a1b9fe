"""Minimal Janus-over-WebSocket client, Python standard library only.

Used by probe.py and by scripts/local-meeting (waiting for the command to join the room).
Plain ws:// only (the local sandbox has no TLS), RFC 6455 client framing, subprotocol
"janus-protocol".
"""
import base64
import json
import os
import random
import socket
import string
import struct
import time
import urllib.parse


class JanusError(Exception):
    pass


def parse_meeting_url(url):
    """janus+ws://host:port/<room>[?pin=…] -> (ws_url, room:int, pin or None)."""
    u = urllib.parse.urlsplit(url)
    if u.scheme not in ("janus+ws", "ws"):
        raise JanusError(f"unsupported meeting URL scheme {u.scheme!r} (want janus+ws)")
    room = u.path.strip("/")
    if not room.isdigit():
        raise JanusError(f"meeting URL must end with a numeric room id, got {u.path!r}")
    q = urllib.parse.parse_qs(u.query)
    pin = q.get("pin", [None])[0]
    return f"ws://{u.hostname}:{u.port or 8188}/", int(room), pin


class WebSocket:
    def __init__(self, url, subprotocol="janus-protocol", timeout=5.0):
        u = urllib.parse.urlsplit(url)
        if u.scheme != "ws":
            raise JanusError("only ws:// is supported")
        self.sock = socket.create_connection((u.hostname, u.port or 80), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        req = (f"GET {u.path or '/'} HTTP/1.1\r\nHost: {u.hostname}:{u.port or 80}\r\n"
               "Upgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
               f"Sec-WebSocket-Protocol: {subprotocol}\r\n\r\n")
        self.sock.sendall(req.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise JanusError("connection closed during the WebSocket handshake")
            head += chunk
        head, self.buf = head.split(b"\r\n\r\n", 1)
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            raise JanusError(f"WebSocket handshake refused: {status.decode(errors='replace')}")
        self.closed = False

    def _read(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise TimeoutError
            if not chunk:
                self.closed = True
                raise JanusError("WebSocket closed by the server")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def send_frame(self, opcode, payload):
        hdr = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            hdr += bytes([0x80 | n])
        elif n < 65536:
            hdr += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            hdr += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(hdr + mask + masked)

    def send_text(self, text):
        self.send_frame(0x1, text.encode())

    def recv_text(self, timeout):
        """Next text message, or None on timeout. Answers pings; raises on close."""
        deadline = time.monotonic() + timeout
        parts = []
        while True:
            try:
                b0, b1 = self._read(2, deadline)
            except TimeoutError:
                if parts:  # finish a started message regardless of the timeout
                    deadline = time.monotonic() + 5
                    continue
                return None
            fin, opcode, n = b0 & 0x80, b0 & 0x0F, b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2, deadline + 5))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8, deadline + 5))[0]
            mask = self._read(4, deadline + 5) if b1 & 0x80 else None
            data = self._read(n, deadline + 5)
            if mask:
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
            if opcode == 0x9:
                self.send_frame(0xA, data)
            elif opcode == 0x8:
                self.closed = True
                raise JanusError("WebSocket closed by the server")
            elif opcode in (0x1, 0x0):
                parts.append(data)
                if fin:
                    return b"".join(parts).decode()

    def close(self):
        try:
            if not self.closed:
                self.send_frame(0x8, struct.pack(">H", 1000))
        except OSError:
            pass
        self.sock.close()


def _tx():
    return "".join(random.choices(string.ascii_letters + string.digits, k=12))


class Janus:
    """One Janus session with helpers; asynchronous events land in self.events."""

    def __init__(self, ws_url, timeout=5.0):
        self.ws = WebSocket(ws_url, timeout=timeout)
        self.timeout = timeout
        self.events = []
        self.session = None
        self.last_keepalive = time.monotonic()
        self.session = self.request({"janus": "create"})["data"]["id"]

    def _send(self, msg):
        msg = dict(msg)
        msg.setdefault("transaction", _tx())
        if self.session is not None:
            msg.setdefault("session_id", self.session)
        self.ws.send_text(json.dumps(msg))
        return msg["transaction"]

    def request(self, msg, final=("success", "error", "event")):
        """Sends msg and returns the reply with the same transaction (skipping `ack`)."""
        tx = self._send(msg)
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise JanusError(f"no reply to {msg.get('janus')} within {self.timeout} s")
            text = self.ws.recv_text(left)
            if text is None:
                continue
            m = json.loads(text)
            if m.get("transaction") == tx and m.get("janus") in final:
                if m["janus"] == "error":
                    raise JanusError(f"janus error {m['error'].get('code')}: {m['error'].get('reason')}")
                data = m.get("plugindata", {}).get("data", {})
                if data.get("error_code"):
                    raise JanusError(f"videoroom error {data['error_code']}: {data.get('error')}")
                return m
            if m.get("janus") != "ack":
                self.events.append(m)

    def attach(self, plugin="janus.plugin.videoroom"):
        return self.request({"janus": "attach", "plugin": plugin})["data"]["id"]

    def message(self, handle, body, jsep=None):
        msg = {"janus": "message", "handle_id": handle, "body": body}
        if jsep:
            msg["jsep"] = jsep
        m = self.request(msg, final=("event", "success", "error"))
        return m.get("plugindata", {}).get("data", {}), m

    def keepalive_if_due(self, every=20.0):
        if time.monotonic() - self.last_keepalive >= every:
            self._send({"janus": "keepalive"})
            self.last_keepalive = time.monotonic()

    def next_event(self, timeout):
        """Next asynchronous message (queued first), or None on timeout. Sends keepalives."""
        if self.events:
            return self.events.pop(0)
        deadline = time.monotonic() + timeout
        while True:
            self.keepalive_if_due()
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            text = self.ws.recv_text(min(left, 5.0))
            if text is None:
                continue
            m = json.loads(text)
            if m.get("janus") != "ack":
                return m

    def destroy(self):
        try:
            self._send({"janus": "destroy"})
        except OSError:
            pass
        self.ws.close()
