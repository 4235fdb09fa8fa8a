"""Asking for a GPU where there is none fails at start-up with a message that says so."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_cuda_without_gpu_fails_clearly(tiny_bundles, backend: str) -> None:
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    bundle = tiny_bundles[("feature-extraction", "bert")].local_dir
    proc = subprocess.run(
        [sys.executable, "-m", "splitserve", "serve-model", bundle, "--device", "cuda", "--backend", backend],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
    )
    assert proc.returncode == 1
    expected = "no CUDA execution provider" if backend == "onnx" else "torch sees no CUDA GPU"
    assert expected in proc.stderr
    assert "device 'cuda' was asked for" in proc.stderr
