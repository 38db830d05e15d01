"""`seed`'s matrix-product form (models/seed_matmul.py): the same function and gradients as the network
itself, on float and on uint8 input; and how the trainer chooses it. Speed lives in benchmarks/."""

import io

import pytest
import torch
import torch.nn.functional as F

import lenet
from lenet.models import get_model, matmul_form
from lenet.models.seed_matmul import SeedAsMatmuls, pool1_matrix, pool2_fc1_fold
from lenet.trainer import fit, make_config, training_network


def _net(channels_last: bool):
    torch.manual_seed(0)
    net = get_model("seed")
    return net.to(memory_format=torch.channels_last) if channels_last else net


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("batch", [1, 7])
def test_same_outputs_and_gradients_as_the_network(channels_last, batch):
    net = _net(channels_last)
    x = torch.rand(batch, 1, 28, 28, requires_grad=True)
    reference = net(x)
    fast = matmul_form(net)(x)
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-6)
    inputs = [x, *net.parameters()]
    grads_ref = torch.autograd.grad(reference.square().sum(), inputs)
    grads_fast = torch.autograd.grad(fast.square().sum(), inputs)
    for name, a, b in zip(["input", *dict(net.named_parameters())], grads_ref, grads_fast, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}")


def test_without_the_fused_onednn_call_the_same_function(monkeypatch):
    if not torch.backends.mkldnn.is_available():
        pytest.skip("this torch build has no oneDNN: only the unfused path exists")
    net = _net(True)
    pixels = torch.randint(0, 256, (4, 28, 28), dtype=torch.uint8)
    form = matmul_form(net)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = form(pixels)
        fused_grads = torch.autograd.grad(fused.float().square().sum(), list(net.parameters()))
        monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
        plain = form(pixels)
        plain_grads = torch.autograd.grad(plain.float().square().sum(), list(net.parameters()))
    # The same function up to bf16 rounding (torch may route the plain product to another kernel, which sums in
    # another order): within 2 % of each tensor's largest entry. Without the ReLU, outputs differ by far more.
    torch.testing.assert_close(plain, fused, rtol=0, atol=0.02 * fused.abs().max().item())
    for a, b in zip(fused_grads, plain_grads, strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0.02 * a.abs().max().item())


def test_uint8_pixels_are_read_as_pixels_over_255():
    net = _net(False)
    pixels = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8)
    expected = net(pixels.unsqueeze(1).float() / 255)
    form = matmul_form(net)
    torch.testing.assert_close(form(pixels), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(form(pixels.unsqueeze(1)), expected, rtol=1e-5, atol=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = form(pixels)
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), expected, rtol=0, atol=0.05)


def test_it_has_no_parameters_of_its_own():
    net = _net(False)
    form = matmul_form(net)
    assert {id(p) for p in form.parameters()} == {id(p) for p in net.parameters()}
    assert not any(name.startswith(("band_index", "pool1", "fc1_fold")) for name in form.state_dict())


def test_pooling_matrices_average_each_2x2_block_once():
    pool = pool1_matrix()
    assert pool.shape == (2 * 24 * 6, 12 * 6)
    assert torch.equal((pool > 0).sum(0), torch.full((72,), 4))  # each pooled value: 4 inputs x 1/4
    assert torch.equal((pool > 0).sum(1), torch.ones(288, dtype=torch.long))  # each input feeds one value
    fold = pool2_fc1_fold()
    assert fold.shape == (256, 8 * 8 * 16)
    assert torch.equal((fold > 0).sum(0), torch.ones(1024, dtype=torch.long))  # each conv2 output feeds one
    assert torch.equal((fold > 0).sum(1), torch.full((256,), 4))  # fc1's inputs: one 2x2 block each, x 1/4
    maps = torch.rand(3, 16, 8, 8)
    channels_last_rows = maps.permute(0, 2, 3, 1).reshape(3, -1)
    torch.testing.assert_close(channels_last_rows @ fold.t(), F.avg_pool2d(maps, 2).flatten(1))


def test_wrong_image_shape_is_refused():
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\)"):
        matmul_form(_net(False))(torch.rand(2, 1, 32, 32))


def test_kernels_option_chooses_the_training_network():
    cpu = torch.device("cpu")
    net = _net(True)
    assert isinstance(training_network(net, cpu, "auto", "bf16", 512), SeedAsMatmuls)
    assert isinstance(training_network(net, cpu, "auto", "bf16", 128), SeedAsMatmuls)
    # where it measured slower: fp32, small batches, compiled
    assert training_network(net, cpu, "auto", "fp32", 512) is net
    assert training_network(net, cpu, "auto", "bf16", 64) is net
    assert training_network(net, cpu, "auto", "bf16", 512, compiled=True) is net
    assert training_network(net, cpu, "conv", "bf16", 512) is net
    classic = get_model("classic")
    assert training_network(classic, cpu, "auto", "bf16", 512) is classic  # no matrix-product form: itself
    assert isinstance(training_network(net, cpu, "matmul", "fp32", 64), SeedAsMatmuls)
    with pytest.raises(lenet.ConfigError, match="classic.*no matrix-product form"):
        training_network(get_model("classic"), cpu, "matmul", "fp32", 64)
    with pytest.raises(lenet.ConfigError, match="kernels"):
        make_config(kernels="fft")


def test_training_through_either_form_gives_the_same_run(mnist):
    options = {"val_size": 58000, "batch_size": 64, "log_every": 0, "threads": 1, "epochs": 2, "lr": 3e-3,
               "schedule": "constant"}
    runs = {kernels: fit(make_config(kernels=kernels, **options), stream=io.StringIO(), progress_bar=False)
            for kernels in ("conv", "matmul")}
    conv, matmul = runs["conv"], runs["matmul"]
    assert matmul.history[1]["train_loss"] < matmul.history[0]["train_loss"]
    for a, b in zip(conv.history, matmul.history, strict=True):  # fp32: only rounding differs
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-3)
    # evaluated by the ordinary network: the matmul form trained the network's own weights
    assert matmul.test.accuracy > 80 and abs(matmul.test.accuracy - conv.test.accuracy) < 0.5


def test_bf16_uint8_path_resumes_bit_identically(interrupted_and_resumed):
    # batch 256 bf16 on CPU: kernels auto = the matrix-product form, reading uint8 pixels directly
    options = {"val_size": 58000, "batch_size": 256, "log_every": 0, "epochs": 2, "precision": "bf16",
               "deterministic": True, "lr": 3e-3}
    _, _, differing = interrupted_and_resumed(options)
    assert differing == []  # bit-identical weights
