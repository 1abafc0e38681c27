"""Random container names in Docker's adjective_surname style."""

from __future__ import annotations

import os

ADJECTIVES = (
    "agile", "amazing", "bold", "brave", "bright", "calm", "clever", "cool", "crisp", "daring",
    "eager", "elated", "epic", "fervent", "festive", "fond", "gallant", "gentle", "happy", "hardy",
    "humble", "jolly", "keen", "kind", "lively", "loyal", "lucid", "merry", "modest", "nifty",
    "noble", "patient", "placid", "plucky", "proud", "quick", "quiet", "rapid", "serene", "sharp",
    "steady", "sturdy", "sunny", "swift", "tender", "tidy", "trusty", "vivid", "warm", "witty",
)
# people whose work the field stands on
SURNAMES = (
    "allen", "babbage", "backus", "bell", "berners", "bohr", "boole", "cerf", "church", "codd",
    "curie", "dijkstra", "engelbart", "euler", "feynman", "gauss", "goldberg", "hamilton",
    "hopper", "kahn", "kay", "knuth", "lamport", "liskov", "lovelace", "mccarthy", "meitner",
    "noether", "pike", "ritchie", "shannon", "sutherland", "tanenbaum", "thompson", "torvalds",
    "turing", "wirth", "wozniak", "yonath", "zuse",
)


def _pick(seq):
    return seq[int.from_bytes(os.urandom(4), "little") % len(seq)]


def generate(taken=lambda name: False) -> str:
    for attempt in range(100):
        name = f"{_pick(ADJECTIVES)}_{_pick(SURNAMES)}"
        if attempt > 10:
            name += str(int.from_bytes(os.urandom(1), "little") % 100)
        if not taken(name):
            return name
    return f"berth_{os.urandom(6).hex()}"
