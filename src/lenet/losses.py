"""Training criteria by name. Every network returns scores (higher = more likely), so a loss takes
`(scores, labels)` and returns the batch mean."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .errors import ConfigError
from .registry import LOSSES

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def get_loss(name: str, **options) -> LossFn:
    """Build the loss `name` (lenet.registry.LOSSES); options it does not know are ignored (they belong to
    other losses)."""
    return LOSSES.get(name)(**options)


def cross_entropy(label_smoothing: float = 0.0, **_) -> LossFn:
    """Softmax cross-entropy on the scores, as in the tutorial."""

    def loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(scores, labels, label_smoothing=label_smoothing)

    return loss


# The paper's j (section II.C, eq. 9) has no published value. We measured j = 0.1 and j = 10 (see
# docs/tutorial-vs-paper.md); DEFAULT_MAP_J is the one the recipe `paper` uses.
DEFAULT_MAP_J = 10.0


def map_loss(map_j: float = DEFAULT_MAP_J, **_) -> LossFn:
    """The paper's discriminative MAP criterion (eq. 9) for RBF outputs y_i (scores = -y_i):

        E = y_D + log(e^{-j} + sum_i e^{-y_i})

    The first term pulls the correct class's distance y_D down; the second pushes the other distances up,
    but stops pushing once they are well above j (e^{-y_i} << e^{-j}): "j > 0 prevents the penalties of
    classes that are already very large from being pushed further up"."""
    if not map_j > 0:
        raise ConfigError(f"map-j must be positive (the paper's j > 0), got {map_j!r}")

    def loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # log(e^{-j} + sum_i e^{-y_i}) = logsumexp over [-j, scores_0..scores_9]; stable for any distance
        rejection = scores.new_full((scores.shape[0], 1), -map_j)
        log_partition = torch.logsumexp(torch.cat([rejection, scores], dim=1), dim=1)
        y_correct = -scores.gather(1, labels[:, None]).squeeze(1)
        return (y_correct + log_partition).mean()

    return loss
