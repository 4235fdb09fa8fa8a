"""The CPU features that change numerics and int8 speed: named in the int8 check's messages, the
bench's results and the test command's first line, so a result can be tied to the machine."""

from __future__ import annotations

import functools
import platform

# AVX2 / AVX-512 change fp32 rounding; VNNI (AVX-512 or AVX) runs int8 products without the u8s8
# saturation of older kernels; BF16 and AMX speed up bfloat16 and int8.
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")


@functools.cache
def cpu_features() -> tuple[str, ...]:
    """The FLAGS this CPU has (Linux: /proc/cpuinfo; elsewhere none are known)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return tuple(f for f in FLAGS if f in have)
    except OSError:
        pass
    return ()


def describe() -> str:
    """One phrase: the machine and which FLAGS it has and lacks ("x86_64 with avx2; without avx512f, ...")."""
    have = cpu_features()
    lacking = [f for f in FLAGS if f not in have]
    return f"{platform.machine() or 'unknown CPU'} with {', '.join(have) or 'none of ' + '/'.join(FLAGS)}" + (
        f"; without {', '.join(lacking)}" if have and lacking else ""
    )


if __name__ == "__main__":  # the test command prints it first: `python -m splitserve.core.cpu`
    print(f"CPU: {describe()}")
