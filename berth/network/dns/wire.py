"""The DNS wire format, as far as the embedded DNS needs it (pure functions).

One-question queries in; answers with A records, one PTR record, or an error code out.
Names in questions are never compressed by resolvers, so none is followed here.
"""

from __future__ import annotations

import socket
import struct

TTL = 600  # containers' addresses only change when they restart; Docker uses 600 too
QTYPE_A, QTYPE_PTR, QTYPE_AAAA = 1, 12, 28
RCODE_SERVFAIL, RCODE_NXDOMAIN, RCODE_REFUSED = 2, 3, 5


def parse_query(data: bytes):
    """(id, flags, qname, qtype, end of the question) of a one-question query, or None."""
    if len(data) < 12:
        return None
    qid, flags, qdcount = struct.unpack("!HHH", data[:6])
    if flags & 0x8000 or qdcount != 1:
        return None
    labels, pos = [], 12
    while True:
        if pos >= len(data):
            return None
        length = data[pos]
        pos += 1
        if length == 0:
            break
        if length & 0xC0 or pos + length > len(data):
            return None  # no compression in a question we answer
        labels.append(data[pos:pos + length].decode("ascii", "replace"))
        pos += length
    if pos + 4 > len(data):
        return None
    qtype, _qclass = struct.unpack("!HH", data[pos:pos + 4])
    return qid, flags, ".".join(labels), qtype, pos + 4


def encode_name(name: str) -> bytes:
    out = b""
    for label in name.strip(".").split("."):
        raw = label.encode("ascii", "replace")[:63]
        out += bytes([len(raw)]) + raw
    return out + b"\0"


def response(query: bytes, question_end: int, rcode: int = 0, addresses=(), ptr: str | None = None,
             ttl: int = TTL) -> bytes:
    """An answer to `query`: A records for `addresses`, or one PTR record to `ptr`."""
    qid, flags = struct.unpack("!HH", query[:4])
    rd = flags & 0x0100
    answers = b""
    count = 0
    for address in addresses:
        answers += struct.pack("!HHHIH", 0xC00C, QTYPE_A, 1, ttl, 4) + socket.inet_aton(address)
        count += 1
    if ptr is not None:
        target = encode_name(ptr)
        answers += struct.pack("!HHHIH", 0xC00C, QTYPE_PTR, 1, ttl, len(target)) + target
        count += 1
    # QR, AA (we are the authority for container names), RD copied, RA: we recurse
    header = struct.pack("!HHHHHH", qid, 0x8000 | 0x0400 | rd | 0x0080 | rcode, 1, count, 0, 0)
    return header + query[12:question_end] + answers


def reverse_name(address: str) -> str:
    return ".".join(reversed(address.split("."))) + ".in-addr.arpa"
