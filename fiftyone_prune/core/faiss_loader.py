"""Imports faiss so that its BLAS uses this CPU's vector units.

The faiss-cpu wheels bundle their own OpenBLAS (0.3.15 in faiss-cpu 1.15.1). That
OpenBLAS picks its kernels by CPU model, and it does not know recent Xeons: on the
project machine it fell back to "Prescott" (no AVX at all), and faiss's inner-product
search ran 3.7x slower than with the AVX-512 kernels the CPU has (65,536 x 2048 against
100 centroids: 0.56 s vs 0.15 s, ``benchmarks/storage_costs.py``; k-means training is
the same search, repeated).
OpenBLAS reads ``OPENBLAS_CORETYPE`` once, when the library loads, so we set it, from
the CPU's flags, just for the import of faiss, and only when the user has not set it.
NumPy's own OpenBLAS is already loaded by then and is not affected.
"""

from __future__ import annotations

import os
import sys

_AVX512 = {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"}
_AVX2 = {"avx2", "fma"}


def openblas_core_for(flags: set[str]) -> str | None:
    """The OpenBLAS core type whose kernels a CPU with these ``/proc/cpuinfo`` flags can
    run at full width; None when there is nothing better than OpenBLAS's own choice."""
    if _AVX512 <= flags:
        return "SkylakeX"
    if _AVX2 <= flags:
        return "Haswell"
    return None


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def load_faiss():
    """``import faiss``, with ``OPENBLAS_CORETYPE`` set for the load (see module doc)."""
    if "faiss" in sys.modules or "OPENBLAS_CORETYPE" in os.environ:
        import faiss

        return faiss
    core = openblas_core_for(_cpu_flags())
    if core is not None:
        os.environ["OPENBLAS_CORETYPE"] = core
    try:
        import faiss
    finally:
        if core is not None:  # child processes choose for themselves
            os.environ.pop("OPENBLAS_CORETYPE", None)
    return faiss
