"""The Triton kernels compile for the GPUs the fast path takes (sm_80, sm_90) ahead of time:
Triton's own compiler and ptxas, no GPU needed. Triton's CPU interpreter runs no PTX and accepts
code the compiler rejects (session 17 lost a GPU call to a dtype passed as a constexpr), so this
runs wherever Triton is installed, with or without a GPU (on a CPU-only machine, beside the
CPU torch: `pip install --no-deps triton==` the version the GPU machines have)."""

from __future__ import annotations

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


def compile_for(kernel, config, capability, pointers, constexprs) -> str:
    """The kernel under @triton.autotune, one config, compiled for sm_<capability> -> its PTX.
    Arguments not named as pointers or constexprs are 32-bit integers (sizes and strides)."""
    fn = kernel.fn
    constexprs = {**constexprs, **config.kwargs}
    signature, values = {}, {}
    for index, name in enumerate(fn.arg_names):
        if name in constexprs:
            signature[name] = "constexpr"
            values[(index,)] = constexprs[name]
        else:
            signature[name] = pointers.get(name, "i32")
    compiled = triton.compile(
        ASTSource(fn=fn, signature=signature, constexprs=values),
        target=GPUTarget("cuda", capability, 32),
        options={"num_warps": config.num_warps, "num_stages": config.num_stages},
    )
    return compiled.asm["ptx"]


def tensor_pointers(names: list[str], dtype: str) -> dict[str, str]:
    return {name: TYPES[dtype] for name in names} | {"mask_ptr": "*i1"}


@pytest.mark.parametrize("capability", CAPABILITIES)
@pytest.mark.parametrize("dtype", list(TYPES))
@pytest.mark.parametrize("config", flash_attention.CONFIGS, ids=str)
def test_the_flash_kernel_compiles(config, dtype, capability):
    pointers = tensor_pointers(["q_ptr", "k_ptr", "v_ptr", "out_ptr"], dtype)
    pointers["v_ptr"] = "*fp16"  # the values reach it in fp16 (flash_attention.attention)
    ptx = compile_for(
        flash_attention._attention_kernel, config, capability, pointers,
        dict(H=8, GROUP=2, D=32, SCALE_LOG2=0.25, HAS_MASK=True, EVEN_KEYS=False,
             PACKED_EXP=True),
    )  # fmt: skip
    assert "ex2.approx.f16x2" in ptx


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
