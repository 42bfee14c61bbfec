"""What several `amxforge` commands take alike: a variant name (auto and left out resolve here), comma lists, counts."""

from .errors import AmxforgeError

def resolve_variant(variant) -> str:
    """A --variant left out (or `auto`) is the variant `scons` builds here: the best this host can build and run.
    Anything else must be a variant's name (not a path, not shell text): one line listing them otherwise."""
    if variant in (None, "auto"):
        from .probe import choose_auto, probe as run_probe
        return choose_auto(run_probe())
    from .policy import Policy
    variants = Policy().variants
    if variant not in variants.raw:
        raise variants.unknown(variant)
    return variant


VARIANT_HELP = "variant name (see `amxforge probe`); default: the one `auto` picks on this host"


def csv_items(text) -> list:
    """A comma-separated option as its non-empty items."""
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def positive_counts(text: str, name: str, example: str) -> list:
    """A comma-separated list of positive counts (thread counts), each once in its first place, or one line naming the
    fix."""
    items = [item.strip() for item in (text or "").split(",")]
    try:
        counts = [int(t) for t in items]  # an empty item (1,,2) is a count lost in typing: refused with the rest
    except ValueError:
        counts = []
    if not counts or min(counts) <= 0:
        raise AmxforgeError(f"{name} {text!r}: give positive counts like {example}")
    return list(dict.fromkeys(counts))


_UNITS = {"s": 1, "m": 60, "h": 3600}


def duration(text: str, name: str) -> float:
    """A duration: seconds as a number, or a sum of parts like 90s, 10m, 1h30m; one line naming the fix otherwise."""
    import re
    text = (text or "").strip().lower()
    parts = re.findall(r"(\d+(?:\.\d+)?)([smh])", text)
    if re.fullmatch(r"\d+(\.\d+)?", text):
        seconds = float(text)
    elif parts and "".join(n + u for n, u in parts) == text:
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    else:
        seconds = 0.0
    if seconds <= 0:
        raise AmxforgeError(f"{name} {text!r}: give a duration like 600, 90s, 10m or 1h30m")
    return seconds
