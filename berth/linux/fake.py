"""A recording stand-in for :class:`berth.linux.Syscalls`.

Unit tests hand it to the runtime to check the *order* of kernel operations (unshare
before mount, pivot_root before dropping capabilities, seccomp last before exec)
without root. It never touches the kernel; integration tests do that.
"""

from __future__ import annotations


class RecordingSyscalls:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)

        def record(*args, **kwargs):
            self.calls.append((name, *args, *kwargs.values()))
            return 0

        return record

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]

    def index(self, name: str, *args) -> int:
        """Position of the first call named `name` whose leading arguments match `args`."""
        for i, call in enumerate(self.calls):
            if call[0] == name and tuple(call[1:1 + len(args)]) == args:
                return i
        raise ValueError(f"no call {name}{args} in {self.calls}")
