"""The Triton kernels compile for the GPUs the fast path takes (sm_80, sm_90) ahead of time:
Triton's own compiler and ptxas, no GPU needed. Triton's CPU interpreter runs no PTX and accepts
code the compiler rejects (session 17 lost a GPU call to a dtype passed as a constexpr), so this
runs wherever Triton is installed, with or without a GPU (on a CPU-only machine, beside the
CPU torch: `pip install --no-deps triton==` the version the GPU machines have)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from rfmodel.kernels import HAS_TRITON

if not HAS_TRITON:
    pytest.skip("needs Triton", allow_module_level=True)

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from rfmodel.kernels import flash_attention, latent_attention

TYPES = {"bf16": "*bf16", "fp16": "*fp16"}
CAPABILITIES = [80, 90]  # every kernel's `handles` takes sm_80 on
# the most shared memory a program may take (A100: 163 KiB, H100: 227 KiB)
SHARED_LIMIT = {80: 166912, 90: 232448}


def compile_for(kernel, config, capability, pointers, constexprs, aligned=False):
    """The kernel under @triton.autotune, one config, compiled for sm_<capability>.
    Arguments not named as pointers or constexprs are 32-bit integers (sizes and strides).
    aligned: pointers and strides marked divisible by 16, as Triton's launcher specializes the
    model's at run time; only then do its loads vectorize and its loops pipeline (cp.async),
    which is what sets shared memory and registers."""
    fn = kernel.fn
    constexprs = {**constexprs, **config.kwargs}
    signature, values = {}, {}
    for index, name in enumerate(fn.arg_names):
        if name in constexprs:
            signature[name] = "constexpr"
            values[(index,)] = constexprs[name]
        else:
            signature[name] = pointers.get(name, "i32")
    attrs = {}
    if aligned:
        attrs = {
            (index,): [["tt.divisibility", 16]]
            for index, name in enumerate(fn.arg_names)
            if name.endswith("_ptr") or name.startswith("stride_")
        }
    return triton.compile(
        ASTSource(fn=fn, signature=signature, constexprs=values, attrs=attrs),
        target=GPUTarget("cuda", capability, 32),
        options={"num_warps": config.num_warps, "num_stages": config.num_stages},
    )


def tensor_pointers(names: list[str], dtype: str) -> dict[str, str]:
    return {name: TYPES[dtype] for name in names} | {"mask_ptr": "*i1"}


@pytest.mark.parametrize("capability", CAPABILITIES)
@pytest.mark.parametrize("shift_by_bound", [True, False])
@pytest.mark.parametrize("dtype", list(TYPES))
@pytest.mark.parametrize("config", flash_attention.CONFIGS, ids=str)
def test_the_flash_kernel_compiles(config, dtype, shift_by_bound, capability):
    pointers = tensor_pointers(["q_ptr", "k_ptr", "v_ptr", "out_ptr"], dtype)
    pointers |= {"q_norm_ptr": "*fp32", "key_norm_ptr": "*fp32"}
    compiled = compile_for(
        flash_attention._attention_kernel, config, capability, pointers,
        dict(
            H=8, GROUP=2, D=32, SCALE_LOG2=0.25, HAS_MASK=True, EVEN_KEYS=False,
            BOUND_LIMIT=flash_attention.BOUND_LIMIT, SHIFT_BY_BOUND=shift_by_bound,
        ),
    )  # fmt: skip
    # the weights' exponentials in fp32 (a packed f16x2 one costs more instructions on sm_90)
    assert "ex2.approx.f16x2" not in compiled.asm["ptx"]
    assert "ex2.approx.f32" in compiled.asm["ptx"] or "ex2.approx.ftz.f32" in compiled.asm["ptx"]


@pytest.mark.parametrize("shift_by_bound", [True, False])
def test_the_flash_kernels_tensor_core_steps_are_not_serialised(shift_by_bound, tmp_path):
    """At the tile the autotuner takes on an H100 (128 x 64, 4 warps, 3 stages), aligned as the
    model's tensors are, ptxas keeps the wgmmas asynchronous in both launch kinds. One kernel
    holding both key loops behind a run-time branch had it serialise them (its note C7515)."""
    config = next(
        c
        for c in flash_attention.CONFIGS
        if (c.kwargs["BLOCK_Q"], c.kwargs["BLOCK_T"], c.num_warps, c.num_stages) == (128, 64, 4, 3)
    )
    pointers = tensor_pointers(["q_ptr", "k_ptr", "v_ptr", "out_ptr"], "bf16")
    pointers |= {"q_norm_ptr": "*fp32", "key_norm_ptr": "*fp32"}
    compiled = compile_for(
        flash_attention._attention_kernel, config, 90, pointers,
        dict(
            H=8, GROUP=1, D=32, SCALE_LOG2=0.25, HAS_MASK=False, EVEN_KEYS=True,
            BOUND_LIMIT=flash_attention.BOUND_LIMIT, SHIFT_BY_BOUND=shift_by_bound,
        ),
        aligned=True,
    )  # fmt: skip
    ptx = tmp_path / "kernel.ptx"
    ptx.write_text(compiled.asm["ptx"])
    ptxas = Path(triton.__path__[0]) / "backends" / "nvidia" / "bin" / "ptxas"
    notes = subprocess.run(
        [ptxas, "-arch=sm_90a", "-v", ptx, "-o", tmp_path / "kernel.cubin"],
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    assert "wgmma" not in notes or "serialized" not in notes, notes


@pytest.mark.parametrize("capability", CAPABILITIES)
@pytest.mark.parametrize("dtype", list(TYPES))
@pytest.mark.parametrize("config", latent_attention._pack_kernel.configs, ids=str)
def test_latents_pack_kernel_compiles(config, dtype, capability):
    pointers = tensor_pointers(
        ["lat_ptr", "k_ptr", "v_ptr", "cos_ptr", "sin_ptr", "out_ptr"], dtype
    )
    pointers |= {name: "*fp32" for name in ("max_ptr", "sum_ptr", "acc_ptr")}
    compile_for(
        latent_attention._pack_kernel, config, capability, pointers,
        dict(H=8, M=32, D=32, SCALE_LOG2=0.25, HAS_MASK=True, ONE_CHUNK=False),
    )  # fmt: skip


@pytest.mark.parametrize("capability", CAPABILITIES)
@pytest.mark.parametrize("dtype", list(TYPES))
@pytest.mark.parametrize("config", latent_attention._unpack_kernel.configs, ids=str)
def test_latents_unpack_kernel_compiles(config, dtype, capability):
    pointers = tensor_pointers(["q_ptr", "k_ptr", "v_ptr", "out_ptr"], dtype)
    compile_for(
        latent_attention._unpack_kernel, config, capability, pointers,
        dict(H=8, M=32, D=32, SCALE_LOG2=0.25),
    )  # fmt: skip


@pytest.mark.parametrize("capability", CAPABILITIES)
@pytest.mark.parametrize("dtype", list(TYPES))
@pytest.mark.parametrize("config", latent_attention._unpack_wo_norm_kernel.configs, ids=str)
def test_latents_unpack_wo_norm_kernel_compiles_and_fits(config, dtype, capability):
    """At the reference size (8 heads of 32, 32 latents, width 256), aligned as the model's
    tensors are: each config within the GPU's shared memory (the autotuner would otherwise
    drop it at run time, and a list of such configs would leave nothing to tune)."""
    pointers = tensor_pointers(
        ["q_ptr", "k_ptr", "vw_ptr", "x_ptr", "g_ptr", "x_out_ptr", "normed_ptr"], dtype
    )
    compiled = compile_for(
        latent_attention._unpack_wo_norm_kernel, config, capability, pointers,
        dict(H=8, M=32, D=32, DIM=256, SCALE_LOG2=0.25, EPS=1e-5), aligned=True,
    )  # fmt: skip
    assert compiled.metadata.shared <= SHARED_LIMIT[capability]


def test_every_head_group_divides_the_head_counts_the_kernel_takes():
    groups = {c.kwargs["GROUP"] for c in latent_attention._unpack_wo_norm_kernel.configs}
    assert groups == {1, 2, 4} and all(latent_attention.WO_NORM_HEADS % g == 0 for g in groups)
