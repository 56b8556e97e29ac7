"""Encoder fine-tuning: make EfficientNet-Lite2 weights adapted to the clothing photos (torch only).

The layer above ``classifiers`` and beside ``service``: it reads labels and metrics from ``classifiers`` and
builds the network and its ONNX graph with ``embed.export``; nothing in the product imports it. Its output, an
fp16 safetensors weight file with timm's names, is an encoder of the table (``efficientnet-lite2:<file>``).

    finetune-encoder --data data.parquet --images images.zip --out DIR [--freeze 2] [--epochs 8]

Modules: ``labels`` (task targets, the held-out groups), ``augment`` (pixel-space augmentation),
``data`` (decoding with DataLoader workers), ``model`` (the multi-task network and its masked loss), ``config``
(what shapes a run), ``recipe`` (layer-wise learning rates, schedule, weight average), ``loop`` (the resumable
training loop), ``evaluate`` (own-heads scores), ``weights`` (weight files), ``robust`` (WiSE-FT), ``cli``.
"""
