"""Image -> embedding step of vinted-tagger: encoder table, ONNX export and runtime, the cache and its CLI."""
