"""The identity of a value: one canonical description (tuples and strings, equal for equal values
in any process), and its digest. Everything that keys on "the same fit" uses it: the fit store's
fingerprints, the fused planner's lanes, the check that a worker ran the driver's code.

User code is described by value. A function or class defined in ``__main__``, in a notebook cell
or in a module of one's own (not one of a distribution installed from an index) is described by
the code objects Python loaded for it and, transitively, by the user code it refers to: the
globals its bytecode reads, the modules it imports, its defaults and closure, the classes of the
objects it holds. An edited helper therefore changes the identity of every function that calls
it, in the driver and in a Ray worker alike (a function sent by value arrives with the same code
objects). Code of an installed distribution is described by the distribution's name and
version; one installed in development mode or from a local path counts as user code. What a
function does not refer to (the rest of a script: its grid, its data loading) is no part of it,
so extending a grid keeps the identity of the fits already run.

What cannot be described raises :class:`Unhashable` (a fit whose identity it is runs, never is
reused); inside user code, values that cannot be described (a lock, a connection) are described
by their type alone.
"""
from __future__ import annotations

import dis
import functools
import hashlib
import importlib.metadata
import json
import os
import site
import sys
import sysconfig
import types
import weakref
from enum import Enum
from typing import Any, Iterable, Mapping

import numpy as np

_MAX_DEPTH = 40
#: Class attributes that Python, pickling or abc add to a class as it is used: not its code.
_CLASS_NOISE = frozenset({"__dict__", "__weakref__", "__module__", "__qualname__", "__doc__",
                          "__slotnames__", "_abc_impl", "__parameters__", "__orig_bases__",
                          "__annotations__", "__firstlineno__", "__static_attributes__"})
_GLOBAL_OPS = frozenset({"LOAD_GLOBAL", "STORE_GLOBAL", "DELETE_GLOBAL", "LOAD_NAME"})
_CODE_KINDS = (types.FunctionType, type, types.ModuleType)


class Unhashable(Exception):
    """A value a fingerprint cannot describe: the fit it belongs to is run, never reused."""


def qualname(obj: Any) -> str:
    """``module.QualifiedName`` of a class or function (``name`` of a module)."""
    if isinstance(obj, types.ModuleType):
        return obj.__name__
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', getattr(obj, '__name__', '?'))}"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def array_digest(arr: np.ndarray) -> tuple:
    if arr.dtype.hasobject:
        return ("ndarray-object", arr.shape, _joblib_hash(arr))
    return ("ndarray", arr.dtype.str, arr.shape, _sha(np.ascontiguousarray(arr).tobytes()))


def _joblib_hash(obj: Any) -> str:
    import joblib

    try:
        return joblib.hash(obj, hash_name="sha1")
    except Exception as exc:  # noqa: BLE001 - unpicklable
        raise Unhashable(f"{type(obj).__name__}: {exc}") from None


def _without_names(config: Any) -> Any:
    """A Keras config without ``name`` entries: Keras numbers them per process (adam, adam_1...),
    and names do not change what a fit computes."""
    if isinstance(config, dict):
        return {k: _without_names(v) for k, v in config.items() if k != "name"}
    if isinstance(config, (list, tuple)):
        return type(config)(_without_names(v) for v in config)
    return config


# -- where code comes from ----------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _installed_roots() -> tuple[str, ...]:
    paths = set(site.getsitepackages()) | {site.getusersitepackages()}
    paths |= {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
    return tuple(os.path.realpath(p) + os.sep for p in paths if p)


def _is_local(dist: importlib.metadata.Distribution) -> bool:
    """Installed in development mode or from a local path (its files may change under it)."""
    try:
        text = dist.read_text("direct_url.json")
    except Exception:  # noqa: BLE001 - unreadable metadata: an ordinary install
        return False
    if not text:
        return False
    try:
        info = json.loads(text)
    except ValueError:
        return False
    return "dir_info" in info or str(info.get("url", "")).startswith("file:")


@functools.lru_cache(maxsize=None)
def distributions_of() -> Mapping[str, list[str]]:
    """Top-level module -> the distributions that provide it, read once per process (reading
    every installed distribution's file list takes most of a second)."""
    return importlib.metadata.packages_distributions()


@functools.lru_cache(maxsize=None)
def origin(module_name: str) -> tuple | None:
    """Where a module's code comes from: ``("stdlib",)``, ``("dist", name, version)`` for an
    installed distribution, or None for user code (``__main__``, a notebook, one's own modules,
    a distribution installed in development mode or from a local path)."""
    top = (module_name or "").split(".")[0]
    if not top or top == "__main__":
        return None
    if top in sys.builtin_module_names or top in sys.stdlib_module_names or top == "builtins":
        return ("stdlib",)
    if top == "raygrid":  # raygrid's own code: its version, which every fit records anyway
        from raygrid.version import __version__

        return ("dist", "raygrid", __version__)
    for name in distributions_of().get(top, ()):
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        return None if _is_local(dist) else ("dist", dist.metadata["Name"], dist.version)
    module = sys.modules.get(top)
    path = os.path.realpath(getattr(module, "__file__", None) or "") if module else ""
    if path and path.startswith(_installed_roots()):
        return ("site", top)
    return None


def _module_name(obj: Any) -> str:
    return obj.__name__ if isinstance(obj, types.ModuleType) else getattr(obj, "__module__", "") or ""


def is_user_code(obj: Any) -> bool:
    """A function, class or module whose code is the user's (see :func:`origin`)."""
    if isinstance(obj, type) and obj.__module__ == "builtins":
        return False
    return isinstance(obj, _CODE_KINDS) and origin(_module_name(obj)) is None


@functools.lru_cache(maxsize=4096)
def _names_read(code: types.CodeType) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(globals the bytecode reads or writes, absolute modules it imports), nested code too."""
    names, imported = set(), set()
    for ins in dis.get_instructions(code):
        if ins.opname in _GLOBAL_OPS:
            names.add(ins.argval)
        elif ins.opname == "IMPORT_NAME":
            imported.add(ins.argval)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            inner_names, inner_imports = _names_read(const)
            names.update(inner_names)
            imported.update(inner_imports)
    return tuple(sorted(names)), tuple(sorted(imported))


def _const(c: Any) -> Any:
    """A constant of a code object, described the same in every process (a frozenset's order
    follows string hashing, which differs between processes)."""
    if isinstance(c, types.CodeType):
        return _code_object(c)
    if c is None or type(c) in (bool, int, float, complex, str, bytes) or c is Ellipsis:
        return (type(c).__name__, repr(c))
    if type(c) is tuple:
        return ("tuple", tuple(_const(v) for v in c))
    if type(c) is frozenset:
        return ("frozenset", tuple(sorted(repr(_const(v)) for v in c)))
    return ("const", type(c).__name__, repr(c))


def _code_object(code: types.CodeType) -> tuple:
    return ("code", code.co_name, _sha(code.co_code), tuple(_const(c) for c in code.co_consts),
            code.co_names, code.co_varnames, code.co_argcount, code.co_kwonlyargcount,
            code.co_flags)


# -- the description ----------------------------------------------------------------------------

class Describer:
    """Describes values; user code by value (its own code and the user code it reaches).

    One describer may serve many values (a search's fingerprints): the description of each
    piece of user code is kept for its lifetime. ``code_only``: values inside user code are
    described by type alone, so that only code can differ (the check that a worker ran the
    driver's code, where module-level values may legitimately differ between processes).
    """

    def __init__(self, code_only: bool = False):
        self.code_only = code_only
        self._units: dict[int, tuple[Any, tuple, tuple]] = {}  # id -> (obj, shallow, refs)
        self._sets: dict[int, tuple[Any, str]] = {}  # id -> (obj, digest of its code set)
        self._refs: list | None = None  # while a unit is described: the user code it refers to

    # values ------------------------------------------------------------------------------
    def __call__(self, obj: Any, depth: int = 0, path: frozenset = frozenset()) -> Any:
        if depth > _MAX_DEPTH:
            raise Unhashable("nested too deeply")
        t = type(obj)
        if obj is None or t in (bool, int, float, complex, str):
            return (t.__name__, repr(obj))
        if t is bytes:
            return ("bytes", _sha(obj))
        if isinstance(obj, np.generic):
            return ("np", obj.dtype.str, repr(obj.item()))
        if isinstance(obj, np.ndarray):
            return array_digest(obj)
        if isinstance(obj, _CODE_KINDS):
            return self._code(obj)
        if id(obj) in path:
            raise Unhashable("a reference cycle")
        inner = path | {id(obj)}
        sub = functools.partial(self, depth=depth + 1, path=inner)
        if isinstance(obj, Enum):
            return ("enum", qualname(t), obj.name)
        if isinstance(obj, (list, tuple)):
            return (qualname(t), tuple(sub(v) for v in obj))
        if isinstance(obj, dict):
            items = sorted(((sub(k), sub(v)) for k, v in obj.items()), key=lambda kv: repr(kv[0]))
            return (qualname(t), tuple(items))
        if isinstance(obj, (set, frozenset)):
            return (qualname(t), tuple(sorted((sub(v) for v in obj), key=repr)))
        if isinstance(obj, (types.BuiltinFunctionType, types.MethodDescriptorType, np.ufunc)):
            return ("builtin", qualname(obj), getattr(obj, "__name__", "?"))
        if isinstance(obj, types.MethodType):
            return ("method", sub(obj.__self__), sub(obj.__func__))
        if isinstance(obj, functools.partial):
            return ("partial", sub(obj.func), sub(obj.args), sub(obj.keywords))
        if isinstance(obj, (staticmethod, classmethod)):
            return (t.__name__, sub(obj.__func__))
        if isinstance(obj, property):
            return ("property", sub(obj.fget), sub(obj.fset), sub(obj.fdel))
        cls = self._code(t)
        module = getattr(t, "__module__", "") or ""
        if hasattr(obj, "get_params") and callable(obj.get_params):
            return ("estimator", qualname(t), cls, sub(obj.get_params(deep=False)))
        if module.startswith("keras") and callable(getattr(obj, "get_config", None)):
            weights = getattr(obj, "get_weights", None)
            try:
                config = _without_names(obj.get_config())
                state = tuple(array_digest(np.asarray(w)) for w in weights()) if callable(weights) else ()
            except Exception as exc:  # noqa: BLE001 - e.g. an unbuilt model without a config
                raise Unhashable(f"{qualname(t)}: {exc}") from None
            return ("keras", qualname(t), sub(config), state)
        if module.startswith("scipy.sparse") and hasattr(obj, "tocoo"):
            coo = obj.tocoo()
            return ("sparse", obj.format, obj.shape, array_digest(coo.row), array_digest(coo.col),
                    array_digest(coo.data))
        if module.startswith("pandas"):
            return ("pandas", qualname(t), _joblib_hash(obj))
        if hasattr(obj, "__dict__"):
            try:
                return ("object", qualname(t), cls, sub(vars(obj)))
            except Unhashable:
                pass
        return ("pickle", qualname(t), cls, _joblib_hash(obj))

    def _inside(self, obj: Any) -> Any:
        """A value held by user code (a global, a default, a closure cell, a class attribute)."""
        if isinstance(obj, _CODE_KINDS):
            return self._code(obj)
        if self.code_only:
            if is_user_code(type(obj)):
                self._code(type(obj))
            return ("value", qualname(type(obj)))
        try:
            return self(obj)
        except Unhashable:
            return ("opaque", qualname(type(obj)))

    # code --------------------------------------------------------------------------------
    def _code(self, obj: Any) -> tuple:
        """A function, class or module: installed code by its distribution; user code, inside
        another piece of user code, by reference (the reference joins the set being described),
        else by the digest of every piece of user code it reaches."""
        kind = "module" if isinstance(obj, types.ModuleType) else (
            "class" if isinstance(obj, type) else "function")
        where = origin(_module_name(obj))
        if where is not None or (kind == "class" and obj.__module__ == "builtins"):
            return (kind, qualname(obj), where)
        if self._refs is not None:
            self._refs.append(obj)
            return ("ref", kind, qualname(obj))
        return (kind, qualname(obj), self.code_digest(obj))

    def code_digest(self, root: Any) -> str:
        """Digest of the user code ``root`` reaches: each piece described on its own, references
        between pieces by name, the set sorted (so cycles and order do not matter)."""
        known = self._sets.get(id(root))
        if known is not None and known[0] is root:
            return known[1]
        seen: dict[int, Any] = {id(root): root}
        todo, units = [root], []
        while todo:
            obj = todo.pop()
            shallow, refs = self._unit(obj)
            units.append(repr((qualname(obj), shallow)))
            for ref in refs:
                if id(ref) not in seen:
                    seen[id(ref)] = ref
                    todo.append(ref)
        value = _sha(repr(sorted(units)).encode())
        self._sets[id(root)] = (root, value)
        return value

    def _unit(self, obj: Any) -> tuple[tuple, tuple]:
        """(description of ``obj`` alone, the user code it refers to)."""
        known = self._units.get(id(obj))
        if known is not None and known[0] is obj:
            return known[1], known[2]
        saved, self._refs = self._refs, []
        try:
            if isinstance(obj, types.ModuleType):
                shallow = self._module(obj)
            elif isinstance(obj, type):
                shallow = self._class(obj)
            else:
                shallow = self._function(obj)
            refs = tuple(self._refs)
        finally:
            self._refs = saved
        self._units[id(obj)] = (obj, shallow, refs)
        return shallow, refs

    def _function(self, fn: types.FunctionType) -> tuple:
        code = fn.__code__
        names, imported = _names_read(code)
        space = fn.__globals__
        reads = tuple((n, self._inside(space[n])) for n in names if n in space)
        modules = tuple(self._code(sys.modules[m]) for m in imported
                        if m in sys.modules and is_user_code(sys.modules[m]))
        closure = tuple(self._inside(c.cell_contents) for c in fn.__closure__ or ()
                        if _filled(c))
        defaults = tuple(self._inside(v) for v in fn.__defaults__ or ())
        kwdefaults = tuple((k, self._inside(v)) for k, v in sorted((fn.__kwdefaults__ or {}).items()))
        return ("function", _code_object(code), reads, modules, closure, defaults, kwdefaults)

    def _class(self, cls: type) -> tuple:
        bases = tuple(self._code(b) for b in cls.__bases__)
        members = []
        for name, value in sorted(vars(cls).items()):
            if name in _CLASS_NOISE:
                continue
            if isinstance(value, (staticmethod, classmethod)):
                value = value.__func__
            if isinstance(value, types.FunctionType):
                members.append((name, self._function(value)))
            elif isinstance(value, property):
                members.append((name, tuple(self._function(f) if isinstance(f, types.FunctionType)
                                            else self._inside(f)
                                            for f in (value.fget, value.fset, value.fdel))))
            elif not (name.startswith("__") and name.endswith("__")) and (
                    _plain(value) or isinstance(value, _CODE_KINDS)):
                # (other attributes may be added by libraries as the class is used or sent:
                # scikit-learn's metadata-request descriptors, say)
                members.append((name, self._inside(value)))
        return ("class", bases, tuple(members))

    def _module(self, module: types.ModuleType) -> tuple:
        """A user module: the functions, classes and user modules it defines or holds (by
        reference) and its plain constants."""
        members = []
        for name, value in sorted(vars(module).items()):
            if name.startswith("__"):
                continue
            if isinstance(value, (types.FunctionType, type)) and value.__module__ == module.__name__:
                members.append((name, self._code(value)))
            elif isinstance(value, types.ModuleType) and is_user_code(value):
                members.append((name, self._code(value)))
            elif _plain(value):
                members.append((name, self._inside(value)))
        return ("module", tuple(members))


def _filled(cell: types.CellType) -> bool:
    try:
        cell.cell_contents
    except ValueError:  # an empty cell (a name assigned later)
        return False
    return True


def _plain(value: Any, depth: int = 0) -> bool:
    """A constant a module may define: numbers, strings and containers of them."""
    if value is None or type(value) in (bool, int, float, complex, str, bytes):
        return True
    if depth < 3 and type(value) in (tuple, frozenset, list, set):
        return all(_plain(v, depth + 1) for v in value)
    if depth < 3 and type(value) is dict:
        return all(_plain(k, depth + 1) and _plain(v, depth + 1) for k, v in value.items())
    return False


def describe(obj: Any) -> Any:
    """The canonical description of ``obj`` (see the module's docstring)."""
    return Describer()(obj)


def digest(*parts: Any, describer: Describer | None = None) -> str:
    """sha256 hex of ``parts`` (any values a :class:`Describer` describes)."""
    return _sha(repr((describer or Describer())(parts)).encode())


# -- the code a fit runs ------------------------------------------------------------------------

_worker_cache: "weakref.WeakKeyDictionary[Any, str]" = weakref.WeakKeyDictionary()


def code_roots(estimator: Any) -> list[Any]:
    """The classes and functions an estimator runs: its class, and the functions, classes and
    estimators among its attributes (its parameters, nested estimators' too: a Pipeline's steps),
    read from ``vars`` (``get_params`` inspects signatures: too slow for every fit)."""
    roots: dict[int, Any] = {}
    stack = [(estimator, 0)]
    while stack:
        obj, depth = stack.pop()
        if isinstance(obj, (types.FunctionType, type)):
            roots[id(obj)] = obj
        elif depth > 6 or obj is None or type(obj) in (str, int, float, bool):
            continue
        elif isinstance(obj, (list, tuple)):
            stack += [(item, depth + 1) for item in obj]
        elif isinstance(obj, dict):
            stack += [(item, depth + 1) for item in obj.values()]
        elif isinstance(obj, functools.partial):
            stack += [(obj.func, depth + 1), (obj.args, depth + 1)]
        elif isinstance(obj, types.MethodType):
            stack += [(obj.__func__, depth + 1), (obj.__self__, depth + 1)]
        elif hasattr(obj, "get_params") and hasattr(obj, "__dict__"):
            roots[id(type(obj))] = type(obj)
            stack += [(value, depth + 1) for value in vars(obj).values()]
    return list(roots.values())


def _loaded_plainly(obj: Any) -> bool:
    """Its module's code is what Python compiles from the source file: not rewritten by an import
    hook (pytest's assertion rewriting, say), so another process that imports the same file
    loads the same code."""
    name = _module_name(obj)
    module = sys.modules.get(name)
    if module is None or name == "__main__":
        return True
    loader = getattr(module, "__loader__", None)
    return loader is None or type(loader).__module__ in ("importlib._bootstrap_external",
                                                         "_frozen_importlib_external",
                                                         "importlib.machinery")


def code_identity(estimator: Any, cache: bool = False,
                  comparable_only: bool = False) -> dict[str, str] | None:
    """``{name: digest}`` of the user code ``estimator`` runs (its code alone, not the values the
    code holds), or None when it runs none or it cannot be described. A worker reports it with
    each fit; the driver compares it with its own (``cache``: kept per class or function object,
    for a worker, whose modules are never reloaded; ``comparable_only``: the driver's side, less
    the code of modules an import hook rewrote, which other processes load as compiled from
    the file)."""
    describer = None
    out: dict[str, str] = {}
    try:
        for root in code_roots(estimator):
            if not is_user_code(root) or (comparable_only and not _loaded_plainly(root)):
                continue
            value = _worker_cache.get(root) if cache else None
            if value is None:
                describer = describer or Describer(code_only=True)
                value = describer.code_digest(root)[:16]
                if cache:
                    _worker_cache[root] = value
            out[qualname(root)] = value
    except Exception:  # noqa: BLE001 - a check that cannot be made is not made; the fit runs
        return None
    return out or None


__all__ = ["Describer", "Unhashable", "array_digest", "code_identity", "code_roots", "describe",
           "digest", "is_user_code", "origin", "qualname"]
