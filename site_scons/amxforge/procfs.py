"""/proc/PID/stat (and /proc/PID/task/TID/stat) as Linux writes it: the command name in parentheses, which may itself
hold spaces and parentheses, then space-separated fields. Field numbers as proc(5) gives them."""

from pathlib import Path

STATE, UTIME, STIME, PROCESSOR = 3, 14, 15, 39


def stat(path) -> tuple:
    """(command name, {field number: text}) of a stat file; OSError when it is gone, ValueError when malformed."""
    text = Path(path).read_text()
    close = text.rindex(")")
    return text[text.index("(") + 1:close], dict(enumerate(text[close + 2:].split(), start=STATE))
