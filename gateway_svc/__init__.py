"""The gateway: the one API clients call, in front of the preprocess, model and postprocess tiers.

One request's path, whatever door it comes by:

    server.py    GatewayTier.Predict / PredictStream     the gRPC door
    rest.py      build_app: /v1/predict                  the REST door
    openai.py    routes: /v1/embeddings, /v1/completions, /v1/chat/completions
        -> orchestrator.py  Gateway.predict / predict_stream  (auth, admission, then
           Gateway._predict_once: preprocess -> model -> postprocess)
        -> errors: splitserve.core.status (one table: gRPC and HTTP status codes)

Beside it: versions.py (which bundle version requests are pinned to, refreshed from the tiers),
cache.py (the response cache of deterministic answers, per record: `cache_bytes`),
auth.py (tokens), inline.py (the pre/post tiers' servicers run in this process), messages.py (the
messages between hops), timing.py (where the time went), stream.py (streamed text deltas), pool.py
(channels to the tiers' replicas: balancing, retries, TLS), settings.py.
"""
