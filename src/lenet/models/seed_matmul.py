"""The `seed` network computed as matrix products: lenet's CPU training engine for bf16.

Same function, same parameters as `SeedLeNet5.forward` (tests/test_seed_matmul.py checks outputs and
gradients); only the arithmetic is arranged differently. Why: on CPU, conv1 (1 input channel, 6 output
channels) and the two 2x2 average poolings are memory-bound passes that the matrix units (AMX) cannot
help, and in eager PyTorch they took over half of a bf16 training step. As matrix products they run on
AMX instead, at the price of multiplying some zeros (benchmarks/README.md has the measurements):

    conv1   each output row i of the 24x24 maps depends on input rows i..i+4 only, and those 5 rows of
            28 pixels are contiguous in memory. So conv1 is one matmul of the (N*24, 141) "bands" (5 image
            rows cut from a strided view, and a 1 that multiplies the bias) with a (141, 24*6) banded
            Toeplitz matrix built from the 150 conv1 weights and the 6 biases; the output comes out as
            (N, 24, 24, 6), channels last. Its ReLU runs inside the same oneDNN call where torch has one.
    pool1   a fixed (2*24*6, 12*6) matrix sums each 2x2 block (x 1/4); it acts on pairs of output rows
            and produces conv2's input directly in channels-last layout.
    conv2   PyTorch's convolution (6 -> 16 channels is large enough for the matrix units).
    pool2   folded into fc1: averaging then fc1 is one linear map of the 16x8x8 ReLU output, whose
            weights are fc1's, each repeated over its 2x2 block and divided by 4 (a fixed matrix product).

It also takes the raw uint8 images (N, 28, 28) that lenet keeps resident: they are cast once (0..255 are
exact in bf16) and the /255 scaling moves into conv1's matrix, which saves full passes over the input.

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


def pool2_fc1_fold() -> torch.Tensor:
    """(256, 8*8*16): fc1's weight (120, 256) times this is fc1 after pool2, acting on the channels-last
    conv2 output (h, w, c): column (h, w, c) holds 1/4 at fc1 input (c, h//2, w//2), zero elsewhere."""
    h = torch.arange(_OUT2).view(_OUT2, 1, 1)
    w = torch.arange(_OUT2).view(1, _OUT2, 1)
    c = torch.arange(_C2).view(1, 1, _C2)
    side = _OUT2 // 2
    rows = (c * side * side + (h // 2) * side + w // 2).reshape(-1)
    fold = torch.zeros(_C2 * side * side, rows.numel())
    fold[rows, torch.arange(rows.numel())] = 0.25
    return fold


def _linear_relu(a: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """relu(a @ m): one oneDNN call that applies the ReLU as it writes the product, where torch has it (CPU
    builds with oneDNN; 0.67 against 0.98 ms for conv1 at batch 1024, bf16), else two calls."""
    if a.device.type == "cpu" and torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn,
                                                                                     "_linear_pointwise"):
        try:  # a private op of torch's: where a build lacks it for this dtype, the two calls below
            return torch.ops.mkldnn._linear_pointwise(a, m.t().contiguous(), None, "relu", [], "")
        except (RuntimeError, NotImplementedError):
            pass
    return torch.relu(a @ m)


class _ReluOfProduct(torch.autograd.Function):
    """relu(bands @ matrix) for conv1, with a backward that keeps both cores busy.

    The weight gradient bands^T @ grad has a long inner dimension (24 rows per image) and a small (141, 144)
    result, and one such product ran on one core while the other waited (1.60 ms at batch 1024 on two
    threads, 1.73 on one). Split into two halves of the rows as one batched product, summed in fp32, it
    runs on both (0.96 ms)."""

    @staticmethod
    def forward(ctx, bands: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
        out = _linear_relu(bands, matrix)
        ctx.save_for_backward(bands, matrix, out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        bands, matrix, out = ctx.saved_tensors
        grad = torch.ops.aten.threshold_backward(grad, out, 0)
        halves = (2, bands.shape[0] // 2)  # 24 rows per image: always even
        weight_grad = torch.bmm(bands.view(*halves, -1).transpose(1, 2), grad.view(*halves, -1))
        weight_grad = weight_grad.sum(0, dtype=torch.float32)
        bands_grad = grad @ matrix.t() if ctx.needs_input_grad[0] else None
        return bands_grad, weight_grad.to(matrix.dtype)


class SeedAsMatmuls(nn.Module):
    """`seed`'s forward pass as matrix products (see the module docstring); wraps, never copies, `net`.

    Declared as seed's `matmul_form` in lenet.models; like every matrix-product form it also takes the
    uint8 pixels (N, 28, 28) directly, so the trainer feeds it the resident bytes."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        device = net.conv1.weight.device
        self.register_buffer("band_index", conv1_band_index().reshape(-1).to(device), persistent=False)
        self.register_buffer("pool1", pool1_matrix().to(device), persistent=False)
        self.register_buffer("fc1_fold", pool2_fc1_fold().to(device), persistent=False)

    def conv1_matrix(self, pixel_scale: float) -> torch.Tensor:
        """(141, 24*6): the banded conv1 weights (times `pixel_scale`), then one row of the biases."""
        weight = self.net.conv1.weight
        weights = torch.cat([weight.reshape(-1) * pixel_scale, weight.new_zeros(1)])
        banded = weights.index_select(0, self.band_index).view(_K * _SIDE, _OUT1 * _C1)
        return torch.cat([banded, self.net.conv1.bias.repeat(_OUT1)[None]])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: float images (N, 1, 28, 28) as `seed` takes them, or uint8 pixels (N, 28, 28) or (N, 1, 28, 28)."""
        net, n = self.net, x.shape[0]
        if x.shape[-2:] != (_SIDE, _SIDE) or x.numel() != n * _SIDE * _SIDE:
            raise ValueError(f"expected images of shape (N, 1, {_SIDE}, {_SIDE}), got {tuple(x.shape)}")
        device_type = x.device.type  # cast once, to what the products will run in
        autocasting = torch.is_autocast_enabled(device_type)
        dtype = torch.get_autocast_dtype(device_type) if autocasting else net.conv1.weight.dtype
        image = x.reshape(n, _SIDE * _SIDE).to(dtype)
        # Bands of 5 consecutive image rows (a strided view of the images), and a 1 for the bias: one copy.
        rows = image.as_strided((n, _OUT1, _K * _SIDE), (_SIDE * _SIDE, _SIDE, 1))
        bands = F.pad(rows, (0, 1), value=1).view(n * _OUT1, -1)
        matrix = self.conv1_matrix(1 / 255 if x.dtype == torch.uint8 else 1.0).to(dtype)
        s2 = _ReluOfProduct.apply(bands, matrix).view(n * _POOL1, -1) @ self.pool1  # (n*12, 12*6): pooled rows
        c3 = net.conv2(s2.view(n, _POOL1, _POOL1, _C1).permute(0, 3, 1, 2))  # channels-last input
        flat = torch.relu(c3).permute(0, 2, 3, 1).reshape(n, -1)  # (h, w, c) order; free if channels last
        x = torch.relu(F.linear(flat, net.fc1.weight @ self.fc1_fold, net.fc1.bias))  # pool2 folded into fc1
        x = torch.relu(net.fc2(x))
        return net.fc3(x)
