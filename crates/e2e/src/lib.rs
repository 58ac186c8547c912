//! End-to-end tests (`tests/`) and benchmarks (`benches/`) of the lifecycle; no library code.

#![forbid(unsafe_code)]
