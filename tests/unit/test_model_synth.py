"""`amxforge model synth`: a llama GGUF with random weights that readers accept."""

import json

import pytest

from conftest import run, tool

gguf = pytest.importorskip("gguf")


@pytest.mark.parametrize("qtype,ggml", [("q8_0", "Q8_0"), ("q4_0", "Q4_0"), ("f16", "F16"), ("bf16", "BF16"),
                                        ("q4_1", "Q4_1"), ("q5_0", "Q5_0")])
def test_synth_writes_a_llama_gguf(tmp_path, qtype, ggml):
    out = tmp_path / f"m-{qtype}.gguf"
    res = run([tool("amxforge"), "model", "synth", "--out", str(out), "--type", qtype, "--layers", "2", "--dim", "256",
               "--ff", "512", "--heads", "8", "--kv-heads", "2", "--vocab", "300", "--json"], check=True)
    info = json.loads(res.stdout)
    reader = gguf.GGUFReader(str(out))
    arch = reader.fields["general.architecture"]
    assert bytes(arch.parts[arch.data[0]]).decode() == "llama"
    tensors = {t.name: t for t in reader.tensors}
    assert len(tensors) == 2 + 2 * 9 + 1
    assert tensors["blk.1.ffn_down.weight"].tensor_type.name == ggml
    assert list(tensors["blk.0.attn_k.weight"].shape) == [256, 64]  # ggml order: (in, out); kv = 256/8*2
    assert tensors["output_norm.weight"].tensor_type.name == "F32"
    tokens = reader.fields["tokenizer.ggml.tokens"]
    assert len(tokens.data) == 300 and info["vocab"] == 300 and info["bytes"] == out.stat().st_size
    assert not list(tmp_path.glob("*.tmp*"))


@pytest.mark.parametrize("args,message", [
    (["--dim", "100"], "must divide by --heads"),
    (["--vocab", "10"], "at least 259"),
    (["--layers", "0"], "--layers must be positive"),
])
def test_synth_rejects_bad_shapes_with_one_line(tmp_path, args, message):
    out = tmp_path / "bad.gguf"
    res = run([tool("amxforge"), "model", "synth", "--out", str(out), *args])
    assert res.returncode == 2 and message in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_a_type_gguf_cannot_quantize_names_the_way_out(tmp_path):
    from amxforge.model.synth import gguf_cannot
    why = gguf_cannot("q4_k")
    if why is None:
        pytest.skip("this gguf package quantizes Q4_K itself")
    res = run([tool("amxforge"), "model", "synth", "--out", str(tmp_path / "m.gguf"), "--type", "q4_k"])
    assert res.returncode == 2 and why in res.stderr and "--quantize-with PATH/llama-quantize" in res.stderr
    # a quantizer that fails: its last line, exit 2, and neither the f16 step nor a partial model is left
    broken = tmp_path / "llama-quantize"
    broken.write_text("#!/bin/sh\necho 'main: invalid ftype' >&2\nexit 1\n")
    broken.chmod(0o755)
    res = run([tool("amxforge"), "model", "synth", "--out", str(tmp_path / "m.gguf"), "--type", "q4_k",
               "--quantize-with", str(broken), "--layers", "1", "--dim", "256", "--ff", "512", "--heads", "8",
               "--kv-heads", "2", "--vocab", "300"])
    assert res.returncode == 2 and "could not write Q4_K_M (exit 1): main: invalid ftype" in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["llama-quantize"]
