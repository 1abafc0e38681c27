"""The tar streams of image archives: a writer straight to an fd (save, export) and a
forward-only reader (load).

Split from the archive formats because tar framing is neither save's nor load's concern:
save.py and export.py decide which members an archive holds, load.py what they mean.

berth.layer has a tar reader and writer of its own (tarstream, tarwriter); they do not fit
here, and this copy is kept on purpose:

* ``berth.layer.tarwriter`` fills 1 MiB buffers, hashes them and hands them to a thread
  that calls ``write``; an archive is written to an fd with sendfile(2), so blob bytes
  never pass through Python, and needs no digest of the whole archive. Its header
  encoding is Go's; the headers here are tarfile's (a trailing "/" on directory names,
  empty device fields on other members, ``hdrcharset=BINARY`` before a binary xattr
  value), and switching would change the bytes of every archive berth writes.
* ``berth.layer.tarstream`` takes a stream that ends at a header as complete (Go does),
  where a load must call an archive without its end-of-archive marker truncated; it
  hashes the whole stream, where a load needs the digest of each member; and its errors
  speak of layers.
"""

from __future__ import annotations

import os

from berth.errors import DataLoss

_CHUNK = 1 << 20


# --- writing -----------------------------------------------------------------------------


class FdTarWriter:
    """A tar stream written straight to an fd: headers by tarfile, data by sendfile(2)."""

    def __init__(self, fd: int) -> None:
        import tarfile

        self._tarfile = tarfile
        self.fd = fd

    def _write(self, data) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]

    def add(self, info, data: bytes | None = None, src_fd: int | None = None) -> None:
        self._write(info.tobuf(self._tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
        if data is not None:
            self._write(data)
        elif src_fd is not None:
            self._sendfile(src_fd, info.size)
        if info.size % 512:
            self._write(bytes(512 - info.size % 512))

    def _info(self, name: str, kind, mode: int, size: int = 0):
        info = self._tarfile.TarInfo(name)
        info.type, info.mode, info.size, info.mtime = kind, mode, size, 0
        return info

    def file(self, name: str, data: bytes | None = None, *, size: int | None = None,
             src_fd: int | None = None) -> None:
        size = len(data) if data is not None else size
        self.add(self._info(name, self._tarfile.REGTYPE, 0o644, size), data, src_fd)

    def directory(self, name: str) -> None:
        self.add(self._info(name, self._tarfile.DIRTYPE, 0o755))

    def stream(self, name: str, size: int, source, diff_id: str) -> None:
        """A member from a stream of known size, checked against `diff_id` as it goes."""
        import hashlib

        h = hashlib.sha256()
        self._write(self._info(name, self._tarfile.REGTYPE, 0o644, size)
                    .tobuf(self._tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
        left = size
        while left:
            chunk = source.read(min(left, _CHUNK))
            if not chunk:
                break
            h.update(chunk)
            self._write(chunk)
            left -= len(chunk)
        if left or "sha256:" + h.hexdigest() != diff_id:
            raise DataLoss(f"stored layer {diff_id} changed while it was being saved")
        if size % 512:
            self._write(bytes(512 - size % 512))

    def _sendfile(self, src: int, size: int) -> None:
        sent = 0
        try:
            while sent < size:
                n = os.sendfile(self.fd, src, sent, size - sent)
                if not n:
                    break
                sent += n
        except OSError as exc:
            import errno

            if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                raise
            while sent < size and (chunk := os.pread(src, min(_CHUNK, size - sent), sent)):
                self._write(chunk)
                sent += len(chunk)
        if sent < size:  # the file shrank under us: keep the tar well-formed
            self._write(bytes(size - sent))

    def close(self) -> None:
        self._write(bytes(1024))  # the end-of-archive marker: two zero blocks


# --- reading -----------------------------------------------------------------------------


class ForwardReader:
    """The input as tarfile's "r" mode needs it: tarfile only ever seeks ahead, to skip."""

    def __init__(self, raw) -> None:
        self._raw = raw
        self._pos = 0

    def read(self, size: int = -1) -> bytes:
        parts, got = [], 0
        while size < 0 or got < size:
            data = self._pull(self._raw.read, _CHUNK if size < 0 else size - got)
            if not data:
                break
            parts.append(data)
            got += len(data)
        self._pos += got
        return b"".join(parts)

    def readinto(self, buf) -> int:
        n = self._pull(self._raw.readinto, buf) or 0
        self._pos += n
        return n

    @staticmethod
    def _pull(read, arg):
        try:
            return read(arg)
        except DataLoss as exc:  # the decompressor's words are about layers
            raise DataLoss(f"the compressed archive is damaged ({exc})") from None

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence != 0 or pos < self._pos:
            raise OSError("the archive stream only moves forward")
        while self._pos < pos:
            if not self.read(min(pos - self._pos, _CHUNK)):
                raise DataLoss("the archive is truncated")
        return self._pos


class HeaderProblem(Exception):
    pass


def strict_tarinfo_class():
    import tarfile

    class Strict(tarfile.TarInfo):
        """tarfile reads a bad or missing header as the end of the archive; a load must not."""

        @classmethod
        def frombuf(cls, buf, encoding, errors):
            if not buf:
                raise HeaderProblem("ends without the end-of-archive marker")
            try:
                return super().frombuf(buf, encoding, errors)
            except tarfile.EOFHeaderError:
                raise
            except tarfile.HeaderError as exc:
                raise HeaderProblem(str(exc)) from None

    return Strict
