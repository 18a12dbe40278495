"""Baseline for asyncer's benchmark: the Python model it grew from.

asyncio on the host, one multiprocessing.Process per task, a semaphore
bounding the processes, results back over a pipe. Prints one JSON line:
sequential no-op latency percentiles (ms) and throughput (tasks/s) with
max_processes = 2.
"""
import asyncio
import json
import multiprocessing as mp
import sys
import time


def noop(conn, x):
    conn.send(x)
    conn.close()


async def run_task(sem, x):
    async with sem:
        recv, send = mp.Pipe(duplex=False)
        proc = mp.Process(target=noop, args=(send, x))
        proc.start()
        send.close()
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        loop.add_reader(recv.fileno(), lambda: fut.done() or fut.set_result(None))
        await fut
        loop.remove_reader(recv.fileno())
        value = recv.recv()
        recv.close()
        await loop.run_in_executor(None, proc.join)
        return value


async def main(latency_tasks, throughput_tasks):
    sem = asyncio.Semaphore(2)
    lat = []
    for i in range(latency_tasks):
        start = time.perf_counter()
        await run_task(sem, i)
        lat.append((time.perf_counter() - start) * 1000)
    lat.sort()
    start = time.perf_counter()
    await asyncio.gather(*(run_task(sem, i) for i in range(throughput_tasks)))
    took = time.perf_counter() - start
    print(json.dumps({
        "p50_ms": lat[len(lat) // 2],
        "p99_ms": lat[min(len(lat) - 1, len(lat) * 99 // 100)],
        "tasks_per_s": throughput_tasks / took,
    }))


if __name__ == "__main__":
    mp.set_start_method("fork")
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
