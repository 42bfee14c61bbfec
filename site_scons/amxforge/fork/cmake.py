"""What a fork's CMake holds after configure: its cache (CMakeCache.txt), read to prove that amxforge's settings are
still there (CMake drops every -D it was given when a changed compiler makes it delete its cache), and its build
system's targets through CMake's File API (codemodel-v2): which are programs, and where each one's file is."""

from pathlib import Path

from .. import atomic
from ..errors import AmxforgeError

QUERY = Path(".cmake/api/v1/query/codemodel-v2")
REPLY = Path(".cmake/api/v1/reply")
# Changing one of these makes CMake delete its cache (and with it every -D amxforge gave): the build directory is
# started afresh instead, so that configure sees all of amxforge's settings at once.
RESETS_CACHE = ("CMAKE_C_COMPILER", "CMAKE_CXX_COMPILER", "CMAKE_CUDA_COMPILER", "CMAKE_GENERATOR")


def definitions(args) -> dict:
    """{NAME: VALUE} of every -DNAME=VALUE in a cmake argument list: the settings amxforge owns."""
    out = {}
    for arg in args:
        if arg.startswith("-D") and "=" in arg:
            name, _, value = arg[2:].partition("=")
            out[name.partition(":")[0]] = value
    return out


def read_cache(build_dir: Path) -> dict:
    """{NAME: VALUE} from build_dir/CMakeCache.txt; {} when there is none."""
    path = Path(build_dir) / "CMakeCache.txt"
    try:
        text = atomic.read_text(path)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise AmxforgeError(f"{path}: cannot be read ({atomic.why(exc)}); remove it to configure afresh") from None
    out = {}
    for line in text.splitlines():
        if not line or line.startswith(("#", "//")) or "=" not in line:
            continue
        key, _, value = line.partition("=")
        out[key.partition(":")[0]] = value
    return out


def cache_mismatches(cache: dict, owned: dict) -> list:
    """Each owned setting the cache does not hold as amxforge set it: ["NAME is 'X', amxforge set 'Y'", ...]."""
    out = []
    for name, want in owned.items():
        have = cache.get(name)
        if have != want:
            out.append(f"{name} is {'unset' if have is None else repr(have)}, amxforge set {want!r}")
    return out


def resets_cache(cache: dict, owned: dict) -> list:
    """The settings whose change would make CMake delete its cache (and amxforge's settings with it)."""
    return [name for name in RESETS_CACHE if name in owned and name in cache and cache[name] != owned[name]]


def request_codemodel(build_dir: Path) -> None:
    """Ask CMake (>= 3.14) to describe its targets at the next configure."""
    query = Path(build_dir) / QUERY
    query.parent.mkdir(parents=True, exist_ok=True)
    query.touch()


def has_codemodel(build_dir: Path) -> bool:
    return any((Path(build_dir) / REPLY).glob("index-*.json"))


def targets(build_dir: Path) -> dict:
    """{name: {"type": EXECUTABLE|SHARED_LIBRARY|..., "artifacts": [absolute paths]}} of the build system CMake
    generated last (the newest File API reply)."""
    build_dir = Path(build_dir)
    reply = build_dir / REPLY
    indexes = sorted(reply.glob("index-*.json"))
    fix = "configure again: remove it and run the build"
    if not indexes:
        raise AmxforgeError(f"{reply}: CMake wrote no File API reply (CMake >= 3.14 needed); {fix}")
    index = atomic.read_json(indexes[-1], "CMake File API index", fix=fix)
    model = next((o for o in index.get("objects", []) if o.get("kind") == "codemodel"), None)
    if model is None:
        raise AmxforgeError(f"{indexes[-1]}: no codemodel in CMake's File API reply; {fix}")
    codemodel = atomic.read_json(reply / model["jsonFile"], "CMake codemodel", fix=fix)
    out = {}
    for config in codemodel.get("configurations", [])[:1]:
        for ref in config.get("targets", []):
            target = atomic.read_json(reply / ref["jsonFile"], "CMake target description", fix=fix)
            arts = [Path(a["path"]) for a in target.get("artifacts", []) if "path" in a]
            out[ref["name"]] = {"type": target.get("type"),
                                "artifacts": [a if a.is_absolute() else build_dir / a for a in arts]}
    return out


# CMake cannot take these in a source or binary directory's path (measured with CMake 4: a `;` splits the path as a
# list, `"`, `$` and `\` break its generated scripts); spaces, quotes, backticks and `#` work.
CMAKE_UNSAFE = frozenset('";$\\')


def cmake_visible(path: Path) -> Path:
    """`path` itself when CMake can take it, else a symlink to it under amxforge's cache whose name it can (CMake
    keeps the path it is given: the sources and the build directory are reached through the link)."""
    import hashlib
    import os

    from ..paths import cache_dir
    path = Path(path)
    if not CMAKE_UNSAFE & set(str(path)):
        return path
    links = cache_dir() / "cmake-paths"
    link = links / hashlib.sha256(str(path).encode()).hexdigest()[:16]
    if CMAKE_UNSAFE & set(str(link)):
        raise AmxforgeError(f"{path}: CMake cannot take a path holding any of {' '.join(sorted(CMAKE_UNSAFE))}, and "
                            f"the cache directory for a link to it ({links}) holds one too; set AMXFORGE_CACHE")
    if not (link.is_symlink() and os.readlink(link) == str(path)):
        links.mkdir(parents=True, exist_ok=True)
        tmp = links / f".{link.name}.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(path)
        os.replace(tmp, link)
    return link
