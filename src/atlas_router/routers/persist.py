"""Router files that run no code when loaded: a zip of JSON and arrays, after skops' model.

Layout of a router file (format version 2)::

    manifest.json        what the router is and was fitted on (``Router.manifest()``): format, version,
                         registry name, settings, data hash, encoder, library versions
    state.json           settings and fitted attributes as a typed JSON tree; arrays point to members
    arrays/N.npy         numpy arrays, written and read with ``allow_pickle=False``
    tensors.safetensors  torch tensors (state dicts of trained networks)
    sklearn/N.skops      scikit-learn estimators, loaded only when skops lists no type outside
                         ``TRUSTED_SKLEARN``

What is saved is generic: every public attribute of the router (its settings and the fitted ``*_``
state), as long as each value is plain data: None, bool, int, float, str, lists, tuples, sets,
dicts, numpy arrays and scalars, torch tensors, scikit-learn estimators, or an instance of a class in
``DATA_CLASSES`` (plain dataclasses and pydantic models of this package).

Loading reads the JSON and the arrays, audits the whole tree (every tag known, every member present,
every estimator type trusted) into plain values, and only then builds ``router_class(name)(**settings)``
and sets the fitted attributes. The only class a file can name is a registered router; nothing in the
file is imported or executed.

Migration rule: a file carries ``format_version``. Versions this release writes or can migrate from
data alone load (``MIGRATIONS`` upgrades a manifest step by step); a newer version gets a one-line error
asking for a newer atlas-router; version 1 (a joblib pickle, atlas-router 0.1) is read only when the
caller says the file is trusted (``trusted=True``, ``atlas router-file migrate --trust``), which rewrites
it in this format.
"""

from __future__ import annotations

import inspect
import io
import json
import math
import os
import sys
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from atlas_router.core.lazy import import_object
from atlas_router.errors import AtlasError

from atlas_router.routers.base import Router, router_class, router_names
from atlas_router.routers.encoders import Encoder

FILE_FORMAT = "atlas-router"
FILE_VERSION = 2
LEGACY_VERSION = 1  # joblib pickle
MANIFEST = "manifest.json"
STATE = "state.json"
TENSORS = "tensors.safetensors"
TAG = "__atlas__"
MAX_JSON_BYTES = 256 << 20
MAX_FILE_BYTES = 8 << 30  # unpacked size: a zip bomb is refused before anything is read
MAX_DEPTH = 64

#: types skops may build beyond its own defaults (scikit-learn estimators, numpy and builtin containers):
#: what the shipped routers need (the MLP baseline keeps its optimizer state), nothing that can call code.
TRUSTED_SKLEARN = frozenset({
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
})

#: plain-data classes a router attribute may hold: name in the file -> "module:attribute".
DATA_CLASSES: dict[str, str] = {
    "QueryTable": "atlas_router.routers.table:QueryTable",
    "PoolConfig": "atlas_router.config:PoolConfig",
}

#: data-only upgrades of a manifest/state from version N to N + 1 (none yet: version 2 is the first zip).
MIGRATIONS: dict[int, Callable[[dict[str, Any], dict[str, Any]], tuple[dict[str, Any], dict[str, Any]]]] = {}


class RouterFileError(AtlasError):
    """A router file that cannot be read or saved; the message says why in one line."""


class LegacyRouterFileError(RouterFileError):
    """A router file in the old pickle format: read only when trusted."""


# -- writing --------------------------------------------------------------------------------------
class _Writer:
    """Encodes values into a JSON tree, collecting arrays, tensors and estimators as zip members."""

    def __init__(self) -> None:
        self.members: dict[str, bytes] = {}
        self.tensors: dict[str, Any] = {}

    def encode(self, value: Any, where: str, depth: int = 0) -> Any:
        if depth > MAX_DEPTH:
            raise RouterFileError(f"cannot save {where}: nested deeper than {MAX_DEPTH} levels")
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, int):
            return int(value)
        if isinstance(value, float):
            return float(value) if math.isfinite(value) else {TAG: "float", "v": repr(float(value))}
        if isinstance(value, np.ndarray):
            return self._array(value, where)
        if isinstance(value, np.generic):
            if value.dtype.kind in "OV":
                raise RouterFileError(f"cannot save {where}: numpy scalar of dtype {value.dtype}")
            return {TAG: "scalar", "dtype": value.dtype.str, "v": self.encode(value.item(), where, depth + 1)}
        if isinstance(value, list):
            return [self.encode(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
        if isinstance(value, tuple):
            return {TAG: "tuple", "v": [self.encode(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]}
        if isinstance(value, (set, frozenset)):
            items = sorted(value, key=repr)
            return {TAG: "set", "v": [self.encode(v, where, depth + 1) for v in items]}
        if isinstance(value, dict):
            if all(isinstance(k, str) for k in value):
                return {TAG: "dict", "v": {k: self.encode(v, f"{where}.{k}", depth + 1) for k, v in value.items()}}
            return {TAG: "map", "v": [[self.encode(k, where, depth + 1), self.encode(v, f"{where}[{k!r}]", depth + 1)]
                                      for k, v in value.items()]}
        if _is_tensor(value):
            key = f"t{len(self.tensors)}"
            self.tensors[key] = value.detach().cpu().contiguous().clone()
            return {TAG: "tensor", "key": key}
        if _is_estimator(value):
            return self._estimator(value, where)
        data_name = _data_class_name(value)
        if data_name is not None:
            return self._data_object(value, data_name, where, depth)
        raise RouterFileError(
            f"cannot save {where}: a {type(value).__module__}.{type(value).__qualname__} is not plain data "
            "(router state must be numpy arrays, JSON values, torch tensors or scikit-learn estimators)"
        )

    def _array(self, arr: np.ndarray, where: str) -> dict[str, Any]:
        node: dict[str, Any] = {TAG: "ndarray"}
        if arr.dtype.kind == "O":  # object arrays of text (benchmark names) are stored as unicode
            if not all(isinstance(x, str) for x in arr.flat):
                raise RouterFileError(f"cannot save {where}: an object array holding non-strings")
            arr = arr.astype(str) if arr.size else np.empty(arr.shape, dtype="<U1")
            node["object"] = True
        if arr.dtype.hasobject or arr.dtype.kind == "V" and arr.dtype.fields is None:
            raise RouterFileError(f"cannot save {where}: numpy dtype {arr.dtype} is not plain data")
        name = f"arrays/{len(self.members)}.npy"
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
        self.members[name] = buf.getvalue()
        node["file"] = name
        return node

    def _estimator(self, est: Any, where: str) -> dict[str, Any]:
        import skops.io as sio

        data = sio.dumps(est)
        untrusted = sorted(set(sio.get_untrusted_types(data=data)) - TRUSTED_SKLEARN)
        if untrusted:
            raise RouterFileError(f"cannot save {where}: types not on the router-file trust list: {', '.join(untrusted)}")
        name = f"sklearn/{len(self.members)}.skops"
        self.members[name] = data
        return {TAG: "sklearn", "file": name, "class": f"{type(est).__module__}.{type(est).__qualname__}"}

    def _data_object(self, value: Any, name: str, where: str, depth: int) -> dict[str, Any]:
        if hasattr(value, "model_dump"):  # pydantic: its own JSON form, validated again on load
            return {TAG: "object", "class": name, "json": value.model_dump(mode="json")}
        import dataclasses

        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return {TAG: "object", "class": name, "fields": self.encode(fields, where, depth + 1)}


def _is_tensor(value: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def _is_estimator(value: Any) -> bool:
    base = sys.modules.get("sklearn.base")
    return base is not None and isinstance(value, base.BaseEstimator)


def _data_class(name: str) -> type:
    return import_object(DATA_CLASSES[name])


def _data_class_name(value: Any) -> str | None:
    for name, target in DATA_CLASSES.items():
        module, _, attr = target.partition(":")
        if type(value).__module__ == module and type(value).__qualname__ == attr:
            return name
    return None


def split_state(router: "Router") -> tuple[dict[str, Any], dict[str, Any]]:
    """(settings, other public attributes) of a router: what a file holds."""
    state = router.__getstate__()
    names = _init_params(type(router))
    params = {k: state[k] for k in names if k in state}
    attributes = {k: v for k, v in state.items() if k not in params}
    return params, attributes


def _init_params(cls: type) -> list[str]:
    sig = inspect.signature(cls.__init__)
    return [n for n, p in sig.parameters.items() if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def save_router(router: "Router", path: str | Path) -> Path:
    """Write a fitted router as a data-only zip (atomic: a temporary file, then a rename)."""
    if not router.is_fitted:
        raise RouterFileError(f"router '{router.name}' is not fitted; nothing to save")
    params, attributes = split_state(router)
    writer = _Writer()
    state = {"params": writer.encode(params, "settings"), "attributes": writer.encode(attributes, "state")}
    p = Path(path).expanduser()
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".tmp-{os.getpid()}-{p.name}")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
            zf.writestr(MANIFEST, json.dumps({"format": FILE_FORMAT, "format_version": FILE_VERSION, **router.manifest()},
                                              indent=2))
            zf.writestr(STATE, json.dumps(state, allow_nan=False))
            for name, data in writer.members.items():
                zf.writestr(name, data)
            if writer.tensors:
                from safetensors.torch import save as save_tensors

                zf.writestr(TENSORS, save_tensors(writer.tensors))
        tmp.replace(p)
    finally:
        tmp.unlink(missing_ok=True)
    return p


# -- reading --------------------------------------------------------------------------------------
class _Reader:
    """Decodes a JSON tree back into plain values; every reference is checked before use."""

    def __init__(self, zf: zipfile.ZipFile, where: Path) -> None:
        self.zf = zf
        self.where = where
        self.names = set(zf.namelist())
        self._tensors: dict[str, Any] | None = None

    def fail(self, why: str) -> RouterFileError:
        return RouterFileError(f"{self.where}: damaged router file ({why})")

    def member(self, name: Any, prefix: str, suffix: str) -> bytes:
        if not (isinstance(name, str) and name.startswith(prefix) and name.endswith(suffix) and name in self.names):
            raise self.fail(f"missing or misplaced member {name!r}")
        return self.zf.read(name)

    def decode(self, node: Any, depth: int = 0) -> Any:
        if depth > MAX_DEPTH:
            raise self.fail(f"nested deeper than {MAX_DEPTH} levels")
        if node is None or isinstance(node, (bool, int, str)):
            return node
        if isinstance(node, float):
            return node
        if isinstance(node, list):
            return [self.decode(v, depth + 1) for v in node]
        if not isinstance(node, dict) or not isinstance(node.get(TAG), str):
            raise self.fail("untagged object in the state tree")
        tag = node[TAG]
        if tag == "dict":
            items = node.get("v")
            if not isinstance(items, dict):
                raise self.fail("bad dict node")
            return {str(k): self.decode(v, depth + 1) for k, v in items.items()}
        if tag == "map":
            items = node.get("v")
            if not isinstance(items, list) or not all(isinstance(kv, list) and len(kv) == 2 for kv in items):
                raise self.fail("bad map node")
            out = {}
            for k, v in items:
                key = self.decode(k, depth + 1)
                try:
                    out[key] = self.decode(v, depth + 1)
                except TypeError:
                    raise self.fail("unhashable map key") from None
            return out
        if tag in ("tuple", "set"):
            items = node.get("v")
            if not isinstance(items, list):
                raise self.fail(f"bad {tag} node")
            values = [self.decode(v, depth + 1) for v in items]
            try:
                return tuple(values) if tag == "tuple" else set(values)
            except TypeError:
                raise self.fail("unhashable set item") from None
        if tag == "float":
            if node.get("v") not in ("nan", "inf", "-inf"):
                raise self.fail("bad float node")
            return float(node["v"])
        if tag == "ndarray":
            return self._array(node)
        if tag == "scalar":
            return self._scalar(node, depth)
        if tag == "tensor":
            return self._tensor(node)
        if tag == "sklearn":
            return self._estimator(node)
        if tag == "object":
            return self._object(node, depth)
        raise self.fail(f"unknown node type {tag!r}")

    def _array(self, node: dict[str, Any]) -> np.ndarray:
        data = self.member(node.get("file"), "arrays/", ".npy")
        try:
            arr = np.load(io.BytesIO(data), allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise self.fail(f"array {node.get('file')}: {err}") from None
        if node.get("object") is True:
            arr = arr.astype(object)
        return arr

    def _scalar(self, node: dict[str, Any], depth: int) -> Any:
        try:
            dtype = np.dtype(str(node.get("dtype")))
        except TypeError:
            raise self.fail(f"bad scalar dtype {node.get('dtype')!r}") from None
        if dtype.kind in "OV":
            raise self.fail(f"scalar dtype {dtype} is not plain data")
        try:
            return dtype.type(self.decode(node.get("v"), depth + 1))
        except (TypeError, ValueError, OverflowError):
            raise self.fail(f"bad scalar value for dtype {dtype}") from None

    def _tensor(self, node: dict[str, Any]) -> Any:
        if self._tensors is None:
            from safetensors.torch import load as load_tensors

            data = self.member(TENSORS, TENSORS, TENSORS)
            try:
                self._tensors = load_tensors(data)
            except Exception as err:  # safetensors raises its own error types for every malformed header
                raise self.fail(f"{TENSORS}: {type(err).__name__}: {err}") from None
        key = node.get("key")
        if not isinstance(key, str) or key not in self._tensors:
            raise self.fail(f"missing tensor {key!r}")
        return self._tensors[key]

    def _estimator(self, node: dict[str, Any]) -> Any:
        import skops.io as sio

        name = node.get("file")
        data = self.member(name, "sklearn/", ".skops")
        try:
            types = set(sio.get_untrusted_types(data=data))
        except Exception as err:  # skops rejects malformed schemas with several error types
            raise self.fail(f"{name}: {type(err).__name__}: {err}") from None
        untrusted = sorted(types - TRUSTED_SKLEARN)
        if untrusted:
            raise RouterFileError(f"{self.where}: {name} would build types outside the trust list: "
                                  f"{', '.join(untrusted)}; not loaded")
        try:
            return sio.loads(data, trusted=sorted(types))
        except Exception as err:
            raise self.fail(f"{name}: {type(err).__name__}: {err}") from None

    def _object(self, node: dict[str, Any], depth: int) -> Any:
        name = node.get("class")
        if name not in DATA_CLASSES:
            raise RouterFileError(f"{self.where}: router file names class {name!r}, which is not plain data; not loaded")
        cls = _data_class(name)
        try:
            if "json" in node:
                return cls.model_validate(node["json"])
            fields = self.decode(node.get("fields"), depth + 1)
            if not isinstance(fields, dict):
                raise self.fail(f"bad {name} node")
            return cls(**fields)
        except (TypeError, ValueError) as err:
            raise self.fail(f"{name}: {err}") from None


def _sniff(p: Path) -> str:
    """'zip', 'pickle' (joblib or raw pickle: the version 1 format) or 'other', from the first bytes."""
    with open(p, "rb") as fh:
        head = fh.read(4)
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head[:1] in (b"\x80", b"\x78") or head[:2] == b"\x1f\x8b":  # pickle protocol 2+, zlib, gzip
        return "pickle"
    return "other"


def _check_path(path: str | Path) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise RouterFileError(f"{p}: router file not found")
    return p


def _legacy_error(p: Path) -> LegacyRouterFileError:
    return LegacyRouterFileError(
        f"{p}: router file format version {LEGACY_VERSION} (a pickle, written by atlas-router 0.1) can run code "
        f"when loaded and is not read by default; if you made it or trust it, convert it once with "
        f"'atlas router-file migrate --trust {p}'"
    )


def _read_json(zf: zipfile.ZipFile, name: str, p: Path) -> Any:
    try:
        info = zf.getinfo(name)
    except KeyError:
        raise RouterFileError(f"{p}: not an atlas router file (no {name})") from None
    if info.file_size > MAX_JSON_BYTES:
        raise RouterFileError(f"{p}: {name} is larger than {MAX_JSON_BYTES >> 20} MiB")
    try:
        return json.loads(zf.read(name).decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError, zipfile.BadZipFile, OSError) as err:
        raise RouterFileError(f"{p}: {name} is not valid JSON ({type(err).__name__})") from None


def _open(p: Path) -> zipfile.ZipFile:
    kind = _sniff(p)
    if kind == "pickle":
        raise _legacy_error(p)
    if kind != "zip":
        raise RouterFileError(f"{p}: not a readable router file (neither a router zip nor a version 1 pickle)")
    try:
        return zipfile.ZipFile(p)
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise RouterFileError(f"{p}: not a readable router file ({type(err).__name__}: {err})") from None


def _checked_manifest(zf: zipfile.ZipFile, p: Path) -> dict[str, Any]:
    manifest = _read_json(zf, MANIFEST, p)
    if not isinstance(manifest, dict) or manifest.get("format") != FILE_FORMAT:
        raise RouterFileError(f"{p}: not an atlas router file (manifest format is not '{FILE_FORMAT}')")
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise RouterFileError(f"{p}: router file manifest has no format version")
    if version > FILE_VERSION:
        raise RouterFileError(f"{p}: router file format version {version}; this atlas-router reads versions up to "
                              f"{FILE_VERSION}: upgrade atlas-router to read it")
    if version < FILE_VERSION and not all(v in MIGRATIONS for v in range(version, FILE_VERSION)):
        raise RouterFileError(f"{p}: router file format version {version} cannot be migrated by this atlas-router "
                              f"(reads {FILE_VERSION}); refit the router")
    if not isinstance(manifest.get("router"), str):
        raise RouterFileError(f"{p}: router file manifest names no router")
    return manifest


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of a router file: JSON only, nothing else in the file is read or built."""
    p = _check_path(path)
    with _open(p) as zf:
        return _checked_manifest(zf, p)


def load_router(path: str | Path, encoder: Encoder | None = None, trusted: bool = False) -> Router:
    """A router saved with ``save_router``; ``encoder`` shares an already-built one.

    ``trusted=True`` also reads the old pickle format (version 1), which can run code: only for files
    you made. ``atlas router-file migrate --trust`` converts such a file once.
    """
    router = load_router_file(path, trusted=trusted)
    if encoder is not None:
        router.set_encoder(encoder)
    return router


def load_router_file(path: str | Path, trusted: bool = False) -> "Router":
    """A router from a data-only file; a version 1 pickle only with ``trusted=True`` (it can run code)."""
    p = _check_path(path)
    if trusted and _sniff(p) == "pickle":
        return _load_legacy(p)
    try:
        return _load_zip(p)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as err:  # a member cut short or garbled (CRC)
        raise RouterFileError(f"{p}: damaged router file ({type(err).__name__}: {err})") from None


def _load_zip(p: Path) -> "Router":
    with _open(p) as zf:
        total = sum(info.file_size for info in zf.infolist())
        if total > MAX_FILE_BYTES:
            raise RouterFileError(f"{p}: router file unpacks to {total >> 20} MiB, more than the "
                                  f"{MAX_FILE_BYTES >> 30} GiB a router file may hold; not loaded")
        manifest = _checked_manifest(zf, p)
        state = _read_json(zf, STATE, p)
        if not isinstance(state, dict):
            raise RouterFileError(f"{p}: damaged router file (state.json is not an object)")
        version = manifest["format_version"]
        while version < FILE_VERSION:
            manifest, state = MIGRATIONS[version](manifest, state)
            version += 1
        name = manifest["router"]
        if name not in router_names():
            raise RouterFileError(f"{p}: router file names '{name[:80]}', which is not a registered router "
                                  f"(known: {', '.join(router_names())}); not loaded")
        cls = router_class(name)
        if not (isinstance(cls, type) and issubclass(cls, Router)):
            raise RouterFileError(f"{p}: '{name}' is not a router class; not loaded")
        reader = _Reader(zf, p)
        params = reader.decode(state.get("params"))
        attributes = reader.decode(state.get("attributes"))
    return _build(cls, params, attributes, p)


def _build(cls: type["Router"], params: Any, attributes: Any, p: Path) -> "Router":
    """The router from audited plain values: settings through the constructor, then fitted attributes."""
    if not isinstance(params, dict) or not isinstance(attributes, dict):
        raise RouterFileError(f"{p}: damaged router file (settings or state is not a mapping)")
    allowed = set(_init_params(cls))
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise RouterFileError(f"{p}: router '{cls.name}' has no setting {unknown[0]!r}; not loaded")
    for name in attributes:
        static = inspect.getattr_static(cls, name, None)
        if (not name.isidentifier() or name.startswith("_") or name in allowed
                or callable(static) or isinstance(static, (property, staticmethod, classmethod))):
            raise RouterFileError(f"{p}: router file sets attribute {name[:60]!r}, which a router cannot hold; "
                                  "not loaded")
    try:
        router = cls(**params)
    except (TypeError, ValueError, AtlasError) as err:
        raise RouterFileError(f"{p}: router '{cls.name}' rejects the stored settings ({err})") from None
    for name, value in attributes.items():
        setattr(router, name, value)
    if not router.is_fitted:
        raise RouterFileError(f"{p}: router file holds no fitted router")
    return router


def _load_legacy(p: Path) -> "Router":
    """Read a version 1 joblib pickle: runs whatever the file holds, so only for files the caller trusts."""
    import joblib

    try:
        data = joblib.load(p)
    except Exception as err:  # truncated, not a joblib file, written by an incompatible version
        raise RouterFileError(f"{p}: not a readable router file ({type(err).__name__}: {err})") from None
    manifest = data.get("manifest") if isinstance(data, dict) else None
    if not isinstance(manifest, dict) or manifest.get("format") != FILE_FORMAT:
        raise RouterFileError(f"{p}: not an atlas router file")
    router = data.get("router")
    if not isinstance(router, Router):
        raise RouterFileError(f"{p}: router file holds a {type(router).__name__}, not a router")
    return router


def migrate_router_file(path: str | Path, out: str | Path | None = None, trusted: bool = False) -> Path:
    """Rewrite a router file in the current format (in place unless ``out``); a pickle needs ``trusted``."""
    p = _check_path(path)
    if _sniff(p) == "pickle" and not trusted:
        raise _legacy_error(p)
    router = load_router_file(p, trusted=trusted)
    return save_router(router, out or p)
