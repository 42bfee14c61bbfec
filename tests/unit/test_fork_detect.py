"""Fork detection: the kinds of toolchain/forks.toml, the commit of a checkout, the CMake options, the kernel entry
points, and the refusals."""

import shutil
import subprocess

import pytest

from amxforge.errors import AmxforgeError
from amxforge.fork.detect import detect_fork
from conftest import FIXTURES, run, tool


def tree(tmp_path, *paths, options=()):
    """A tree with these paths (a trailing / makes a directory, else an empty file) and a CMakeLists.txt."""
    root = tmp_path / "tree"
    shutil.rmtree(root, ignore_errors=True)
    for p in ("ggml/src/", *paths):
        if p.endswith("/"):
            (root / p).mkdir(parents=True, exist_ok=True)
        else:
            (root / p).parent.mkdir(parents=True, exist_ok=True)
            (root / p).touch()
    (root / "CMakeLists.txt").write_text("".join(f'option({o} "x" OFF)\n' for o in options))
    return root


def test_every_kind_of_forks_toml_is_told_by_its_markers(tmp_path):
    from amxforge.fork.kinds import kinds
    for kind in kinds().kinds.values():
        root = tree(tmp_path, *kind.markers)
        assert detect_fork(root).kind == kind.name, kind.name


def test_the_kinds(tmp_path):
    assert detect_fork(tree(tmp_path, "ggml/src/ggml-cpu/", "include/llama.h")).kind == "llama.cpp"
    assert detect_fork(tree(tmp_path, "ggml/src/iqk/")).kind == "ik_llama.cpp"
    info = detect_fork(tree(tmp_path, "ggml/src/iqk/", "ggml/src/ggml-cpu/amx/", options=("GGML_AMX", "LLAMA_X")))
    assert info.kind == "ik_llama.cpp+amx" and info.has_amx_backend and info.options == ["GGML_AMX"]
    assert detect_fork(tree(tmp_path, "src/ggml-cpu/", "include/ggml.h")).kind == "ggml"


def test_a_whisper_tree_no_longer_passes_for_llama_cpp(tmp_path):
    """whisper.cpp vendors ggml at ggml/ as llama.cpp does; it is its own kind now, with its own default target."""
    info = detect_fork(FIXTURES / "miniwhisper")
    assert info.kind == "whisper.cpp" and info.spec.default_targets == ("whisper-bench",)
    # a ggml/src/ggml-cpu/ tree that is neither: refused, naming what each near kind needs
    with pytest.raises(AmxforgeError, match=r"not a tree amxforge knows \(.* needs include/"):
        detect_fork(tree(tmp_path, "ggml/src/ggml-cpu/"))


def test_the_kernel_entry_points_are_read_from_the_tree(tmp_path):
    assert detect_fork(FIXTURES / "minifork").kernel_entries()["declared"] == ["iqk_mul_mat_4d", "iqk_mul_mat",
                                                                                "iqk_mul_mat_moe"]
    entries = detect_fork(tree(tmp_path, "ggml/src/iqk/")).kernel_entries()
    assert entries["route"] == "link-wrap" and entries["declared"] == [] and "iqk_mul_mat_4d" in entries["missing"]


def test_commit_only_for_the_checkouts_own_top_level(tmp_path):
    root = tmp_path / "mf"
    shutil.copytree(FIXTURES / "minifork", root)
    assert detect_fork(root).commit is None  # not a checkout of its own
    git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(git[:3] + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "-A"], check=True)
    subprocess.run(git + ["commit", "-qm", "fixture"], check=True)
    head = subprocess.run(git[:3] + ["rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert detect_fork(root).commit == head and len(head) == 40


def test_unknown_ggml_tree(tmp_path):
    with pytest.raises(AmxforgeError, match=r"ik_llama.cpp needs ggml/src/iqk/"):
        detect_fork(tree(tmp_path))


def test_not_a_tree_and_missing_path(tmp_path):
    with pytest.raises(AmxforgeError, match="not a tree amxforge knows"):
        detect_fork(tmp_path)
    with pytest.raises(AmxforgeError, match="no such directory"):
        detect_fork(tmp_path / "nope")


def test_cli_detect(tmp_path):
    res = run([tool("amxforge"), "fork", "detect", str(FIXTURES / "minifork")], check=True)
    assert "ik_llama.cpp+amx" in res.stdout and "GGML_AMX_INT8" in res.stdout
    bad = run([tool("amxforge"), "fork", "detect", str(tmp_path)])
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


def test_fork_kinds_says_which_entry_fork_kernels_wraps():
    res = run([tool("amxforge"), "fork", "kinds"], check=True)
    text = res.stdout
    ik = text[text.index("ik_llama.cpp+amx\n"):text.index("\nik_llama.cpp\n")]
    assert "fork_kernels=amxforge wraps iqk_mul_mat_4d" in ik
    ggml = text[text.index("ggml\n"):text.index("\nik_llama.cpp+amx\n")]
    assert "fork_kernels=amxforge builds libggml-amxforge.so" in ggml
