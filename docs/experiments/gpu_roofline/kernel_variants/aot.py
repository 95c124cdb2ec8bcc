"""What ptxas makes of a flash-kernel variant (`fa_var.py`) for sm_90, without a GPU: registers,
whether it serialised the wgmma instructions (ptxas's C7512 note), shared memory, and the SASS
instructions of the key loop (the longest backward branch) by opcode. Needs Triton installed
(its bundled ptxas and nvdisasm); on a CPU-only box `pip install --no-deps triton==3.6.0`.

    python docs/experiments/gpu_roofline/kernel_variants/aot.py 128,64,4,3,0,0,0 128,64,4,3,1,0,0

Each argument: BLOCK_Q,BLOCK_T,warps,stages,exp_mode,poly_every,sum_mode.
"""

from __future__ import annotations

import collections
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fa_var

TOOLS = Path(triton.__path__[0]) / "backends" / "nvidia" / "bin"


def build(block_q, block_t, warps, stages, exp_mode, poly_every, sum_mode):
    """The variant compiled for sm_90 with the model's head layout (8 heads of 32) and its
    pointers and strides 16-aligned, as Triton's launcher specialises them at run time."""
    fn = fa_var._kernel
    constexprs = dict(
        H=8, GROUP=1, D=32, SCALE_LOG2=0.255, BLOCK_Q=block_q, BLOCK_T=block_t, PACKED_EXP=True,
        EXP_MODE=exp_mode, POLY_EVERY=poly_every, SUM_MODE=sum_mode,
    )  # fmt: skip
    signature, values, attrs = {}, {}, {}
    for index, name in enumerate(fn.arg_names):
        if name in constexprs:
            signature[name] = "constexpr"
            values[(index,)] = constexprs[name]
        elif name.endswith("_ptr"):
            signature[name] = "*bf16" if exp_mode == 4 and name == "v_ptr" else "*fp16"
        else:
            signature[name] = "i32"
        if name.endswith("_ptr") or name.startswith("stride_"):
            attrs[(index,)] = [["tt.divisibility", 16]]
    return triton.compile(
        ASTSource(fn=fn, signature=signature, constexprs=values, attrs=attrs),
        target=GPUTarget("cuda", 90, 32),
        options={"num_warps": warps, "num_stages": stages},
    )


def loop_opcodes(sass: str) -> collections.Counter:
    """Opcodes of the longest loop: from a label to the last branch back to it."""
    lines = sass.splitlines()
    labels = {
        m.group(1): i for i, line in enumerate(lines) if (m := re.match(r"\s*(\.L_x_\d+):", line))
    }
    start, end = 0, 0
    for i, line in enumerate(lines):
        m = re.search(r"BRA\s+`?\(?(\.L_x_\d+)", line)
        if m and labels.get(m.group(1), i) < i and i - labels[m.group(1)] > end - start:
            start, end = labels[m.group(1)], i
    opcodes = collections.Counter()
    for line in lines[start : end + 1]:
        m = re.search(r"/\*[0-9a-f]{4}\*/\s+(?:@!?U?P\w+\s+)?([A-Z0-9_]+(?:\.[A-Z0-9_x]+)?)", line)
        if m:
            opcodes[m.group(1)] += 1
    return opcodes


def report(variant: tuple[int, ...]) -> dict:
    compiled = build(*variant)
    with tempfile.TemporaryDirectory() as tmp:
        ptx, cubin = Path(tmp) / "k.ptx", Path(tmp) / "k.cubin"
        ptx.write_text(compiled.asm["ptx"])
        notes = subprocess.run(
            [TOOLS / "ptxas", "-arch=sm_90a", "-v", ptx, "-o", cubin],
            capture_output=True,
            text=True,
        ).stderr
        sass = subprocess.run(
            [TOOLS / "nvdisasm", "-c", cubin], capture_output=True, text=True
        ).stdout
    opcodes = loop_opcodes(sass)
    return dict(
        variant=variant,
        registers=int(re.search(r"Used (\d+) registers", notes).group(1)),
        wgmma_serialised="serialized" in notes,
        shared_bytes=compiled.metadata.shared,
        loop_instructions=sum(opcodes.values()),
        loop_opcodes=dict(opcodes.most_common(16)),
    )


if __name__ == "__main__":
    for argument in sys.argv[1:]:
        print(report(tuple(int(x) for x in argument.split(","))))
