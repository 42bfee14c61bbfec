"""Render a class's flag template for a variant and compiler (jinja2, StrictUndefined)."""

from pathlib import Path

import jinja2

from ..errors import AmxforgeError
from .cuda_arch import CUDA_FLAG
from .isa import ISA_FLAG


def _template_location(exc: BaseException, fallback: str) -> str:
    """file:line of the template frame that raised, from jinja's rewritten traceback."""
    where = fallback
    tb = exc.__traceback__
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if name.endswith(".j2"):
            where = f"{name}:{tb.tb_lineno}"
        tb = tb.tb_next
    return where


class Renderer:
    def __init__(self, templates: Path):
        self.folder = templates / "flags"
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(self.folder)),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            autoescape=False,
        )

    def render(self, unit_class: str, context: dict, gpu: bool = False) -> list:
        """The class's flags, one per whitespace-separated word; `gpu`: a GPU class (nvcc's arch forms allowed)."""
        name = f"{unit_class}.j2"
        try:
            text = self.env.get_template(name).render(**context)
        except jinja2.TemplateNotFound as exc:
            raise AmxforgeError(f"{self.folder / str(exc)}: template missing for class {unit_class!r}; "
                                f"every class in classes.toml needs templates/flags/<class>.j2") from None
        except jinja2.TemplateSyntaxError as exc:
            raise AmxforgeError(f"{exc.filename or name}:{exc.lineno}: template error: {exc.message}") from None
        except AmxforgeError:
            raise
        except Exception as exc:  # noqa: BLE001 - anything a template raises is that template's error
            where = _template_location(exc, str(self.folder / name))
            raise AmxforgeError(f"{where}: template error: {exc.__class__.__name__}: {exc}; fix that line") from None
        flags = text.split()
        for flag in flags:  # what a template may put on a command line: ISA flags, and CUDA's arch forms
            if not (ISA_FLAG.fullmatch(flag) or (gpu and CUDA_FLAG.fullmatch(flag))):
                raise AmxforgeError(f"{self.folder / name}: renders {flag!r}, which is not an ISA flag (-m..., "
                                    f"-march=, -mtune={', or a CUDA arch form' if gpu else ''}); "
                                    f"fix the template")
        return flags
