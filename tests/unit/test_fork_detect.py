"""Fork detection: the three tree kinds, the commit of a checkout, the CMake options, and the refusals."""

import shutil
import subprocess

import pytest

from amxforge.errors import AmxforgeError
from amxforge.fork.detect import detect_fork
from conftest import FIXTURES, run, tool


def tree(tmp_path, *dirs, options=()):
    root = tmp_path / "tree"
    for d in ("ggml/src", *dirs):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "CMakeLists.txt").write_text("".join(f'option({o} "x" OFF)\n' for o in options))
    return root


def test_the_three_kinds(tmp_path):
    assert detect_fork(tree(tmp_path, "ggml/src/ggml-cpu")).kind == "llama.cpp"
    shutil.rmtree(tmp_path / "tree")
    assert detect_fork(tree(tmp_path, "ggml/src/iqk")).kind == "ik_llama.cpp"
    shutil.rmtree(tmp_path / "tree")
    info = detect_fork(tree(tmp_path, "ggml/src/iqk", "ggml/src/ggml-cpu/amx", options=("GGML_AMX", "LLAMA_X")))
    assert info.kind == "ik_llama.cpp+amx" and info.has_amx_backend and info.options == ["GGML_AMX"]


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


@pytest.mark.parametrize("dirs,message", [
    ((), "neither ggml/src/iqk/"),
])
def test_unknown_ggml_tree(tmp_path, dirs, message):
    with pytest.raises(AmxforgeError, match=message):
        detect_fork(tree(tmp_path, *dirs))


def test_not_a_tree_and_missing_path(tmp_path):
    with pytest.raises(AmxforgeError, match="not a llama.cpp-family tree"):
        detect_fork(tmp_path)
    with pytest.raises(AmxforgeError, match="no such directory"):
        detect_fork(tmp_path / "nope")


def test_cli_detect(tmp_path):
    res = run([tool("amxforge"), "fork", "detect", str(FIXTURES / "minifork")], check=True)
    assert "ik_llama.cpp+amx" in res.stdout and "GGML_AMX_INT8" in res.stdout
    bad = run([tool("amxforge"), "fork", "detect", str(tmp_path)])
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
