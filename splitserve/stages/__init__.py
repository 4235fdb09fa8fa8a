"""The generic stage drivers, shared by the tiers, the inline gateway and the in-process pyfunc:
`Preprocessor` (records + params -> model inputs + context), `Postprocessor` (model outputs +
context -> results) and `Pipeline` (the two around a model, in one process).

"Stage" means one thing in splitserve: a step of a request's path, preprocess -> model ->
postprocess (the tiers that run them, the `splitserve-<stage>-us` timings, `--inline-stages`).
What a task's encode/decode see of the bundle is `splitserve.tasks.base.Assets`; what a tier builds
for each bundle version it holds is that version's runtime (`splitserve.core.tier.Loaded.runtime`:
a stage driver here, an `Engine` in the model tier); the tiers' servicers an inline gateway runs
are `GatewayTier.inline_servicers`."""
