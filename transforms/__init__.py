"""Layer 2, the transforms: bytes -> pages (rasterise), page normalisation, crops and line geometry
for the pipeline; augmentation, fonts, text sources and the synthetic handwriting engine (synth*)
for training and benchmarks. Imports only batch.core below it."""
