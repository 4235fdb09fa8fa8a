"""The main job: log all-MiniLM-L6-v2 to a local MLflow store, export the serving bundle,
start every tier and the gateway, embed sentences through it, print a similarity ranking,
and shut everything down."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

SENTENCES = [
    "Abraham Lincoln cut down a cherry tree",
    "Florida has nice beaches",
    "Elon Musk owns Tesla",
]
QUERY = "Which state is good for a seaside holiday?"


def rank(query_vec: list[float], vectors: list[list[float]]) -> list[tuple[int, float]]:
    import numpy as np

    q = np.asarray(query_vec)
    scores = [float(np.dot(q, np.asarray(v))) for v in vectors]  # vectors are L2-normalized
    return sorted(enumerate(scores), key=lambda x: x[1], reverse=True)


def main(workdir: Path) -> int:
    from rich.console import Console
    from rich.table import Table

    from splitserve.client import Client
    from splitserve.commands.log import DEFAULT_TASK, log_pipeline
    from splitserve.commands.up import up
    from splitserve.export import export_bundle
    from splitserve.mlflow_env import ensure_tracking_uri

    workdir.mkdir(parents=True, exist_ok=True)
    os.chdir(workdir)
    console = Console(stderr=True, soft_wrap=True)  # long lines whole, not folded at 80 columns in a log
    tracking = ensure_tracking_uri()
    console.print(f"[bold]MLflow store:[/] {tracking}")
    source = log_pipeline(None, DEFAULT_TASK, None)
    console.print(f"[bold]1. Logged source model:[/] {source}")
    bundle = export_bundle(source)
    console.print(f"[bold]2. Exported serving bundle:[/] {bundle}")

    def query(addresses: dict[str, Any]) -> int:
        console.print(f"[bold]3. Serving:[/] {addresses}")
        with Client(addresses["gateway"]) as client:
            info = client.info()
            results = client.predict(
                [{"id": f"s{i}", "text": s} for i, s in enumerate(SENTENCES)] + [{"id": "query", "text": QUERY}],
                params={"pooling": "mean", "normalize": True},
            )
            timings = client.last_timings_us
        vectors = {r["id"]: r["embedding"] for r in results}
        table = Table(title=f"Sentences ranked by cosine similarity to: {QUERY!r}")
        table.add_column("rank")
        table.add_column("cosine", justify="right")
        table.add_column("sentence")
        for n, (i, score) in enumerate(rank(vectors["query"], [vectors[f"s{i}"] for i in range(len(SENTENCES))]), 1):
            table.add_row(str(n), f"{score:.4f}", SENTENCES[i])
        Console().print(table)
        console.print(
            f"model {info['model']} ({info['task']}), bundle {info['fingerprint']}, "
            f"{len(vectors['query'])}-dim embeddings; time per hop (µs): {timings}"
        )
        console.print("[bold]4. Shutting down[/]")
        return 0

    return up(bundle, on_ready=query)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("demo", help="The main job: log MiniLM, export it, serve every tier, query, print a ranking.")
    p.add_argument("--workdir", default=".", help="Where the MLflow store goes (default: here).")
    p.set_defaults(func=run)


def run(args: Any) -> int:
    return main(workdir=Path(args.workdir))
