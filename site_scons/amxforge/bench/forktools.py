"""The fork tools `amxforge bench fork` runs (toolchain/bench.toml), their structured output read by a parser registered
under its output kind (bench.toml's `output` must name one: the registry is the one list), and what a tool takes,
asked of its --help."""

import json
import os
import re
import subprocess
import tempfile
from functools import lru_cache

from ..errors import AmxforgeError
from ..paths import toolchain_dir
from ..tomlfile import load_toml

# a line llama-bench's JSON printer writes: a bracket or brace alone, or one "key": value
JSON_LINE = re.compile(r'^\s*([\[\]{}],?|"[^"]+": .*)\s*$')
PARSERS = {}  # output kind -> parse(stdout, stderr) -> {"pp": t/s, "tg": t/s, ...}; raises ValueError


def parser(kind: str):
    def register(func):
        PARSERS[kind] = func
        return func
    return register


@lru_cache(maxsize=1)
def bench_tools() -> dict:
    path = toolchain_dir() / "bench.toml"
    doc = load_toml(path)  # validated against toolchain/schemas/bench.schema.json
    unknown = [t for t in doc["order"] if t not in doc["tools"]]
    if unknown:
        raise AmxforgeError(f"{path}: order names {', '.join(unknown)}, which has no [tools.*] table")
    for name, tool in doc["tools"].items():
        if tool["output"] not in PARSERS:
            raise AmxforgeError(f"{path} [tools.{name}.output]: {tool['output']!r} has no parser; output kinds: "
                                f"{', '.join(PARSERS)}")
    return doc


def tool_targets() -> list:
    return [bench_tools()["tools"][t]["target"] for t in bench_tools()["order"]]


def tokens_per_run(tool: str, pp: int, tg: int) -> dict:
    """The tokens one run of the tool processes and generates (bench.toml's `tg`: --tg itself, or pp/4)."""
    rule = bench_tools()["tools"][tool]["tg"]
    return {"pp": pp, "tg": tg if rule == "tg" else pp // 4}


def parse_output(kind: str, stdout: str, stderr: str) -> dict:
    """{"pp": t/s, "tg": t/s} from the tool's structured output (never from its free text)."""
    if kind not in PARSERS:
        raise AmxforgeError(f"toolchain/bench.toml: unknown output kind {kind!r}; output kinds: {', '.join(PARSERS)}")
    return PARSERS[kind](stdout, stderr)


@parser("llama-bench-json")
def _llama_bench_json(stdout: str, stderr: str) -> dict:
    # The array starts on a line of its own. Forks print their own lines into stdout, even inside the array (the AMX
    # branch: "==== HAVE_FANCY_SIMD is defined" after the "["): lines that cannot be part of the printer's JSON (one
    # key or bracket per line) are dropped and counted.
    lines = stdout.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == "["), None)
    if start is None:
        raise ValueError("no JSON array of tests on stdout (llama-bench -o json)")
    kept = [line for line in lines[start:] if JSON_LINE.match(line)]
    try:
        tests = json.loads("\n".join(kept))
    except json.JSONDecodeError:
        raise ValueError("no JSON array of tests on stdout (llama-bench -o json)") from None
    if not isinstance(tests, list) or not all(isinstance(t, dict) for t in tests):
        raise ValueError("no JSON array of tests on stdout (llama-bench -o json)")
    got = {}
    for t in tests:
        samples = t.get("samples_ts") or [t.get("avg_ts")]
        if t.get("n_prompt", 0) > 0 and t.get("n_gen", 0) == 0:
            got["pp"] = float(samples[0])
        elif t.get("n_gen", 0) > 0 and t.get("n_prompt", 0) == 0:
            got["tg"] = float(samples[0])
    got["foreign_lines"] = len(lines) - start - len(kept)
    return got


@parser("sweep-bench-jsonl")
def _sweep_bench_jsonl(stdout: str, stderr: str) -> dict:
    for line in stderr.splitlines() + stdout.splitlines():
        line = line.strip()
        if line.startswith("{") and '"speed_pp"' in line:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if rec.get("n_kv") == 0:
                return {"pp": float(rec["speed_pp"]), "tg": float(rec["speed_tg"]),
                        "tokens": {"pp": rec.get("pp"), "tg": rec.get("tg")}}
    raise ValueError("no JSON line with speed_pp at n_kv 0 (llama-sweep-bench --output-format jsonl)")


# --- what a tool takes ---------------------------------------------------------------------------------------------
def _ask(argv: list, env: dict):
    """A short query of a tool (--help, --version): its CompletedProcess, or None when it would not run. It runs in
    a scratch directory: the forks' old logger writes llama.log into the current one, even for --help."""
    try:
        with tempfile.TemporaryDirectory(prefix="amxforge-ask-") as scratch:
            return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=dict(os.environ, **env),
                                  stdin=subprocess.DEVNULL, cwd=scratch)
    except (OSError, subprocess.TimeoutExpired):
        return None


def help_text(argv0: str, env: dict) -> str:
    res = _ask([argv0, "--help"], env)
    return res.stdout + res.stderr if res else ""


def has_our_kernels(help_out: str) -> bool:
    """Whether a tool run with AMXFORGE_KERNELS_STATS=1 (its --help here) was linked with our matmul handler
    (fork_kernels=amxforge): the handler reports at exit, even when no matmul ran."""
    return "amxforge-kernels: implementation" in help_out


def takes(help_out: str, option: str) -> bool:
    flag = bench_tools()["runtime_options"][option]["help"]
    return re.search(rf"(^|[\s,]){re.escape(flag)}(\s|$|,|=)", help_out, re.M) is not None


def accepts(argv0: str, env: dict, option: str, help_out: str) -> bool:
    """Whether the tool takes a runtime option: its --help lists it, or (the forks' common-options tools print only
    an example for --help) it parses `OPTION --version` and exits 0, where an unknown option is an error."""
    if takes(help_out, option):
        return True
    flag = [a.format(numa="distribute") for a in bench_tools()["runtime_options"][option]["flag"]]
    res = _ask([argv0, *flag, "--version"], env)
    return res is not None and res.returncode == 0
