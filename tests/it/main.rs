//! lsinit's integration tests: the real binary against real loopback servers and real
//! processes. One test binary, one module per concern.

mod boot;
mod cache;
mod harness;
mod licensing;
mod network;
mod runtime;
mod supervision;
