"""Fork builds: detect a llama.cpp-family tree, drive its own CMake with amxforge's compiler launcher (the shim),
and read back the ledger the shim leaves (one JSON line per compiled unit)."""
