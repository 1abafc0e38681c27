"""`berth pull`, and the pull `run`/`create` make of a missing image (``ensure_image``).

    reference -> manifest (or index -> the platform's manifest) -> config -> layers
              -> config, manifest, index stored -> the name recorded, last

Everything received is checked before it enters the store: documents against their
digests (and the registry's Docker-Content-Digest), layers against their digests and
sizes and, once unpacked, against the config's DiffIDs. A layer is downloaded and
unpacked in one pass: its bytes go to ``content/ingest/sha256-<hex>.partial`` and its hash
as they flow into the unpacker, which extracts into a temporary snapshot; the blob is
renamed into ``blobs/`` only once its digest is right and the snapshot only once its
DiffID is, so a failure at any point leaves no visible blob, snapshot or record. Up to
three layers transfer at once (Docker's default), each in a thread of its own.

A connection lost mid-layer is resumed with a Range request (the bytes already received
stay in the partial file); a server that ignores Range has the received bytes skipped.
After five failed reconnections the pull stops with one line, keeping the partial file, so
the next pull of that layer, even by another process, resumes where this one stopped. A
partial file is locked while it grows, so two pulls never write the same one.

Index records: pulling for this host's platform records the name on the index itself
(berth.image resolves an index to this host's manifest, and a later push can send the
whole index if every platform is present); a pull for another platform (``--platform``)
records the platform's manifest, since an index record would stand for the host's.
"""

from __future__ import annotations

import fcntl
import os
import threading

from berth.errors import (BerthError, DataLoss, FailedPrecondition, InvalidArgument, NotFound,
                          Unavailable)
from berth.fsutil import WRITEBACK_STEP
from berth.image import Image
from berth.oci import image as oci
from berth.oci import reference as _ref
from berth.oci.record import Record
from berth.registry import PARALLEL, Cancelled, Progress, connect, run_parallel
from berth.registry.reference import (Resolved, matches, parse_platform, parse_reference,
                                      platform_text, resolve)

RETRIES = 5  # reconnections in a row without a byte before a layer download gives up
READ = 1 << 18  # bytes asked of the network per read
POLICIES = ("missing", "always", "never")


class PullResult(Record):
    image: Image
    digest: str  # of the document the name was pulled by (index or manifest)
    updated: bool  # whether the name points somewhere new


# --- the pull -------------------------------------------------------------------------


def pull(images, ref_text: str, *, platform: str | None = None, progress: Progress | None = None,
         cfg=None, say_default_tag: bool = True) -> PullResult:
    """Pull `ref_text` into `images` (an ImageStore); print Docker's progress to `progress`."""
    from berth.registry import config as _config
    from berth.registry.client import Transport

    ref = parse_reference(ref_text)
    progress = progress or Progress(None, quiet=True)
    want = parse_platform(platform)
    explicit = want is not None
    want = want or oci.host_platform()
    cfg = cfg or _config.load(images.root)
    if say_default_tag and "@" not in ref_text and ":" not in ref_text.rpartition("/")[2]:
        progress.message(f"Using default tag: {ref.tag}")  # `pull` says it; `run` does not
    transport = Transport()
    try:
        reg, resolved = _first_serving(cfg, ref.registry, transport,
                                       lambda reg: resolve(reg, ref, want, explicit))
        return _fetch(images, reg, ref, resolved, want, explicit, progress)
    finally:
        transport.close()


def _first_serving(cfg, registry: str, transport, attempt):
    """(endpoint's client, attempt(client)) of the first of the registry's mirrors, then
    the registry itself, that answers: a mirror that cannot serve hands over to the next."""
    endpoints = cfg.pull_endpoints(registry)
    for n, endpoint in enumerate(endpoints):
        reg = connect(cfg, endpoint, transport)
        try:
            return reg, attempt(reg)
        except (Unavailable, NotFound, FailedPrecondition, DataLoss, InvalidArgument):
            if n == len(endpoints) - 1:
                raise
    raise AssertionError("a registry has at least its own endpoint")


def pull_all_tags(images, ref_text: str, *, platform: str | None = None,
                  progress: Progress | None = None) -> list[PullResult]:
    """`pull --all-tags`: every tag the registry lists for the repository."""
    from berth.registry import config as _config
    from berth.registry.client import Transport

    ref = _ref.parse(ref_text, default_tag=False)
    if ref.tag or ref.digest:
        raise InvalidArgument(f"tag can't be used with --all-tags/-a: {ref_text}")
    cfg = _config.load(images.root)
    transport = Transport()
    try:
        _reg, tags = _first_serving(cfg, ref.registry, transport,
                                    lambda reg: reg.tags(ref.repository))
    finally:
        transport.close()
    if not tags:
        raise NotFound(f"{ref.familiar_name} has no tags")
    return [pull(images, f"{ref.name}:{tag}", platform=platform, progress=progress, cfg=cfg)
            for tag in sorted(tags)]


def _fetch(images, reg, ref, resolved: Resolved, want, explicit, progress) -> PullResult:
    config, manifest = resolved.config, resolved.manifest
    actual = oci.Platform(architecture=config.architecture, os=config.os, variant=config.variant)
    if not matches(actual, oci.Platform(architecture=want.architecture, os=want.os)):
        if explicit:
            raise FailedPrecondition(
                f"image with reference {ref.familiar()} was found but does not match the "
                f"specified platform: wanted {platform_text(want)}, actual: {platform_text(actual)}")
        progress.message(f"WARNING: The requested image's platform ({platform_text(actual)}) "
                         f"does not match the detected host platform ({platform_text(want)})")
    host = oci.host_platform()
    on_host = resolved.index is None or matches(host, want) and matches(want, host)
    record = resolved.digest if on_host else resolved.manifest_digest
    name = f"{ref.name}:{ref.tag}" if ref.tag and not ref.digest else None
    # what the name (or, for a digest reference, any record) pointed at before
    before = {d.digest for d in images.records()
              if name is None or (d.annotations or {}).get(oci.ANNOTATION_REF_NAME) == name}
    progress.message(f"{ref.digest or ref.tag}: Pulling from {ref.repository}")
    chains = _chain_ids(config.rootfs.diff_ids)
    store = images.content
    up_to_date = record in before and all(
        store.exists(layer.digest) and images.snapshots.exists(chain)
        for layer, chain in zip(manifest.layers, chains))
    with images.lease():
        if not up_to_date:
            _layers(images, reg, ref.repository, manifest, config, chains, progress)
        documents = [(resolved.config_raw, manifest.config.digest),
                     (resolved.manifest_raw, resolved.manifest_digest)]
        if record == resolved.digest and resolved.index is not None:
            documents.append((resolved.raw, resolved.digest))
        for raw, digest in documents:
            if not store.exists(digest):
                store.put(raw, digest)
        images.add(record, name)
    updated = record not in before
    progress.message(f"Digest: {resolved.digest}")
    shown = ref.familiar()
    progress.message(f"Status: {'Downloaded newer image' if updated else 'Image is up to date'} "
                     f"for {shown}")
    image = Image(manifest.config.digest, record, manifest, config, (name,) if name else ())
    return PullResult(image, resolved.digest, updated)


def _chain_ids(diff_ids) -> list[str]:
    from berth.oci import digest as _digest

    return _digest.chain_ids([_digest.validate(d) for d in diff_ids])


def _layers(images, reg, repo, manifest, config, chains, progress) -> None:
    """Fetch and unpack every layer not already in the store, PARALLEL at a time."""
    cancel = threading.Event()
    tasks = []
    for i, (layer, diff_id, chain) in enumerate(zip(manifest.layers, config.rootfs.diff_ids,
                                                    chains)):
        short = layer.digest.partition(":")[2][:12]
        have_blob = images.content.exists(layer.digest)
        if have_blob and images.snapshots.exists(chain):
            progress.status(short, "Already exists")
            continue
        progress.status(short, "Pulling fs layer")
        tasks.append(_LayerTask(images, reg, repo, layer, diff_id, chain,
                                chains[i - 1] if i else None, short, progress, cancel))
    # largest first: a big layer started last would finish alone, on one core
    tasks.sort(key=lambda t: -t.layer.size)
    run_parallel(tasks, PARALLEL, cancel)


class _LayerTask:
    def __init__(self, images, reg, repo, layer, diff_id, chain, parent, short, progress,
                 cancel) -> None:
        self.images, self.reg, self.repo = images, reg, repo
        self.layer, self.diff_id, self.chain, self.parent = layer, diff_id, chain, parent
        self.short, self.progress, self.cancel = short, progress, cancel

    def __call__(self) -> None:
        store, snaps = self.images.content, self.images.snapshots
        unpack = not snaps.exists(self.chain)
        ingest = None if store.exists(self.layer.digest) else _Ingest.open(store, self.layer)
        if ingest is None:  # stored (maybe by a concurrent pull): unpack the local blob
            if unpack:
                self.progress.status(self.short, "Extracting")
                with store.open(self.layer.digest) as f:
                    self._unpack(f, None)
            self.progress.status(self.short, "Pull complete")
            return
        stream = _BlobStream(ingest, self)
        try:
            if unpack:
                self._unpack(stream, ingest)
            else:  # unpacked already (from another encoding of the layer): check, store
                from berth.layer import open_decompressed

                diff_id = _verified(lambda: _tar_digest(open_decompressed(stream)), stream, ingest)
                self._check_diff_id(diff_id)
                ingest.commit()
        except BaseException as exc:
            keep = isinstance(exc, (Unavailable, Cancelled, KeyboardInterrupt))
            ingest.close(keep=keep)
            raise
        self.progress.status(self.short, "Download complete")
        self.progress.status(self.short, "Pull complete")

    def _unpack(self, source, ingest) -> None:
        from berth.layer import apply_layer, open_decompressed

        snaps = self.images.snapshots
        tmp = snaps.prepare()
        try:
            fs = os.path.join(tmp, "fs")
            if ingest is None:
                result = apply_layer(open_decompressed(source), fs)
            else:
                result = _verified(lambda: apply_layer(open_decompressed(source), fs), source,
                                   ingest)
            self._check_diff_id(result.diff_id)
            snaps.commit(tmp, self.chain, self.diff_id, self.parent, result.size)
        except BaseException:
            snaps.abort(tmp)
            raise
        if ingest is not None:
            # after the snapshot: its syncfs has flushed the blob too, so the blob's own
            # fsync finds little left (measured: one flush of each layer instead of two)
            ingest.commit()

    def _check_diff_id(self, diff_id: str) -> None:
        if diff_id != self.diff_id:
            raise DataLoss(f"layer {self.layer.digest} unpacks to {diff_id}, but the image "
                           f"config says {self.diff_id}; nothing was stored")


def _verified(consume, stream: "_BlobStream", ingest: "_Ingest"):
    """consume() the stream, then check the blob's digest. A blob that does not decode is
    checked first too: when its bytes are not the manifest's, that is the error to report,
    not what they did to the decoder."""
    try:
        out = consume()
    except (DataLoss, InvalidArgument):
        stream.finish()
        ingest.verify()
        raise
    stream.finish()
    ingest.verify()
    return out


def _tar_digest(stream) -> str:
    import hashlib

    h = hashlib.sha256()
    while data := stream.read(1 << 20):
        h.update(data)
    return "sha256:" + h.hexdigest()


# --- one blob's bytes: resumable, verified ----------------------------------------------


class _Ingest:
    """A blob being written to ``ingest/sha256-<hex>.partial``: kept across runs so a
    download resumes, flock-ed so two downloads never write one file, hashed as it grows,
    and renamed into ``blobs/`` by commit() only when size and digest are right."""

    def __init__(self, store, desc, fd: int, path: str) -> None:
        import hashlib

        self.store, self.desc, self.fd, self.path = store, desc, fd, path
        self.hash = hashlib.sha256()
        self.existing = os.fstat(fd).st_size  # bytes a previous download left
        if self.existing > desc.size:
            os.ftruncate(fd, 0)
            self.existing = 0
        self.hashed = 0
        self.kicked = 0  # the blob's bytes handed to the disk so far (see write)

    @classmethod
    def open(cls, store, desc) -> "_Ingest | None":
        """The locked partial file for `desc`, or None once the blob is stored."""
        store.ensure()
        path = os.path.join(store.ingest_dir, f"sha256-{desc.digest.partition(':')[2]}.partial")
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    current = os.stat(path).st_ino
                except FileNotFoundError:
                    current = None
                if current != os.fstat(fd).st_ino:  # committed or removed while we waited
                    os.close(fd)
                    if store.exists(desc.digest):
                        return None
                    continue
                if store.exists(desc.digest):
                    os.close(fd)
                    return None
                return cls(store, desc, fd, path)
            except BaseException:
                try:
                    os.close(fd)
                except OSError:
                    pass
                raise

    def replay(self, n: int) -> bytes:
        """The next `n` bytes of what earlier downloads left, hashed on the way."""
        data = os.pread(self.fd, n, self.hashed)
        if len(data) != n:
            raise DataLoss(f"partial download {self.path} shrank while in use")
        self.hash.update(data)
        self.hashed += n
        return data

    def write(self, data) -> None:
        self.hash.update(data)
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view):]
            if self.hashed + len(data) - self.kicked >= WRITEBACK_STEP:
                # the blob's bytes start for the disk now: its fsync later waits less
                from berth.linux import syscalls

                syscalls().start_writeback(self.fd, self.kicked, self.hashed + len(data) -
                                           self.kicked)
                self.kicked = self.hashed + len(data)
        except OSError as exc:
            raise FailedPrecondition(f"writing layer {self.desc.digest}: {exc.strerror} "
                                     f"({self.store.ingest_dir})") from exc
        self.hashed += len(data)

    def verify(self) -> None:
        actual = "sha256:" + self.hash.hexdigest()
        if self.hashed != self.desc.size or actual != self.desc.digest:
            raise DataLoss(f"layer {self.desc.digest} does not match its digest: received "
                           f"{self.hashed} of {self.desc.size} bytes hashing to {actual}; "
                           "nothing was stored")

    def commit(self) -> None:
        self.verify()
        try:
            os.fsync(self.fd)
            os.replace(self.path, self.store.path(self.desc.digest))
            self.store.sync_dir()
        except OSError as exc:
            raise FailedPrecondition(f"storing layer {self.desc.digest}: {exc.strerror}") from exc
        finally:
            os.close(self.fd)
            self.fd = -1

    def close(self, keep: bool) -> None:
        """Give the partial file up: kept for a later resume, or removed (it is bad)."""
        if self.fd < 0:
            return
        if not keep:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        os.close(self.fd)
        self.fd = -1


class _BlobStream:
    """A layer's bytes for the unpacker: first what a previous download left in the partial
    file, then the network's, which also go to the partial file. A lost connection is
    resumed with a Range request, transparently for the reader."""

    def __init__(self, ingest: _Ingest, task: _LayerTask) -> None:
        self.ingest = ingest
        self.task = task
        self.size = task.layer.size
        self.offset = 0  # bytes handed to the reader
        self._resp = None
        self._failures = 0

    def read(self, n: int = -1) -> bytes:
        if self.task.cancel.is_set():
            self._close_response()
            raise Cancelled()
        left = self.size - self.offset
        if left <= 0:
            self._close_response()
            return b""
        n = left if n is None or n < 0 else min(n, left)
        if self.offset < self.ingest.existing:
            data = self.ingest.replay(min(n, self.ingest.existing - self.offset))
        else:
            data = self._network(min(n, READ))
            self.ingest.write(data)
        self.offset += len(data)
        self.task.progress.bytes(self.task.short, "Downloading", self.offset, self.size)
        return data

    def readinto(self, buf) -> int:
        data = self.read(len(buf))
        buf[:len(data)] = data
        return len(data)

    def finish(self) -> None:
        """Read whatever the unpacker left (padding after the tar's end) into the ingest."""
        while self.read(READ * 4):
            pass

    def _network(self, n: int) -> bytes:
        while True:
            if self._resp is None:
                self._resp = self._open()
            try:
                data = self._resp.read(n)
            except Unavailable as exc:
                self._lost(exc)
                continue
            if data:
                self._failures = 0
                return data
            if self._resp.complete:
                self._close_response()
                raise DataLoss(f"layer {self.task.layer.digest}: {self.task.reg.host} sent "
                               f"{self.offset} bytes, the manifest says {self.size}; nothing "
                               "was stored")
            self._lost(Unavailable(f"{self.task.reg.host}: the connection closed early"))

    def _open(self):
        while True:
            try:
                resp = self.task.reg.open_blob(self.task.repo, self.task.layer.digest, self.offset)
            except Unavailable as exc:
                self._lost(exc)
                continue
            skip = self.offset
            if resp.status == 206:
                start = (resp.header("Content-Range") or "").partition(" ")[2].partition("-")[0]
                if start.isdigit() and int(start) == self.offset:
                    return resp
            # a whole body instead of the range: skip what we already have
            while skip:
                chunk = resp.read(min(skip, 1 << 20))
                if not chunk:
                    resp.close()
                    raise Unavailable(f"{self.task.reg.host}: a resumed download of "
                                      f"{self.task.layer.digest} ended early")
                skip -= len(chunk)
            return resp

    def _lost(self, exc: BerthError) -> None:
        self._close_response()
        self._failures += 1
        if self._failures > RETRIES:
            raise Unavailable(f"downloading layer {self.task.layer.digest} from "
                              f"{self.task.reg.host} failed after {RETRIES} retries at "
                              f"{self.offset} of {self.size} bytes ({exc}); run the pull again "
                              "to resume it") from exc
        delay = min(0.25 * 2 ** (self._failures - 1), 4.0)
        self.task.progress.status(self.task.short, f"Retrying in {delay:g} seconds")
        if self.task.cancel.wait(delay):
            raise Cancelled()

    def _close_response(self) -> None:
        if self._resp is not None:
            self._resp.close()
            self._resp = None


# --- auto-pull for run and create -------------------------------------------------------


def ensure_image(images, ref_text: str, policy: str, out, *, platform: str | None = None,
                 quiet: bool = False) -> Image:
    """The image `ref_text` names, pulled first as `policy` says (Docker's --pull):
    "missing" pulls only when it is not in the store, "always" pulls every time (cheap when
    up to date: one manifest request), "never" only looks in the store. Progress, and
    Docker's "Unable to find image ... locally", go to `out` (stderr for run)."""
    if policy not in POLICIES:
        raise InvalidArgument(f'invalid pull option: "{policy}": must be one of "always", '
                              '"missing" or "never"')
    if policy != "always":
        try:
            return images.resolve(ref_text)
        except NotFound:
            if policy == "never" or _ref.looks_like_id(ref_text):
                raise NotFound(f"No such image: {_shown(ref_text)}") from None
        out.write(f"Unable to find image '{_shown(ref_text)}' locally\n")
        out.flush()
    return pull(images, ref_text, platform=platform, progress=Progress(out, quiet=quiet),
                say_default_tag=False).image


def _shown(text: str) -> str:
    try:
        return _ref.parse(text).familiar()
    except InvalidArgument:
        return text
