"""The Ray Serve path (`splitserve ray`): the tiers as Serve deployments and the gateway as the
ingress (`app`), over Serve handles (`handles`); the config and KubeRay manifest it is deployed
from (`config`, plain data), and deploying it to a running cluster (`deploy`). Only this package
imports Ray (the `ray` extra)."""
