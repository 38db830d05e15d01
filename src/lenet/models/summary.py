"""The layer table, the way the paper tabulates LeNet-5: output shape, trainable parameters and
connections per layer.

"Connections" follow the paper's count (section II.B): every multiply-add from an input or a bias
into an output unit. C1 of the 1998 network has 28*28*6*(25+1) = 122,304 of them. A layer that
counts its connections differently (partial C3, trainable subsampling, RBF) defines
`connections(output) -> int` per sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class LayerRow:
    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int
    connections: int


def _connections(module: nn.Module, output: torch.Tensor) -> int:
    per_sample = output[0].numel()
    if hasattr(module, "connections"):
        return int(module.connections(output))
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        fan_in = module.in_channels // module.groups * kh * kw
        return per_sample * (fan_in + (module.bias is not None))
    if isinstance(module, nn.Linear):
        return per_sample * (module.in_features + (module.bias is not None))
    if isinstance(module, (nn.AvgPool2d, nn.MaxPool2d)):
        k = module.kernel_size if isinstance(module.kernel_size, int) else module.kernel_size[0]
        return per_sample * k * k
    return 0


def _kind(module: nn.Module) -> str:
    if isinstance(module, nn.Conv2d):
        return f"{type(module).__name__} {module.kernel_size[0]}x{module.kernel_size[1]}"
    return type(module).__name__


def layer_table(model: nn.Module) -> list[LayerRow]:
    """One row per top-level layer that holds parameters or changes the shape, in forward order."""
    rows: dict[str, LayerRow] = {}
    hooks = []
    for name, module in model.named_children():

        def record(mod, args, output, name=name):
            if name in rows or not isinstance(output, torch.Tensor):
                return
            same_shape = args and isinstance(args[0], torch.Tensor) and args[0].shape == output.shape
            if same_shape and not any(p.requires_grad for p in mod.parameters()):
                return  # an activation: not a layer of the table
            params = sum(p.numel() for p in mod.parameters() if p.requires_grad)
            rows[name] = LayerRow(name, _kind(mod), tuple(output.shape[1:]), params, _connections(mod, output))

        hooks.append(module.register_forward_hook(record))
    try:
        with torch.no_grad():
            model(torch.zeros(1, 1, 28, 28))
    finally:
        for hook in hooks:
            hook.remove()
    return list(rows.values())


def format_table(model: nn.Module, title: str = "") -> str:
    rows = layer_table(model)
    lines = [title] if title else []
    header = f"{'layer':<8}{'type':<22}{'output':>12}{'params':>10}{'connections':>14}"
    lines += [header, "-" * len(header)]
    lines.append(f"{'input':<8}{'':<22}{'1x28x28':>12}{'-':>10}{'-':>14}")
    for r in rows:
        shape = "x".join(map(str, r.output_shape))
        lines.append(f"{r.name:<8}{r.kind:<22}{shape:>12}{r.params:>10,}{r.connections:>14,}")
    lines.append("-" * len(header))
    total_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    fixed = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    lines.append(f"{'total':<8}{'':<22}{'':>12}{total_params:>10,}{sum(r.connections for r in rows):>14,}")
    if fixed:
        lines.append(f"(plus {fixed:,} fixed, untrained weights)")
    return "\n".join(lines)
