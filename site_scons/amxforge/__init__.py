"""amxforge: probe x86/AMX/CUDA hosts, render per-unit ISA flag policies, build and audit variant binaries."""

__version__ = "0.1.0"
