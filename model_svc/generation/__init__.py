"""The decoding loops of the generation tasks, on plain numpy, backend- and architecture-agnostic:
a `Stepper` runs the model (`steppers`), this package chooses the tokens as transformers'
`generate` does (`processors`, `search`) and schedules requests together (`jobs`). The params
are the one generation contract, `splitserve.core.generation.GenerationParams`.
"""

from model_svc.generation.jobs import (
    Abandoned,
    Job,
    OnTokens,
    as_output,
    generate,
    prompts_from,
    prompts_of,
    run_jobs,
)
from model_svc.generation.processors import choose, process
from model_svc.generation.search import beam_search, generate_rows
from model_svc.generation.steppers import DecoderSteps, EncoderDecoderSteps, Stepper

__all__ = [
    "Abandoned",
    "DecoderSteps",
    "EncoderDecoderSteps",
    "Job",
    "OnTokens",
    "Stepper",
    "as_output",
    "beam_search",
    "choose",
    "generate",
    "generate_rows",
    "process",
    "prompts_from",
    "prompts_of",
    "run_jobs",
]
