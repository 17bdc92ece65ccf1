"""Word segmenter: DB-style (differentiable binarisation) network, one config per variant.

Pick a variant by name; the config is stored with the checkpoint so it rebuilds exactly.

Models layer: imports models, transforms and batch.core only (tests/test_layers.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the network (torchvision, ~1.5 s to import) only when a model is built
    from models.segmenter.db import DBNet

CONFIGS: dict[str, dict[str, Any]] = {
    # CPU default: small backbone, narrow FPN and heads (their stride-4 3x3 convolutions dominate
    # the cost: 30 ms against 62 for the 64/32 variant below, 1024x736 page, bf16, 2 threads).
    "db_mobilenet_v3_small_lite": dict(
        backbone="mobilenet_v3_small", width_mult=1.0, fpn_channels=32, head_channels=16, input_long_side=1024
    ),
    "db_mobilenet_v3_small": dict(
        backbone="mobilenet_v3_small", width_mult=1.0, fpn_channels=64, head_channels=32, input_long_side=1024
    ),
    # Larger, for GPUs or when accuracy matters more than speed.
    "db_mobilenet_v3_large": dict(
        backbone="mobilenet_v3_large", width_mult=1.0, fpn_channels=96, head_channels=48, input_long_side=1280
    ),
    "db_resnet18": dict(
        backbone="resnet18", width_mult=1.0, fpn_channels=128, head_channels=64, input_long_side=1536
    ),
    "db_resnet34": dict(
        backbone="resnet34", width_mult=1.0, fpn_channels=128, head_channels=64, input_long_side=1536
    ),
    # Randomly initialised in tests: same code path, a fraction of the cost.
    "db_tiny": dict(
        backbone="mobilenet_v3_small", width_mult=0.25, fpn_channels=16, head_channels=8, input_long_side=320
    ),
}
# The lite variant plus a text-line head (channel 1 of "prob"), trained on real line polygons: the
# pipeline reads lines from it instead of grouping word boxes (the shipped default); tiny, for tests.
CONFIGS["db_mobilenet_v3_small_lines"] = {**CONFIGS["db_mobilenet_v3_small_lite"], "line_channels": 16}
CONFIGS["db_tiny_lines"] = {**CONFIGS["db_tiny"], "line_channels": 8}


def build(arch: str, config: dict[str, Any] | None = None) -> DBNet:
    from models.segmenter.db import DBNet

    cfg = dict(CONFIGS[arch]) if config is None else dict(config)
    return DBNet(**{k: v for k, v in cfg.items() if k != "input_long_side"})
