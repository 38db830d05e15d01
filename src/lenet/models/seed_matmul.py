"""The `seed` network computed as matrix products: lenet's CPU training engine for bf16.

Same function, same parameters as `SeedLeNet5.forward` (tests/test_seed_matmul.py checks outputs and
gradients); only the arithmetic is arranged differently. Why: on CPU, conv1 (1 input channel, 6 output
channels) and the two 2x2 average poolings are memory-bound passes that the matrix units (AMX) cannot
help, and in eager PyTorch they took over half of a bf16 training step. As matrix products they run on
AMX instead, at the price of multiplying some zeros (benchmarks/README.md has the measurements):

    conv1   each output row i of the 24x24 maps depends on input rows i..i+4 only, and those 5 rows of
            28 pixels are contiguous in memory. So conv1 is one matmul of the (N*24, 140) "bands" (a
            strided view of the image, no im2col copy) with a (140, 24*6) banded Toeplitz matrix built
            from the 150 conv1 parameters; the output comes out as (N, 24, 24, 6), channels last.
    pool1   a fixed (2*24*6, 12*6) matrix sums each 2x2 block (x 1/4); it acts on pairs of output rows
            and produces conv2's input directly in channels-last layout.
    conv2   PyTorch's convolution (6 -> 16 channels is large enough for the matrix units).
    pool2   folded into fc1: averaging then fc1 is one linear map of the 16x8x8 ReLU output, whose
            weights are fc1's, each repeated over its 2x2 block and divided by 4.

It also takes the raw uint8 images (N, 28, 28) that lenet keeps resident: the bands are then cut from
the bytes and cast once (0..255 are exact in bf16), and the /255 scaling moves into conv1's matrix,
which saves three full passes over the input per step.

It holds no parameters of its own: gradients land in the wrapped network's parameters, so optimisers,
checkpoints and evaluation keep using that network.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_SIDE, _K, _C1, _C2 = 28, 5, 6, 16  # input side, kernel side, conv1 and conv2 channels
_OUT1 = _SIDE - _K + 1  # 24: conv1 output side
_POOL1 = _OUT1 // 2  # 12
_OUT2 = _POOL1 - _K + 1  # 8: conv2 output side


def conv1_band_index() -> torch.Tensor:
    """(140, 144) indices into conv1's 150 weights (+ one zero at index 150) forming the banded matrix.

    Row (r, c): input pixel at row offset r, column c of a band; column (j, ch): output column j of
    channel ch. Entry = weight[ch, 0, r, c - j] when 0 <= c - j < 5, else zero."""
    r = torch.arange(_K).view(_K, 1, 1, 1)
    c = torch.arange(_SIDE).view(1, _SIDE, 1, 1)
    j = torch.arange(_OUT1).view(1, 1, _OUT1, 1)
    ch = torch.arange(_C1).view(1, 1, 1, _C1)
    k = c - j
    index = torch.where((k >= 0) & (k < _K), ch * _K * _K + r * _K + k, _C1 * _K * _K)
    return index.reshape(_K * _SIDE, _OUT1 * _C1)


def pool1_matrix() -> torch.Tensor:
    """(2*24*6, 12*6): rows (a, j, ch) of two conv1 output rows, columns (j', ch); 1/4 where j' = j // 2."""
    same_column = (torch.arange(_OUT1).view(_OUT1, 1) // 2 == torch.arange(_POOL1).view(1, _POOL1)).float()
    block = torch.einsum("jp,cd->jcpd", same_column, torch.eye(_C1)).reshape(_OUT1 * _C1, _POOL1 * _C1)
    return torch.cat([block, block]) / 4


def pool2_fc1_columns() -> torch.Tensor:
    """For each of the 8*8*16 channels-last conv2 outputs (h, w, c): the fc1 input (c, h//2, w//2) it feeds."""
    h = torch.arange(_OUT2).view(_OUT2, 1, 1)
    w = torch.arange(_OUT2).view(1, _OUT2, 1)
    c = torch.arange(_C2).view(1, 1, _C2)
    side = _OUT2 // 2
    return (c * side * side + (h // 2) * side + w // 2).reshape(-1)


class SeedAsMatmuls(nn.Module):
    """`seed`'s forward pass as matrix products (see the module docstring); wraps, never copies, `net`.

    Declared as seed's `matmul_form` in lenet.models; like every matrix-product form it also takes the
    uint8 pixels (N, 28, 28) directly, so the trainer feeds it the resident bytes."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        device = net.conv1.weight.device
        self.register_buffer("band_index", conv1_band_index().to(device), persistent=False)
        self.register_buffer("pool1", pool1_matrix().to(device), persistent=False)
        self.register_buffer("fc1_columns", pool2_fc1_columns().to(device), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: float images (N, 1, 28, 28) as `seed` takes them, or uint8 pixels (N, 28, 28) or (N, 1, 28, 28)."""
        net, n = self.net, x.shape[0]
        if x.shape[-2:] != (_SIDE, _SIDE) or x.numel() != n * _SIDE * _SIDE:
            raise ValueError(f"expected images of shape (N, 1, {_SIDE}, {_SIDE}), got {tuple(x.shape)}")
        # Bands of 5 consecutive image rows: a strided view of the images, one row per output row.
        image = x.reshape(n, _SIDE * _SIDE).contiguous()
        bands = image.as_strided((n, _OUT1, _K * _SIDE), (_SIDE * _SIDE, _SIDE, 1)).reshape(n * _OUT1, -1)
        weights = torch.cat([net.conv1.weight.reshape(-1), net.conv1.weight.new_zeros(1)])
        if x.dtype == torch.uint8:
            device_type = bands.device.type  # cast once, to what the products will run in
            autocasting = torch.is_autocast_enabled(device_type)
            dtype = torch.get_autocast_dtype(device_type) if autocasting else weights.dtype
            bands, weights = bands.to(dtype), weights / 255
        c1 = torch.addmm(net.conv1.bias.repeat(_OUT1), bands, weights[self.band_index])  # (n*24, 24*6)
        s2 = torch.relu(c1).reshape(n * _POOL1, -1) @ self.pool1  # (n*12, 12*6): rows of pooled maps
        c3 = net.conv2(s2.view(n, _POOL1, _POOL1, _C1).permute(0, 3, 1, 2))  # channels-last input
        flat = torch.relu(c3).permute(0, 2, 3, 1).reshape(n, -1)  # (h, w, c) order; free if channels last
        fc1_weight = net.fc1.weight[:, self.fc1_columns] / 4  # pool2 folded into fc1
        x = torch.relu(F.linear(flat, fc1_weight, net.fc1.bias))
        x = torch.relu(net.fc2(x))
        return net.fc3(x)
