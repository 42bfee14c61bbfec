"""A fork's configure error as amxforge words it: the CUDA toolkit part a failed configure lacks, named for the nvcc
the configure was given (not whichever is first on PATH)."""

from amxforge.fork.driver import missing_cuda_part

# the line first_error makes of CMake's message (tests/integration/test_fork_builds.py has CMake print it for real)
CUBLAS = 'CMake Error at CMakeLists.txt:9 (add_executable): Target "ggml" links to: CUDA::cublas but the target was ' \
         'not found.'


def test_the_part_is_named_for_the_configures_nvcc_even_with_a_space_in_its_path(monkeypatch, tmp_path):
    decoy = tmp_path / "bin"
    decoy.mkdir()
    (decoy / "nvcc").write_text("#!/bin/sh\n")
    (decoy / "nvcc").chmod(0o755)
    monkeypatch.setenv("PATH", f"{decoy}:/usr/bin:/bin")  # another nvcc first on PATH
    said = missing_cuda_part(CUBLAS, "/opt/cuda 13/bin/nvcc")
    assert said.startswith(" The CUDA toolkit of /opt/cuda 13/bin/nvcc lacks cuBLAS (libcublas.so"), said
    assert str(decoy) not in said and said.endswith("install it, or build a variant without CUDA.")


def test_without_an_nvcc_the_toolkit_goes_unnamed_and_an_unlisted_target_names_its_library():
    assert missing_cuda_part(CUBLAS, None).startswith(" The CUDA toolkit lacks cuBLAS")
    said = missing_cuda_part(CUBLAS.replace("CUDA::cublas", "CUDA::nvrtc"), None)
    assert said == (" The CUDA toolkit lacks the library behind CUDA::nvrtc: install it, or build a variant without "
                    "CUDA.")


def test_other_errors_get_no_cuda_advice():
    assert missing_cuda_part(CUBLAS.replace("CUDA::cublas", "Missing::cublas"), "/usr/bin/nvcc") == ""
    assert missing_cuda_part("CMake Error at CMakeLists.txt:3 (message): minifork needs libfoo >= 2", None) == ""


def test_a_ledger_line_that_is_not_a_whole_entry_is_named_with_its_file_and_line(tmp_path):
    """The last good build's ledger: a line that is not JSON, or an entry without a key the audit needs, is one line
    naming the file and the line (checked with `if`, not `assert`, so that `python -O` keeps the check)."""
    import json
    import re

    import pytest

    from amxforge.errors import AmxforgeError
    from amxforge.fork.record import read_snapshot
    whole = {"source": "a.c", "object": "a.o", "class": "portable", "rule": "cc", "sha256": "0" * 64, "size": 1}
    path = tmp_path / "my ledger.jsonl"
    for bad in ("{not json", json.dumps({k: v for k, v in whole.items() if k != "sha256"}), "[1, 2]"):
        path.write_text(json.dumps(whole) + "\n" + bad + "\n")
        line = rf"^{re.escape(str(path))}:2: damaged ledger line; rebuild the variant"
        with pytest.raises(AmxforgeError, match=line):
            read_snapshot(path)
    path.write_text(json.dumps(whole) + "\n")
    assert read_snapshot(path) == [whole]
