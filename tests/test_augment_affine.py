"""The affine distortions (lenet/augment.py): `affine+rotate` is `affine` followed by a rotation of up to
AFFINE_ROTATE_DEGREES, drawn after the affine parameters so `affine` itself draws exactly what it always did."""

import math

import torch

from lenet import augment
from lenet.inference import to_input


def _thetas(n: int = 2000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.zeros(n, 1, 28, 28)
    plain = augment._affine_theta(x, torch.Generator().manual_seed(seed))
    rotated = augment._affine_theta(x, torch.Generator().manual_seed(seed), augment.AFFINE_ROTATE_DEGREES)
    return plain, rotated


def test_the_rotation_is_composed_onto_the_same_affine_draws():
    plain, rotated = _thetas()
    torch.testing.assert_close(rotated[:, :, 2], plain[:, :, 2])  # the same shifts
    turn = torch.linalg.solve(plain[:, :, :2], rotated[:, :, :2])  # what the rotation added
    torch.testing.assert_close(turn @ turn.transpose(1, 2), torch.eye(2).expand(len(turn), 2, 2), atol=1e-5,
                               rtol=0)
    torch.testing.assert_close(torch.linalg.det(turn), torch.ones(len(turn)), atol=1e-5, rtol=0)
    degrees = torch.atan2(turn[:, 1, 0], turn[:, 0, 0]).abs() * 180 / math.pi
    assert degrees.max() <= augment.AFFINE_ROTATE_DEGREES + 1e-3 and degrees.max() > 9.5
    assert 4.0 < degrees.mean() < 5.0  # uniform in +-10 degrees: mean |angle| 5, less the undistorted tenth
    undistorted = (plain[:, :, :2] == torch.eye(2)).all(-1).all(-1)
    assert 100 < undistorted.sum() < 300 and (degrees[undistorted] == 0).all()


def test_affine_draws_what_it_always_drew():
    generator = torch.Generator().manual_seed(3)
    augment.affine(torch.zeros(64, 1, 28, 28), generator)
    reference = torch.Generator().manual_seed(3)
    torch.rand(64, 5, generator=reference), torch.rand(64, generator=reference)
    assert torch.equal(generator.get_state(), reference.get_state())


def test_affine_rotate_is_registered_reproducible_and_keeps_the_ink(mnist):
    digits = to_input(mnist.train.images[:256])
    assert augment.get_augmentation("affine+rotate") is augment.affine_rotate
    out = augment.affine_rotate(digits, torch.Generator().manual_seed(1))
    assert (out.shape, out.dtype) == (digits.shape, digits.dtype)
    assert torch.equal(out, augment.affine_rotate(digits, torch.Generator().manual_seed(1)))
    assert not torch.equal(out, augment.affine(digits, torch.Generator().manual_seed(1)))
    ratio = out.sum((1, 2, 3)) / digits.sum((1, 2, 3))
    assert abs(ratio.mean().item() - 1) < 0.05 and out.min() >= 0 and out.max() <= 1
