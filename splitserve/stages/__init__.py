"""The generic stage drivers, shared by the tiers, the inline gateway and the in-process pyfunc:
`Preprocessor` (records + params -> model inputs + context), `Postprocessor` (model outputs +
context -> results) and `Pipeline` (the two around a model, in one process)."""
