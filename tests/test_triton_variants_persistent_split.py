"""``backend="triton-persistent"`` on the variant cells (issue 14) in the hidden-split form —
``kernels/triton/variants/<cell>_persistent_split``: per step the recurrent product by hidden
slice, a grid barrier, the step family's row body on whole rows (LayerNorm statistics in
registers), a barrier — against the float64 oracle: outputs, h_n, c_n and every gradient (the
LayerNorm gains and biases included).

The split form runs wherever the batch-tiled variant kernels do not fit (``H > MAX_HIDDEN``);
the ``split_form`` fixture forces it at any size. Without a GPU the kernels run in the Triton
interpreter, one program per direction (``kernels/triton/split_common``): tiny, odd sizes.
On CUDA, several programs per direction meet at the barrier (``test_cuda_*``).
"""

import pytest
import torch

from fusedrnn.backends import triton_persistent
from test_triton_variants_persistent import CELLS, DEVICE, IDS, _cfg, _module, check


@pytest.fixture
def split_form(monkeypatch):
    """Run every variant layer in the hidden-split form, whatever its size."""
    monkeypatch.setattr(triton_persistent, "variant_batch_tiled_fits", lambda *args: False)


@pytest.mark.parametrize("mode,layer_norm", CELLS, ids=IDS)
def test_resets_and_zoneout_bidirectional_variable_length(mode, layer_norm, split_form):
    """Resets at t = 0 and at the last step (row 0), on consecutive steps (row 1), past the
    row's length (row 2, ignored); fractional zoneout mask."""
    resets = [[1, 0, 0], [0, 1, 0], [0, 1, 1], [1, 0, 0]]          # [T=4, B=3]
    check(_cfg(mode, layer_norm, bidirectional=True, resets=True, zoneout=True), T=4, B=3,
          In=3, H=5, lengths=[4, 4, 2], resets=resets, keep="fraction", seed=1)


@pytest.mark.parametrize("mode,layer_norm", CELLS, ids=IDS)
def test_edge_sizes(mode, layer_norm, split_form):
    """T = 1 and B = 1, odd H, no bias, bidirectional, a reset on the only step; dense binary
    zoneout with a reset on the last step."""
    check(_cfg(mode, layer_norm, bidirectional=True, bias=False, resets=True), T=1, B=1, In=2,
          H=3, resets=[[1]], seed=3)
    check(_cfg(mode, layer_norm, resets=True, zoneout=True), T=3, B=1, In=3, H=7,
          resets=[[0], [0], [1]], keep="binary", seed=4)


@pytest.mark.parametrize("mode,layer_norm", CELLS, ids=IDS)
def test_two_row_tiles_and_two_product_tiles(mode, layer_norm, split_form):
    """17 rows: two row tiles (BB = 16 at H = 3) and two tiles of the recurrent product (16
    rows each); variable length, resets, zoneout, bidirectional."""
    lengths = [3] * 5 + [2] * 8 + [1] * 4
    resets = [[b % 3 == 0 for b in range(17)], [b % 2 == 0 for b in range(17)], [0] * 17]
    check(_cfg(mode, layer_norm, bidirectional=True, resets=True, zoneout=True), T=3, B=17,
          In=2, H=3, lengths=lengths, resets=resets, keep="binary", seed=11)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("mode,layer_norm", [("LSTM", True), ("GRU", True), ("RNN_TANH", False)],
                         ids=["ln_lstm", "ln_gru", "rnn_tanh"])
def test_half_precision(mode, layer_norm, dtype, split_form):
    """fp16/bf16 inputs and weights, fp32 state and gate math; that dtype's tolerance."""
    check(_cfg(mode, layer_norm, bidirectional=True, resets=True, zoneout=True), T=3, B=2,
          In=3, H=5, lengths=[3, 2], resets=[[0, 0], [1, 0], [0, 0]], keep="binary", seed=9,
          dtype=dtype)


@pytest.fixture
def several_programs(split_form, monkeypatch):
    """The split form with several programs per direction under the interpreter too: slices of
    16 units, one launch per phase of each step (``variants/split_common.
    INTERPRETER_SLICE_WIDTH``). No effect on CUDA, where the real form runs."""
    from fusedrnn.kernels.triton.variants import split_common

    monkeypatch.setattr(split_common, "INTERPRETER_SLICE_WIDTH", 16)


@pytest.mark.parametrize("mode,layer_norm", CELLS, ids=IDS)
def test_several_programs_per_direction(mode, layer_norm, several_programs):
    """H = 37: three slices (16, 16 and a partial 5) of the recurrent product; 35 rows in three
    row tiles (BB = 16 at HP = 64) strided over the three programs, the active rows shrinking
    (variable length) so the last tiles empty first; resets, zoneout, both directions."""
    B = 35
    lengths = [4] * 9 + [3] * 12 + [2] * 10 + [1] * 4
    resets = [[(b + t) % 5 == 0 for b in range(B)] for t in range(4)]
    check(_cfg(mode, layer_norm, bidirectional=True, resets=True, zoneout=True), T=4, B=B,
          In=3, H=37, lengths=lengths, resets=resets, keep="fraction", seed=13)


@pytest.mark.parametrize("mode,layer_norm", CELLS, ids=IDS)
def test_one_past_the_batch_tiled_limit_runs_split(mode, layer_norm):
    """No forcing: one unit past ``MAX_HIDDEN`` the hidden-split form takes over (it used to be
    refused) and is just as exact."""
    from fusedrnn.kernels.triton.persistent_common import dot_key

    limit = _module(mode).MAX_HIDDEN[dot_key(torch.float32)]
    assert triton_persistent.variant_batch_tiled_fits(mode, limit, torch.float32)
    assert not triton_persistent.variant_batch_tiled_fits(mode, limit + 1, torch.float32)
    check(_cfg(mode, layer_norm, resets=True, zoneout=True), T=2, B=2, In=3, H=limit + 1,
          lengths=[2, 1], resets=[[0, 0], [1, 0]], keep="fraction", seed=12)


# ------------------------------------------------------------------------ CUDA: many programs

@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("mode,layer_norm", CELLS, ids=IDS)
def test_cuda_split_form_many_programs(mode, layer_norm, dtype, monkeypatch):
    """H = 100: 4 programs per direction (slices of 32, the last one partial), 2 directions at
    the barrier; 19 rows (two product tiles, BB = 16 row tiles over 4 programs), resets,
    zoneout, variable length. IEEE fp32 (TF32 would need its own tolerance)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    B = 19
    lengths = [9] * 7 + [6] * 8 + [2] * 4
    resets = [[(b + t) % 4 == 0 for b in range(B)] for t in range(9)]
    check(_cfg(mode, layer_norm, bidirectional=True, resets=True, zoneout=True), T=9, B=B,
          In=24, H=100, lengths=lengths, resets=resets, keep="binary", seed=21, dtype=dtype)


@pytest.mark.cuda
@pytest.mark.parametrize("mode,layer_norm", [("LSTM", True), ("GRU", True)],
                         ids=["ln_lstm", "ln_gru"])
def test_cuda_split_form_wide_layer_norm(mode, layer_norm, monkeypatch):
    """H = 768, the timing case's width: 24 programs per direction, 2 rows per row tile."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    check(_cfg(mode, layer_norm, resets=True, zoneout=True), T=6, B=5, In=16, H=768,
          lengths=[6, 6, 5, 3, 1], resets=[[0] * 5, [0, 1, 0, 0, 0]] + [[0] * 5] * 4,
          keep="fraction", seed=22)


@pytest.mark.cuda
def test_cuda_split_form_is_bitwise_deterministic():
    """No atomics in the arithmetic: repeated runs of a LayerNorm LSTM in the split form (H =
    200: 7 programs per direction) give bitwise-equal outputs and gradients."""
    import fusedrnn

    torch.manual_seed(0)
    m = fusedrnn.LayerNormLSTM(32, 200, bidirectional=True, backend="triton-persistent").cuda()
    x = torch.randn(50, 8, 32, device="cuda", requires_grad=True)
    resets = torch.rand(50, 8, device="cuda") < 0.1
    runs = []
    for _ in range(3):
        m.zero_grad()
        x.grad = None
        out, (h, c) = m(x, resets=resets)
        (out.square().sum() + h.sum() + c.sum()).backward()
        runs.append([out.detach(), h.detach(), c.detach(), x.grad]
                    + [p.grad for p in m.parameters()])
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert torch.equal(a, b)


@pytest.mark.cuda
def test_cuda_split_form_beyond_co_residency_is_refused():
    """The classic split form's limit, one slice of 32 units per SM and direction."""
    import fusedrnn

    sms = torch.cuda.get_device_properties(0).multi_processor_count
    H = 32 * sms // 2 + 1
    m = fusedrnn.LayerNormGRU(8, H, bidirectional=True, backend="triton-persistent").cuda()
    with pytest.raises(ValueError, match=f"limit is {32 * sms // 2}"):
        m(torch.randn(2, 1, 8, device="cuda"))


@pytest.mark.cuda
def test_cuda_split_launch_refuses_a_grid_beyond_capacity(monkeypatch):
    """The launch's own occupancy check, reached by pretending the GPU holds 3 programs."""
    import fusedrnn
    from fusedrnn.kernels.triton import split_common

    monkeypatch.setattr(split_common, "co_resident_capacity", lambda compiled, device: 3)
    m = fusedrnn.LSTM(8, 200, zoneout=0.1, backend="triton-persistent").cuda()   # 7 programs
    with pytest.raises(ValueError, match="needs 7 co-resident programs but this GPU holds 3"):
        m(torch.randn(2, 1, 8, device="cuda"))


@pytest.mark.parametrize("backend", ["triton-step", "triton-persistent"])
def test_a_step_past_int32_row_offsets_is_refused(backend):
    """The variant row kernels index one step's [B, G*H] recurrent product with int32 row
    offsets: B * G * H = 2³¹ is refused with a ValueError, one row fewer runs."""
    from fusedrnn.backends import registry
    from test_triton_variants_step import _weights

    cfg = _cfg("LSTM", True)
    weights = _weights(cfg, 1, 512, torch.Generator().manual_seed(0))       # G*H = 2048
    rows = 2**31 // 2048
    assert registry.resolve(backend, cfg, torch.empty(1, rows - 1, 1, device=DEVICE),
                            weights) is not None
    with pytest.raises(ValueError, match="exceeds int32 offsets in the variant kernels"):
        registry.resolve(backend, cfg, torch.empty(1, rows, 1, device=DEVICE), weights)
