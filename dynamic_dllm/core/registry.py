"""The plugin manager and the registry of policies, model adapters and named checkpoints.

Built-in plugins are registered exactly like third-party ones (they implement the registration
hooks). Third-party packages are found through the entry-point group ``dynamic_dllm``; the
environment variable ``DYNAMIC_DLLM_PLUGINS`` restricts which of them load: a comma-separated
list of entry-point names, or the empty string for none. Built-ins always load.

Registration is strict: a name registered twice (within one kind) is an error naming both
plugins — a plugin cannot silently replace a built-in; a plugin implementing a hook name that
does not exist (a typo) is an error when plugins load. Presets are :class:`Alias` entries: a spec
string whose parameters are mapped onto its parts (``dynamic-dllm-cache:budget=16`` →
``dcu:budget=16+window``).
"""

from __future__ import annotations

import inspect
import os
from typing import Callable, Optional

import attrs
import pluggy

from . import hookspecs
from .spec import parse_spec

ENV_PLUGINS = "DYNAMIC_DLLM_PLUGINS"
ENTRY_POINT_GROUP = "dynamic_dllm"
BUILTIN_PLUGINS = (
    "dynamic_dllm.models.builtin",
    "dynamic_dllm.policies.builtin",
)


@attrs.frozen
class Entry:
    """One registered thing: its name, what kind it is, the plugin that provided it, a one-line
    summary, and the object itself (a policy factory, an adapter class, or a locate function)."""

    name: str
    kind: str
    plugin: str
    summary: str
    obj: object = attrs.field(eq=False)


@attrs.frozen
class Alias:
    """A preset: ``spec`` (e.g. ``"dcu+window"``) with its own parameters, each mapped onto one
    part's parameter as ``"part.param"`` (``params={"budget": "dcu.budget", "window": "window.size"}``)."""

    spec: str
    params: dict = attrs.field(factory=dict)
    summary: str = ""

    def expand(self, given: dict) -> list[tuple[str, dict]]:
        """The ``(name, params)`` parts with ``given`` (the alias's own parameters) routed in."""
        parts = [(name, dict(p)) for name, p in parse_spec(self.spec)]
        for key, value in given.items():
            part, _, param = self.params[key].partition(".")
            for name, p in parts:
                if name == part:
                    p[param] = value
        return parts


class Registry:
    """Looks things up by name across all loaded plugins (recomputed when plugins change)."""

    def __init__(self, pm: pluggy.PluginManager):
        self.pm = pm

    def _collect(self, hook_name: str, kind: str) -> dict[str, Entry]:
        found: dict[str, Entry] = {}
        for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
            def register(name, obj, summary=None, _plugin=impl.plugin_name):
                if name in found:
                    raise ValueError(f"{kind} {name!r} is registered twice: by plugin {found[name].plugin!r} and by"
                                     f" plugin {_plugin!r} (names must be unique; rename one)")
                if not summary:
                    doc = obj.summary if isinstance(obj, Alias) else (inspect.getdoc(obj) or "")
                    summary = doc.split("\n\n")[0].replace("\n", " ") if doc else ""  # the first paragraph
                summary = summary.replace("``", "")  # reST literals read as plain text in a terminal
                found[name] = Entry(name=name, kind=kind, plugin=_plugin, summary=summary, obj=obj)
            impl.function(register=register)
        return found

    def cache_policies(self) -> dict[str, Entry]:
        return self._collect("register_cache_policies", "cache")

    def unmask_policies(self) -> dict[str, Entry]:
        return self._collect("register_unmask_policies", "unmask")

    def policies(self) -> list[Entry]:
        return [*self.cache_policies().values(), *self.unmask_policies().values()]

    def model_adapters(self) -> dict[str, Entry]:
        return self._collect("register_models", "model")

    def checkpoints(self) -> dict[str, Entry]:
        return self._collect("register_checkpoints", "checkpoint")

    def model_class(self, model_type: str):
        adapters = self.model_adapters()
        if model_type not in adapters:
            raise ValueError(f"no model adapter for model_type {model_type!r}; known: {', '.join(sorted(adapters))}")
        return adapters[model_type].obj

    def supported_architectures(self) -> dict[str, str]:
        """HF ``architectures`` names → the model_type of the adapter that loads them."""
        return {arch: name for name, entry in self.model_adapters().items()
                for arch in getattr(entry.obj, "architectures", ())}

    def model_class_for(self, config: dict):
        """The adapter for a checkpoint config: by its ``architectures`` first (a name no adapter
        declares is an error — e.g. LLaDA-MoE says ``model_type: llada`` but is not the dense layout),
        then by ``model_type`` when the config names no architecture."""
        archs = config.get("architectures") or []
        if isinstance(archs, str):
            archs = [archs]
        if archs:
            known = self.supported_architectures()
            for arch in archs:
                if arch in known:
                    return self.model_adapters()[known[arch]].obj
            listed = ", ".join(f"{a} ({t})" for a, t in sorted(known.items()))
            raise ValueError(f"architecture {', '.join(map(str, archs))} is not supported (model_type "
                             f"{config.get('model_type')!r}); supported architectures: {listed}")
        return self.model_class(str(config.get("model_type", "")))

    def checkpoint(self, name: str) -> Entry:
        found = self.checkpoints()
        if name not in found:
            hint = ""
            if "/" in name and not name.startswith((".", "/", "~")) and name.count("/") == 1:
                hint = (" — it looks like a Hugging Face hub id: only local folders load (nothing is downloaded);"
                        f" on a connected machine run `huggingface-cli download {name} --local-dir DIR` and pass DIR")
            raise ValueError(f"unknown model {name!r}: not a folder and not a registered name{hint}; known names: "
                             f"{', '.join(sorted(found))}")
        return found[name]

    def make_cache_policies(self, spec) -> list:
        """Instances for a cache spec string (``+``-composed), one ready instance or a non-empty list
        / tuple of them (checked by :func:`~dynamic_dllm.core.policy.check_policy`); a value that
        cannot be either (None, a number, a list of strings, …) is a ValueError naming it."""
        if isinstance(spec, (list, tuple)):
            if not spec:
                raise ValueError("cache=[] names no policy; use cache='none' to recompute everything")
            for p in spec:
                _not_a_value(p, "cache list entry", " (compose names in one spec string: 'dcu+window')")
            if len({id(p) for p in spec}) != len(spec):
                raise ValueError("the same cache policy instance appears twice in cache=[...]")
            return list(spec)
        if not isinstance(spec, str):
            _not_a_value(spec, "cache", " (a spec string such as 'dual' or 'dcu+window', or CachePolicy instances)")
            return [spec]
        known = self.cache_policies()
        out = []
        for name, params in parse_spec(spec):
            out.extend(_instantiate(known, name, params, "cache"))
        return out

    def make_unmask_policy(self, spec):
        """The instance for an unmask spec string naming one policy, or a ready UnmaskPolicy."""
        if not isinstance(spec, str):
            _not_a_value(spec, "unmask", " (a spec string such as 'low-confidence' or 'apd', or an UnmaskPolicy instance)")
            return spec
        parts = parse_spec(spec)
        if len(parts) != 1:
            raise ValueError(f"unmask spec {spec!r} names {len(parts)} policies; exactly one unmask policy is used per generation")
        name, params = parts[0]
        policies = _instantiate(self.unmask_policies(), name, params, "unmask")
        if len(policies) != 1:
            raise ValueError(f"unmask preset {name!r} expands to {len(policies)} policies; an unmask preset must name one")
        return policies[0]


def _not_a_value(obj, what: str, hint: str) -> None:
    """A ValueError for plain data where a policy object belongs (strings, numbers, None,
    containers, tensors); policy objects themselves are checked by ``check_policy``."""
    if obj is None or isinstance(obj, (str, bytes, int, float, complex, dict, set, list, tuple)) or hasattr(obj, "shape"):
        raise ValueError(f"{what} must be a policy, got {type(obj).__name__} {repr(obj)[:60]}{hint}")


def _instantiate(known: dict[str, Entry], name: str, params: dict, kind: str) -> list:
    """The policies for one spec part: one instance, or an alias's parts."""
    if name not in known:
        raise ValueError(f"unknown {kind} policy {name!r}; known {kind} policies: {', '.join(sorted(known))}")
    factory = known[name].obj
    if isinstance(factory, Alias):
        unknown = sorted(set(params) - set(factory.params))
        if unknown:
            raise ValueError(f"{kind} policy {name!r} has no parameter {', '.join(map(repr, unknown))};"
                             f" its parameters: {', '.join(factory.params) or '(none)'}")
        out = []
        for part, part_params in factory.expand(params):
            try:
                out.extend(_instantiate(known, part, part_params, kind))
            except ValueError as exc:
                raise ValueError(f"{kind} preset {name!r} (= {factory.spec}): {exc}") from None
        return out
    accepted = _parameter_names(factory)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(
            f"{kind} policy {name!r} has no parameter {', '.join(map(repr, unknown))};"
            f" its parameters: {', '.join(accepted) or '(none)'}"
        )
    try:
        return [factory(**params)]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{kind} policy {name!r}: {exc}") from None


def _parameter_names(factory: Callable) -> list[str]:
    if attrs.has(factory):
        return [f.alias or f.name for f in attrs.fields(factory) if f.init]
    return [p for p in inspect.signature(factory).parameters if p != "self"]


_pm: Optional[pluggy.PluginManager] = None


def plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, built and loaded on first use."""
    global _pm
    if _pm is None:
        import importlib

        pm = pluggy.PluginManager(hookspecs.PROJECT)
        pm.add_hookspecs(hookspecs)
        for module_name in BUILTIN_PLUGINS:
            pm.register(importlib.import_module(module_name), name=module_name)
        _load_entry_points(pm)
        _pm = pm
    return _pm


def check_hook_names(pm: pluggy.PluginManager) -> None:
    """A plugin implementing a hook that does not exist (a mistyped name) is a ValueError naming it."""
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        hook = str(exc).split("'")[1] if "'" in str(exc) else str(exc)
        raise ValueError(f"plugin {pm.get_name(exc.plugin)!r} implements {hook!r}, which is not a dynamic-dllm hook;"
                         " the hooks are register_cache_policies, register_unmask_policies, register_models,"
                         " register_checkpoints") from None


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    allowed = os.environ.get(ENV_PLUGINS)
    if allowed is None:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        return
    for name in filter(None, (n.strip() for n in allowed.split(","))):
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP, name=name)


def get_registry() -> Registry:
    pm = plugin_manager()
    check_hook_names(pm)
    return Registry(pm)
