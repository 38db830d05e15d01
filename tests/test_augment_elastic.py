"""Elastic distortions (lenet/augment.py, Simard et al. 2003): the field's smoothness and displacement statistics
against the values derived from sigma and alpha, reproducibility from the generator, the composition with the
affine distortions, and a short training on real MNIST."""

import math

import pytest
import torch

import lenet
from lenet import augment
from lenet.inference import to_input
from lenet.trainer import make_config


@pytest.fixture(scope="module")
def field() -> torch.Tensor:
    """4,000 fields of the documented (sigma, alpha): 8,000 components, ~2 s of statistics."""
    return augment.elastic_field(4000, 28, 28, torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def digits(mnist) -> torch.Tensor:
    return to_input(mnist.train.images[:256])


def _theory(sigma: float = augment.ELASTIC_SIGMA, alpha: float = augment.ELASTIC_ALPHA) -> tuple[float, float]:
    """Per component: the displacement's std, and the mean |difference| between two neighbouring pixels.

    Displacement = alpha * sum_i k_i u_i with u_i uniform in [-1, 1] (variance 1/3) and k = g (x) g the
    normalised 2-D kernel: variance alpha^2 sum k^2 / 3 = alpha^2 (sum g^2)^2 / 3. The neighbour difference is
    the same sum with the kernel k - (k shifted by one) = (g - shifted g) (x) g; a sum of that many uniforms is
    Gaussian to a good approximation, and E|N(0, s^2)| = s sqrt(2 / pi)."""
    g = augment.gaussian_kernel(sigma).double()
    padded = torch.nn.functional.pad(g, (1, 1))
    dg = padded[1:] - padded[:-1]
    std = alpha * (g**2).sum() / math.sqrt(3)
    neighbour = alpha * math.sqrt(2 / math.pi) * ((dg**2).sum() * (g**2).sum() / 3).sqrt()
    return float(std), float(neighbour)


def test_the_displacement_std_matches_sigma_and_alpha_everywhere(field):
    std, _ = _theory()
    assert 1.3 < std < 1.45  # sigma 4, alpha 34: about 1.4 px rms, as documented in augment.py
    assert field.shape == (4000, 2, 28, 28) and field.dtype == torch.float32
    for component in (0, 1):
        assert field[:, component].std().item() == pytest.approx(std, rel=0.02)
        assert abs(field[:, component].mean().item()) < 0.02 * std
    # no padding artefact: the corner pixels move as much as the centre (zero padding would halve them)
    assert field[:, :, :2, :2].std().item() == pytest.approx(std, rel=0.05)
    assert field[:, :, 13:15, 13:15].std().item() == pytest.approx(std, rel=0.05)


def test_the_field_is_smooth(field):
    _, neighbour = _theory()
    along_x = (field[..., 1:] - field[..., :-1]).abs().mean().item()
    along_y = (field[..., 1:, :] - field[..., :-1, :]).abs().mean().item()
    assert along_x == pytest.approx(neighbour, rel=0.03) and along_y == pytest.approx(neighbour, rel=0.03)
    # unsmoothed, alpha * (u1 - u2) with u uniform in [-1, 1]: E|u1 - u2| = 2/3, i.e. ~22.7 px apart
    assert along_x < augment.ELASTIC_ALPHA * (2 / 3) / 50


def test_the_statistics_follow_other_sigmas_and_alphas():
    for sigma, alpha in ((6.0, 36.0), (2.0, 8.0)):
        field = augment.elastic_field(1500, 28, 28, torch.Generator().manual_seed(2), sigma, alpha)
        std, neighbour = _theory(sigma, alpha)
        assert field.std().item() == pytest.approx(std, rel=0.03)
        assert (field[..., 1:] - field[..., :-1]).abs().mean().item() == pytest.approx(neighbour, rel=0.04)


def test_shape_dtype_and_device_are_kept_and_the_generator_decides(digits):
    for distort in (augment.elastic, augment.elastic_affine, augment.mild_elastic_affine):
        a = distort(digits, torch.Generator().manual_seed(3))
        assert (a.shape, a.dtype, a.device) == (digits.shape, digits.dtype, digits.device)
        assert torch.equal(a, distort(digits, torch.Generator().manual_seed(3)))
        assert not torch.equal(a, distort(digits, torch.Generator().manual_seed(4)))
        assert a.min() >= 0 and a.max() <= 1  # bilinear: never outside the input's range
        changed = (a - digits).abs().amax((1, 2, 3)) > 0.05
        assert changed.all()  # every image distorted (no undistorted tenth, unlike `affine` alone)
    assert augment.get_augmentation("elastic") is augment.elastic
    assert augment.get_augmentation("elastic+affine") is augment.elastic_affine
    assert make_config(augment="elastic+affine").augment == "elastic+affine"
    assert augment.get_augmentation("elastic-mild+affine") is augment.mild_elastic_affine


def test_the_mild_field_is_ciresans_sigma_and_alpha_with_the_affine_distortions(digits):
    """`elastic-mild+affine` is make_elastic(6, 36, with_affine=True): under 1 px rms, 0.7x Simard's field."""
    mild_std, _ = _theory(augment.MILD_ELASTIC_SIGMA, augment.MILD_ELASTIC_ALPHA)
    assert (augment.MILD_ELASTIC_SIGMA, augment.MILD_ELASTIC_ALPHA) == (6.0, 36.0)
    assert 0.95 < mild_std < 1.0 and mild_std / _theory()[0] == pytest.approx(0.70, abs=0.02)
    same = augment.make_elastic(6.0, 36.0, with_affine=True)(digits, torch.Generator().manual_seed(8))
    assert torch.equal(augment.mild_elastic_affine(digits, torch.Generator().manual_seed(8)), same)


def test_the_generator_is_advanced_as_documented(digits):
    """elastic draws one field per image from the generator (the same as `elastic_field`'s); elastic+affine draws
    the affine parameters first, then the field: with alpha = 0 it is exactly `affine` (up to rounding)."""
    generator = torch.Generator().manual_seed(5)
    augment.elastic(digits, generator)
    state = generator.get_state()
    assert not torch.equal(state, torch.Generator().manual_seed(5).get_state())
    field = augment.elastic_field(len(digits), 28, 28, torch.Generator().manual_seed(5))
    assert torch.equal(augment.elastic(digits, torch.Generator().manual_seed(5)), augment.elastic_warp(digits, field))
    no_field = augment.make_elastic(alpha=0.0, with_affine=True)(digits, torch.Generator().manual_seed(6))
    assert torch.allclose(no_field, augment.affine(digits, torch.Generator().manual_seed(6)), atol=1e-5)


def test_zero_alpha_is_the_identity(digits):
    out = augment.make_elastic(alpha=0.0)(digits, torch.Generator().manual_seed(0))
    assert (out - digits).abs().max().item() < 1e-5  # pixel centres sampled, up to float rounding


def test_ink_is_roughly_preserved(digits):
    for distort in (augment.elastic, augment.elastic_affine):
        ratio = distort(digits, torch.Generator().manual_seed(7)).sum((1, 2, 3)) / digits.sum((1, 2, 3))
        assert ratio.mean().item() == pytest.approx(1.0, abs=0.03)
        assert ratio.median().item() == pytest.approx(1.0, abs=0.05)
        assert ratio.min().item() > 0.4 and ratio.max().item() < 2.0  # strokes thin and thicken locally


def test_bad_parameters_are_config_errors():
    for sigma, alpha in ((0.0, 34.0), (4.0, -1.0), (float("nan"), 34.0)):
        with pytest.raises(lenet.ConfigError, match="sigma > 0 and alpha >= 0"):
            augment.make_elastic(sigma, alpha)


def test_training_with_elastic_distortions_lowers_the_loss(mnist):
    result = lenet.train(augment="elastic", train_size=2000, epochs=2, lr=3e-3, schedule="constant",
                         log_every=0, threads=1, seed=0)
    first, last = (h["train_loss"] for h in result.history)
    assert last < first < math.log(10)  # below chance from the first epoch, and lower again in the second
    assert result.config.augment == "elastic" and result.test.accuracy > 50


def test_viz_draws_the_elastic_examples(tmp_path, capsys):
    from PIL import Image

    from lenet.cli import main

    assert main(["viz", "--only", "elastic", "--out", str(tmp_path)]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["elastic.png"]
    assert capsys.readouterr().out.split() == [str(tmp_path / "elastic.png")]
    with Image.open(tmp_path / "elastic.png") as image:
        assert image.format == "PNG" and min(image.size) >= 500  # 6 rows x 7 panels
