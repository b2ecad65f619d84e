//! lsinit's parts, one module per step of the lifecycle (SPEC section 1). The binary in
//! `main.rs` strings them together; the library exists so that the fuzz targets can reach the
//! parsers. It owns no process-wide state: blocking signals, the
//! logger and the event loop are set up by the binary.

pub mod boot;
pub mod cli;
pub mod config;
pub mod licensing;
pub mod logging;
pub mod supervision;
