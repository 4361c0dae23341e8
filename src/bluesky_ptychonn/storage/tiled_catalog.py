"""Connecting to Tiled, the catalog's layout, and the one write primitive (`NodeWrite`).

`connect(uri, api_key)` is the same code path for the embedded server
(`storage.tiled_server.TiledServerProcess`) and a facility's Tiled server: give it the server
address (``http://host:port``) or the address of any container on it
(``https://tiled.example.org/api/v1/metadata/hxn``), which then becomes the catalog's root.

Layout under that root (`TiledLayout`; every name can be changed):

==================  ===========================================================================
``raw/<uid>``       one Bluesky run per start uid, written by bluesky-tiled-plugins'
                    ``TiledWriter`` (spec ``CatalogOfBlueskyRuns`` on ``raw``, so clients get
                    ``catalog["raw"][-1]``, scan_id and partial-uid lookup)
``reconstructions`` one container per result (live mosaic, ePIE, ...) with arrays and
                    metadata ``scan_uid``, ``kind``, ``model_version``, ... (`tiled_results`)
``training``        training pairs with provenance (`tiled_results`)
``models``          one container per model version: sidecar, metrics, files (`tiled_models`)
``continual``       the continual-learning loop: one record per scan (decision, reason,
                    mismatch, model in service) and the loop's state (`retrain.tiled`)
==================  ===========================================================================

Why reconstructions are not children of the run container: ``TiledWriter`` owns the run node
(it closes the node's streams at the stop document, and the Bluesky clients and the
``application/json-seq`` exporter treat every child of a run as an event stream), and the
spooled writer (`callbacks.tiled.SpooledTiledWriter`) deletes and rewrites a half-written run
when it replays it after an outage, which would take reconstructions with it. Results point at
their run by ``scan_uid`` instead, and `tiled_results.find_reconstructions` finds them.

Every write of a result is a `NodeWrite`: a container key, metadata and named arrays, applied
idempotently (`TiledCatalog.put`), so a spool can replay it after a crash or an outage without
duplicating anything.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import numpy as np

__all__ = [
    "NodeWrite",
    "TiledAuthError",
    "TiledCatalog",
    "TiledLayout",
    "TiledUnavailableError",
    "api_key_from_env",
    "connect",
    "is_loopback_uri",
    "json_metadata",
    "open_node",
    "safe_key",
    "utc_now",
]

_KEY_BAD_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


class TiledAuthError(PermissionError):
    """The Tiled server refused the request: no API key, a wrong one, or too few rights."""


class TiledUnavailableError(ConnectionError):
    """The Tiled server cannot be reached."""


def utc_now() -> str:
    """ISO 8601 UTC time, e.g. ``2026-11-21T06:23:02.123456Z``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def safe_key(text: str) -> str:
    """A Tiled node key from free text: letters, digits, ``.``, ``_``, ``-``; others -> ``_``."""
    key = _KEY_BAD_CHARS.sub("_", str(text)).strip("._")
    if not key:
        raise ValueError(f"cannot make a node key from {text!r}")
    return key


def json_metadata(value: Any, where: str = "metadata") -> Any:
    """``value`` made JSON-ready for Tiled metadata.

    numpy scalars and arrays become Python numbers and lists, tuples become lists, non-finite
    floats become None (JSON has no NaN). Raises TypeError for anything else that JSON cannot
    hold.
    """
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where} has a non-string key {key!r}")
            out[key] = json_metadata(item, f"{where}[{key!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [json_metadata(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise TypeError(f"{where} is a {type(value).__name__}, which JSON metadata cannot hold")


@dataclass(frozen=True)
class TiledLayout:
    """Names of the top-level containers (see the module docstring)."""

    raw: str = "raw"
    reconstructions: str = "reconstructions"
    training: str = "training"
    models: str = "models"
    continual: str = "continual"


@dataclass
class NodeWrite:
    """One idempotent write: container ``<parent>/<key>`` with ``metadata`` and ``arrays``.

    Applying it twice leaves the same state as applying it once: the node is created if
    missing, its arrays are overwritten in place when shape and dtype are unchanged and
    replaced otherwise, arrays it no longer names are kept, and its metadata is replaced.

    Attributes:
        parent: a `TiledLayout` field name ("reconstructions", "training", "models").
        key: the node's key (see `safe_key`).
        metadata: JSON-ready metadata (see `json_metadata`).
        arrays: name -> numpy array (no object dtype).
        specs: Tiled spec names of the node, e.g. ["PtychoReconstruction"].
    """

    parent: str
    key: str
    metadata: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    specs: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.parent not in TiledLayout.__dataclass_fields__:
            raise ValueError(
                f"parent must be one of {sorted(TiledLayout.__dataclass_fields__)}, "
                f"got {self.parent!r}"
            )
        if safe_key(self.key) != self.key:
            raise ValueError(f"{self.key!r} is not a valid node key; use safe_key()")
        self.metadata = json_metadata(self.metadata)
        arrays = {}
        for name, array in self.arrays.items():
            if safe_key(name) != name:
                raise ValueError(f"array name {name!r} is not a valid node key")
            array = np.asarray(array)
            if array.dtype.kind not in "biufc":
                raise TypeError(f"array {name!r} has dtype {array.dtype}: numbers only")
            arrays[name] = np.ascontiguousarray(array)
        self.arrays = arrays

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())


def _is_auth_error(error: BaseException) -> bool:
    import httpx

    return isinstance(error, httpx.HTTPStatusError) and error.response.status_code in (401, 403)


def is_loopback_uri(uri: str) -> bool:
    """True when ``uri`` names this machine (no proxy should be used for it)."""
    host = urlsplit(uri).hostname or ""
    return host == "localhost" or host == "::1" or host.startswith("127.")


def open_node(uri: str, api_key: str | None = None, **from_uri_kwargs: Any) -> Any:
    """The Tiled client of the node at ``uri`` (``tiled.client.from_uri`` with clear errors).

    Raises:
        TiledAuthError: the server wants a key, or refused this one.
        TiledUnavailableError: nothing answers at ``uri``.
    """
    import httpx
    from tiled.client import from_uri

    from_uri_kwargs.setdefault("trust_env", not is_loopback_uri(uri))  # no proxy for loopback
    try:
        return from_uri(uri, api_key=api_key, **from_uri_kwargs)
    except RuntimeError as error:
        if "requires" in str(error) and "authentication" in str(error).lower():
            raise TiledAuthError(
                f"the Tiled server at {uri} requires an API key: pass api_key (--api-key) or "
                f"set $TILED_API_KEY"
            ) from None
        raise
    except httpx.HTTPStatusError as error:
        if _is_auth_error(error):
            raise TiledAuthError(
                f"the Tiled server at {uri} refused the API key "
                f"(HTTP {error.response.status_code}); check --api-key / $TILED_API_KEY"
            ) from None
        raise
    except httpx.TransportError as error:
        raise TiledUnavailableError(f"no Tiled server answers at {uri}: {error}") from None


def connect(
    uri: str,
    api_key: str | None = None,
    *,
    layout: TiledLayout | None = None,
    **from_uri_kwargs: Any,
) -> TiledCatalog:
    """Connect to a Tiled server (embedded or a facility's) and return a `TiledCatalog`.

    Args:
        uri: ``http://host:port`` or the URI of a container on the server
            (``.../api/v1/metadata/<path>``), which becomes the catalog root.
        api_key: the key; default ``$TILED_API_KEY`` (Tiled's own convention); None and no
            variable means an anonymous client (reading a ``--public`` server only).
        layout: container names (default `TiledLayout()`).
        from_uri_kwargs: passed to ``tiled.client.from_uri``.

    Raises:
        TiledAuthError: the server wants a key, or refused this one.
        TiledUnavailableError: nothing answers at ``uri``.
    """
    return TiledCatalog(open_node(uri, api_key, **from_uri_kwargs), layout=layout)


class TiledCatalog:
    """The project's view of a Tiled tree: raw runs, reconstructions, training, models.

    Args:
        root: a ``tiled.client`` container (what ``from_uri`` returns).
        layout: container names.

    The containers are created on first use when the client may write (a read-only client
    gets a KeyError naming the missing container).
    """

    def __init__(self, root: Any, *, layout: TiledLayout | None = None):
        self.root = root
        self.layout = layout or TiledLayout()
        self._containers: dict[str, Any] = {}

    @property
    def uri(self) -> str:
        return str(self.root.uri)

    def __repr__(self) -> str:
        return f"<TiledCatalog {self.uri}>"

    # ---- containers -----------------------------------------------------------------------
    def container(self, field_name: str, *, create: bool = True) -> Any:
        """The top-level container for a `TiledLayout` field ("raw", "models", ...)."""
        if field_name in self._containers:
            return self._containers[field_name]
        from tiled.structures.core import Spec

        name = getattr(self.layout, field_name)
        specs = [Spec("CatalogOfBlueskyRuns", version="3.0")] if field_name == "raw" else []
        if name not in self.root:
            if not create:
                raise KeyError(f"{self.uri} has no {name!r} container")
            try:
                self.root.create_container(
                    name, metadata={"bluesky_ptychonn": field_name}, specs=specs
                )
            except Exception as error:
                if _is_auth_error(error):
                    raise TiledAuthError(
                        f"creating {name!r} on {self.uri} was refused: writing needs the API "
                        "key (--api-key / $TILED_API_KEY)"
                    ) from None
                if name not in self.root:  # not lost to a concurrent creator
                    raise
        node = self.root[name]
        self._containers[field_name] = node
        return node

    @property
    def raw(self) -> Any:
        """Bluesky runs (``CatalogOfBlueskyRuns``), keyed by start uid."""
        return self.container("raw")

    @property
    def reconstructions(self) -> Any:
        return self.container("reconstructions")

    @property
    def training(self) -> Any:
        return self.container("training")

    @property
    def models(self) -> Any:
        return self.container("models")

    def refresh(self) -> None:
        """Forget cached container clients (after the server restarted, say)."""
        self._containers.clear()

    # ---- writing --------------------------------------------------------------------------
    def put(self, write: NodeWrite) -> Any:
        """Apply a `NodeWrite` idempotently; return the node's client.

        Raises:
            TiledAuthError: the client may not write.
        """
        try:
            return self._put(write)
        except Exception as error:
            if _is_auth_error(error):
                raise TiledAuthError(
                    f"writing {write.parent}/{write.key} to {self.uri} was refused "
                    f"(HTTP {error.response.status_code}): writing needs the API key "
                    "(--api-key / $TILED_API_KEY)"
                ) from None
            raise

    def _put(self, write: NodeWrite) -> Any:
        from tiled.structures.core import Spec

        parent = self.container(write.parent)
        specs = [Spec(s) for s in write.specs]
        created = False
        if write.key in parent:
            node = parent[write.key]
        else:
            try:
                node = parent.create_container(write.key, metadata=write.metadata, specs=specs)
                created = True
            except Exception as error:
                status = getattr(getattr(error, "response", None), "status_code", None)
                if status != 409:  # 409: created meanwhile (a retried request)
                    raise
                node = parent[write.key]
        for name, array in write.arrays.items():
            self._put_array(node, name, array)
        if not created:  # metadata last: a reader that sees it sees the arrays it describes
            node.replace_metadata(metadata=write.metadata, specs=specs, drop_revision=True)
        return node

    @staticmethod
    def _put_array(node: Any, name: str, array: np.ndarray) -> None:
        if name in node:
            existing = node[name]
            structure = existing.structure()
            single_chunk = all(len(c) == 1 for c in structure.chunks)
            if (
                tuple(existing.shape) == array.shape
                and np.dtype(existing.dtype) == array.dtype
                and single_chunk
            ):
                existing.write(array)
                return
            node.delete_contents([name], external_only=False)
        node.write_array(array, key=name)


def api_key_from_env() -> str | None:
    """``$TILED_API_KEY`` or None."""
    return os.environ.get("TILED_API_KEY") or None
