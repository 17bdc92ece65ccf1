"""Inference-only graph tidying for eager PyTorch: fold BatchNorm into the convolution before it.

A BatchNorm in eval mode is a per-channel affine map, so it folds exactly into the preceding
(transposed) convolution's weights and bias. Eager PyTorch would otherwise run it as a separate
pass over every feature map: ~10 % of the CPU time of both our models.

Models layer: imports models, transforms and batch.core only (tests/test_layers.py). Used by the
torch engine (models/torch_engine.py).
"""

from __future__ import annotations

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

_CONVS = (nn.Conv2d, nn.ConvTranspose2d)


def fuse_batchnorm(model: nn.Module) -> int:
    """Fold every Conv/ConvTranspose -> BatchNorm2d pair that sits next to each other in an
    nn.Sequential, in place (the BatchNorm becomes Identity). The model must be in eval mode.
    Returns the number of pairs folded."""
    if model.training:
        raise ValueError("fuse_batchnorm folds running statistics: call model.eval() first")
    folded = 0
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = seq._modules[a], seq._modules[b]
            if isinstance(conv, _CONVS) and isinstance(bn, nn.BatchNorm2d):
                seq._modules[a] = fuse_conv_bn_eval(conv, bn, transpose=isinstance(conv, nn.ConvTranspose2d))
                seq._modules[b] = nn.Identity()
                folded += 1
    return folded
