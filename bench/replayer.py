"""``driftstream replay`` as a contender of the throughput benchmark: one process, settings from ``DRIFTSTREAM_*``.

``python -m bench.replayer --counter FILE --out FILE --state-prefix PREFIX``: replays the events topic
from its start to its end with ``streams.replay.replay`` (state in Redis under PREFIX, started fresh),
its progress callback written to the counter (:class:`bench.agents.Progress`), then writes a JSON
object to ``--out``: the replay's summary and every alert it made. It then waits to be stopped, as a
worker does, so that the parent's last progress sample never races its exit.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.agents import Progress


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replayer", description=__doc__.split("\n")[0])
    parser.add_argument("--counter", required=True, help="progress file made by Progress.create")
    parser.add_argument("--out", required=True, type=Path, help="where the summary and the alerts go (JSON)")
    parser.add_argument("--state-prefix", required=True, help="Redis prefix of the replay's state")
    args = parser.parse_args(argv)

    from streams.replay import replay
    from streams.settings import Settings

    progress = Progress(args.counter)
    alerts: list[dict[str, Any]] = []

    def advance(events: int) -> None:  # the events replayed so far
        progress.add(events - progress.events, 0)

    summary = replay(Settings(), state_prefix=args.state_prefix, existing="fresh", on_alert=alerts.append,
                     progress=advance)  # fmt: skip
    advance(summary.events)
    partial = args.out.with_suffix(".part")
    partial.write_text(json.dumps({"events": summary.events, "messages": summary.messages,
                                   "elapsed": summary.elapsed, "rejected": sum(summary.rejected.values()),
                                   "alerts": alerts}))  # fmt: skip
    partial.rename(args.out)  # whole or absent
    time.sleep(3600)
    return 0


if __name__ == "__main__":
    sys.exit(main())
