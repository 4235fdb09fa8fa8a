"""What the Ray Serve transport adds per hop, against `splitserve up`'s gRPC, in one run on one
machine: the same bundle served by `splitserve up` (gateway and tiers as processes on loopback) and
by `splitserve ray --address` on a one-node Ray cluster started here (head on loopback), then N
sequential one-record requests to each gateway's REST door; per hop, the p50 of the time the
gateway measured for it (`splitserve-{preprocess,model,postprocess}-us`: the call, transport and
the tier's work), and of the whole request as the client saw it. The tier's own work is the same
code in both, so the difference is the transport.

    HF_HUB_OFFLINE=1 python benchmarks/ray_hops.py BUNDLE_URI [--requests 200] [--json PATH]

Starts and stops its own Ray head (`ray start --head --block` on 127.0.0.1:26391, HTTP 28091, gRPC 29091).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil

HOPS = ("preprocess", "model", "postprocess")
BODY = json.dumps({"records": [{"text": "a short sentence about rivers"}], "params": {"pooling": "mean"}}).encode()


def timed(url: str, n: int) -> dict[str, float]:
    """p50s (ms) of each hop and of the whole request, over `n` sequential requests (after 10 to warm)."""
    samples: dict[str, list[float]] = {h: [] for h in (*HOPS, "request")}
    for i in range(n + 10):
        start = time.perf_counter()
        request = urllib.request.Request(url, BODY, {"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
            headers = response.headers
        if i < 10:
            continue
        samples["request"].append((time.perf_counter() - start) * 1000)
        for hop in HOPS:
            samples[hop].append(int(headers[f"splitserve-{hop}-us"]) / 1000)
    return {k: round(statistics.median(v), 2) for k, v in samples.items()}


def wait_for_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            time.sleep(2)  # the GCS listens a moment before the head's raylet is up
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bundle_uri")
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--json")
    args = p.parse_args()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1"}
    splitserve, ray = [sys.executable, "-m", "splitserve"], str(Path(sys.executable).with_name("ray"))
    up = subprocess.Popen(
        [*splitserve, "up", args.bundle_uri, "--rest-port", "0", "--replicas", "model=1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    temp, cluster = "/tmp/ray-hops", None
    try:
        assert up.stdout is not None
        addresses = json.loads(up.stdout.readline())
        head = ["--head", "--node-ip-address=127.0.0.1", "--port=26391", "--num-cpus=2", "--include-dashboard=false"]
        # --block: `ray start` stays up, the parent of the head's processes, all stopped together at the end
        cluster = subprocess.Popen(
            [ray, "start", *head, f"--temp-dir={temp}", "--disable-usage-stats", "--block"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        wait_for_port(26391)
        deploy = [*splitserve, "ray", args.bundle_uri, "--out", f"{temp}/app", "--address", "127.0.0.1:26391"]
        deploy += ["--http-host", "127.0.0.1", "--http-port", "28091", "--grpc-port", "29091"]
        deploy += [f"--replicas={t}=1:1" for t in (*HOPS, "gateway")] + [f"--cpus={t}=0.25" for t in (*HOPS, "gateway")]
        subprocess.run(deploy, check=True, env=env)
        results = {
            "up": timed(f"http://{addresses['rest']}/v1/predict", args.requests),
            "ray": timed("http://127.0.0.1:28091/v1/predict", args.requests),
        }
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(60)
        if cluster is not None:  # the head's processes: `ray start`'s descendants (workers in sessions of their own)
            for process in [*psutil.Process(cluster.pid).children(recursive=True), psutil.Process(cluster.pid)]:
                process.kill()
    added = {k: round(results["ray"][k] - results["up"][k], 2) for k in results["up"]}
    results["added_by_ray"] = added
    print(f"p50 ms over {args.requests} sequential requests (one record): {json.dumps(results)}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
