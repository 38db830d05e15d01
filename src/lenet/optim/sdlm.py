"""Stochastic diagonal Levenberg-Marquardt (SDLM), the optimizer of the 1998 paper (Appendix C). Its eta
schedule by pass is `paper` in schedules.py; the recipe `paper` runs it from eta = 1e-4 (recipes.py says why).

Each parameter k gets its own step size

    eps_k = eta / (mu + h_kk)

where h_kk is a Gauss-Newton estimate of the diagonal of the Hessian, averaged over 500 training samples
and re-estimated before every pass, and mu = 0.02 keeps the step bounded where the curvature is tiny.

How h_kk is computed (the paper's "backpropagation of second derivatives", Appendix C). Second derivatives
travel backwards through the network like gradients, with squared weights and without the terms that
need the off-diagonal of the Hessian:
    at F6's outputs       d2E/dx_j^2 = 2             the criterion's y_D = sum_j (x_j - w_Dj)^2 (Gauss-Newton
                                                     for this sum of squares; the MAP log-term is left out)
    through a squashing   d2E/da^2 = f'(a)^2 d2E/dx^2  (the f'' term dropped: Gauss-Newton)
    through a layer       d2E/dx_i^2 = sum_k w_ki^2 d2E/da_k^2,   d2E/dw_ki^2 = sum x_i^2 d2E/da_k^2
A shared weight (convolution, subsampling coefficient) sums the second derivatives of all the connections
it serves. A layer that is linear in its weights and in its input does this backward pass exactly when it is
evaluated with every weight and input squared, so `diag_gauss_newton` reuses autograd on the layer itself
(`torch.func.functional_call` with squared parameters) and needs no per-layer code beyond the squashing.
The estimate equals the exact Gauss-Newton diagonal when every weight reaches the output through a single
unit (fully connected layers, tests/test_sdlm.py checks that by finite differences); for shared weights it
drops the cross terms between positions, exactly as the paper does.

The paper updated the weights after every single sample. `lenet train --batch-size 1` does exactly that.
A mini-batch of B samples with the batch-MEAN loss (lenet's convention) is taken as B per-sample updates
evaluated at the same weights, so the step is B * eps_k times the mean gradient (= eps_k times the summed
gradient): one pass then moves the weights as far as one per-sample pass, and the paper's eta schedule
applies unchanged. The optimizer reads B from each training forward pass of the model.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

import torch
from torch import nn
from torch.func import functional_call

from ..errors import ConfigError

# Appendix C: mu guards against huge steps where the estimated curvature is near zero; 500 samples suffice
# for the Hessian estimate because it changes slowly.
DEFAULT_MU = 0.02
HESSIAN_SAMPLES = 500

@runtime_checkable
class Squashing(Protocol):
    """An elementwise activation f that SDLM carries second derivatives through: it states f'(a).
    (The paper's 1.7159 tanh(2a/3), models/layers.py, is one.)"""

    def derivative(self, a: torch.Tensor) -> torch.Tensor: ...


def diag_gauss_newton(layers: Sequence[nn.Module], x: torch.Tensor,
                      output_curvature: float | torch.Tensor = 2.0) -> dict[nn.Parameter, torch.Tensor]:
    """Per-sample mean of the Gauss-Newton Hessian diagonal for every parameter of `layers`.

    `layers` are applied in order to `x`; `output_curvature` is d2E/dx^2 at the last layer's output
    (2 for a squared distance). Layers must be `Squashing` activations, nn.Flatten, or linear in both their
    parameters and their input (convolutions, fully connected, partial convolution, subsampling)."""
    inputs = []
    with torch.no_grad():
        for layer in layers:
            inputs.append(x)
            x = layer(x)
    d2 = torch.as_tensor(output_curvature, dtype=x.dtype, device=x.device).expand_as(x)
    n = x.shape[0]
    hessian: dict[nn.Parameter, torch.Tensor] = {}
    for layer, inp in zip(reversed(layers), reversed(inputs), strict=True):
        if isinstance(layer, Squashing):
            d2 = d2 * layer.derivative(inp) ** 2
        elif isinstance(layer, nn.Flatten):
            d2 = d2.reshape(inp.shape)
        elif any(True for _ in layer.parameters()):
            params = dict(layer.named_parameters())
            squared = {name: p.detach().pow(2).requires_grad_() for name, p in params.items()}
            inp_sq = inp.detach().pow(2).requires_grad_()
            with torch.enable_grad():
                out_sq = functional_call(layer, squared, (inp_sq,))
                grads = torch.autograd.grad(out_sq, [inp_sq, *squared.values()], d2)
            d2 = grads[0]
            for p, g in zip(params.values(), grads[1:], strict=True):
                hessian[p] = g / n
        else:
            raise ConfigError(f"sdlm cannot carry second derivatives through {type(layer).__name__}; "
                              "use --model classic, or another optimizer")
    return hessian


@runtime_checkable
class LayeredNetwork(Protocol):
    """A network that lists the layers between its input preparation and its output for SDLM's
    second-derivative pass (lenet's staged networks derive both from their stage list)."""

    def prepare(self, x: torch.Tensor) -> torch.Tensor: ...

    def sdlm_layers(self) -> list[nn.Module]: ...


class SDLM(torch.optim.Optimizer):
    """eps_k = lr * B / (mu + h_kk) times the mean gradient of a batch of B (see the module docstring).

    `prepare_epoch(model, loss_fn, x, y)` (called by the trainer before every pass) re-estimates h on x."""

    def __init__(self, params: Iterable[nn.Parameter], lr: float = 1e-4, mu: float = DEFAULT_MU) -> None:
        if not mu > 0:
            raise ConfigError(f"sdlm's mu must be positive, got {mu!r}")
        # Fixed weights (the RBF prototypes, if a network made them parameters) are not optimised.
        super().__init__([p for p in params if p.requires_grad], {"lr": lr, "mu": mu})
        self.samples_per_step = 1
        self._watched: nn.Module | None = None

    def _watch(self, model: nn.Module) -> None:
        # The per-sample equivalence needs the batch size; the trainer does not pass it, so read it from
        # every forward pass that builds a graph in training mode (evaluation runs without one).
        def record(module: nn.Module, args: tuple) -> None:
            if module.training and torch.is_grad_enabled() and args:
                self.samples_per_step = int(args[0].shape[0])

        model.register_forward_pre_hook(record)
        self._watched = model

    def prepare_epoch(self, model: nn.Module, loss_fn, x: torch.Tensor, y: torch.Tensor) -> None:
        """Re-estimate the Hessian diagonal on the sample (x, y) (the paper: 500 samples, every pass)."""
        if not isinstance(model, LayeredNetwork):
            raise ConfigError(f"optimizer sdlm needs a network that lists its layers for the Hessian estimate "
                              f"(sdlm_layers); {getattr(model, 'model_name', type(model).__name__)!r} does not: "
                              "use --model classic, or another optimizer")
        if self._watched is not model:
            self._watch(model)
        hessian = diag_gauss_newton(model.sdlm_layers(), model.prepare(x[:HESSIAN_SAMPLES]))
        for group in self.param_groups:
            for p in group["params"]:
                if p not in hessian:
                    raise ConfigError("sdlm: a trainable parameter is outside the network's sdlm_layers()")
                self.state[p]["hessian"] = hessian[p].reshape(p.shape).contiguous(memory_format=_format(p))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            scale = group["lr"] * self.samples_per_step
            for p in group["params"]:
                if p.grad is None:
                    continue
                h = self.state[p].get("hessian")
                if h is None:
                    raise ConfigError("sdlm has no Hessian estimate: call prepare_epoch(model, loss_fn, x, y) "
                                      "before the first step (lenet's trainer does)")
                p.addcdiv_(p.grad, h + group["mu"], value=-scale)
        return loss


def _format(p: torch.Tensor) -> torch.memory_format:
    # keep the estimate in the parameter's layout (channels_last conv weights on CPU) so addcdiv_ is cheap
    if p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def build_sdlm(params: Iterable[nn.Parameter], lr: float = 1e-4, **_) -> SDLM:
    return SDLM(params, lr=lr)
