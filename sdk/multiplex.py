"""Model multiplexing: `@serve.multiplexed` and `serve.get_multiplexed_model_id()`.

A multiplexed deployment serves many models from one pool of replicas. Each call names its
model: over HTTP by the `serve_multiplexed_model_id` header, over the gRPC ingress by the
`multiplexed_model_id` metadata key, through a handle by
`handle.options(multiplexed_model_id=...)` (the request's `multiplexed_model_id` field).
`request_model_id` reads it from a request whichever way it came, for the router (which
replica) and for the replica (the request context user code reads).

Design. Inside a replica the decorated loader becomes a `ModelCache`: at most
`max_num_models_per_replica` models, least recently used evicted first. Loads are serialized
by one lock, and a call that waited for it finds a model another call loaded meanwhile, so
concurrent calls for one model load it once. An evicted model's `__del__` (sync or async)
is called at once, as Ray does, so it can free what it holds (GPU memory) before the next
model loads; Python would otherwise call it only when the last reference goes, and could not
await an async one. The caches of the process tell a watcher (the replica's controller
session) when the set of models they hold changes, loading ones included: the router learns
where a model is while it loads, not only once it is in.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from weir.protos import weir_pb2 as pb
from weir.runtime_context import current_request

log = structlog.get_logger("weir.multiplex")

#: The HTTP headers naming the model: Ray's (`serve_multiplexed_model_id`, and the
#: `ray_serve_multiplexed_model_id` its newer docs show); dashed spellings are taken too,
#: since some fronting proxies (nginx by default) drop headers with underscores.
MODEL_ID_HEADERS = (b"serve_multiplexed_model_id", b"serve-multiplexed-model-id",
                    b"ray_serve_multiplexed_model_id", b"ray-serve-multiplexed-model-id")
#: The gRPC ingress metadata key naming the model (Ray's).
MODEL_ID_METADATA = b"multiplexed_model_id"
#: Ray's default for `max_num_models_per_replica`.
DEFAULT_MAX_MODELS_PER_REPLICA = 3

Loader = Callable[[str], Awaitable[Any]]


def request_model_id(request: pb.CallRequest) -> str:
    """The model a call asks for ("" if none): the handle's option, else the HTTP header,
    else the gRPC metadata key."""
    if request.multiplexed_model_id:
        return request.multiplexed_model_id
    if request.HasField("http"):
        for header in request.http.headers:
            if header.name in MODEL_ID_HEADERS:
                return header.value.decode("latin-1")
    elif request.HasField("grpc"):
        for entry in request.grpc.metadata:
            if entry.name == MODEL_ID_METADATA:
                return entry.value.decode()
    return ""


def get_multiplexed_model_id() -> str:
    """The model id of the request being served ("" if it names none, or outside a
    request)."""
    return current_request().multiplexed_model_id


def check_max_models(value: Any) -> int:
    """`max_num_models_per_replica` checked: a positive int, or -1 for no limit."""
    if isinstance(value, bool) or not isinstance(value, int) or not (value > 0 or value == -1):
        raise ValueError("serve.multiplexed(max_num_models_per_replica=...) must be a "
                         f"positive int, or -1 for no limit; got {value!r}")
    return value


class ModelCache:
    """The models one loader holds in this process, least recently used first out.

    `capacity` -1 means no limit. `on_change` is called whenever the set `model_ids()`
    returns changes (a load starts or fails, a model is evicted).
    """

    def __init__(self, load: Loader, capacity: int,
                 on_change: Callable[[], None] | None = None) -> None:
        self._load = load
        self.capacity = check_max_models(capacity)
        self._on_change = on_change
        self._models: OrderedDict[str, Any] = OrderedDict()
        self._loading: dict[str, int] = {}
        self._lock = asyncio.Lock()

    def model_ids(self) -> set[str]:
        """The models held: loaded, or being loaded (or waiting to be)."""
        return {*self._models, *self._loading}

    def loaded(self) -> list[str]:
        """The loaded models, least recently used first."""
        return list(self._models)

    async def get(self, model_id: str) -> Any:
        """The model, loaded first if it is not held (evicting the least recently used
        one when full). A load that raises leaves nothing behind and raises to every
        caller waiting for it."""
        if type(model_id) is not str:
            raise TypeError(f"a multiplexed model id must be a str, got {type(model_id).__name__}")
        if not model_id:
            raise ValueError("a multiplexed model id must not be empty: set the "
                             "serve_multiplexed_model_id header or the handle's "
                             "multiplexed_model_id option")
        if model_id in self._models:
            self._models.move_to_end(model_id)
            return self._models[model_id]
        self._loading[model_id] = self._loading.get(model_id, 0) + 1
        if self._loading[model_id] == 1:
            self._changed()
        try:
            async with self._lock:
                if model_id in self._models:  # another call loaded it while this one waited
                    self._models.move_to_end(model_id)
                    return self._models[model_id]
                while 0 < self.capacity <= len(self._models):
                    await self._evict_lru()
                log.info("loading model", model_id=model_id)
                model = await self._load(model_id)
                self._models[model_id] = model
                log.info("model loaded", model_id=model_id)
                return model
        finally:
            self._loading[model_id] -= 1
            if not self._loading[model_id]:
                del self._loading[model_id]
                self._changed()

    async def clear(self) -> None:
        """Evict every model (the replica is stopping)."""
        async with self._lock:
            while self._models:
                await self._evict_lru()

    async def _evict_lru(self) -> None:
        model_id, model = self._models.popitem(last=False)
        self._changed()
        log.info("evicting model", model_id=model_id)
        await release(model, model_id)

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()
        _models_changed()


async def release(model: Any, model_id: str = "") -> None:
    """Call the model's `__del__` now (awaited if async, in a thread if not) and make sure
    Python does not call it a second time when the object is freed. A cleanup that raises
    is logged: the eviction stands."""
    cleanup = getattr(model, "__del__", None)
    if cleanup is None:
        return
    try:
        if inspect.iscoroutinefunction(cleanup):
            await cleanup()
        else:
            await asyncio.to_thread(cleanup)
    except Exception:
        log.warning("the evicted model's __del__ raised", model_id=model_id, exc_info=True)
    _disarm(model)


_DISARMED: weakref.WeakKeyDictionary[type, type] = weakref.WeakKeyDictionary()


def _no_cleanup(self: Any) -> None:
    """The __del__ of a model whose cleanup already ran."""


def _disarm(model: Any) -> None:
    """Move the model to a subclass of its class whose __del__ does nothing: it ran
    already (an async one, run by Python's finalizer, would only warn that it was never
    awaited). Only for classes of the plain `type` metaclass, whose subclassing has no side
    effects; others keep their __del__, which then runs again when the object is freed."""
    cls = type(model)
    if type(cls) is not type:
        return
    try:
        quiet = _DISARMED.get(cls)
        if quiet is None:
            quiet = _DISARMED[cls] = type(cls.__name__, (cls,), {
                "__del__": _no_cleanup, "__slots__": (), "__module__": cls.__module__,
                "__qualname__": cls.__qualname__})
        model.__class__ = quiet
    except Exception:
        # A layout Python cannot swap, or a class refusing subclasses (__init_subclass__):
        # the cleanup ran; it will only run again when the object is freed.
        log.debug("cannot keep the evicted model's __del__ from running again",
                  model_class=cls.__qualname__)


# The process's caches and who wants to hear of their changes: the replica's session.
_caches: weakref.WeakSet[ModelCache] = weakref.WeakSet()
_watchers: list[Callable[[], None]] = []
#: Whether a `@serve.multiplexed` loader was defined in this process (its caches come on
#: first use; callers want to know before that the replica multiplexes).
_declared = [False]


def multiplexes() -> bool:
    """Whether this process has a `@serve.multiplexed` loader (its replica multiplexes)."""
    return _declared[0]


def _models_changed() -> None:
    for watcher in list(_watchers):
        watcher()


def watch_models(callback: Callable[[], None]) -> None:
    """Call `callback` whenever the models this process holds change (from the thread that
    changed them: the event loop the loaders run on)."""
    _watchers.append(callback)


def held_model_ids() -> list[str]:
    """Every model this process holds (loaded or loading), sorted."""
    return sorted({m for cache in list(_caches) for m in cache.model_ids()})


async def release_all() -> None:
    """Evict every model of every cache of this process (it is stopping)."""
    for cache in list(_caches):
        try:
            await cache.clear()
        except Exception:
            log.warning("evicting models at shutdown failed", exc_info=True)


def multiplexed(func: Callable[..., Awaitable[Any]] | None = None,
                max_num_models_per_replica: int = DEFAULT_MAX_MODELS_PER_REPLICA) -> Any:
    """Make an async model loader (`async def get_model(self, model_id: str)`, or a plain
    function of the model id) a per-replica LRU cache of at most
    `max_num_models_per_replica` models (-1: no limit): calling it returns the model, loaded
    only if this replica does not hold it yet. Use as `@serve.multiplexed` or
    `@serve.multiplexed(max_num_models_per_replica=N)`."""
    capacity = check_max_models(max_num_models_per_replica)

    def decorate(load: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        if not inspect.iscoroutinefunction(load):
            raise TypeError(f"@serve.multiplexed needs an async function (`async def "
                            f"{getattr(load, '__name__', 'get_model')}(self, model_id)`); "
                            f"got {load!r}")
        params = list(inspect.signature(load).parameters.values())
        if not 1 <= len(params) <= 2:
            raise TypeError("@serve.multiplexed decorates a function of the model id, or a "
                            "method taking self and the model id; "
                            f"{load.__qualname__} takes {len(params)} parameters")
        attribute = f"_weir_models_{load.__name__}"
        _declared[0] = True
        plain: list[ModelCache] = []  # the cache of a plain function (not a method)

        def cache_of(owner: Any) -> ModelCache:
            if owner is None:
                if not plain:
                    plain.append(_new_cache(load, capacity))
                return plain[0]
            cache = getattr(owner, attribute, None)
            if cache is None:
                cache = _new_cache(functools.partial(load, owner), capacity)
                setattr(owner, attribute, cache)
            return cache

        @functools.wraps(load)
        async def get_model(*args: Any) -> Any:
            if len(args) == 1:
                return await cache_of(None).get(args[0])
            if len(args) == 2:
                return await cache_of(args[0]).get(args[1])
            raise TypeError(f"{load.__qualname__} takes the model id only "
                            f"(got {len(args)} positional arguments)")

        return get_model

    return decorate if func is None else decorate(func)


def _new_cache(load: Loader, capacity: int) -> ModelCache:
    cache = ModelCache(load, capacity)
    _caches.add(cache)
    return cache
