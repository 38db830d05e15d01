"""FLOPs per image, counted from a network's stage declaration (models/summary.py: flop_table, flops_per_image):
`seed` against a hand computation and against torch's own FLOP counter, `classic` against the paper's
connection counts. A multiply-add is 2 FLOPs; a bias addition 1."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from lenet.models import get_model, layer_table
from lenet.models.summary import flop_table, flops_per_image

# seed, by hand: (multiply-adds, bias additions) per image of each weighted layer, from seed.py's table
SEED_HAND = {
    "conv1": (1 * 5 * 5 * 6 * 24 * 24, 6 * 24 * 24),      # 86,400 taps (Cin 1, 5x5, Cout 6, 24x24 out); 3,456
    "conv2": (6 * 5 * 5 * 16 * 8 * 8, 16 * 8 * 8),        # 153,600; 1,024
    "fc1": (256 * 120, 120),                              # 30,720; 120
    "fc2": (120 * 84, 84),                                # 10,080; 84
    "fc3": (84 * 10, 10),                                 # 840; 10
}
SEED_MACS = 86_400 + 153_600 + 30_720 + 10_080 + 840     # 281,640
SEED_BIAS = 3_456 + 1_024 + 120 + 84 + 10                # 4,694
SEED_FORWARD = 2 * SEED_MACS + SEED_BIAS                 # 567,974: the "~0.56 MFLOP"
# backward: weight gradients = the forward again (2 * MACs + the bias sums); input gradients = 2 * MACs of
# every layer but conv1, whose input is the image (nothing upstream needs its gradient)
SEED_BACKWARD = (2 * SEED_MACS + SEED_BIAS) + 2 * (SEED_MACS - 86_400)  # 567,974 + 390,480 = 958,454
# element-wise passes: ReLU on conv1 (3,456) and conv2 (1,024) outputs, fc1 (120), fc2 (84); 2x2 average
# pooling, 4 operations per output: pool1 6*12*12*4 = 3,456, pool2 16*4*4*4 = 1,024
SEED_OTHER = 3_456 + 1_024 + 120 + 84 + 3_456 + 1_024    # 9,164


def test_seed_matches_the_hand_computation():
    rows = {r.name: r for r in flop_table(get_model("seed"))}
    assert {name: (r.macs, r.bias) for name, r in rows.items() if r.macs} == SEED_HAND
    assert rows["pool1"].macs == rows["pool2"].macs == 0
    assert [r.input_gradient for r in rows.values()] == [False] + [True] * 6
    total = flops_per_image(get_model("seed"))
    assert (total.forward, total.backward) == (SEED_FORWARD, SEED_BACKWARD) == (567_974, 958_454)
    assert total.training_step == 1_526_428  # the "about 1.5 MFLOP per image"
    assert total.other_forward == total.other_backward == SEED_OTHER


def test_seed_matches_torchs_flop_counter():
    """torch's dispatcher-level counter (2 per multiply-add, biases not counted) sees the same weighted work,
    forward and backward, so the declaration and the computation agree."""
    model = get_model("seed")
    with FlopCounterMode(display=False) as forward:
        out = model(torch.zeros(1, 1, 28, 28))
    with FlopCounterMode(display=False) as backward:
        out.sum().backward()
    total = flops_per_image(model)
    assert forward.get_total_flops() == total.forward - SEED_BIAS == 563_280
    assert backward.get_total_flops() == total.backward - SEED_BIAS == 953_760


# The paper's table (section II.B): connections of C1, C3, C5 and F6; a bias is one connection
PAPER_CONNECTIONS = {"c1": 122_304, "c3": 151_600, "c5": 48_120, "f6": 10_164}


def test_classic_multiply_adds_are_the_papers_connections():
    model = get_model("classic")
    rows = {r.name: r for r in flop_table(model)}
    assert {name: rows[name].macs + rows[name].bias for name in PAPER_CONNECTIONS} == PAPER_CONNECTIONS
    # C3 counts only Table I's taps: 100 outputs per map x (6 maps x 3 + 9 x 4 + 1 x 6 inputs) x 25 = 150,000
    assert rows["c3"].macs == 100 * (6 * 3 + 9 * 4 + 6) * 25 == 150_000
    table = {r.name: r.connections for r in layer_table(model)}
    assert all(table[name] == rows[name].macs + rows[name].bias for name in PAPER_CONNECTIONS)
    # subsampling and the RBF are element-wise work, not multiply-adds
    assert rows["s2"].macs == rows["s4"].macs == rows["rbf"].macs == 0
    assert rows["s2"].other == 5_880 + 6 * 14 * 14 * 3  # its connections + the scaled tanh, 3 per element
    assert rows["rbf"].other == 3 * 840 + 10  # subtract, square, add per connection + the negation
    total = flops_per_image(model)
    assert total.forward == 2 * (117_600 + 150_000 + 48_000 + 10_080) + (4_704 + 1_600 + 120 + 84) == 657_868


@pytest.mark.parametrize("name", ["seed", "classic"])
def test_training_step_is_forward_plus_backward(name):
    total = flops_per_image(get_model(name))
    first = flop_table(get_model(name))[0]
    # backward = 2 x forward minus the first layer's input gradient
    assert total.backward == 2 * total.forward - sum(r.bias for r in flop_table(get_model(name))) - 2 * first.macs
    assert total.training_step == total.forward + total.backward
