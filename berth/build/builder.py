"""Dockerfile -> image: stages, build args, the layer cache, and one step per instruction.

The builder follows Docker's classic builder step for step, so its output, its history
and where its cache hits are the ones a docker user knows:

* every instruction after FROM is a step that ends in an image (`` ---> <id>``): RUN,
  COPY and ADD add a layer (none when nothing changed), WORKDIR one when it creates the
  directory, every other instruction only a history entry marked ``empty_layer``;
* a step's image is looked up in the cache (berth.build.cache) before it is made: same
  parent image, same instruction after substitution, same build args for a RUN, same
  source contents for COPY/ADD;
* only the stages the target needs are built (as BuildKit does; the classic builder
  builds them all); ``--label`` adds LABEL steps to the target stage, as docker's does.

Intermediate images are stored as content (config and manifest blobs), not as image
records: ``berth images`` shows what was built, not every step. The whole build holds a
content lease, so no garbage collection takes a step's blobs before the build ends.
"""

from __future__ import annotations

import os

from berth.build import BuildOptions, Progress, metadata
from berth.build.cache import BuildCache, step_key
from berth.build.context import BuildContext, Source, Tree, sources
from berth.build.parser import Dockerfile, Instruction, Stage, parse, parse_instruction
from berth.build.shell import expand, expand_heredoc, expand_words
from berth.errors import BerthError, InvalidArgument, NotFound
from berth.image import Image, ImageStore, now_rfc3339
from berth.oci import image as oci
from berth.oci.record import replace

LABEL_FILE = "--label"  # the `file` of the LABEL steps --label adds: their words are literal


class _Stage:
    """A stage while it is being built: its image so far and its build args."""

    def __init__(self, stage: Stage, image: Image | None, config: oci.ImageConfig) -> None:
        self.stage = stage
        self.image = image  # the last image committed (or the base); None FROM scratch
        self.config = config  # the image config the next step starts from
        self.args: dict[str, str | None] = {}  # ARGs declared in this stage -> value
        self.cmd_set = False
        self.maintainer: str | None = None
        self._lowers: list[str] | None = None

    @property
    def cc(self) -> oci.ContainerConfig:
        return self.config.config

    @property
    def parent_id(self) -> str:
        return self.image.id if self.image is not None else "scratch"

    @property
    def layers(self) -> tuple[oci.Descriptor, ...]:
        return self.image.manifest.layers if self.image is not None else ()

    @property
    def top_chain(self) -> str | None:
        chains = self.image.chain_ids if self.image is not None else []
        return chains[-1] if chains else None

    def moved_to(self, image: Image) -> None:
        self.image = image
        self.config = image.config
        self._lowers = None


class Builder:
    def __init__(self, images: ImageStore, *, cgroup_parent: str, seccomp_cache: str,
                 workspace: str, options: BuildOptions, progress: Progress) -> None:
        self.images = images
        self.cgroup_parent = cgroup_parent
        self.seccomp_cache = seccomp_cache
        self.workspace = workspace
        self.options = options
        self.progress = progress
        self.cache = BuildCache(images.root)
        self.step = 0
        self.total = 0
        self.ctx: BuildContext | None = None
        self.df: Dockerfile | None = None
        self.meta: dict[str, str | None] = {}  # the global ARGs -> value
        self.meta_env: dict[str, str] = {}  # what FROM lines expand with
        self.consumed: set[str] = set()  # build args some ARG declared
        self.results: dict[int, _Stage] = {}
        self.pulled: dict[str, Image] = {}  # --pull: each image once per build
        self.sums = None

    # --- the build --------------------------------------------------------------------

    def build(self, ctx: BuildContext) -> Image:
        from berth.build.cache import FileSums

        self.ctx = ctx
        self.df = df = parse(ctx.dockerfile, ctx.dockerfile_name)
        for warning in df.warnings:
            self.progress.line(f"[WARNING]: {warning}")
        if ctx.temporary is None:
            import hashlib

            tag = hashlib.sha256(os.path.abspath(ctx.root).encode()).hexdigest()[:32]
            self.sums = FileSums(os.path.join(self.cache.dir, "sums", tag + ".json"))
        self.meta_env = dict(metadata.platform_args())
        for inst in df.meta_args:
            for key, default in inst.pairs:
                value = self._arg_value(key, default, self.meta_env, inst)
                self.meta[key] = value
                self.consumed.add(key)
                if value is not None:
                    self.meta_env[key] = value
        target = self._target()
        needed = df.needed(target, self._expand_meta)
        labels = [Instruction("LABEL", f"LABEL {k}={v}", 0, LABEL_FILE, pairs=((k, v),))
                  for k, v in sorted(self.options.labels.items())]
        self.total = len(df.meta_args) + len(labels) + sum(
            1 + len(s.instructions) for s in df.stages if s.index in needed)
        with self.images.lease():
            for inst in df.meta_args:
                self._step_line(inst)
            for stage in df.stages[:target.index + 1]:
                if stage.index not in needed:
                    continue
                st = self._from(stage)
                extra = labels if stage is target else []
                for inst in list(stage.instructions) + extra:
                    self._step_line(inst)
                    self._dispatch(st, inst)
                    self.progress.line(f" ---> {self._short(st)}")
                self.results[stage.index] = st
            final = self.results[target.index]
            if final.image is None:
                raise InvalidArgument("No image was generated. Is your Dockerfile empty? (a "
                                      "stage FROM scratch needs an instruction)")
            image = final.image
            self._warn_unused()
            names = self._record(image)
        if self.sums is not None:
            self.sums.save()
        self.progress.line(f"Successfully built {image.short_id}")
        for name in names:
            from berth.oci import reference

            self.progress.line(f"Successfully tagged {reference.parse(name).familiar()}")
        return image

    def _short(self, st: _Stage) -> str:
        return st.image.short_id if st.image is not None else ""

    def _step_line(self, inst: Instruction) -> None:
        self.step += 1
        self.progress.line(f"Step {self.step}/{self.total} : {inst.original}")

    def _target(self) -> Stage:
        df = self.df
        if not self.options.target:
            return df.stages[-1]
        for stage in df.stages:
            if stage.name == self.options.target.lower():
                return stage
        raise NotFound(f"failed to reach build target {self.options.target} in Dockerfile")

    def _expand_meta(self, text: str, inst: Instruction) -> str:
        try:
            return expand(text, self.meta_env, self.df.escape)
        except InvalidArgument as exc:
            raise inst.error(str(exc)) from None

    def _record(self, image: Image) -> list[str]:
        """Name the built image: each tag, or an untagged record when there is none."""
        names = []
        for tag in self.options.tags:
            from berth.oci import reference

            ref = reference.parse(tag)
            names.append(f"{ref.name}:{ref.tag}")
        existing = {}
        for desc in self.images.records():
            existing.setdefault(desc.digest, set()).add(
                (desc.annotations or {}).get(oci.ANNOTATION_REF_NAME))
        have = existing.get(image.manifest_digest, set())
        for name in names:
            if name not in have:  # an unchanged rebuild writes nothing
                self.images.add(image.manifest_digest, name)
        if not names and not have:
            self.images.add(image.manifest_digest, None)
        return names

    def _warn_unused(self) -> None:
        unused = sorted(k for k in self.options.build_args
                        if k not in self.consumed and k not in metadata.BUILTIN_ARGS)
        if unused:
            self.progress.line(f"[Warning] One or more build-args [{' '.join(unused)}] were not "
                               "consumed")

    # --- build args -------------------------------------------------------------------

    def _arg_value(self, key: str, default: str | None, env: dict, inst: Instruction,
                   inherited: dict | None = None) -> str | None:
        """--build-arg beats the Dockerfile's default; `ARG X` alone in a stage takes the
        global ARG X; a default is expanded when the ARG is reached."""
        overrides = self.options.build_args
        if key in overrides and overrides[key] is not None:
            return overrides[key]
        if default is not None:
            return self._expand(default, env, inst)
        if inherited is not None and inherited.get(key) is not None:
            return inherited[key]
        if key in metadata.platform_args():
            return metadata.platform_args()[key]
        return None

    def _env(self, st: _Stage) -> dict[str, str]:
        """What $VAR means in an instruction: the stage's build args, then its ENV."""
        env = {k: v for k, v in st.args.items() if v is not None}
        env.update(metadata.env_dict(st.cc.env))
        return env

    def _expand(self, text: str, env: dict, inst: Instruction) -> str:
        if inst.file == LABEL_FILE:
            return text
        try:
            return expand(text, env, self.df.escape)
        except InvalidArgument as exc:
            raise inst.error(str(exc)) from None

    # --- FROM -------------------------------------------------------------------------

    def _from(self, stage: Stage) -> _Stage:
        from berth.image.commit import _history_of

        inst = stage.source
        self._step_line(inst)
        base = self._expand_meta(stage.base, inst)
        self._check_platform(inst)
        prior = self.df.stage(base, stage.index) if not base.isdigit() else None
        if base.lower() == "scratch":
            host = oci.host_platform()
            config = oci.ImageConfig(architecture=host.architecture, os=host.os,
                                     variant=host.variant, rootfs=oci.RootFS(diff_ids=()))
            st = _Stage(stage, None, config)
        elif prior is not None:
            built = self.results[prior.index]
            st = _Stage(stage, built.image, built.config)
        else:
            image = self._base_image(base, inst)
            st = _Stage(stage, image, replace(image.config, history=_history_of(image)))
        st.config = replace(st.config, config=metadata.with_default_path(st.cc))
        triggers = tuple(st.cc.on_build)
        if triggers:
            st.config = replace(st.config, config=replace(st.cc, on_build=()))
            self.progress.line(f"# Executing {len(triggers)} build trigger"
                               + ("s" if len(triggers) > 1 else ""))
            for text in triggers:
                try:
                    trigger = parse_instruction(text, self.df.file, inst.line, self.df.escape)
                except InvalidArgument as exc:
                    raise inst.error(f"ONBUILD trigger {text!r} of the base image: {exc}") from None
                self._dispatch(st, trigger)
        self.progress.line(f" ---> {self._short(st)}" if st.image is not None else " ---> ")
        return st

    def _check_platform(self, inst: Instruction) -> None:
        wanted = inst.flag("platform") or self.options.platform
        if not wanted:
            return
        wanted = self._expand_meta(wanted, inst)
        host = metadata.platform_args()["TARGETPLATFORM"]
        parts = wanted.split("/")
        if parts[:2] != host.split("/")[:2]:
            raise inst.error(f"berth builds for this host's platform ({host}) only, not "
                             f"{wanted}")

    def _base_image(self, text: str, inst: Instruction) -> Image:
        """An image FROM or COPY --from names: the local one, or with --pull a fresh copy
        from its registry first."""
        if self.options.pull and text not in self.pulled:
            try:
                self.pulled[text] = self._pull(text, inst)
            except BerthError as exc:
                _locate(exc, inst)
                raise
        try:
            return self.images.resolve(text)
        except NotFound:
            from berth.oci import reference

            try:
                shown = reference.parse(text).familiar()
            except InvalidArgument:
                raise inst.error(f"invalid reference format: {text!r}") from None
            raise inst.error(f"Unable to find image '{shown}' locally; import, load or pull it "
                             "first (or build with --pull)") from None
        except InvalidArgument as exc:
            raise inst.error(str(exc)) from None

    def _pull(self, text: str, inst: Instruction):
        try:
            from berth.registry import Progress as Transfers
            from berth.registry.pull import pull
        except ImportError:
            raise inst.error("--pull: this berth has no registry client") from None
        quiet = self.progress.quiet
        return pull(self.images, text, progress=Transfers(None if quiet else self.progress.stream,
                                                          quiet=quiet)).image

    # --- steps ------------------------------------------------------------------------

    def _dispatch(self, st: _Stage, inst: Instruction) -> None:
        try:
            if inst.cmd == "RUN":
                self._run(st, inst)
            elif inst.cmd in ("COPY", "ADD"):
                self._copy(st, inst)
            elif inst.cmd == "WORKDIR":
                self._workdir(st, inst)
            elif inst.cmd == "ARG":
                self._arg(st, inst)
            else:
                self._metadata(st, inst)
        except BerthError as exc:
            _locate(exc, inst)
            raise

    def _cached(self, key: str) -> Image | None:
        if self.options.no_cache:
            return None
        digest = self.cache.get(key)
        if digest is None:
            return None
        content = self.images.content
        try:
            manifest = oci.Manifest.from_json(content.read(digest))
            config = oci.ImageConfig.from_json(content.read(manifest.config.digest))
        except (BerthError, ValueError, TypeError, KeyError):
            return None
        if not all(content.exists(layer.digest) for layer in manifest.layers):
            return None
        return Image(manifest.config.digest, digest, manifest, config, ())

    def _hit(self, st: _Stage, key: str) -> bool:
        image = self._cached(key)
        if image is None:
            return False
        self.progress.line(" ---> Using cache")
        st.moved_to(image)
        return True

    def _commit(self, st: _Stage, key: str, cc: oci.ContainerConfig, created_by: str,
                layer: oci.Descriptor | None = None) -> None:
        """The step's image: the stage's config with `cc`, one more history entry and
        `layer` (None: an empty layer, history only); stored, cached, and the stage moves
        on to it."""
        created = now_rfc3339()
        entry = oci.History(created=created, created_by=created_by, author=st.maintainer,
                            empty_layer=None if layer is not None else True)
        diff_ids = tuple(st.config.rootfs.diff_ids) + ((layer.digest,) if layer else ())
        layers = tuple(st.layers) + ((layer,) if layer else ())
        config = replace(st.config, created=created, author=st.maintainer or st.config.author,
                         config=cc, rootfs=oci.RootFS(diff_ids=diff_ids),
                         history=tuple(st.config.history) + (entry,))
        raw = config.to_json()
        content = self.images.content
        config_digest = content.put(raw)
        manifest = oci.Manifest(config=oci.Descriptor(oci.OCI_CONFIG, config_digest, len(raw)),
                                layers=layers)
        manifest_digest = content.put(manifest.to_json())
        st.moved_to(Image(config_digest, manifest_digest, manifest, config, ()))
        self.cache.put(key, manifest_digest)

    def _lowers(self, st: _Stage) -> list[str]:
        if st.image is None or not st.layers:
            return []
        if st._lowers is None:
            st._lowers = self.images.ensure_unpacked(st.image)
        return st._lowers

    # --- ARG and the metadata instructions

    def _arg(self, st: _Stage, inst: Instruction) -> None:
        env = self._env(st)
        shown = []
        for key, default in inst.pairs:
            value = self._arg_value(key, default, env, inst, inherited=self.meta)
            st.args[key] = value
            self.consumed.add(key)
            if default is not None:
                shown.append(f"{key}={self._expand(default, env, inst)}")
            else:
                shown.append(key)
        created = metadata.created_by(st.cc, "ARG " + " ".join(shown))
        key = step_key(st.parent_id, created)
        if not self._hit(st, key):
            self._commit(st, key, st.cc, created)

    def _metadata(self, st: _Stage, inst: Instruction) -> None:
        env = self._env(st)
        cmd = inst.cmd
        args: tuple[str, ...] = inst.args
        pairs = inst.pairs
        if cmd in ("ENV", "LABEL"):
            pairs = tuple((self._expand(k, env, inst), self._expand(v, env, inst))
                          for k, v in pairs)
            if any(not k for k, _v in pairs):
                raise inst.error(f"{cmd} names can not be blank")
        elif cmd == "EXPOSE":
            words = []
            for word in args:
                try:
                    words += expand_words(word, env, self.df.escape)
                except InvalidArgument as exc:
                    raise inst.error(str(exc)) from None
            args = tuple(words)
        elif cmd in ("VOLUME", "USER", "STOPSIGNAL"):
            args = tuple(self._expand(a, env, inst) for a in args)
        applied = metadata.apply(st.cc, cmd, args=args, pairs=pairs, exec_form=inst.exec_form,
                                 flags=inst.flags, cmd_set=st.cmd_set)
        if applied.cmd_set:
            st.cmd_set = True
        if cmd == "MAINTAINER":
            st.maintainer = args[0]
        created = metadata.created_by(st.cc, applied.comment)
        key = step_key(st.parent_id, created)
        if not self._hit(st, key):
            self._commit(st, key, applied.config, created)

    # --- WORKDIR

    def _workdir(self, st: _Stage, inst: Instruction) -> None:
        import posixpath

        path = self._expand(inst.args[0], self._env(st), inst)
        if not path:
            raise inst.error("cannot normalize nothing")
        if not path.startswith("/"):
            path = posixpath.join("/", st.cc.working_dir or "/", path)
        path = posixpath.normpath(path)
        if path.startswith("//"):
            path = path[1:]
        created = metadata.created_by(st.cc, f"WORKDIR {path}", one_space=True)
        key = step_key(st.parent_id, created)
        if self._hit(st, key):
            return
        layer = self._file_layer(st, lambda stager: stager.workdir(path))
        self._commit(st, key, replace(st.cc, working_dir=path), created, layer)

    # --- COPY and ADD

    def _copy(self, st: _Stage, inst: Instruction) -> None:
        from berth.build.cache import source_hash
        from berth.build.context import is_remote
        from berth.build.files import chown_ids, copy_sources, parse_chmod
        from berth.build.parser import parse_heredoc

        cmd = inst.cmd
        env = self._env(st)
        for flag in ("parents", "exclude", "checksum", "keep-git-dir"):
            if inst.flag_list(flag):
                raise inst.error(f"{cmd} --{flag} is not supported by berth build")
        words = [self._expand(a, env, inst) for a in inst.args]
        dest_text = words[-1]
        docs = iter(inst.heredocs)
        tree = self._source_tree(st, inst, env)
        srcs: list[Source] = []
        for raw, word in zip(inst.args[:-1], words[:-1]):
            if not inst.exec_form and inst.heredocs and parse_heredoc(raw, self.df.escape):
                doc = next(docs)
                text = expand_heredoc(doc.content, env) if doc.expand else doc.content
                srcs.append(Source(None, [], doc.name, None, text.encode()))
                continue
            if is_remote(word):
                if cmd == "COPY":
                    raise inst.error(f"COPY failed: source can't be a URL for COPY: {word}")
                raise inst.error(f"ADD {word}: berth builds have no network; download the file "
                                 "into the build context and COPY it")
            srcs += sources(tree, word, cmd)
        if not srcs:
            raise inst.error(f"{cmd} failed: no source files were specified")
        if len(srcs) > 1 and not dest_text.endswith("/"):
            raise inst.error(f"When using {cmd} with more than one source file, the destination "
                             "must be a directory and end with a /")
        dest = dest_text
        if not dest.startswith("/"):
            import posixpath

            dest = posixpath.join("/", st.cc.working_dir or "/", dest)
            dest = posixpath.normpath(dest) + ("/" if dest_text.endswith("/") else "")
        chown = inst.flag("chown")
        if chown:
            chown = self._expand(chown, env, inst)
        chmod = inst.flag("chmod")
        mode = parse_chmod(chmod) if chmod else None
        digest = source_hash(srcs, self.sums if tree is self.ctx.tree else None)
        options = "".join(f"--{k}={v} " for k, v in (("chown", chown), ("chmod", chmod)) if v)
        comment = f"{cmd} {options}{digest} in {dest_text} "
        created = metadata.created_by(st.cc, comment, one_space=True)
        key = step_key(st.parent_id, created)
        if self._hit(st, key):
            return
        owner = chown_ids(chown, self._lowers(st)) if chown else None
        layer = self._file_layer(
            st, lambda stager: copy_sources(stager, srcs, dest, decompress=cmd == "ADD"),
            owner=owner, chmod=mode)
        self._commit(st, key, st.cc, created, layer)

    def _file_layer(self, st: _Stage, fill, owner=None, chmod=None) -> oci.Descriptor | None:
        from berth.build.files import file_layer

        return file_layer(self.images, self._lowers(st), st.top_chain, fill, owner, chmod)

    def _source_tree(self, st: _Stage, inst: Instruction, env: dict) -> Tree:
        """Where COPY takes its files: the context, or --from's stage or image."""
        ref = inst.flag("from")
        if not ref:
            return self.ctx.tree
        ref = self._expand(ref, env, inst)
        stage = self.df.stage(ref)
        if stage is None:
            image = self._base_image(ref, inst)
            return Tree(self.images.ensure_unpacked(image), label=f"image {ref}")
        built = self.results.get(stage.index)
        if stage.index >= st.stage.index or built is None:
            raise inst.error(f"COPY --from={ref}: a stage can only copy from a stage before it")
        return Tree(self._lowers(built), label=f"stage {ref}")

    # --- RUN

    def _run(self, st: _Stage, inst: Instruction) -> None:
        from berth.build.run import RunFailed, Sandbox, arg_env, command, import_upper
        from berth.container.spec import BindSpec

        if inst.flag_list("mount") or inst.flag("security"):
            raise inst.error("RUN --mount and --security are BuildKit features berth build does "
                             "not have")
        network = inst.flag("network") or self.options.network
        if network not in ("default", "none", "host"):
            raise inst.error(f"RUN --network={network}: use default, none or host")
        args, binds, script = command(st.cc, inst, self.workspace, self.df.escape)
        env, shown = arg_env(st.args, self.options.build_args, st.cc)
        created = " ".join(args)
        if shown is not None:
            created = " ".join([f"|{len(shown)}", *shown, created])
        key = step_key(st.parent_id, created, "network=" + network, script)
        if self._hit(st, key):
            return
        sandbox = Sandbox(self.workspace)
        self.progress.line(f" ---> Running in {sandbox.id[:12]}")
        try:
            lowers = self._lowers(st)
            code = sandbox.run(lowers=lowers, config=st.cc, args=args, env=env, network=network,
                               cgroup_parent=self.cgroup_parent, seccomp_cache=self.seccomp_cache,
                               output=self.progress.output,
                               binds=tuple(BindSpec(path, dest, readonly=True)
                                           for path, dest in binds))
            if code != 0:
                raise RunFailed(f"The command '{' '.join(args)}' returned a non-zero code: {code}",
                                code)
            result = import_upper(self.images, sandbox.upper, lowers, st.top_chain)
        finally:
            sandbox.close()
            for path, _dest in binds:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
        self.progress.line(f"Removing intermediate container {sandbox.id[:12]}")
        layer = result[0] if result is not None else None
        self._commit(st, key, st.cc, created, layer)


def _locate(exc: BerthError, inst: Instruction) -> None:
    """Prefix an error with FILE:LINE, once; a failed RUN keeps Docker's own message."""
    from berth.build.parser import ParseError
    from berth.build.run import RunFailed

    if isinstance(exc, (ParseError, RunFailed)) or getattr(exc, "located", False):
        return
    message = str(exc)
    prefix = f"{inst.file}:{inst.line}: "
    if inst.file == LABEL_FILE or message.startswith(prefix):
        return
    exc.args = (prefix + message,) + exc.args[1:]
    exc.located = True
