"""Image -> embedding step of vinted-tagger: encoder table, ONNX export and runtime, the cache and its CLI."""

__version__ = "0.1.0"
