#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets (tests/fuzz/corpus/<target>/): valid messages of
each wire format, built here field by field from the layouts in src/ras/ras_wire.h and
src/core/bootstrap*.{c,h}, and the topology files of topologies/. Re-run after a format changes:
    python3 tests/fuzz/seeds.py"""
import hashlib
import hmac
import os
import shutil
import socket
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- RAS wire (little-endian; header: magic, version u16, type u16, length, seq, sender, 0) ----
RAS_MAGIC, RAS_KEY = 0x53524341, bytes(range(1, 9))  # the key fuzz_ras_wire.c verifies with


def ras_msg(mtype, payload, seq=1):
    return struct.pack("<IHHIIII", RAS_MAGIC, 1, mtype, len(payload), seq, 4242, 0) + payload


def ras_addr(family=4, ip=b"\x7f\x00\x00\x01", port=28100, pid=4242):
    return struct.pack("<BB16sHI", family, 0, ip.ljust(16, b"\0"), port, pid)


def ras_hello(key=RAS_KEY, family=4):
    key_id = hashlib.sha256(b"anyccl-ras-key" + key).digest()[:8]
    signed = key_id + bytes(range(16)) + ras_addr(family)
    return signed + hmac.new(key, signed, hashlib.sha256).digest()[:16]


def ras_records(n, nranks=8):
    out = struct.pack("<I", n)
    for i in range(n):
        out += struct.pack("<QIIQQQiIiI", 0x1234abcd5678ef00 + i, nranks, i % nranks,
                           1042, 1042, 1041, 0, 15000, 0, 0)
    return out


def ras_seeds():
    hello = ras_msg(1, ras_hello())
    write("ras_wire", "hello", hello)
    write("ras_wire", "hello_v6", ras_msg(1, ras_hello(family=6)))
    write("ras_wire", "hello_ack", hello + ras_msg(2, struct.pack("<I", 0), 2))
    write("ras_wire", "keepalive", hello + ras_msg(3, struct.pack("<Q", 123456789) + ras_records(3), 2))
    write("ras_wire", "query_reply", hello + ras_msg(5, struct.pack("<Q", 7), 2) +
          ras_msg(6, struct.pack("<Q", 7) + ras_records(2, 4), 3))
    write("ras_wire", "dead_peer", hello + ras_msg(4, ras_addr(pid=99), 2))
    write("ras_wire", "bye", hello + ras_msg(7, b"", 2))
    write("ras_wire", "unknown_type", hello + ras_msg(99, b"future payload", 2))
    write("ras_wire", "all", hello + ras_msg(2, struct.pack("<I", 0), 2) +
          ras_msg(3, struct.pack("<Q", 1) + ras_records(1), 3) + ras_msg(5, struct.pack("<Q", 1), 4) +
          ras_msg(6, struct.pack("<Q", 1) + ras_records(4, 16), 5) + ras_msg(4, ras_addr(), 6) +
          ras_msg(7, b"", 7))


# ---- RAS client text protocol (first byte: the size of the pieces the bytes arrive in) ----
def client_seeds():
    write("ras_client", "status", b"\x3fSTATUS\n")
    write("ras_client", "ncclras", b"\x07CLIENT PROTOCOL 2\nTIMEOUT 5\nVERBOSE STATUS\n")
    write("ras_client", "json", b"\x10set format json\r\ntimeout 0.5\r\nstatus\r\n")
    write("ras_client", "errors", b"\x01TIMEOUT -1\nTIMEOUT nan\nSET FORMAT xml\nMONITOR\n\n"
          b"timeout 1e400\nset format text\nstatus\n")
    write("ras_client", "long_line", b"\x3f" + b"A" * 1100 + b"\nSTATUS\n")


# ---- bootstrap (host byte order, x86-64: little-endian) ----
def fnv1a(data):
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xffffffffffffffff
    return h


def unique_id(secret, v6=False):
    if v6:
        addr = struct.pack("<H", socket.AF_INET6) + struct.pack(">H", 29500) + \
            socket.inet_pton(socket.AF_INET6, "fe80::1") + struct.pack("<I", 2)
    else:
        addr = struct.pack("<H", socket.AF_INET) + struct.pack(">H", 29500) + \
            socket.inet_aton("10.0.0.1").ljust(16, b"\0") + struct.pack("<I", 0)
    head = struct.pack("<IIQQ", 0x41434349, 1, secret, 0x9999) + addr
    return (head + struct.pack("<Q", fnv1a(head))).ljust(128, b"\0")


def sockaddr_in(ip="10.0.0.2", port=40000):
    sa = struct.pack("<H", socket.AF_INET) + struct.pack(">H", port) + socket.inet_aton(ip)
    return sa.ljust(128, b"\0")


def bs_hello(secret, nranks, rank):
    return struct.pack("<IIQii", 0x41434248, 1, secret, nranks, rank) + sockaddr_in()


def bs_hdr(secret, frm, kind, tag, nbytes):
    return struct.pack("<QiIIIQ", secret, frm, kind, tag, 0, nbytes)


def bootstrap_seeds():
    s = 0x0123456789abcdef
    uid = unique_id(s)
    write("bootstrap", "uid_only", uid)
    write("bootstrap", "uid_v6_hello", unique_id(s, True) + bs_hello(s, 4, 3))
    write("bootstrap", "hello_wrong_secret", uid + bs_hello(s + 1, 4, 0))
    write("bootstrap", "hello_bad_rank", uid + bs_hello(s, 4, 4))
    write("bootstrap", "messages", uid + bs_hello(s, 4, 1) + bs_hdr(s, 2, 1, 7, 8) + b"payload!" +
          bs_hdr(s, 2, 2, 0, 16) + bytes(16) + bs_hdr(s, 2, 3, 0, 1) + b"\x01")
    write("bootstrap", "message_bad_kind", uid + bs_hello(s, 2, 0) + bs_hdr(s, 1, 9, 0, 0))


def topo_seeds():
    top = os.path.join(os.path.dirname(ROOT), "..", "..", "topologies")
    for f in sorted(os.listdir(top)):
        if f.endswith(".xml"):
            shutil.copy(os.path.join(top, f), os.path.join(ROOT, "topo_xml", f))
    write("topo_xml", "minimal.xml", b'<system version="1">\n  <cpu numaid="0" affinity="ff" '
          b'arch="x86_64" vendor="GenuineIntel">\n    <nic>\n      <net name="eth0" dev="0" '
          b'speed="10000" port="1" latency="0" guid="0x1" maxconn="65536" gdr="0"/>\n'
          b'    </nic>\n  </cpu>\n</system>\n')
    write("topo_xml", "entities.xml", b'<?xml version="1.0"?>\n<!-- comment -->\n<system '
          b'version="1"><cpu numaid="0" affinity="0000,00ff" host_hash="&#x41;&amp;&lt;&gt;&quot;'
          b'&apos;&#65;"/></system>')


if __name__ == "__main__":
    os.makedirs(os.path.join(ROOT, "topo_xml"), exist_ok=True)
    ras_seeds()
    client_seeds()
    bootstrap_seeds()
    topo_seeds()
