"""What several test folders (and the benchmarks in bench/) share: harnesses, fault tooling and the
long-run workloads. Imported as a package (``from kits.fault_kit import ...``); tests/ is on the
import path because tests/conftest.py lives there."""
