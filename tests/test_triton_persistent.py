"""``backend="triton-persistent"``, both forms, against the float64 reference: outputs and
every gradient; limits raise ValueError naming them.

The batch-tiled (register-resident) form runs wherever it fits; the hidden-split form is forced
with ``split_form`` (under the interpreter it runs one program per direction, see
``split_common``; its multi-program path and grid barrier are tested on CUDA)."""

import pytest
import torch
import triton
import triton.language as tl

import cases
import fusedrnn
from cases import (CELLS, FORMS, compare_to_reference, make_inputs, outputs_and_grads,
                   random_config, twin_modules)
from conftest import rel_err
from fusedrnn.kernels.triton import gru_persistent, lstm_persistent, rnn_persistent
from fusedrnn.backends import triton_persistent as backend_triton_persistent
from fusedrnn.kernels.triton import split_common
from fusedrnn.kernels.triton.persistent_common import dot_key
from conftest import assert_rel_close

PERSISTENT_CELLS = [c for c in CELLS if c != "lstm_proj"]   # batch-tiled form: no projection
ON_GPU = torch.cuda.is_available()
DEVICE = "cuda" if ON_GPU else "cpu"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("cell", PERSISTENT_CELLS)
def test_matches_reference(cell, form, dtype):
    seed = sum(map(ord, cell + form)) + 1
    cfg = random_config(cell, form, seed)
    cfg["layers"] = min(cfg["layers"], 2)       # the interpreter is slow: a small stack
    compare_to_reference("triton-persistent", cfg, dtype, DEVICE, seed)


@pytest.mark.parametrize("cell", PERSISTENT_CELLS)
def test_edge_sizes(cell):
    """T=1, B=1, H not a power of two, a batch wider than one tile, no bias, with h0."""
    for T, B, H in [(1, 1, 3), (3, 1, 7), (2, 17, 5)]:
        cfg = dict(cell=cell, form="packed" if B > 1 else "time_major", T=T, B=B, In=2, H=H,
                   layers=1, bidirectional=True, bias=False, with_h0=True)
        compare_to_reference("triton-persistent", cfg, torch.float32, DEVICE)


@pytest.mark.parametrize("cell", PERSISTENT_CELLS)
def test_largest_supported_hidden_size(cell):
    module = {"lstm": lstm_persistent, "gru": gru_persistent}.get(cell, rnn_persistent)
    limit = module.MAX_HIDDEN[dot_key(torch.float32)]
    cfg = dict(cell=cell, form="time_major", T=2, B=2, In=3, H=limit, layers=1,
               bidirectional=False, bias=True, with_h0=True)
    compare_to_reference("triton-persistent", cfg, torch.float32, DEVICE)


@pytest.fixture
def split_form(monkeypatch):
    """Run every layer in the hidden-split form, whatever its size."""
    monkeypatch.setattr(backend_triton_persistent, "batch_tiled_fits", lambda *args: False)


def uses_split_form(cell, H, dtype):
    mode = {"lstm": "LSTM", "lstm_proj": "LSTM", "gru": "GRU", "rnn_tanh": "RNN_TANH",
            "rnn_relu": "RNN_RELU"}[cell]
    return not backend_triton_persistent.batch_tiled_fits(mode, H, dtype, cell == "lstm_proj")


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("cell, form_of_kernel", [(c, "batch_tiled") for c in PERSISTENT_CELLS]
                         + [(c, "split") for c in CELLS])
def test_randomised_module_parity_with_torch_nn_float32(cell, form_of_kernel, seed, monkeypatch):
    """The issue's acceptance check: a random configuration (input form, sizes, layers,
    directions, bias, h0) against torch.nn in float32, relative error ≤ 2e-4 (fp32 budget)."""
    if form_of_kernel == "split":
        monkeypatch.setattr(backend_triton_persistent, "batch_tiled_fits", lambda *args: False)
    cfg = random_config(cell, FORMS[(seed + len(cell)) % len(FORMS)], 100 + seed)
    cfg["layers"] = min(cfg["layers"], 2)
    ref, ours = twin_modules(cfg, "triton-persistent", dtype=torch.float32, device=DEVICE)
    inp, hx, leaves = make_inputs(cfg, dtype=torch.float32, device=DEVICE, seed=seed)
    want_outs, want_grads = outputs_and_grads(ref, inp, hx, leaves)
    got_outs, got_grads = outputs_and_grads(ours, inp, hx, leaves)
    for i, (a, b) in enumerate(zip(got_outs, want_outs)):
        assert rel_err(a, b) <= 2e-4, (cfg, i)
    assert got_grads.keys() == want_grads.keys()
    for name in want_grads:
        assert rel_err(got_grads[name], want_grads[name]) <= 2e-4, (cfg, name)


@pytest.mark.parametrize("allow_tf32", [True, False], ids=["tf32", "ieee"])
@pytest.mark.parametrize("cell, module", [("lstm", lstm_persistent), ("gru", gru_persistent),
                                          ("rnn_tanh", rnn_persistent)])
def test_beyond_the_batch_tiled_limit_the_split_form_runs(cell, module, allow_tf32, monkeypatch):
    """The batch-tiled limit depends on the dot configuration (IEEE fp32 needs more registers);
    one unit more switches to the hidden-split form, which must be just as exact."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", allow_tf32)
    limit = module.MAX_HIDDEN["fp32-tf32" if allow_tf32 else "fp32-ieee"]
    assert not uses_split_form(cell, limit, torch.float32)
    assert uses_split_form(cell, limit + 1, torch.float32)
    cfg = dict(cell=cell, form="time_major", T=2, B=2, In=3, H=limit + 1, layers=1,
               bidirectional=False, bias=True, with_h0=True)
    compare_to_reference("triton-persistent", cfg, torch.float32, DEVICE)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("cell", list(CELLS))
def test_split_form_matches_reference(cell, form, dtype, split_form):
    seed = sum(map(ord, cell + form)) + 7
    cfg = random_config(cell, form, seed)
    cfg["layers"] = min(cfg["layers"], 2)
    compare_to_reference("triton-persistent", cfg, dtype, DEVICE, seed)


@pytest.mark.parametrize("cell", list(CELLS))
def test_split_form_edge_sizes(cell, split_form):
    """T=1, B=1, H not a power of two, several batch tiles (B=17), no bias, with h0."""
    for T, B, H in [(1, 1, 3), (3, 1, 7), (2, 17, 5)]:
        cfg = dict(cell=cell, form="packed" if B > 1 else "time_major", T=T, B=B, In=2, H=H,
                   layers=1, bidirectional=True, bias=False, with_h0=True)
        compare_to_reference("triton-persistent", cfg, torch.float32, DEVICE)


def test_projection_runs_in_the_split_form():
    assert uses_split_form("lstm_proj", 6, torch.float32)
    cfg = dict(cell="lstm_proj", form="packed", T=4, B=3, In=3, H=6, layers=1,
               bidirectional=True, bias=True, with_h0=True)
    compare_to_reference("triton-persistent", cfg, torch.float32, DEVICE)


def test_wide_projection_runs_in_the_split_form(monkeypatch):
    """P = 33 > one 32-wide slice on a GPU (cases.CELLS' usual P = 2 never leaves the first)."""
    monkeypatch.setitem(cases.CELLS, "lstm_proj", (torch.nn.LSTM, fusedrnn.LSTM, {"proj_size": 33}))
    cfg = dict(cell="lstm_proj", form="packed", T=3, B=2, In=3, H=35, layers=1,
               bidirectional=True, bias=True, with_h0=True)
    compare_to_reference("triton-persistent", cfg, torch.float32, DEVICE)


def test_split_form_limit_names_it():
    """Programs of all directions must be co-resident: one 32-unit slice per SM at most."""
    reason = backend_triton_persistent.split_form_limit_reason
    assert reason(4224, 4224, 1, 132) is None
    assert reason(2112, 2112, 2, 132) is None
    assert "limit is 2112" in reason(2113, 2113, 2, 132)
    assert "hidden size 4225 needs 133 co-resident programs" in reason(4225, 4225, 1, 132)
    assert "limit is 4224" in reason(100, 4225, 1, 132)      # the projection width counts too


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("T,B,In,H", [(1, 1, 7, 17), (256, 64, 64, 32), (512, 40, 96, 31)])
@pytest.mark.parametrize("cell", PERSISTENT_CELLS)
def test_cuda_matches_reference(cell, T, B, In, H, dtype, monkeypatch):
    # IEEE fp32 (see test_triton_step); H ≤ 32 is within every dot configuration's limit.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    cfg = dict(cell=cell, form="packed" if B > 1 else "time_major", T=T, B=B, In=In, H=H,
               layers=1, bidirectional=True, bias=True, with_h0=True)
    compare_to_reference("triton-persistent", cfg, dtype, "cuda")


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("T,B,In,H", [(1, 1, 7, 130), (128, 40, 64, 257), (64, 16, 768, 768)])
@pytest.mark.parametrize("cell", list(CELLS))
def test_cuda_split_form_matches_reference(cell, T, B, In, H, dtype, monkeypatch):
    """The multi-program path: 5 to 24 slices per direction meeting at the grid barrier (every
    size is beyond every batch-tiled limit)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    assert uses_split_form(cell, H, dtype)
    cfg = dict(cell=cell, form="packed" if B > 1 else "time_major", T=T, B=B, In=In, H=H,
               layers=1, bidirectional=True, bias=True, with_h0=True)
    compare_to_reference("triton-persistent", cfg, dtype, "cuda")


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_cuda_split_form_wide_projection(dtype, monkeypatch):
    """P = 100: four P-slices, each reading the o and c columns every slice wrote."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setitem(cases.CELLS, "lstm_proj", (torch.nn.LSTM, fusedrnn.LSTM, {"proj_size": 100}))
    cfg = dict(cell="lstm_proj", form="packed", T=64, B=16, In=32, H=257, layers=1,
               bidirectional=True, bias=True, with_h0=True)
    compare_to_reference("triton-persistent", cfg, dtype, "cuda")


@pytest.mark.cuda
def test_cuda_split_launch_refuses_a_grid_beyond_capacity(monkeypatch):
    """The launch's own occupancy check (the backend's one-slice-per-SM rule is stricter, so
    the check is reached here by pretending the GPU holds 3 programs)."""
    monkeypatch.setattr(split_common, "co_resident_capacity", lambda compiled, device: 3)
    m = fusedrnn.LSTM(8, 200, backend="triton-persistent").cuda()        # 7 programs
    with pytest.raises(ValueError, match="needs 7 co-resident programs but this GPU holds 3"):
        m(torch.randn(2, 1, 8, device="cuda"))


@pytest.mark.cuda
def test_cuda_split_offsets_beyond_int32():
    """T*B*5H ≥ 2³¹ in the reverse direction, whose c reads use the workspace's direction
    stride: against cuDNN (the reference would take hours), forward and dx; bf16 tolerance
    because both run in bf16."""
    T, B, In, H = 64, 8192, 16, 1024
    assert T * B * 5 * H >= 2**31
    torch.manual_seed(0)
    ref = torch.nn.LSTM(In, H, bidirectional=True).cuda().bfloat16()
    ours = fusedrnn.LSTM(In, H, bidirectional=True, backend="triton-persistent").cuda().bfloat16()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(T, B, In, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    results = []
    for m in (ref, ours):
        x.grad = None
        y, (h, c) = m(x)
        y.float().square().mean().backward()
        results.append((y.detach(), h.detach(), c.detach(), x.grad))
    for a, b, what in zip(results[1], results[0], ("y", "h_n", "c_n", "dx")):
        assert_rel_close(a, b, torch.bfloat16, what)


@triton.jit
def _barrier_stress_kernel(p_slots, p_bad, p_bar, n_iters, N: tl.constexpr):
    """Each round every program writes its own slot of one half of a double buffer with a plain
    store, meets the others at the barrier, then reads *all* slots with plain (L1-cached) loads."""
    j = tl.program_id(0)
    n = tl.num_programs(0)
    o = tl.arange(0, N)
    sense = 0
    bad = 0
    for it in range(0, n_iters):
        half = p_slots + (it % 2) * N
        tl.store(half + j, it * 1000 + j)
        sense = split_common.grid_barrier(p_bar, n, sense)
        seen = tl.load(half + o, mask=o < n, other=0)
        bad += tl.sum(tl.where((o < n) & (seen != it * 1000 + o), 1, 0), axis=0)
    tl.store(p_bad + j, bad)


@pytest.mark.cuda
def test_cuda_grid_barrier_orders_every_round():
    """The barrier alone, one program per SM (the most a split launch uses) for 20,000 rounds:
    a round read before all writes of that round are visible counts as a mismatch."""
    n = torch.cuda.get_device_properties(0).multi_processor_count
    slots = torch.full((2 * 256,), -1, dtype=torch.int32, device="cuda")
    bad = torch.full((n,), -1, dtype=torch.int32, device="cuda")
    bar = split_common.barrier_state(1, torch.device("cuda"))
    _barrier_stress_kernel[(n,)](slots, bad, bar, 20_000, N=256, num_warps=4,
                                 launch_cooperative_grid=True)
    torch.cuda.synchronize()
    assert n <= 256 and bad.tolist() == [0] * n


@pytest.mark.cuda
def test_cuda_split_form_beyond_co_residency_is_refused():
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    H = 32 * sms // 2 + 1
    m = fusedrnn.RNN(8, H, bidirectional=True, backend="triton-persistent").cuda()
    with pytest.raises(ValueError, match=f"limit is {32 * sms // 2}"):
        m(torch.randn(2, 1, 8, device="cuda"))


@pytest.mark.cuda
@pytest.mark.parametrize("backend,H", [("triton-step", 32), ("triton-persistent", 32),
                                       ("triton-persistent", 200)])
def test_cuda_runs_are_bitwise_deterministic(backend, H):
    """No atomics in the arithmetic: repeated calls give bitwise-equal outputs and gradients
    (H=200 runs the hidden-split form: its barrier must not change any result)."""
    torch.manual_seed(0)
    m = fusedrnn.LSTM(32, H, bidirectional=True, backend=backend).cuda()
    x = torch.randn(100, 8, 32, device="cuda", requires_grad=True)
    runs = []
    for _ in range(3):
        m.zero_grad()
        x.grad = None
        out, (h, c) = m(x)
        (out.square().sum() + h.sum() + c.sum()).backward()
        runs.append([out.detach(), h.detach(), c.detach(), x.grad] + [p.grad for p in m.parameters()])
    for other in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(runs[0], other))


@pytest.mark.cuda
@pytest.mark.parametrize("cell", PERSISTENT_CELLS)
def test_cuda_at_the_bf16_limit(cell):
    """The widest register-resident case (bf16: H = 64 for the LSTM and GRU, 128 for the RNN)."""
    module = {"lstm": lstm_persistent, "gru": gru_persistent}.get(cell, rnn_persistent)
    cfg = dict(cell=cell, form="packed", T=300, B=24, In=48, H=module.MAX_HIDDEN["bf16"],
               layers=1, bidirectional=True, bias=True, with_h0=True)
    compare_to_reference("triton-persistent", cfg, torch.bfloat16, "cuda")
