"""`amxforge model prune` and `model synth --sparsity`: pruned bf16 / f16 models without a download, every other
field and tensor copied bit for bit, the smallest magnitudes of each row zeroed, bad input in one line."""

import json

import numpy as np
import pytest

from conftest import run, tool

gguf = pytest.importorskip("gguf")
SHAPE = ["--layers", "2", "--dim", "256", "--ff", "512", "--heads", "8", "--kv-heads", "2", "--vocab", "300"]


def synth(path, qtype, *extra):
    run([tool("amxforge"), "model", "synth", "--out", str(path), "--type", qtype, *SHAPE, *extra], check=True)
    return path


def rows(tensor):
    data = np.asarray(tensor.data)
    if tensor.tensor_type.name == "BF16":
        return (data.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    return data.astype(np.float32)


@pytest.mark.parametrize("qtype", ["bf16", "f16"])
@pytest.mark.parametrize("sparsity", [0.5, 0.7])
def test_prune_zeroes_the_smallest_of_each_row_and_copies_the_rest(tmp_path, qtype, sparsity):
    src = synth(tmp_path / "m.gguf", qtype)
    out = tmp_path / "p.gguf"
    res = run([tool("amxforge"), "model", "prune", "--in", str(src), "--out", str(out), "--sparsity", str(sparsity),
               "--json"], check=True)
    info = json.loads(res.stdout)
    a, b = gguf.GGUFReader(str(src)), gguf.GGUFReader(str(out))
    assert {k: f.contents() for k, f in a.fields.items() if not k.startswith("GGUF.")} == \
           {k: f.contents() for k, f in b.fields.items() if not k.startswith("GGUF.")}
    pruned = 0
    for x, y in zip(a.tensors, b.tensors):
        assert (x.name, x.tensor_type, list(x.shape)) == (y.name, y.tensor_type, list(y.shape))
        if not (x.name.startswith("blk.") and len(x.shape) == 2):
            assert np.array_equal(np.asarray(x.data), np.asarray(y.data)), x.name  # untouched
            continue
        before, after = rows(x), rows(y)
        k = before.shape[1]
        drop = round(sparsity * k)
        assert np.all((after == 0).sum(axis=1) >= drop)
        kept = after != 0
        assert np.array_equal(after[kept], before[kept])  # survivors unchanged
        # every zeroed weight is no larger than every survivor of its row
        largest_zeroed = np.where(kept, -np.inf, np.abs(before)).max(axis=1)
        assert np.all(largest_zeroed <= np.where(kept, np.abs(before), np.inf).min(axis=1))
        pruned += 1
    assert pruned == info["tensors"] == 14 and abs(info["zero_fraction"] - sparsity) < 0.01


def test_synth_sparsity_prunes_the_blocks_only(tmp_path):
    out = synth(tmp_path / "s.gguf", "bf16", "--sparsity", "0.7")
    tensors = {t.name: t for t in gguf.GGUFReader(str(out)).tensors}
    assert abs(float(np.mean(rows(tensors["blk.1.ffn_up.weight"]) == 0)) - 0.7) < 0.01
    assert float(np.mean(rows(tensors["token_embd.weight"]) == 0)) < 0.01


@pytest.mark.parametrize("case", ["q8_0 model", "sparsity 1", "no input", "fifo", "same file", "glob matches none",
                                  "out a fifo", "out in no directory"])
def test_bad_input_is_one_line_and_nothing_written(tmp_path, case):
    import os
    import stat
    src = tmp_path / "m.gguf"
    out = tmp_path / "p.gguf"
    args = {"sparsity": "0.5", "tensors": "blk.*"}
    if case == "q8_0 model":
        synth(src, "q8_0")
        want = "matches no bf16 or f16 matrix"
    else:
        synth(src, "bf16")
    if case == "sparsity 1":
        args["sparsity"], want = "1", "'--sparsity'"
    elif case == "no input":
        src, want = tmp_path / "none.gguf", "not a readable GGUF file (No such file or directory)"
    elif case == "fifo":
        src = tmp_path / "fifo.gguf"
        os.mkfifo(src)
        want = f"not a readable GGUF file ({src} is a FIFO, not a regular file)"
    elif case == "same file":
        out, want = src, "is the input"
    elif case == "glob matches none":
        args["tensors"], want = "nothing.*", "matches no bf16 or f16 matrix"
    elif case == "out a fifo":  # it was replaced by a regular file
        os.mkfifo(out)
        want = f"--out {out}: cannot be written (it is a FIFO, not a regular file); give a .gguf path in an existing"
    elif case == "out in no directory":
        out = tmp_path / "no dir" / "p.gguf"
        want = f"--out {out}: cannot be written (No such file or directory); give a .gguf path"
    res = run([tool("amxforge"), "model", "prune", "--in", str(src), "--out", str(out), "--sparsity",
               args["sparsity"], "--tensors", args["tensors"]], timeout=60)
    assert res.returncode == 2 and want in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert case in ("same file", "out a fifo") or not out.exists()
    assert case != "out a fifo" or stat.S_ISFIFO(os.stat(out).st_mode)
    assert not list(tmp_path.glob("*.tmp*"))
