"""What several test folders (and the benchmarks in bench/) share, imported as a package
(``from kits.fault_kit import ...``; tests/ is on the import path because tests/conftest.py lives
there): the fault tooling, the embedded platform's harness and fake agent, the hostile-value
corpus of the install scripts, the test kube-apiserver and a stand-in for its node, the runtime
rigs of the contract suite, and the long-run workloads (soak, flood, burst)."""
