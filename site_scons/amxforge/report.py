"""Tables for people, from templates/report/*.j2 (JSON for machines is written where the data is made)."""

from collections import Counter

from .templating import render


def _render(name: str, **context) -> str:
    return render("report", name, **context).rstrip()


def build_summary(ctx) -> str:
    doc = ctx.policy_document()
    build = f"build/{ctx.name}"
    bins = sorted(p.relative_to(ctx.project_dir).as_posix() for p in (ctx.build_dir / "bin").glob("*")
                  if p.is_file())
    by_class = dict(sorted(Counter(u["unit_class"] for u in doc["units"]).items()))
    return _render("summary.j2", d=doc, by_class=by_class, build=build, binaries=bins)


def audit_report(result) -> str:
    return _render("audit.j2", r=result)


def probe_table(result: dict, interesting) -> str:
    features = set(result["cpu"]["features"])
    isa_line = " ".join(f if f in features else f"-{f}" for f in interesting)
    return _render("probe.j2", p=result, isa_line=isa_line)
