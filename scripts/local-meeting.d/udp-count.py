#!/usr/bin/env python3
"""Counts the IPv4 UDP packets one local UDP port sends, by destination, on one interface.

    udp-count.py --iface lo --src-port 47000 --forbid 127.0.0.0/8 --ready FILE

Runs (as root, inside scripts/local-meeting's network namespace, where every packet between
local addresses crosses `lo`) until SIGTERM or SIGINT, then prints one JSON line:
{"forbidden": N, "allowed": M, "forbidden_dsts": [...]}: packets from --src-port sent to an
address inside a --forbid network, and to any other address. --ready is created once the
capture socket is open, so a caller can wait for it before starting the sender.
Only outgoing packets are counted (a packet on `lo` is seen once going out, once coming in).
"""
import argparse
import ipaddress
import json
import os
import signal
import socket
import struct
import sys

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iface", default="lo")
    ap.add_argument("--src-port", type=int, required=True)
    ap.add_argument("--forbid", action="append", default=[])
    ap.add_argument("--ready")
    a = ap.parse_args()
    nets = [ipaddress.ip_network(n) for n in a.forbid]
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((a.iface, 0))
    s.settimeout(0.2)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    if a.ready:
        with open(a.ready, "w") as f:
            f.write("ready\n")
    forbidden = allowed = 0
    dsts = set()
    while not stop:
        try:
            frame, addr = s.recvfrom(65535)
        except socket.timeout:
            continue
        except InterruptedError:
            continue
        if addr[2] != PACKET_OUTGOING or len(frame) < 14 + 20 + 8:
            continue
        if struct.unpack("!H", frame[12:14])[0] != 0x0800:  # IPv4 only (the sandbox has no v6)
            continue
        ip = frame[14:]
        ihl = (ip[0] & 0x0F) * 4
        if ip[9] != 17 or len(ip) < ihl + 8:  # UDP
            continue
        sport = struct.unpack("!H", ip[ihl:ihl + 2])[0]
        if sport != a.src_port:
            continue
        dst = ipaddress.ip_address(ip[16:20])
        if any(dst in n for n in nets):
            forbidden += 1
            dsts.add(str(dst))
        else:
            allowed += 1
    print(json.dumps({"forbidden": forbidden, "allowed": allowed,
                      "forbidden_dsts": sorted(dsts)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
