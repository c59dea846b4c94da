"""Where a worker's memory goes: the engine alone on many models x features, no Kafka.

``python -m bench.memory [--models 100] [--features 100] [--per-model 6000] [--trace]``

The messages (1000-event envelopes of ``streams.simulate``) are written to a temp file first, by a
child process, so the generator's data is not in the measured process; they are then fed to one ``Engine`` with a
``RedisStateStore`` on a throw-away redis-server, in the order a producer sending every model at
once gives (every model's first envelope, then every model's second...), checkpointing every
second as the worker does. It prints the RSS and peak RSS after each round of envelopes, at the
end, and after ``malloc_trim`` (glibc returning freed heap pages: what of the RSS is freed memory
the allocator kept); with ``--trace`` the live Python heap at the end by allocating line, each with the
innermost line of this repository that led to it (numpy's ``numeric.py:385`` says nothing of whose
arrays they are), as tracemalloc sees it: numpy buffers included, river's Rust allocations not. The
Faust worker adds its read-ahead (``3 x BATCH_MAX`` messages) and Faust/aiokafka themselves:
``bench.throughput``'s memory run measures the whole worker.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import itertools
import multiprocessing
import tempfile
import time
import tracemalloc
from collections.abc import Iterator, Sequence
from pathlib import Path

import orjson
from prometheus_client import CollectorRegistry

from streams.engine import Engine, Record
from streams.metrics import Metrics
from streams.services import EmbeddedRedis
from streams.settings import Settings
from streams.simulate import Traffic, model_events
from streams.state import RedisStateStore

PARTITIONS = 4
ENVELOPE = 1000
TRACE_FRAMES = 8  # frames kept per traced allocation: enough to reach this repository's code from numpy's
ROOT = Path(__file__).resolve().parent.parent


def memory() -> str:
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    rss, peak = (int(status[k].split()[0]) // 1024 for k in ("VmRSS", "VmHWM"))
    return f"RSS {rss:,} MB, peak {peak:,} MB"


def write_messages(path: Path, traffic: Traffic, per_model: int) -> None:
    """Round r of every model, then round r + 1: a 16-byte header (round, model, length) per envelope."""
    with path.open("wb") as out:
        for index in range(len(traffic.models)):
            events = model_events(traffic, index)
            for round_ in range(per_model // ENVELOPE):
                value = orjson.dumps(list(itertools.islice(events, ENVELOPE)))
                out.write(round_.to_bytes(4, "little") + index.to_bytes(4, "little") + len(value).to_bytes(8, "little"))
                out.write(value)


def read_messages(path: Path) -> Iterator[tuple[int, int, bytes]]:
    """(round, model index, envelope), round by round."""
    where: dict[int, list[tuple[int, int, int]]] = {}
    with path.open("rb") as file:
        while header := file.read(16):
            round_, index, size = (int.from_bytes(header[a:b], "little") for a, b in ((0, 4), (4, 8), (8, 16)))
            where.setdefault(round_, []).append((index, file.tell(), size))
            file.seek(size, 1)
        for round_ in sorted(where):
            for index, position, size in where[round_]:
                file.seek(position)
                yield round_, index, file.read(size)


async def run(path: Path, models: int, trace: bool) -> None:
    print(f"start: {memory()}", flush=True)
    with EmbeddedRedis() as redis:
        settings = Settings(redis_url=redis.url, max_models=models, app_id="bench-memory", state_prefix="bench-memory")
        engine = Engine(settings, RedisStateStore.from_settings(settings), Metrics(CollectorRegistry()))
        offsets = [0] * PARTITIONS
        current, last_checkpoint, checkpoints = 0, time.monotonic(), []
        for round_, index, value in read_messages(path):
            if round_ != current:
                print(f"after {round_ * ENVELOPE:,} events per model: {memory()}", flush=True)
                current = round_
            partition = index % PARTITIONS
            record = Record("events", partition, offsets[partition], time.time(), f"m{index}".encode(), value)
            await engine.process([record])
            offsets[partition] += 1
            if time.monotonic() - last_checkpoint >= 1.0:
                started = time.perf_counter()
                await engine.checkpoint()
                checkpoints.append(time.perf_counter() - started)
                last_checkpoint = time.monotonic()
        await engine.checkpoint()
        print(f"after {(current + 1) * ENVELOPE:,} events per model: {memory()}", flush=True)
        if checkpoints:
            print(f"checkpoints: {len(checkpoints)}, longest {max(checkpoints):.2f} s", flush=True)
        gc.collect()
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        print(f"after malloc_trim: {memory()}", flush=True)
        if trace:
            print_heap(tracemalloc.take_snapshot())


def _where(frame: tracemalloc.Frame) -> str:
    path = frame.filename.split("site-packages/")[-1]  # a library's own path: numpy/_core/numeric.py
    return f"{Path(path).relative_to(ROOT) if Path(path).is_relative_to(ROOT) else path}:{frame.lineno}"


def print_heap(snapshot: tracemalloc.Snapshot, top: int = 15) -> None:
    """The live heap by allocating line and the innermost line of this repository's code behind it."""
    sites: dict[tuple[str, str], list[int]] = {}
    for stat in snapshot.statistics("traceback"):
        frames = list(stat.traceback)[::-1]  # innermost first
        ours = next((f for f in frames if Path(f.filename).is_relative_to(ROOT) and ".venv" not in f.filename), None)
        key = (_where(frames[0]), _where(ours) if ours is not None and ours is not frames[0] else "")
        size_count = sites.setdefault(key, [0, 0])
        size_count[0] += stat.size
        size_count[1] += stat.count
    total = sum(size for size, _ in sites.values())
    print(f"live Python heap (tracemalloc): {total / 2**20:,.0f} MB; largest by line (<- this repository's):")
    for (line, ours), (size, count) in sorted(sites.items(), key=lambda item: -item[1][0])[:top]:
        print(f"  {size / 2**20:7.1f} MB {count:>9,} blocks  {line}{f' <- {ours}' if ours else ''}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--features", type=int, default=100, help="3/4 numeric, 1/4 categorical")
    parser.add_argument("--per-model", type=int, default=6000, help="events per model, in 1000-event envelopes")
    parser.add_argument("--trace", action="store_true", help="trace Python allocations (slower; heap by line)")
    args = parser.parse_args(argv)
    traffic = Traffic(models=tuple(f"m{i}" for i in range(args.models)), numeric=args.features * 3 // 4,
                      categorical=args.features - args.features * 3 // 4)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="driftstream-bench-memory-") as work:
        path = Path(work) / "envelopes.bin"
        started = time.monotonic()
        # In a child process: the generator's data must not stay in the measured heap.
        spawn = multiprocessing.get_context("spawn")
        writer = spawn.Process(target=write_messages, args=(path, traffic, args.per_model))
        writer.start()
        writer.join()
        if writer.exitcode:
            raise SystemExit(f"writing the envelopes failed (exit code {writer.exitcode})")
        print(f"{args.models} models x {args.features} features, {args.per_model:,} events per model "
              f"({path.stat().st_size / 2**20:,.0f} MB of envelopes, written in {time.monotonic() - started:.0f} s)")
        if args.trace:
            tracemalloc.start(TRACE_FRAMES)
        asyncio.run(run(path, args.models, args.trace))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
