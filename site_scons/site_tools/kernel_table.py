"""SCons tool: the kernel library's tables as generated C headers in build/VARIANT/gen/ (rewritten only when their
content changes): akf_table.h (implementations and dtypes, toolchain/kernels.toml, with which implementations this
variant's flags build), akf_cpuid.h (the guard's CPUID bits and XSAVE states, toolchain/isa.toml) and
akf_preference.h (the selector's search order for the host preference file, toolchain/selector.toml).

env.AmxforgeKernelHeaders()   returns the include directory holding them
exists(env): the header templates are there (templates/kernels/).
"""

from pathlib import Path

from amxforge.errors import AmxforgeError
from amxforge.sconsglue import fail, generated

def kernel_headers(env):
    """build/VARIANT/gen/akf_table.h and akf_cpuid.h from the toolchain tables; returns their directory."""
    from amxforge.implementations import kernel_table
    from amxforge.templating import render

    ctx = env["AMXFORGE"]
    table, isa = kernel_table(), ctx.policy.isa

    def unit_features(unit):
        return ctx.policy.class_features(ctx.unit(Path(env.Dir("#").abspath) / unit).unit_class, ctx.variant,
                                         ctx.compiler)

    gen = f"#build/{ctx.name}/gen"
    try:
        built = table.built(unit_features)
        ctx.kernel_impls = built
        generated(env, f"{gen}/akf_table.h", render(
            "kernels", "akf_table.h.j2", variant=ctx.name,
            required=sorted(ctx.variant.required_features(isa)), **table.header_context(built)))
        generated(env, f"{gen}/akf_cpuid.h", render(
            "kernels", "akf_cpuid.h.j2", cpuid=list(isa.cpuid.values()), states=list(isa.xsave_states.values())))
        from amxforge.preference import search_order
        generated(env, f"{gen}/akf_preference.h", render("kernels", "akf_preference.h.j2", paths=list(search_order())))
    except AmxforgeError as exc:
        fail(str(exc))
    return env.Dir(gen)


NEEDS = "its templates in templates/kernels/: restore them from git"  # what exists() checks, named when it fails


def generate(env):
    env.AddMethod(kernel_headers, "AmxforgeKernelHeaders")


def exists(env):
    from amxforge.paths import templates_dir
    return all((templates_dir() / "kernels" / name).is_file()
               for name in ("akf_table.h.j2", "akf_cpuid.h.j2", "akf_preference.h.j2"))
