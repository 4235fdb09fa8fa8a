"""The kernel every tier imports: errors, records, tensors, params machinery, the generation
contract, the bundle, settings, tokenizer loading, the protobuf codec and the gRPC server base.
Never torch or onnxruntime; imports nothing above it (tasks, stages, tiers, programs)."""

VERSION = "0.1.0"
