"""fusedrnn.convert: swaps every nn.RNN/LSTM/GRU in a model in place, keeping the very same
Parameter objects, dtype, training mode and outputs."""

import copy

import pytest
import torch
from torch import nn

import fusedrnn
from conftest import assert_rel_close

F64 = torch.float64
BACKENDS = ["auto", "reference", "torch"]
IN, H, P, T, B = 3, 5, 2, 4, 3


class Encoder(nn.Module):
    """A custom module holding one of each recurrent kind."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(IN, H, proj_size=P)                                     # -> P
        self.gru = nn.GRU(P, 4, num_layers=2, bidirectional=True)                   # -> 8
        self.rnn = nn.RNN(8, H, nonlinearity="relu", batch_first=False)             # -> H
        self.head = nn.Linear(H, 2)

    def forward(self, x):
        y, (h, c) = self.lstm(x)
        y, hg = self.gru(y)
        y, hr = self.rnn(y)
        return torch.cat([self.head(y).flatten(), h.flatten(), c.flatten(), hg.flatten(),
                          hr.flatten()])


def build_model():
    torch.manual_seed(0)
    return nn.Sequential(Encoder(), nn.Identity()).to(F64)


def recurrent_modules(model):
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.RNNBase)}


def make_x(seed=1):
    return torch.randn(T, B, IN, generator=torch.Generator().manual_seed(seed), dtype=F64)


EXPECTED_TYPES = {"0.lstm": fusedrnn.LSTM, "0.gru": fusedrnn.GRU, "0.rnn": fusedrnn.RNN}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_convert_nested_model(mode, backend):
    model = build_model().train(mode == "train")
    x = make_x()
    before_modules = recurrent_modules(model)
    before_params = dict(model.named_parameters())
    before_flags = {n: m.training for n, m in model.named_modules()}
    with torch.no_grad():
        before_out = model(x)

    result = fusedrnn.convert(model, backend=backend)

    assert result is model
    after_modules = recurrent_modules(model)
    assert after_modules.keys() == before_modules.keys() == EXPECTED_TYPES.keys()
    for name, m in after_modules.items():
        assert type(m) is EXPECTED_TYPES[name], name
        assert m is not before_modules[name]
        assert m.backend == backend
        old = before_modules[name]
        for attr in ("input_size", "hidden_size", "num_layers", "bias", "batch_first",
                     "dropout", "bidirectional", "proj_size", "mode"):
            assert getattr(m, attr) == getattr(old, attr), (name, attr)
        for pname in old._flat_weights_names:
            assert getattr(m, pname) is getattr(old, pname), (name, pname)
        assert [w is getattr(m, n) for w, n in zip(m._flat_weights, m._flat_weights_names)] \
            == [True] * len(m._flat_weights_names)
    assert after_modules["0.rnn"].nonlinearity == "relu"
    assert after_modules["0.lstm"].proj_size == P
    # the Parameter objects themselves, under the same names
    after_params = dict(model.named_parameters())
    assert after_params.keys() == before_params.keys()
    for name, p in after_params.items():
        assert p is before_params[name], name
        assert p.dtype == F64
    # training flags everywhere unchanged
    assert {n: m.training for n, m in model.named_modules()} == before_flags
    assert all(m.training == (mode == "train") for m in model.modules())
    with torch.no_grad():
        after_out = model(x)
    assert after_out.dtype == F64
    assert_rel_close(after_out, before_out, F64, f"convert({backend}) {mode} output")


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_optimizer_built_before_convert_still_trains(backend):
    model = build_model().train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    reference = copy.deepcopy(model)                 # stays torch.nn, same start
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.1)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}

    fusedrnn.convert(model, backend=backend)
    assert isinstance(model[0].lstm, fusedrnn.LSTM)
    x = make_x()
    for m, o in ((model, opt), (reference, ref_opt)):
        o.zero_grad()
        m(x).square().sum().backward()
        o.step()

    ref_params = dict(reference.named_parameters())
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert not torch.equal(p.detach(), start[name]), f"{name} did not change"
        # the optimiser's step is the one torch.nn would have taken
        assert_rel_close(p.detach(), ref_params[name].detach(), F64, f"after step {name}")
    # the optimiser still holds exactly the model's parameters
    opt_params = [p for group in opt.param_groups for p in group["params"]]
    assert len(opt_params) == len(list(model.parameters()))
    assert all(a is b for a, b in zip(opt_params, model.parameters()))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cls, fused_cls, kwargs", [
    (nn.LSTM, fusedrnn.LSTM, {"proj_size": 2, "num_layers": 2}),
    (nn.GRU, fusedrnn.GRU, {"bidirectional": True, "batch_first": True}),
    (nn.RNN, fusedrnn.RNN, {"nonlinearity": "relu", "bias": False}),
])
def test_convert_bare_module_returns_the_fusedrnn_class(cls, fused_cls, kwargs, backend):
    torch.manual_seed(0)
    old = cls(IN, H, dropout=0.0, **kwargs).to(F64).eval()
    new = fusedrnn.convert(old, backend=backend)
    assert type(new) is fused_cls
    assert new.backend == backend
    assert new.training is False
    assert all(a is b for a, b in zip(new.parameters(), old.parameters(), strict=True))
    assert all(p.dtype == F64 for p in new.parameters())
    x = make_x()
    if kwargs.get("batch_first"):
        x = x.transpose(0, 1)
    with torch.no_grad():
        (ro, rh), (no, nh) = old(x), new(x)
    assert_rel_close(no, ro, F64, "bare convert output")
    for a, b in zip(nh if isinstance(nh, tuple) else (nh,), rh if isinstance(rh, tuple) else (rh,)):
        assert_rel_close(a, b, F64, "bare convert hidden")


def test_convert_keeps_dropout_and_float32():
    torch.manual_seed(0)
    model = nn.Sequential(nn.GRU(IN, H, num_layers=2, dropout=0.25))
    fusedrnn.convert(model)
    assert type(model[0]) is fusedrnn.GRU
    assert model[0].dropout == 0.25
    assert model[0].backend == "auto"
    assert all(p.dtype == torch.float32 for p in model.parameters())


class MyLSTM(nn.LSTM):
    def forward(self, input, hx=None):
        out, state = super().forward(input, hx)
        return out * 2, state


def test_subclass_of_torch_module_is_left_alone():
    torch.manual_seed(0)
    sub = MyLSTM(IN, H).to(F64)
    model = nn.Sequential(sub, )
    nested = nn.ModuleDict({"a": model, "b": nn.LSTM(IN, H).to(F64)})
    fusedrnn.convert(nested, backend="torch")
    assert nested["a"][0] is sub
    assert type(nested["a"][0]) is MyLSTM
    assert type(nested["b"]) is fusedrnn.LSTM     # the plain one next to it is converted
    # a bare subclass is returned untouched, too
    assert fusedrnn.convert(sub) is sub
    assert type(sub) is MyLSTM


@pytest.mark.parametrize("backend", ["cuda-magic", "", "Torch"])
def test_convert_with_invalid_backend_raises_value_error(backend):
    model = build_model()
    before = {n: type(m) for n, m in model.named_modules()}
    with pytest.raises(ValueError) as info:
        fusedrnn.convert(model, backend=backend)
    assert "reference" in str(info.value) and "torch" in str(info.value)
    # nothing was swapped
    assert {n: type(m) for n, m in model.named_modules()} == before
    with pytest.raises(ValueError):
        fusedrnn.convert(nn.LSTM(IN, H), backend=backend)


def test_convert_keeps_hooks():
    seen = []
    model = torch.nn.Sequential(torch.nn.GRU(3, 4))
    model[0].register_forward_hook(lambda mod, inp, out: seen.append(type(mod).__name__))
    fusedrnn.convert(model)
    model(torch.randn(2, 1, 3))
    assert seen == ["GRU"] and isinstance(model[0], fusedrnn.GRU)


@pytest.mark.parametrize("make, x", [(lambda: torch.nn.GRU(3, 4), torch.randn(5, 2, 3)),
                                     (lambda: torch.nn.GRUCell(3, 4), torch.randn(2, 3))],
                         ids=["GRU", "GRUCell"])
def test_convert_keeps_kwargs_hooks_always_called_hooks_and_buffers(make, x):
    """Hooks registered ``with_kwargs=True`` / ``always_call=True`` keep their bookkeeping
    tables, and buffers a user registered (persistent or not) carry over."""
    module = make()
    seen = []
    module.register_forward_pre_hook(lambda mod, args, kwargs: seen.append("pre"),
                                     with_kwargs=True)
    module.register_forward_hook(lambda mod, args, kwargs, out: seen.append("post"),
                                 with_kwargs=True, always_call=True)
    module.register_buffer("step", torch.tensor(3.0))
    module.register_buffer("scratch", torch.ones(2), persistent=False)
    new = fusedrnn.convert(module)
    new(x)
    assert seen == ["pre", "post"]
    assert new.step is module.step and new.scratch is module.scratch
    assert "step" in new.state_dict() and "scratch" not in new.state_dict()
