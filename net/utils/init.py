"""The weight initialisation of the SkeletonCLR / AimCLR code bases (their ``weights_init``).

Both reference code bases apply it with ``model.apply`` to the whole model right after building it,
in pretraining, linear evaluation and finetuning, and before loading any weights.  MoCo copies the
query encoder into the key encoder in the model's constructor, so the initialisation that follows
draws the key encoder afresh: in the reference the key encoder starts as an independent random
network that the momentum update pulls towards the query encoder (docs/METHODS.md).
"""
import torch.nn as nn

# The reference matches class names by substring: Conv1d, Conv2d, Linear (also e.g. the
# NonDynamicallyQuantizableLinear inside nn.MultiheadAttention) and every *BatchNorm*.
CONV_OR_LINEAR = ('Conv1d', 'Conv2d', 'Linear')


def family_weights_init(module: nn.Module):
    """Conv1d/Conv2d/Linear: weight ~ N(0, 0.02), bias 0; BatchNorm: weight ~ N(1, 0.02), bias 0.

    For ``model.apply(family_weights_init)``.  Modules without a weight (BatchNorm with
    ``affine=False``) are left as they are (the reference would fail on them)."""
    name = type(module).__name__
    weight, bias = getattr(module, 'weight', None), getattr(module, 'bias', None)
    if weight is None:
        return
    if any(kind in name for kind in CONV_OR_LINEAR):
        weight.data.normal_(0.0, 0.02)
        if bias is not None:
            bias.data.fill_(0)
    elif 'BatchNorm' in name:
        weight.data.normal_(1.0, 0.02)
        if bias is not None:
            bias.data.fill_(0)
