import threading
import time

import pytest

from safecut.runtime.cache import ModelCache, ModelKey


class Model:
    def __init__(self, name):
        self.name = name
        self.closed = False

    def close(self):
        self.closed = True


def key(name, kind="k"):
    return ModelKey(kind, f"/m/{name}")


def test_concurrent_requests_cause_one_load():
    cache = ModelCache(max_models=4, max_bytes=0)
    loads = []
    barrier = threading.Barrier(16)

    def loader():
        loads.append(1)
        time.sleep(0.2)  # slow load: every thread arrives while it runs
        return Model("a")

    got = []

    def worker():
        barrier.wait()
        got.append(cache.get(key("a"), loader))

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(loads) == 1
    assert len(got) == 16 and all(g is got[0] for g in got)
    s = cache.stats()
    assert s["loads"] == 1 and s["misses"] == 1 and s["hits"] == 15


def test_failed_load_propagates_to_waiters_and_is_retried_later():
    cache = ModelCache(max_models=4, max_bytes=0)
    calls = []

    def bad():
        calls.append(1)
        time.sleep(0.1)
        raise RuntimeError("boom")

    errors = []

    def worker():
        try:
            cache.get(key("x"), bad)
        except RuntimeError as e:
            errors.append(str(e))

    ts = [threading.Thread(target=worker) for _ in range(4)]
    [t.start() for t in ts]
    [t.join(10) for t in ts]
    assert errors == ["boom"] * 4 and len(calls) == 1
    assert cache.get(key("x"), lambda: Model("ok")).name == "ok"  # a later request loads again


def test_lru_count_budget_evicts_oldest_and_closes_it():
    cache = ModelCache(max_models=2, max_bytes=0)
    a = cache.get(key("a"), lambda: Model("a"))
    b = cache.get(key("b"), lambda: Model("b"))
    cache.get(key("a"), lambda: Model("a2"))  # touch a: b is now the oldest
    cache.get(key("c"), lambda: Model("c"))
    assert b.closed and not a.closed
    assert set(k.path for k in cache.keys()) == {"/m/a", "/m/c"}
    assert cache.stats()["evictions"] == 1


def test_byte_budget():
    cache = ModelCache(max_models=10, max_bytes=100)
    m1 = cache.get(key("a"), lambda: Model("a"), size=60)
    cache.get(key("b"), lambda: Model("b"), size=60)
    assert m1.closed
    assert cache.stats()["resident_bytes"] == 60


def test_unload_by_kind_and_all():
    cache = ModelCache(max_models=10, max_bytes=0)
    x = cache.get(key("a", "ben2"), lambda: Model("a"))
    y = cache.get(key("b", "llama"), lambda: Model("b"))
    assert cache.unload("ben2") == 1 and x.closed and not y.closed
    assert cache.unload() == 1 and y.closed
    assert cache.stats()["resident_models"] == 0


def test_model_in_use_is_not_closed_until_released():
    cache = ModelCache(max_models=1, max_bytes=0)
    with cache.use(key("a"), lambda: Model("a")) as a:
        cache.get(key("b"), lambda: Model("b"))  # evicts a from the map while in use
        assert not a.closed
        cache.unload()
        assert not a.closed
    assert a.closed


def test_keep_loaded_false_discards_after_use():
    cache = ModelCache(max_models=4, max_bytes=0)
    with cache.use(key("a"), lambda: Model("a"), keep_loaded=False) as a:
        pass
    assert a.closed and not cache.contains(key("a"))


def test_custom_closer_and_listener():
    cache = ModelCache(max_models=4, max_bytes=0)
    closed, events = [], []
    cache.add_listener(lambda ev, k: events.append((ev, k.path)))
    cache.get(key("a"), lambda: object(), closer=lambda m: closed.append(m))
    cache.unload()
    assert len(closed) == 1 and events == [("load", "/m/a"), ("evict", "/m/a")]


def test_changed_file_is_reloaded(tmp_path):
    f = tmp_path / "m.bin"
    f.write_bytes(b"one")
    cache = ModelCache(max_models=4, max_bytes=0)
    n = []

    def loader():
        n.append(1)
        return Model(f.read_bytes())

    first = cache.get(key("f"), loader, files=[str(f)])
    assert cache.get(key("f"), loader, files=[str(f)]) is first
    f.write_bytes(b"two!")  # replaced on disk (size changes, mtime changes)
    second = cache.get(key("f"), loader, files=[str(f)])
    assert second.name == b"two!" and first.closed and len(n) == 2
    assert cache.stats()["reloads_changed_file"] == 1


def test_size_estimate_from_files(tmp_path):
    f = tmp_path / "w.onnx"
    f.write_bytes(b"x" * 1234)
    cache = ModelCache(max_models=4, max_bytes=0)
    cache.get(key("w"), lambda: Model("w"), files=[str(f)])
    assert cache.stats()["resident_bytes"] == 1234


def test_budget_from_env(monkeypatch):
    monkeypatch.setenv("SAFECUT_CACHE_MAX_MODELS", "3")
    monkeypatch.setenv("SAFECUT_CACHE_MAX_MB", "2")
    c = ModelCache()
    assert c.max_models == 3 and c.max_bytes == 2 * 1024 * 1024


def test_many_threads_many_keys_no_deadlock():
    cache = ModelCache(max_models=3, max_bytes=0)
    errors = []

    def worker(i):
        try:
            for j in range(50):
                k = key(str((i + j) % 5))
                with cache.use(k, lambda k=k: Model(k.path)) as m:
                    assert m.name == k.path and not m.closed
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    ts = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(8)]
    [t.start() for t in ts]
    # A deadlock never ends; a generous limit keeps a slow, loaded CI box (each eviction may run a full
    # garbage collection of a heap holding torch) from reading as one. CI once hit 30 s this way.
    deadline = time.monotonic() + 300
    [t.join(max(0.0, deadline - time.monotonic())) for t in ts]
    assert not any(t.is_alive() for t in ts), "deadlock"
    assert not errors
    assert cache.stats()["resident_models"] <= 3


def test_failing_size_wakes_waiters_and_releases_the_model():
    # size() runs after the load; if it raised before the waiters were woken they would wait forever.
    cache = ModelCache(max_models=4, max_bytes=0)
    made = []

    def loader():
        time.sleep(0.2)  # the other threads arrive and wait on this load
        made.append(Model("s"))
        return made[-1]

    def bad_size(m):
        raise ValueError("no size")

    errors = []

    def worker():
        try:
            cache.get(key("s"), loader, size=bad_size)
        except ValueError as e:
            errors.append(str(e))

    ts = [threading.Thread(target=worker, daemon=True) for _ in range(4)]
    [t.start() for t in ts]
    [t.join(10) for t in ts]
    assert not any(t.is_alive() for t in ts), "waiters hang after a failing size()"
    assert errors == ["no size"] * 4 and len(made) == 1 and made[0].closed
    assert not cache.contains(key("s")) and cache.stats()["load_errors"] == 1


def test_eviction_collects_garbage_only_when_the_model_lingers(monkeypatch):
    import safecut.runtime.cache as cache_mod

    collects = []
    monkeypatch.setattr(cache_mod.gc, "collect", lambda *a: collects.append(1) or 0)
    cache = ModelCache(max_models=1, max_bytes=0)
    cache.get(key("a"), lambda: Model("a"))
    cache.get(key("b"), lambda: Model("b"))  # evicts a: freed by refcount, no collection needed
    assert collects == []

    class Cyclic(Model):
        def __init__(self, name):
            super().__init__(name)
            self.me = self  # like a torch module graph: only the cycle collector frees it

    cache.get(key("c"), lambda: Cyclic("c"))  # evicts b
    assert collects == []
    cache.get(key("d"), lambda: Model("d"))  # evicts c, which lingers in its cycle
    assert collects == [1]
