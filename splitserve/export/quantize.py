"""int8: candidates (static QDQ calibrated at export, dynamic and blockwise quantization with ONNX
Runtime: `int8_candidates`), tried about fastest first against the quality gate on the fp32 graph
(whose reference the bundle keeps, for the model tier to repeat on its own CPU); the first that
passes is kept."""

from __future__ import annotations

import functools
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model_svc.batching import DEFAULT_MAX_PAD_FRACTION
from splitserve.core import cpu
from splitserve.core.errors import ExportError
from splitserve.core.quality import (
    DEFAULT_QUALITY_THRESHOLDS,
    Int8Reference,
    gate_failures,
    pack,
    padded_feeds,
    summarize,
)
from splitserve.export.int8_candidates import Candidate, candidates, quantize_candidate

QUANTIZATIONS = ("int8",)

# The gate's metrics and default thresholds live with the check the model tier repeats
# (`splitserve.core.quality`); each task names the metrics it is gated on (`ExportFacts.int8_gate`);
# override the thresholds with `quality_thresholds`. Under the default ranking floor (0.97 top-1
# agreement) MiniLM's fast candidates (static QDQ, dynamic: 0.86-0.93 of the gate corpus' nearest
# neighbours; near-tied neighbours swap with any coarse rounding) fail and the blockwise one passes
# (0.975, benchmarks/int8-candidates.md); the ~2x int8 needs a lower floor asked for. Which passing
# candidate is kept is timed on this CPU, so two exports of one model may keep different graphs
# (the bundle records each one tried).


def quality_thresholds_for(quantize: str | None, overrides: dict[str, float] | None) -> dict[str, float]:
    """The gate's thresholds: the defaults, updated with `overrides` (validated)."""
    if quantize is None:
        if overrides:
            raise ExportError("quality_thresholds only apply to a quantized export (quantize='int8')")
        return {}
    if quantize not in QUANTIZATIONS:
        raise ExportError(f"quantize={quantize!r} is not supported; supported: {list(QUANTIZATIONS)}")
    unknown = set(overrides or {}) - set(DEFAULT_QUALITY_THRESHOLDS)
    if unknown:
        raise ExportError(
            f"unknown quality threshold(s) {sorted(unknown)}; known: {sorted(DEFAULT_QUALITY_THRESHOLDS)}"
        )
    return {**DEFAULT_QUALITY_THRESHOLDS, **{k: float(v) for k, v in (overrides or {}).items()}}


@dataclass
class Quantized:
    """An int8 graph that passed the gate: its metrics, format (`Candidate.method` and weights),
    what stayed fp32 (those MatMul nodes), and the fp32 reference the model tier checks it against
    where it is served (with every candidate tried, `Int8Reference.candidates`)."""

    metrics: dict[str, float]
    weights: str
    kept_fp32: str
    excluded: list[str]
    reference: Int8Reference


def quantize_within_gate(
    fp32: Path,
    out: Path,
    tokenizer: Any,
    max_length: int,
    gate: tuple[str, ...],
    output: str,
    texts: list[str],
    thresholds: dict[str, float],
    calibration: list[str],
) -> Quantized:
    """Quantize into `out` (its folder): `candidates` in order, gated on `texts` (static ones
    calibrated on `calibration`, texts held apart from `texts`). The first two (static, and dynamic
    with 7-bit weights: the fastest, their order differs between CPUs and loads) are both tried and
    the faster that passes, as timed here, is kept (within 10%, the one that agrees more); past
    them, the first that passes. Every candidate tried is recorded with its metrics and speed;
    past every one, a refusal naming the thresholds, the best each metric reached and the tries."""
    reference, fp32_rate = int8_reference(fp32, tokenizer, max_length, gate, output, texts, thresholds)
    tried: list[dict[str, Any]] = []
    passed: list[tuple[float, float, int, Candidate, dict[str, float]]] = []

    @functools.cache
    def calibrated() -> list[dict[str, np.ndarray]]:
        return calibration_batches(fp32, tokenizer, max_length, calibration)

    for i, candidate in enumerate(candidates(fp32)):
        path = out.parent / f"candidate-{i}" / out.name
        path.parent.mkdir()
        quantize_candidate(candidate, fp32, path, calibrated)
        metrics, failures, rate = run_gate(path, reference)
        scores = {m: round(metrics[f"int8_{m}"], 5) for m in gate}
        speedup = round(rate / fp32_rate, 2)
        tried.append({"candidate": candidate.name, **scores, "records_per_s": round(rate, 1), "speedup": speedup})
        tried[-1]["passed"] = not failures
        if not failures:
            passed.append((rate, sum(scores.values()), i, candidate, metrics))
        if passed and i >= 1:
            break
    if not passed:
        raise ExportError(refusal(tried, reference))
    rate, _, i, candidate, metrics = passed[kept([(p[0], p[1]) for p in passed])]
    for f in (out.parent / f"candidate-{i}").iterdir():
        shutil.move(f, out.parent / f.name)
    for folder in out.parent.glob("candidate-*"):
        shutil.rmtree(folder)
    for record in tried:
        record["kept"] = record["candidate"] == candidate.name
    reference.export_metrics, reference.candidates = metrics, tried
    metrics = {**metrics, **{f"int8_{m}_threshold": t for m, t in reference.thresholds.items()}}
    metrics.update({"int8_candidates_tried": float(len(tried)), "int8_speedup": rate / fp32_rate})
    metrics["int8_excluded_nodes"] = float(len(candidate.exclude))
    return Quantized(metrics, candidate.format, candidate.kept_fp32, list(candidate.exclude), reference)


def kept(passed: list[tuple[float, float]]) -> int:
    """Which of the passing candidates, as (records/s, agreement), to keep: the fastest, or among
    those within 10% of its speed (timing noise on a busy CPU), the one that agrees most."""
    fastest = max(rate for rate, _ in passed)
    near = [i for i, (rate, _) in enumerate(passed) if rate >= 0.9 * fastest]
    return max(near, key=lambda i: passed[i][1])


def refusal(tried: list[dict[str, Any]], reference: Int8Reference) -> str:
    """Why no candidate passed: the best each gated metric reached (and by which candidate) against
    its threshold, and every candidate tried with its metrics and speed."""
    best = {m: max(tried, key=lambda c: c[m]) for m in reference.gate}
    failures = gate_failures({f"int8_{m}": c[m] for m, c in best.items()}, reference.gate, reference.thresholds)
    by = {m: c["candidate"] for m, c in best.items()}
    named = [f"{f} by {by[f.split(' ', 1)[0]]}" for f in failures]
    texts = sum(len(b) for b in reference.batches)
    listed = "; ".join(
        f"{c['candidate']} ({', '.join(f'{m} {c[m]:.4f}' for m in reference.gate)}, {c['speedup']:.2f}x fp32)"
        for c in tried
    )
    return (
        f"int8 quality gate failed for every candidate, between the int8 and fp32 ONNX graphs over {texts} gate "
        f"texts: the best reached: {'; '.join(named)}. Tried, fastest first: {listed}. Refusing to export. Export "
        f"without quantization, or accept the loss with a lower quality threshold"
    )


def calibration_batches(
    fp32_path: Path, tokenizer: Any, max_length: int, texts: list[str], batch_size: int = 16
) -> list[dict[str, np.ndarray]]:
    """`texts` tokenized and batched as the model tier batches them: static quantization's
    calibration inputs."""
    import onnx

    graph = onnx.load(str(fp32_path), load_external_data=False).graph
    names = {i.name for i in graph.input}
    rows = [list(map(int, tokenizer(t, truncation=True, max_length=max_length)["input_ids"])) for t in texts]
    return [feeds for feeds, _ in padded_feeds(batches(rows, batch_size), int(tokenizer.pad_token_id or 0), names)]


def int8_reference(
    fp32_path: Path,
    tokenizer: Any,
    max_length: int,
    gate: tuple[str, ...],
    output: str,
    texts: list[str],
    thresholds: dict[str, float],
    batch_size: int = 16,
) -> tuple[Int8Reference, float]:
    """The fp32 graph's summaries of `texts`, batched as the model tier batches them (`batches`):
    what the int8 graph is checked against, here and where it is served; and the fp32 graph's
    records/s over those batches (what each candidate's speed is compared with)."""
    rows = [list(map(int, tokenizer(t, truncation=True, max_length=max_length)["input_ids"])) for t in texts]
    reference = Int8Reference(
        output=output,
        gate=list(gate),
        thresholds={m: thresholds[m] for m in gate},
        pad_id=int(tokenizer.pad_token_id or 0),
        batches=batches(rows, batch_size),
        reference={},
        export_cpu=list(cpu.cpu_features()),
    )
    feeds = reference.feeds(_inputs(fp32_path))
    outputs, rate = _timed_run(fp32_path, output, feeds)
    reference.reference = pack(
        np.concatenate([summarize(o, m, gate) for o, (_, m) in zip(outputs, feeds, strict=True)])
    )
    return reference, rate


def _inputs(path: Path) -> set[str]:
    import onnx

    return {i.name for i in onnx.load(str(path), load_external_data=False).graph.input}


def _timed_run(
    path: Path, output: str, feeds: list[tuple[dict[str, np.ndarray], np.ndarray]]
) -> tuple[list[np.ndarray], float]:
    """The graph's `output` on every batch of `feeds`, and its records/s (after one untimed batch
    that warms the session up): the speed a candidate is ranked by, on this CPU, noisy on a busy one."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    session.run([output], feeds[0][0])
    start = time.perf_counter()
    outputs = [session.run([output], f)[0] for f, _ in feeds]
    elapsed = time.perf_counter() - start
    return outputs, sum(len(m) for _, m in feeds) / max(elapsed, 1e-9)


def batches(rows: list[list[int]], batch_size: int) -> list[list[list[int]]]:
    """Rows of similar lengths together, at most `batch_size` and at most the model tier's default
    padding fraction of each batch's tokens: dynamic int8 scales each batch's activations by its
    largest, padding included, so a short text padded to 512 beside a long one rounds differently
    than it ever would in the tier (MiniLM: the lowest cosine 0.945 so, 0.966 batched as served)."""
    out: list[list[list[int]]] = []
    for row in sorted(rows, key=len):
        batch = out[-1] if out else None
        if batch and len(batch) < batch_size:
            tokens = sum(map(len, batch)) + len(row)
            if 1 - tokens / ((len(batch) + 1) * len(row)) <= DEFAULT_MAX_PAD_FRACTION:
                batch.append(row)
                continue
        out.append([row])
    return out


def run_gate(int8_path: Path, reference: Int8Reference) -> tuple[dict[str, float], list[str], float]:
    """Run the int8 graph on the reference's inputs: the gate's metrics (names start with `int8_`),
    its failures (a gated metric past its threshold) and the graph's records/s."""
    feeds = reference.feeds(_inputs(int8_path))
    outputs, rate = _timed_run(int8_path, reference.output, feeds)
    metrics, failures = reference.check(outputs, [mask for _, mask in feeds])
    return metrics, failures, rate
