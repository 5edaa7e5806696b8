//! kspan: OpenTelemetry traces from the kernel, with no code changes.
//!
//! The pipeline runs one way: `capture` (kernel programs, ring buffer) ->
//! `conntrack` (connection table) -> `stream` (reassembly, protocol
//! detection) -> `protocol` (parsers) -> `span` (builder, trace linker) ->
//! `export` (OTLP, terminal). `pipeline` chains the stages between the ring
//! buffer and the exporter; `agent` runs the event loop around it, and the
//! binary is a thin `main` over `agent`.

pub mod agent;
pub mod capture;
pub mod config;
pub mod conntrack;
pub mod events_log;
pub mod export;
pub mod metrics;
pub mod pipeline;
pub mod process;
pub mod protocol;
pub mod span;
pub mod status_server;
pub mod stream;
