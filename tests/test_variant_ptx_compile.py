"""The batch-tiled persistent variant kernels (``kernels/triton/variants/<cell>_persistent``)
compile to sm_90 for fp32 (both dot keys), fp16 and bf16 at their ``MAX_HIDDEN`` with the
heaviest switches, and do not spill (no GPU needed; slow-ish: ~24 compiles). The specs live in
``tests/variant_ptx_specs.py``, which also measures a candidate HP."""

import pytest

from fusedrnn.kernels.triton import aot_compile
from variant_ptx_specs import KERNELS, specializations


@pytest.fixture(scope="module")
def rows():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRITON_DEFAULT_FP_FUSION", "1")
        return aot_compile.compile_all(specializations(), jobs=2)


def test_every_kernel_and_dot_key_is_compiled(rows):
    assert len(rows) == len(KERNELS) * 4          # fp32 × 2 dot keys, fp16, bf16


def test_compiles_without_spills(rows):
    problems = [(r["name"], r.get("error") or (r["registers"], r["stack_bytes"])) for r in rows
                if "error" in r or not r["sm90"] or r["stack_bytes"] > 0]
    assert not problems, problems
