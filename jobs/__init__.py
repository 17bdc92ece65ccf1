"""Layer 4, the jobs: training, evaluation, benchmarks, data caches and imports, SageMaker launchers,
the infrastructure template and visualisation. Each is a command of `htr` (batch.cli) that composes
the pipeline, outputs and models below it; nothing below imports a job."""
