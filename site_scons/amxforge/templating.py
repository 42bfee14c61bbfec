"""Text from templates/<folder>/*.j2 (jinja2, StrictUndefined): reports for people, generated C headers."""

import jinja2

from .paths import templates_dir


def render(folder: str, name: str, **context) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir() / folder)),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    return env.get_template(name).render(**context)
