"""Preprocess tier: records in, model input tensors (+ context for the postprocess tier) out."""
