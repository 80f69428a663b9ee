"""faiss is loaded with BLAS kernels for this CPU (see core/faiss_loader.py)."""

import os
import subprocess
import sys

import pytest

from fiftyone_prune.core import faiss_loader


def test_core_type_follows_the_cpu_flags():
    avx512 = {"avx2", "fma", "avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"}
    assert faiss_loader.openblas_core_for(avx512) == "SkylakeX"
    assert faiss_loader.openblas_core_for({"avx2", "fma", "avx512f"}) == "Haswell"
    assert faiss_loader.openblas_core_for({"sse4_2", "avx"}) is None


def _loaded_cores(env):
    code = ("import numpy\nfrom fiftyone_prune.core.faiss_loader import load_faiss\n"
            "load_faiss()\nimport os\nprint('LEFT', os.environ.get('OPENBLAS_CORETYPE'))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True)
    text = out.stdout + out.stderr
    return [line.split(":", 1)[1].strip() for line in text.splitlines()
            if line.startswith("Core:")], text


def test_faiss_blas_gets_this_cpus_kernels_and_the_environment_is_left_alone():
    expected = faiss_loader.openblas_core_for(faiss_loader._cpu_flags())
    if expected is None:
        pytest.skip("this CPU has neither AVX2 nor AVX-512: nothing to choose")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    env["OPENBLAS_VERBOSE"] = "2"  # each OpenBLAS prints the core it chose when it loads
    cores, text = _loaded_cores(env)
    assert len(cores) == 2, text  # numpy's OpenBLAS, then faiss's
    assert cores[1] == expected, text
    assert "LEFT None" in text
    # a user's own choice wins
    cores, text = _loaded_cores({**env, "OPENBLAS_CORETYPE": "Sandybridge"})
    assert cores[1] == "Sandybridge", text
