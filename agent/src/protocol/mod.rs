//! Protocol parsers. Each works on one connection's reassembled byte
//! streams and never panics on input.

pub mod db;
pub mod fuzzing;
pub mod http1;
pub mod http2;
pub mod mysql;
pub mod postgres;
pub mod recording;
pub mod redis;
pub mod sql;
