"""One module per `splitserve` command, named for it: each adds its subparser (`add_parser`) and
runs the command (`run`). `log`, `export`, `inspect`, `new_template` (new-template), `serve`
(serve-preprocess, serve-model, serve-postprocess, serve-gateway), `up`, `predict`, `demo`; `bench`
and `k8s`/`kserve` live with their packages (`splitserve.bench.command`, `splitserve.k8s.command`)."""
