"""SCons tool: every command runs as an argument vector, with no shell in between (amxforge.argv): paths with spaces,
quotes, `$`, backticks and `;` reach the compiler byte for byte and run nothing."""

from amxforge import argv


def generate(env):
    env["SPAWN"] = argv.spawn
    env["PSPAWN"] = argv.piped_spawn
    env["ESCAPE"] = argv.quote


NEEDS = "nothing"


def exists(env):
    return True
