"""Layer 2, the models: the segmenter and recogniser networks, their runners (pre-process -> engine
-> post-process), the engines that run them (models.engine: PyTorch or ONNX Runtime), checkpoints
(safetensors) and the charset. Imports only batch.core below it; batch.pipeline composes these."""
