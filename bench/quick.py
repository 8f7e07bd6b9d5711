"""The issue-13 ratios in under 40 seconds: the gateway against the model server alone, same run.

Runs the native turn (`turn_overhead.py`) and the streamed turn over SSE (`stream_overhead.py`)
at 1 and 16 clients, briefly, and prints the figures the budget is stated in: turns/s and
fifty-delta streams/s of the model server alone and through one gateway process, the gateway's
share of the model server's rate at 16 clients, and what it adds to the p50 at one client.
Figures, not assertions: nothing here fails on timing (the machine's speed moves 2x in minutes,
so compare runs taken back to back, never with old ones).

    python bench/quick.py [--seconds 1.5]
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()  # the budget counts Django's start-up and the servers' too

import argparse  # noqa: E402
import asyncio  # noqa: E402
import os  # noqa: E402

from common import commit, stack  # noqa: E402
from stream_overhead import direct as stream_direct  # noqa: E402
from stream_overhead import sse  # noqa: E402
from turn_overhead import bench_direct, bench_gateway  # noqa: E402

GOAL_SHARE = 60.0  # % of the model server's turns/s at 16 clients
GOAL_ADDED_MS = 1.5  # added p50 at one client
GOAL_STREAMS = 500  # fifty-delta streams/s from one process


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=1.5, help="measuring time per cell (8 cells)")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = parser.parse_args()
    seconds = args.seconds
    with stack(redis_url=args.redis_url) as run:
        target = f"127.0.0.1:{run.backend_port}"
        port, _ = run.start_gateway()
        await bench_gateway("warm-up", port, run.token, 4, 0.5)
        print(f"# bench-quick, commit {commit()}, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, {os.cpu_count()} cores")
        turns = {}
        for c in (1, 16):
            model = await bench_direct(target, c, seconds)
            gateway = await bench_gateway("gateway (uvicorn)", port, run.token, c, seconds)
            turns[c] = (model, gateway)
            print(model.line())
            print(gateway.line())
        streams = {}
        for c in (1, 16):
            model_streams = await stream_direct(target, c, seconds)
            gateway_streams = await sse(port, run.token, c, seconds)
            streams[c] = (model_streams, gateway_streams)
            print(model_streams.line())
            print(gateway_streams.line())

    model_1, gateway_1 = turns[1]
    model_16, gateway_16 = turns[16]
    share = 100 * gateway_16.rate / model_16.rate
    added = gateway_1.p50 - model_1.p50
    s_model_1, s_gateway_1 = streams[1]
    s_model_16, s_gateway_16 = streams[16]
    first_added = s_gateway_1.first_p50 - s_model_1.first_p50
    print()
    print(f"{'':34}{'model server':>14}{'gateway':>10}")
    print(f"{'native turns/s, c=1':34}{model_1.rate:14.0f}{gateway_1.rate:10.0f}")
    print(f"{'native turns/s, c=16':34}{model_16.rate:14.0f}{gateway_16.rate:10.0f}")
    print(f"{'50-delta streams/s, c=1':34}{s_model_1.rate:14.0f}{s_gateway_1.rate:10.0f}")
    print(f"{'50-delta streams/s, c=16':34}{s_model_16.rate:14.0f}{s_gateway_16.rate:10.0f}   goal >= {GOAL_STREAMS}")
    print(f"gateway's share of the model server's turns/s at c=16: {share:5.1f} %   goal >= {GOAL_SHARE:.0f} %")
    print(f"added p50 of a native turn at c=1:                     {added:5.2f} ms  goal <= {GOAL_ADDED_MS} ms")
    print(f"added first-delta p50 of an SSE stream at c=1:         {first_added:5.2f} ms")
    print(f"streamed share of the model server's streams/s, c=16:  {100 * s_gateway_16.rate / s_model_16.rate:5.1f} %")
    print(f"# took {time.perf_counter() - STARTED:.0f} s in all")


if __name__ == "__main__":
    asyncio.run(main())
