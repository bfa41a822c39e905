"""A CPU stand-in for the CuPy loader, so the ``cupy-step`` host code runs without a GPU.

``install(monkeypatch)`` replaces ``loader.get_function`` / ``loader.launch`` with versions that
(1) parse the real kernel signature from the ``.cu`` source and check every launch's arguments
against it with the real ``loader.check_args`` (count, tensor dtypes, contiguity, numpy scalar
types), (2) check that the grid covers every (row, unit) of every direction, and (3) run a
transliteration of the kernel body in torch: the same flat-memory index arithmetic as the
``.cu`` file, vectorised over threads. What this verifies is the launchers' plumbing (GEMMs,
state buffers, active rows, reverse-direction times, argument order); the CUDA C itself is
checked by nvcc here and by the ``cuda``-marked tests on a GPU.
"""

import torch

from fusedrnn.kernels.cuda import loader

BLOCK_WIDTH_PARAM = {   # the kernel parameter giving the per-row width of its thread grid
    "lstm_step_fwd": "H", "lstm_proj_store": "P", "lstm_proj_bwd_dh": "P", "lstm_step_bwd": "H",
    "gru_step_fwd": "H", "gru_step_bwd": "H", "rnn_step_fwd": "H", "rnn_step_bwd": "H",
}


def install(monkeypatch):
    """Route the loader through the emulator; returns the list of launched kernel names."""
    launched = []

    def get_function(source, kernel, dtype, defines=(), cooperative=False, device=None):
        signatures = loader.parse_signatures(loader.read_source(source))
        assert kernel in signatures, f"{source} has no kernel {kernel}"
        k = loader.Kernel(raw=None, name=kernel, params=signatures[kernel],
                          dtype=loader._CODE_DTYPES[loader.dtype_code(dtype)], cooperative=cooperative)
        k.defines = tuple(defines)
        return k

    def launch(fn, grid, block, args, shared_mem=0, cooperative=None):
        loader.check_args(fn.name, fn.params, args, fn.dtype)
        named = {p.name: a for p, a in zip(fn.params, args)}
        n, width, D = int(named["n"]), int(named[BLOCK_WIDTH_PARAM[fn.name]]), int(named["D"])
        if n * width == 0:
            return
        assert grid[1] == D and len(grid) == 2, (fn.name, grid)
        assert grid[0] * block[0] >= n * width, (fn.name, grid, block, n, width)
        assert (grid[0] - 1) * block[0] < n * width, "a whole block of idle threads"
        launched.append(fn.name)
        EMULATORS[fn.name](fn, named)

    monkeypatch.setattr(loader, "get_function", get_function)
    monkeypatch.setattr(loader, "launch", launch)
    monkeypatch.setattr(loader, "require_cupy", lambda name: None)
    return launched


# ---------------------------------------------------------------------------------------------
# Helpers: flat views and the device functions of common.cuh.

def _flat(a):
    return {k: (v.view(-1) if isinstance(v, torch.Tensor) else int(v)) for k, v in a.items()}


def _lanes(n, width):
    e = torch.arange(n * width)
    return e // width, e % width


def _time(d, s, lens):
    return torch.full_like(lens, s) if d == 0 else lens - 1 - s


def _prev_time(d, t):
    return t - 1 if d == 0 else t + 1


def _sig(x):
    return 1.0 / (1.0 + torch.exp(-x))


def _f(x):
    return x.float()


def _read_where(t, index, mask):
    """``t[index]`` where ``mask`` (the kernel reads only there), 0 elsewhere; an index outside
    ``t`` raises, which is the emulator's bounds check."""
    out = torch.zeros(index.shape, dtype=torch.float32)
    out[mask] = _f(t[index[mask]])
    return out


# ---------------------------------------------------------------------------------------------
# Kernel transliterations (one per extern "C" kernel; the names and index math of the .cu).

def lstm_step_fwd(fn, a):
    a = _flat(a)
    s, n, T, B, H, D = (a[k] for k in "s n T B H D".split())
    G = 4 * H
    for d in range(D):
        b, j = _lanes(n, H)
        t = _time(d, s, a["lens"][b])
        r = (d * n + b) * G + j
        x = (t * B + b) * (D * G) + d * G + j
        o_state = (d * B + b) * H + j
        i = _sig(a["rec"][r] + _f(a["xproj"][x]))
        f = _sig(a["rec"][r + H] + _f(a["xproj"][x + H]))
        g = torch.tanh(a["rec"][r + 2 * H] + _f(a["xproj"][x + 2 * H]))
        o = _sig(a["rec"][r + 3 * H] + _f(a["xproj"][x + 3 * H]))
        c = f * a["c_state"][o_state] + i * g
        w = ((d * T + t) * B + b) * (5 * H) + j
        for k, v in enumerate((i, f, g, o, c)):
            a["ws"][w + k * H] = v
        a["c_state"][o_state] = c
        h = (o * torch.tanh(c)).to(fn.dtype)
        a["h_out"][o_state] = h
        if not a["has_proj"]:
            a["y"][(t * B + b) * (D * H) + d * H + j] = h


def lstm_proj_store(fn, a):
    a = _flat(a)
    s, n, B, P, D = (a[k] for k in "s n B P D".split())
    for d in range(D):
        b, p = _lanes(n, P)
        t = _time(d, s, a["lens"][b])
        h = a["hp"][(d * n + b) * P + p].to(fn.dtype)
        a["h_state"][(d * B + b) * P + p] = h
        a["y"][(t * B + b) * (D * P) + d * P + p] = h


def lstm_proj_bwd_dh(fn, a):
    a = _flat(a)
    s, n, rec_rows, T, B, P, D = (a[k] for k in "s n rec_rows T B P D".split())
    for d in range(D):
        b, p = _lanes(n, P)
        ln = a["lens"][b]
        t = _time(d, s, ln)
        last = s == ln - 1
        rec = _read_where(a["rec"], (d * rec_rows + b) * P + p, ~last)
        carried = torch.where(last, _f(a["dh_n"][(d * B + b) * P + p]), rec)
        dh = _f(a["dy"][(t * B + b) * (D * P) + d * P + p]) + carried
        a["dh_proj"][((d * T + t) * B + b) * P + p] = dh
        a["dh_state"][(d * n + b) * P + p] = dh


def lstm_step_bwd(fn, a):
    a = _flat(a)
    s, n, rec_rows, T, B, H, D = (a[k] for k in "s n rec_rows T B H D".split())
    for d in range(D):
        b, j = _lanes(n, H)
        ln = a["lens"][b]
        t = _time(d, s, ln)
        last = s == ln - 1
        o_state = (d * B + b) * H + j
        o_rec = (d * rec_rows + b) * H + j
        if a["has_proj"]:
            dh = a["rec"][o_rec]
        else:
            _assert_rec_rows(last, b, rec_rows)
            rec = _read_where(a["rec"], o_rec, ~last)
            dh = _f(a["dy"][(t * B + b) * (D * H) + d * H + j]) + \
                torch.where(last, _f(a["dh_n"][o_state]), rec)
        dc_in = torch.where(last, _f(a["dc_n"][o_state]), _read_where(a["dc_state"], o_state, ~last))
        W = 5 * H
        w = ((d * T + t) * B + b) * W + j
        if s == 0:
            c_prev = _f(a["c0"][o_state])
        else:
            c_prev = a["ws"][((d * T + _prev_time(d, t)) * B + b) * W + 4 * H + j]
        i, f, g, o, c = (a["ws"][w + k * H] for k in range(5))
        tc = torch.tanh(c)
        dc = dc_in + dh * o * (1 - tc * tc)
        grads = (dc * g * i * (1 - i), dc * c_prev * f * (1 - f), dc * i * (1 - g * g),
                 dh * tc * o * (1 - o))
        G = 4 * H
        out = ((d * T + t) * B + b) * G + j
        st = (d * B + b) * G + j
        for k, v in enumerate(grads):
            a["dg"][out + k * H] = v
            a["dg_state"][st + k * H] = v
        a["dc_state"][o_state] = dc * f


def gru_step_fwd(fn, a):
    a = _flat(a)
    s, n, T, B, H, D = (a[k] for k in "s n T B H D".split())
    G = 3 * H
    for d in range(D):
        b, j = _lanes(n, H)
        t = _time(d, s, a["lens"][b])
        r_ = (d * n + b) * G + j
        x = (t * B + b) * (D * G) + d * G + j
        o_state = (d * B + b) * H + j
        ghn = a["rec"][r_ + 2 * H] + (_f(a["b_hn"][d * H + j]) if a["has_bhn"] else 0.0)
        r = _sig(_f(a["xproj"][x]) + a["rec"][r_])
        z = _sig(_f(a["xproj"][x + H]) + a["rec"][r_ + H])
        nn = torch.tanh(_f(a["xproj"][x + 2 * H]) + r * ghn)
        h = (1 - z) * nn + z * _f(a["h_state"][o_state])
        w = ((d * T + t) * B + b) * (4 * H) + j
        for k, v in enumerate((r, z, nn, ghn)):
            a["ws"][w + k * H] = v
        h = h.to(fn.dtype)
        a["h_state"][o_state] = h
        a["y"][(t * B + b) * (D * H) + d * H + j] = h


def gru_step_bwd(fn, a):
    a = _flat(a)
    s, n, rec_rows, T, B, H, D = (a[k] for k in "s n rec_rows T B H D".split())
    for d in range(D):
        b, j = _lanes(n, H)
        ln = a["lens"][b]
        t = _time(d, s, ln)
        last = s == ln - 1
        _assert_rec_rows(last, b, rec_rows)
        o_state = (d * B + b) * H + j
        rec = _read_where(a["rec"], (d * rec_rows + b) * H + j, ~last)
        dh = _f(a["dy"][(t * B + b) * (D * H) + d * H + j]) + torch.where(
            last, _f(a["dh_n"][o_state]), rec + _read_where(a["carry"], o_state, ~last))
        if s == 0:
            h_prev = _f(a["h0"][o_state])
        else:
            h_prev = _f(a["y"][(_prev_time(d, t) * B + b) * (D * H) + d * H + j])
        w = ((d * T + t) * B + b) * (4 * H) + j
        r, z, nn, ghn = (a["ws"][w + k * H] for k in range(4))
        dn = dh * (1 - z) * (1 - nn * nn)
        dz = dh * (h_prev - nn) * z * (1 - z)
        dr = dn * ghn * r * (1 - r)
        G = 3 * H
        o_g = ((d * T + t) * B + b) * G + j
        st = (d * B + b) * G + j
        for k, (vi, vh) in enumerate(((dr, dr), (dz, dz), (dn, dn * r))):
            a["dgi"][o_g + k * H] = vi
            a["dgh"][o_g + k * H] = vh
            a["dgh_state"][st + k * H] = vh
        a["carry"][o_state] = dh * z


def _relu(fn):
    flags = [f for f in fn.defines if f.startswith("-DFUSEDRNN_RELU=")]
    assert len(flags) == 1, fn.defines
    return flags[0].endswith("=1")


def rnn_step_fwd(fn, a):
    a = _flat(a)
    s, n, B, H, D = (a[k] for k in "s n B H D".split())
    for d in range(D):
        b, j = _lanes(n, H)
        t = _time(d, s, a["lens"][b])
        o_y = (t * B + b) * (D * H) + d * H + j
        pre = a["rec"][(d * n + b) * H + j] + _f(a["xproj"][o_y])
        h = (torch.clamp_min(pre, 0.0) if _relu(fn) else torch.tanh(pre)).to(fn.dtype)
        a["h_state"][(d * B + b) * H + j] = h
        a["y"][o_y] = h


def rnn_step_bwd(fn, a):
    a = _flat(a)
    s, n, rec_rows, T, B, H, D = (a[k] for k in "s n rec_rows T B H D".split())
    for d in range(D):
        b, j = _lanes(n, H)
        ln = a["lens"][b]
        t = _time(d, s, ln)
        last = s == ln - 1
        _assert_rec_rows(last, b, rec_rows)
        o_state = (d * B + b) * H + j
        o_y = (t * B + b) * (D * H) + d * H + j
        rec = _read_where(a["rec"], (d * rec_rows + b) * H + j, ~last)
        dh = _f(a["dy"][o_y]) + torch.where(last, _f(a["dh_n"][o_state]), rec)
        h = _f(a["y"][o_y])
        g = dh * ((h > 0).float() if _relu(fn) else 1 - h * h)
        a["dg"][((d * T + t) * B + b) * H + j] = g
        a["dg_state"][o_state] = g


def _assert_rec_rows(last, b, rec_rows):
    """The kernels read rec only for rows with a step after s: exactly the rows b < rec_rows."""
    assert torch.equal(~last, b < rec_rows), "rec_rows disagrees with the rows' lengths"


EMULATORS = {f.__name__: f for f in (lstm_step_fwd, lstm_proj_store, lstm_proj_bwd_dh, lstm_step_bwd,
                                     gru_step_fwd, gru_step_bwd, rnn_step_fwd, rnn_step_bwd)}
assert set(EMULATORS) == set(BLOCK_WIDTH_PARAM)
