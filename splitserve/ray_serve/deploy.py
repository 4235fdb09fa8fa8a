"""`splitserve ray --address`: deploy the Serve config to a running Ray cluster, as `serve run
CONFIG` does (connect to its GCS as a driver, start Serve with the config's proxies, submit the
applications), then wait until the application is RUNNING. Needs no dashboard on the head."""

from __future__ import annotations

import logging
import time
from typing import Any

from splitserve.core.errors import BundleError


def deploy(config: dict[str, Any], address: str, timeout_s: float) -> None:
    import ray
    from ray import serve
    from ray.serve._private import api
    from ray.serve._private.constants import SERVE_NAMESPACE
    from ray.serve.config import gRPCOptions
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(config)
    ray.init(address=address, namespace=SERVE_NAMESPACE, logging_level=logging.WARNING, log_to_driver=False)
    try:
        client = api.serve_start(
            http_options=schema.http_options.model_dump(),
            proxy_location=schema.proxy_location,
            grpc_options=gRPCOptions(**schema.grpc_options.model_dump()),
        )
        submitted = time.time()
        client.deploy_apps(schema, _blocking=False)
        names = [app.name for app in schema.applications]
        deadline = time.monotonic() + timeout_s
        while True:
            apps = serve.status().applications
            # this deploy's states (an application deployed before keeps its old state for a moment)
            states = {n: apps[n] for n in names if n in apps and apps[n].last_deployed_time_s >= submitted - 1}
            failed = {n: a.message for n, a in states.items() if a.status == "DEPLOY_FAILED"}
            if failed:
                raise BundleError(f"Ray Serve could not deploy {failed}")
            if len(states) == len(names) and all(a.status == "RUNNING" for a in states.values()):
                return
            if time.monotonic() > deadline:
                shown = {n: a.status for n, a in states.items()}
                raise BundleError(f"not RUNNING within {timeout_s:.0f} s: {shown}")
            time.sleep(1)
    finally:
        ray.shutdown()
