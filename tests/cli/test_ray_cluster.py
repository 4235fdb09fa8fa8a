"""`splitserve ray models:/name@alias --address` on a Ray cluster of two hosts, for real: a head and
a worker, each in a network namespace of its own (tests/support/netns.py) with a bundle cache of
its own, and the client on a third. Three bundles behind one gateway (feature-extraction,
text-classification, and text-generation, streamed) are registered in the session's MLflow store
(sqlite, on the filesystem every host shares) and deployed by their aliases, which `splitserve ray`
pins to the versions they name; the replicas load them through MLflow (MLFLOW_TRACKING_URI reaches
them), and replicas started later find them in their host's cache index instead. The answers equal
those of the tiers `splitserve up` runs (`tests.support.stack`, the same servers in this process);
the model deployment has replicas on both hosts, scales up under load and back down after it;
under load (gRPC, and REST through Serve's HTTP proxy) one model replica is killed (kill -9), then
the gateway replica, then every process of the worker host: 0 wrong answers, every failure a
retriable status. The figures are printed (requests, lost, wrong, seconds to scale and recover):
they tell the speed; the time limits are generous bounds, for a loaded 2-core CI machine. Every
Ray process is killed and the namespaces removed at the end. Needs root and a kernel that allows
network namespaces: skipped with the reason otherwise."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

from splitserve.client import Client
from tests.support.netns import Hosts, skip_reason
from tests.support.stack import Stack

TAG = f"sr{os.getpid() % 10000}"
HOSTS = {"head": 1, "worker": 2, "client": 3}
# Bounds, not expectations: each load stops once what it waits for happened (the figures say when).
SCALE_LIMIT_S = 150.0  # to scale up under load, and down after it
RECOVERY_LIMIT_S = 120.0  # to replace a killed replica, the gateway, a lost host's replicas
AFTER_RECOVERY_S = 5.0  # load kept on what is left after the host loss
CONCURRENCY = 6
MEMORY_BOUND_MB = 3000  # every Ray process of both hosts (proportional set size), at the most replicas
TEXTS = ["Paris is lovely in spring", "the river was cold", "a train to nowhere"]
DEPLOYMENTS = ("preprocess", "model", "postprocess", "gateway")
RETRIABLE = {"UNAVAILABLE", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED"}


def ray_start(hosts: Hosts, host: str, cache: Path, *args: str) -> None:
    """A Ray node on `host`, its replicas' bundle cache in `cache` (the host's own disk)."""
    ray = str(Path(sys.executable).with_name("ray"))
    argv = hosts.exec(host, ray, "start", f"--node-ip-address={hosts.address(host)}", "--num-cpus=2", *args)
    argv += ["--object-store-memory=80000000", "--disable-usage-stats"]
    env = {**ray_env(), "SPLITSERVE_CACHE_DIR": str(cache)}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-3000:]


def ray_env() -> dict[str, str]:
    # Replicas and handles report their ongoing requests to Serve's autoscaler every second (10 s by
    # default), so the scaling below is seen within seconds.
    push = {f"RAY_SERVE_{who}_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "1" for who in ("REPLICA", "HANDLE")}
    return {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1", **push}


def replicas(hosts: Hosts, deployment: str) -> dict[str, list[int]]:
    """Each Ray host's replicas of `deployment`, by process (Ray titles them `ray::ServeReplica:APP:NAME`,
    and `ray::ServeReplica:APP:NAME.METHOD...` while they run a call)."""
    title = re.compile(re.escape(f"ray::ServeReplica:splitserve:{deployment}") + r"(\..*)?")
    out: dict[str, list[int]] = {}
    for host in ("head", "worker"):
        out[host] = []
        for pid in hosts.pids(host):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
            except OSError:
                continue
            if title.fullmatch(cmdline.strip()):
                out[host].append(pid)
    return out


def model_replicas(hosts: Hosts) -> int:
    return sum(map(len, replicas(hosts, "model").values()))


def ray_memory_mb(hosts: Hosts) -> int:
    """The memory every process of the Ray hosts uses (proportional set size: shared pages split)."""
    total = 0
    for host in ("head", "worker"):
        for pid in hosts.pids(host):
            try:
                lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
            except OSError:
                continue
            total += sum(int(line.split()[1]) for line in lines if line.startswith("Pss:"))
    return total // 1024


class Load:
    report: dict = {}


@contextlib.contextmanager
def loaded(hosts: Hosts, target: str, rest: str, seconds: float):
    """tests/support/ray_load.py on the client host (gRPC to `target`, one worker REST to `rest`),
    started and warm, until the block ends (at most `seconds`); its report after."""
    script = str(Path(__file__).parents[1] / "support" / "ray_load.py")
    argv = hosts.exec("client", sys.executable, script, target, str(seconds), str(CONCURRENCY), rest)
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    load = Load()
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert json.loads(proc.stdout.readline()) == {"phase": "warm"}
        yield load
        proc.stdin.write("stop\n")
        proc.stdin.close()
        line = proc.stdout.readline()
        assert proc.wait(90) == 0, "the load client failed"
        load.report = json.loads(line)
    finally:
        if proc.poll() is None:
            proc.kill()


def wait_for(what: str, check, timeout: float) -> float:
    """Seconds until `check()` holds (fails after `timeout`)."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, f"{what}: not within {timeout:.0f} s"
        time.sleep(0.5)
    return time.monotonic() - start


def answers(target: str) -> dict[str, list[dict]]:
    greedy = {"max_new_tokens": 6, "do_sample": False}
    with Client(target, timeout_s=60) as client:
        streamed = list(client.stream(TEXTS[:1], params=greedy, model="gen"))
        return {
            "embeddings": client.predict(TEXTS, params={"pooling": "mean", "normalize": True}),
            "labels": client.predict(TEXTS, params={"top_k": 2}, model="tc"),
            "streamed": ["".join(e["text"] for e in streamed[:-1]), streamed[-1]["results"]],
        }


def assert_same(got: dict[str, list[dict]], expected: dict[str, list[dict]]) -> None:
    for a, b in zip(got["embeddings"], expected["embeddings"], strict=True):
        assert (
            a["id"] == b["id"] and max(abs(x - y) for x, y in zip(a["embedding"], b["embedding"], strict=True)) < 1e-5
        )
    for a, b in zip(got["labels"], expected["labels"], strict=True):
        assert [x["label"] for x in a["labels"]] == [x["label"] for x in b["labels"]], (a, b)
        assert all(abs(x["score"] - y["score"]) < 1e-5 for x, y in zip(a["labels"], b["labels"], strict=True))
    assert got["streamed"] == expected["streamed"]  # text deltas, then the final answer (greedy: exact)


def registered(exported, name: str) -> tuple[str, str]:
    """The bundle registered as `name` (a new version), aliased `live`: its alias URI and version URI."""
    version = mlflow.register_model(exported.bundle_uri, name).version
    mlflow.MlflowClient().set_registered_model_alias(name, "live", version)
    return f"models:/{name}@live", f"models:/{name}/{version}"


def test_a_two_host_ray_cluster_serves_scales_and_survives_losing_a_host(tiny_bundles, tmp_path: Path) -> None:
    reason = skip_reason(TAG)
    if reason:
        pytest.skip(reason)
    bundles = {
        "fe": tiny_bundles[("feature-extraction", "bert")],
        "tc": tiny_bundles[("text-classification", "bert")],
        "gen": tiny_bundles[("text-generation", "gpt2")],
    }
    more = {"bundle": [f"{m}={bundles[m].local_dir}" for m in ("tc", "gen")]}
    with Stack(bundles["fe"].local_dir, pre=more, model=more, post=more) as stack:
        expected = answers(stack.gateway)  # what `up`'s tiers answer
    aliases, pinned = {}, {}
    for m, exported in bundles.items():
        aliases[m], pinned[m] = registered(exported, f"ray-cluster-{m}")
    try:
        hosts = Hosts(TAG, "10.213.79", HOSTS).__enter__()
    except RuntimeError as exc:
        pytest.skip(f"the kernel refused part of the network: {exc}")
    temp_dir = f"/tmp/{TAG}-ray"  # short: Ray's socket paths must fit in 107 characters
    try:
        head = hosts.address("head")
        caches = {h: tmp_path / f"cache-{h}" for h in ("head", "worker")}
        head_args = ("--head", "--port=6379", "--include-dashboard=false", f"--temp-dir={temp_dir}")
        ray_start(hosts, "head", caches["head"], *head_args)
        ray_start(hosts, "worker", caches["worker"], f"--address={head}:6379")
        # The application, deployed from the config `splitserve ray` writes, by the client host.
        tiers = ("preprocess", "model", "postprocess")
        more = {"bundle": [f"{m}={aliases[m]}" for m in ("tc", "gen")]}
        deploy = [sys.executable, "-m", "splitserve", "ray", aliases["fe"], "--out", str(tmp_path / "app")]
        deploy += ["--address", f"{head}:6379", "--replicas", "model=2:3", "--target-ongoing", "model=0.2"]
        deploy += [f"--cpus={t}=0.25" for t in (*tiers, "gateway")]
        deploy += [f"--setting={t}.bundle={json.dumps(more['bundle'])}" for t in tiers]
        deploy += ["--setting=model.intra_op_threads=1", "--upscale-delay-s=1", "--downscale-delay-s=4"]
        deploy += ["--look-back-s=3"]
        started = time.monotonic()
        done = subprocess.run(hosts.exec("client", *deploy), capture_output=True, text=True, timeout=400, env=ray_env())
        assert done.returncode == 0, done.stderr[-3000:]
        deployed_s = time.monotonic() - started
        for m, alias in aliases.items():  # pinned to the version the alias names
            assert f"{alias} is {pinned[m]}" in done.stdout, done.stdout
        config = (tmp_path / "app" / "serve.yaml").read_text()
        assert "splitserve.ray_serve.app:build" in config and "@live" not in config

        target, rest = f"{head}:9000", f"http://{head}:8000"  # Serve's gRPC and HTTP proxies on the head
        assert_same(answers_on(hosts, target), expected)
        # A process list is a snapshot (a replica's title changes while it runs a call): wait for both.
        on_both = lambda: all(replicas(hosts, "model").values())  # noqa: E731
        wait_for(f"model replicas on both hosts (now {replicas(hosts, 'model')})", on_both, 30)

        # Scaling: under load the model deployment goes from 2 replicas to 3; after it, back to 2.
        with loaded(hosts, target, rest, SCALE_LIMIT_S + 30) as load:
            scaled_up_s = wait_for("model scaled up to 3", lambda: model_replicas(hosts) == 3, SCALE_LIMIT_S)
            memory_mb = ray_memory_mb(hosts)
        assert load.report["wrong"] == 0 and not load.report["codes"], load.report
        scaled_down_s = wait_for("model scaled down to 2", lambda: model_replicas(hosts) == 2, SCALE_LIMIT_S)

        # Losses under load: kill -9 one model replica, then the gateway, then every process of the worker host.
        with loaded(hosts, target, rest, 5 * RECOVERY_LIMIT_S) as load:
            time.sleep(3)
            wait_for("model replicas to kill", lambda: model_replicas(hosts) >= 2, RECOVERY_LIMIT_S)
            [victim, *_] = replicas(hosts, "model")["worker"] or replicas(hosts, "model")["head"]
            before = model_replicas(hosts)
            replica_killed = time.time()
            os.kill(victim, 9)
            replica_back_s = wait_for(
                "the killed replica replaced",
                lambda: model_replicas(hosts) >= before and victim not in sum(replicas(hosts, "model").values(), []),
                RECOVERY_LIMIT_S,
            )
            # The gateway (ingress) replica: the calls it held are answered UNAVAILABLE and retried.
            wait_for("the gateway replica", lambda: sum(replicas(hosts, "gateway").values(), []), RECOVERY_LIMIT_S)
            [gateway, *_] = sum(replicas(hosts, "gateway").values(), [])
            gateway_killed = time.time()
            os.kill(gateway, 9)
            gateway_back_s = wait_for(
                "the gateway replaced",
                lambda: sum(replicas(hosts, "gateway").values(), []) not in ([], [gateway]),
                RECOVERY_LIMIT_S,
            )
            on_worker = {d: len(replicas(hosts, d)["worker"]) for d in DEPLOYMENTS}
            host_killed = time.time()
            killed = hosts.kill_all("worker")
            host_back_s = wait_for(
                "every deployment re-placed on the head (2 model replicas)",
                lambda: all(len(replicas(hosts, d)["head"]) >= (2 if d == "model" else 1) for d in DEPLOYMENTS),
                RECOVERY_LIMIT_S,
            )
            time.sleep(AFTER_RECOVERY_S)
        report = dict(load.report)
        failures = report.pop("failures")
        after_replica = [t - replica_killed for t, _, _ in failures if replica_killed <= t < gateway_killed]
        after_gateway = [t - gateway_killed for t, _, _ in failures if gateway_killed <= t < host_killed]
        after_host = [t - host_killed for t, _, _ in failures if t >= host_killed]
        figures = {
            **report,
            "deployed_s": round(deployed_s, 1),
            "memory_mb": memory_mb,
            "scaled_up_s": round(scaled_up_s, 1),
            "scaled_down_s": round(scaled_down_s, 1),
            "replica_kill_failures": len(after_replica),
            "replica_back_s": round(replica_back_s, 1),
            "gateway_kill_failures": len(after_gateway),
            "gateway_back_s": round(gateway_back_s, 1),
            "host_kill_processes": killed,
            "host_kill_replicas": {d: n for d, n in on_worker.items() if n},
            "host_kill_failures": len(after_host),
            "host_kill_last_failure_s": round(max(after_host, default=0.0), 1),
            "host_back_s": round(host_back_s, 1),
        }
        print(f"\nray cluster (head + worker namespaces, {CONCURRENCY} clients, one of them REST): {figures}")
        assert report["requests"] > 50 and report["rest_requests"] > 5
        assert memory_mb < MEMORY_BOUND_MB, figures
        assert report["wrong"] == 0, figures
        assert all(code in RETRIABLE for _, code, _ in failures), failures
        assert_same(answers_on(hosts, target), expected)  # after losing a host, still the same answers
        # Replicas found the pinned versions in their host's cache index (never an alias there).
        index = json.loads((caches["head"] / "uris.json").read_text())
        assert {json.loads(k)[0] for k in index} == set(pinned.values()), index
    finally:
        hosts.__exit__()
        shutil.rmtree(temp_dir, ignore_errors=True)


def answers_on(hosts: Hosts, target: str) -> dict[str, list[dict]]:
    """`answers(target)` from the client host (its own namespace)."""
    code = f"import json; from tests.cli.test_ray_cluster import answers; print(json.dumps(answers({target!r})))"
    done = subprocess.run(
        hosts.exec("client", sys.executable, "-c", code),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[2],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
