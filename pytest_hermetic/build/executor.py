"""Running a parsed Containerfile: stages, steps, the cache, the final image.

Each RUN is a container of the image so far whose read-write layer becomes
the step's layer (the same layer writer as `commit`, with times clamped to
the build's epoch); COPY and ADD are containers too, running a Python
callable (`transfer.py`) that copies staged files inside the container's
root.  Metadata instructions only change the config.  Every step has a key
(`cache.chain`); a step that makes a layer is looked up in the cache first.
Nothing is tagged until the last step is done, and then all tags at once.
"""

from __future__ import annotations

import copy
import os
import time

from .._fs import rmtree
from .._record import record
from ..errors import BuildError, HermeticError, LayerError
from ..images.platforms import host as host_platform
from ..images.resolve import resolve_or_pull
from ..images.store import HOST_ENV, Image, Keep, Store
from ..spec import Volume
from . import cache, instructions, steps, transfer, words
from .image import State, default_tag, target_name, write_image
from .context import Context
from .parser import Instruction, Parsed

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable

KNOWN = {"FROM", "RUN", "COPY", "ADD", "ARG", *instructions.METADATA}
REFUSED = {
    "ONBUILD": "ONBUILD is not supported by hermetic build (triggers for images built on this one); "
               "put the steps in the Containerfile that needs them",
    "MAINTAINER": "MAINTAINER is deprecated; use LABEL org.opencontainers.image.authors=\"...\"",
}
_PROXIES = ("HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY")
PROXY_ARGS = {*_PROXIES, *(name.lower() for name in _PROXIES)}  # given to RUN without ARG, kept out of the cache key


@record
class Stage:
    number: int
    name: str | None
    start: Instruction  # its FROM
    steps: list


def predefined_args() -> dict[str, str]:
    """BuildKit's automatic platform arguments (this machine builds for itself)."""
    platform = host_platform()
    name = f"linux/{platform['architecture']}" + (f"/{platform['variant']}" if platform.get("variant") else "")
    values = {}
    for prefix in ("TARGET", "BUILD"):
        values.update({f"{prefix}PLATFORM": name, f"{prefix}OS": "linux", f"{prefix}ARCH": platform["architecture"],
                       f"{prefix}VARIANT": platform.get("variant") or ""})
    return values


class Builder:
    def __init__(self, store: Store, parsed: Parsed, source: str, context: Context, *,
                 build_args: dict[str, str], target: str | None, no_cache: bool, net: bool | str,
                 progress: Callable[[str], None], epoch: int) -> None:
        self.store, self.parsed, self.source, self.context = store, parsed, source, context
        self.build_args, self.no_cache, self.net, self.say, self.epoch = build_args, no_cache, net, progress, epoch
        self.escape = parsed.escape
        self.used_args: set[str] = set()
        self.keep: Keep | None = None
        self.global_args: dict[str, str | None] = {}
        self.stages: list[Stage] = []
        self.built: dict[int, State] = {}
        self._split()
        self.target = self._target(target)
        self.needed = self._needed(self.target)
        self.step_count = sum(1 + len(self.stages[n].steps) for n in self.needed)
        self.step_number = 0

    # -- the file as stages --------------------------------------------------------

    def _split(self) -> None:
        predefined = predefined_args()
        for ins in self.parsed.instructions:
            if ins.keyword in REFUSED:
                raise BuildError(f"{self.source}:{ins.line}: {REFUSED[ins.keyword]}")
            if ins.keyword not in KNOWN:
                raise BuildError(f"{self.source}:{ins.line}: unknown instruction {ins.keyword}; hermetic build knows "
                                 f"{', '.join(sorted(KNOWN))}")
            if ins.keyword == "FROM":
                parts = ins.text.split()
                name = None
                if len(parts) == 3 and parts[1].upper() == "AS":
                    name = parts[2].lower()
                elif len(parts) != 1:
                    raise BuildError(f"{self.source}:{ins.line}: FROM takes IMAGE [AS NAME], got {ins.text!r}")
                self.stages.append(Stage(len(self.stages), name, ins, []))
            elif not self.stages:
                if ins.keyword != "ARG":
                    raise BuildError(f"{self.source}:{ins.line}: {ins.keyword} before the first FROM; "
                                     "only ARG may come before it")
                for name, default in self._arg_pairs(ins, {**predefined, **self._scope_values(self.global_args)}):
                    self.global_args[name] = self.build_args.get(name, default)
                    if name in self.build_args:
                        self.used_args.add(name)
            else:
                self.stages[-1].steps.append(ins)
        if not self.stages:
            raise BuildError(f"{self.source}: no FROM instruction; a Containerfile starts with FROM IMAGE")

    def _target(self, target: str | None) -> int:
        if target is None:
            return len(self.stages) - 1
        for stage in self.stages:
            if stage.name == target.lower():
                return stage.number
        names = ", ".join(s.name for s in self.stages if s.name) or "none"
        raise BuildError(f"--target {target}: no stage of that name in {self.source} (stages named: {names})")

    def _needed(self, target: int) -> list[int]:
        """The stages `target` needs (FROM an earlier stage, COPY --from one), in file order:
        the others are not built, as BuildKit skips them."""
        scope = {**predefined_args(), **self._scope_values(self.global_args)}
        needed, todo = set(), [target]
        while todo:
            number = todo.pop()
            if number in needed:
                continue
            needed.add(number)
            stage = self.stages[number]
            refs = [words.expand(stage.start.text.split()[0], scope, self.escape)]
            refs += [ins.flags["from"] for ins in stage.steps if ins.keyword == "COPY" and "from" in ins.flags]
            for ref in refs:
                earlier = self._stage_by_ref(ref, number)
                if earlier is not None:
                    todo.append(earlier.number)
        return sorted(needed)

    def _stage_by_ref(self, text: str, before: int) -> Stage | None:
        for stage in self.stages[:before]:
            if stage.name == text.lower() or (text.isdigit() and int(text) == stage.number):
                return stage
        return None

    def _arg_pairs(self, ins: Instruction, scope: dict[str, str]) -> list[tuple[str, str | None]]:
        pairs = []
        for word in words.split(ins.text, scope, self.escape) if ins.text else []:
            name, sep, default = word.partition("=")
            if not name or not name.replace("_", "a").isalnum():
                raise BuildError(f"{self.source}:{ins.line}: ARG {word!r}: use ARG NAME or ARG NAME=DEFAULT")
            pairs.append((name, default if sep else None))
        if not pairs:
            raise BuildError(f"{self.source}:{ins.line}: ARG needs a name")
        return pairs

    @staticmethod
    def _scope_values(scope: dict[str, str | None]) -> dict[str, str]:
        return {k: v for k, v in scope.items() if v is not None}

    # -- running ---------------------------------------------------------------------

    def run(self, tags: list[str]) -> Image:
        """Build the target stage and tag the image (every tag, only at the end); the image."""
        for tag in tags:
            target_name(tag)  # a bad name fails before the build, not after it
        self.store.clear_dead_staging()
        with self.store.keeping("build") as keep:  # what the build made or found stays until it is tagged
            self.keep = keep
            for number in self.needed:
                state = self._stage(number)
            unused = sorted(set(self.build_args) - self.used_args - PROXY_ARGS)
            if unused:
                self.say(f"note: build arguments not used by any ARG: {', '.join(unused)}")
            return write_image(self.store, state, tags or [default_tag(cache.chain(state.key, state.config))],
                               self.epoch)

    def _stage(self, number: int) -> State:
        if number in self.built:
            return self.built[number]
        stage = self.stages[number]
        state = self._from(stage)
        scope: dict[str, str | None] = {}
        facts: dict = {}
        for ins in stage.steps:
            self.step_number += 1
            where = f"{self.source}:{ins.line}: {ins.keyword}"
            self.say(f"STEP {self.step_number}/{self.step_count}: {ins.original}")
            variables = {**self._scope_values(scope), **instructions.env_dict(state.config)}
            if ins.keyword == "ARG":
                for name, default in self._arg_pairs(ins, variables):
                    if name in self.build_args:
                        value: str | None = self.build_args[name]
                        self.used_args.add(name)
                    elif default is not None:
                        value = default
                    else:
                        value = self.global_args.get(name, predefined_args().get(name))
                    scope[name] = value
                self._history(state, ins, empty=True)
            elif ins.keyword in instructions.METADATA:
                instructions.apply(ins, state.config, variables, self.escape, where, facts)
                if ins.keyword == "WORKDIR":
                    facts["workdir"] = ins  # made by the next step that runs in it, or at the stage's end
                self._history(state, ins, empty=True)
            elif ins.keyword == "RUN":
                self._run(state, ins, scope, where)
                facts.pop("workdir", None)
            else:
                self._copy(state, ins, variables, where, stage)
                facts.pop("workdir", None)
        if "workdir" in facts:
            self._make_workdir(state, facts["workdir"])
        self.built[number] = state
        return state

    def _make_workdir(self, state: State, ins: Instruction) -> None:
        """A WORKDIR no later step ran in: its folder, as Docker makes it (a layer only if it was missing)."""
        key = cache.chain(state.key, "WORKDIR (made)", state.config.get("WorkingDir"))
        hit = self._lookup(key)
        if hit is None:
            where = f"{self.source}:{ins.line}: WORKDIR"
            diff_id = self._container_step(state, where, target=lambda: 0, user="0:0")
            self._record(key, diff_id, ins)
        else:
            diff_id = hit["diff_id"]
        state.key = key
        if diff_id != cache.EMPTY:
            state.layers.append(diff_id)
            state.history.append({"created": self.created, "created_by": f"{ins.original} # hermetic build: its folder"})

    def _from(self, stage: Stage) -> State:
        self.step_number += 1
        ins = stage.start
        self.say(f"STEP {self.step_number}/{self.step_count}: {ins.original}")
        where = f"{self.source}:{ins.line}: FROM"
        scope = {**predefined_args(), **self._scope_values(self.global_args)}
        text = words.expand(ins.text.split()[0], scope, self.escape)
        if "platform" in ins.flags and words.expand(ins.flags["platform"], scope, self.escape) not in (
                scope["TARGETPLATFORM"], "$TARGETPLATFORM", "$BUILDPLATFORM"):
            raise BuildError(f"{where}: --platform={ins.flags['platform']}: hermetic builds for this machine "
                             f"({scope['TARGETPLATFORM']}) only")
        earlier = self._stage_by_ref(text, stage.number)
        if earlier is not None:
            return copy.deepcopy(self._stage(earlier.number))
        if text.lower() == "scratch":
            return State(None, [], {"Env": list(HOST_ENV)}, [], cache.chain("scratch", self.epoch))
        if text == "host":
            return State("host", [], {"Env": list(HOST_ENV)}, [], cache.chain("host", self.epoch))
        image = self._image(text, where)
        config = copy.deepcopy(image.config)
        if "PATH" not in instructions.env_dict(config):  # as BuildKit: RUN needs a PATH, and the image gets it
            instructions.set_env(config, "PATH", HOST_ENV[0].split("=", 1)[1])
        return State(image.base, list(image.layers), config, self._base_history(image),
                     cache.chain("image", image.id, self.epoch))  # the epoch: what a step writes has its times

    def _image(self, text: str, where: str) -> Image:
        try:
            image = resolve_or_pull(self.store, text)
        except HermeticError as exc:
            raise BuildError(f"{where} {text}: {exc}") from None
        assert self.keep is not None
        if image.layers:
            self.keep.add(layers=image.layers, blobs=[image.id])
            missing = [d for d in image.layers if not self.store.has_layer(d)]
            if missing:
                raise BuildError(f"{where} {text}: layer {missing[0]} is missing from the store; pull it again")
        return image

    def _base_history(self, image: Image) -> list:
        try:
            return list(self.store.read_json(image.id).get("history") or [])
        except HermeticError:
            return []

    def _history(self, state: State, ins: Instruction, *, empty: bool) -> None:
        entry: dict = {"created": self.created, "created_by": f"{ins.original} # hermetic build"}
        if empty:
            entry["empty_layer"] = True
        state.history.append(entry)

    @property
    def created(self) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.epoch))

    # -- steps that make layers ---------------------------------------------------------

    def _lookup(self, key: str) -> dict | None:
        if self.no_cache:
            return None
        assert self.keep is not None
        return cache.lookup(self.store, key, self.keep)

    def _from_cache(self, state: State, ins: Instruction, key: str) -> bool:
        """Apply the cached layer of step `key` if there is one (say so); False: run the step."""
        hit = self._lookup(key)
        if hit is None:
            return False
        self.say("--> cached")
        self._apply(state, ins, key, hit["diff_id"])
        return True

    def _apply(self, state: State, ins: Instruction, key: str, diff_id: str) -> None:
        state.key = key
        if diff_id != cache.EMPTY:
            state.layers.append(diff_id)
        self._history(state, ins, empty=diff_id == cache.EMPTY)

    def _run(self, state: State, ins: Instruction, scope: dict[str, str | None], where: str) -> None:
        net = self.net
        for flag, value in ins.flags.items():
            if flag == "network" and value in ("none", "default"):
                net = False if value == "none" else self.net
            elif flag == "network":
                raise BuildError(f"{where}: --network={value}: use none or default (the build's --net)")
            else:
                raise BuildError(f"{where}: --{flag} is not supported by hermetic build (RUN takes --network=none)")
        argv = instructions.command(ins, state.config)
        args = self._scope_values(scope)
        key = cache.chain(state.key, "RUN", argv, sorted(args.items()), self._run_config(state))
        if self._from_cache(state, ins, key):
            return
        image_env = instructions.env_dict(state.config)
        env = {k: v for k, v in args.items() if k not in image_env}
        env.update({k: v for k, v in self.build_args.items() if k in PROXY_ARGS})
        diff_id = self._container_step(state, where, argv=argv, env=env, net=net, user=None)
        self._record(key, diff_id, ins)
        self._apply(state, ins, key, diff_id)

    @staticmethod
    def _run_config(state: State) -> list:
        """What of the config a RUN depends on (its command carries SHELL)."""
        return [state.config.get(field) for field in ("Env", "User", "WorkingDir")]

    def _copy(self, state: State, ins: Instruction, variables: dict[str, str], where: str, stage: Stage) -> None:
        kw = ins.keyword
        for flag in ins.flags:
            if flag not in ("from", "chown", "chmod", "link"):
                raise BuildError(f"{where}: --{flag} is not supported by hermetic build "
                                 "(COPY takes --from, --chown, --chmod, --link)")
        if "from" in ins.flags and kw == "ADD":
            raise BuildError(f"{where}: ADD has no --from; use COPY --from")
        args = list(ins.exec_form) if ins.exec_form is not None else words.split(ins.text, variables, self.escape)
        if len(args) < 2:
            raise BuildError(f"{where} needs a source and a destination")
        sources, dest = args[:-1], args[-1]
        chown = words.expand(ins.flags["chown"], variables, self.escape) if "chown" in ins.flags else None
        chmod = None
        if "chmod" in ins.flags:
            try:
                chmod = int(ins.flags["chmod"], 8)
                if not 0 <= chmod <= 0o7777:
                    raise ValueError
            except ValueError:
                raise BuildError(f"{where}: --chmod={ins.flags['chmod']}: use an octal mode such as 755") from None
        for source in sources:
            if kw == "ADD" and ("://" in source or source.startswith("git@")):
                raise BuildError(f"{where} {source}: ADD of a URL is not supported by hermetic build (the build has "
                                 "no network by default); download the file into the context and ADD or COPY it")
        put_args = (dest, chown, chmod, True, None, where)
        if "from" in ins.flags:
            self._copy_from(state, ins, sources, put_args, where, stage)
            return
        found = [s for text in sources for s in self.context.sources(text, where)]
        if (len(found) > 1 or len(sources) > 1) and not dest.endswith("/"):
            raise BuildError(f"{where}: {len(found)} sources need a folder as the destination, ending in '/': "
                             f"{dest}/")
        digest = self.context.digest(found)
        key = cache.chain(state.key, kw, sources, dest, chown, chmod, digest, state.config.get("WorkingDir"))
        if self._from_cache(state, ins, key):
            return
        staging = self.store.tempdir("build-")
        try:
            try:
                self.context.stage_all(found, staging, self.epoch, unpack=kw == "ADD",
                                       xattr_prefix=self.store.xattr_prefix)
            except LayerError as exc:  # ADD of a hostile or broken tar
                raise BuildError(f"{where}: {exc}") from None
            diff_id = self._container_step(state, where, target=lambda: transfer.put(*put_args), user="0:0",
                                           volumes=[Volume(staging, transfer.MOUNT, readonly=True)])
        finally:
            rmtree(staging)
        self._record(key, diff_id, ins)
        self._apply(state, ins, key, diff_id)

    def _copy_from(self, state: State, ins: Instruction, sources: list[str], put_args: tuple, where: str,
                   stage: Stage) -> None:
        name = ins.flags["from"]
        earlier = self._stage_by_ref(name, stage.number)
        if earlier is not None:
            source_state = self._stage(earlier.number)
        elif self._stage_by_ref(name, len(self.stages)) is not None:
            raise BuildError(f"{where}: --from={name} names a later stage; a stage can copy only from one before it")
        else:
            image = self._image(name, f"{where} --from=")
            source_state = State(image.base, list(image.layers), image.config, [], cache.chain("image", image.id))
        key = cache.chain(state.key, ins.keyword, ins.flags, sources, put_args[:3], source_state.key,
                          state.config.get("WorkingDir"))
        if self._from_cache(state, ins, key):
            return
        staging = self.store.tempdir("build-")
        try:
            self._container_step(source_state, where, target=lambda: transfer.export(sources, where), user="0:0",
                                 volumes=[Volume(staging, transfer.MOUNT)], commit=False)
            diff_id = self._container_step(state, where, target=lambda: transfer.put(*put_args), user="0:0",
                                           volumes=[Volume(staging, transfer.MOUNT, readonly=True)])
        finally:
            rmtree(staging)
        self._record(key, diff_id, ins)
        self._apply(state, ins, key, diff_id)

    def _record(self, key: str, diff_id: str, ins: Instruction) -> None:
        blob = "" if diff_id == cache.EMPTY else str(self.store.layer_meta(diff_id).get("blob", ""))
        cache.record(self.store, key, diff_id, blob, ins.original)

    def _container_step(self, state: State, where: str, **how: object) -> str:
        """Run one step's container on `state`; its layer's diff_id (or cache.EMPTY)."""
        image = Image(name="localhost/hermetic-build:step", id=state.key, layers=list(state.layers),
                      config=state.config, base=state.base)
        assert self.keep is not None
        return steps.run_step(self.store, self.keep, image, f"{where} (step {self.step_number}/{self.step_count})",
                              epoch=self.epoch, say=self.say, **how)  # type: ignore[arg-type]
