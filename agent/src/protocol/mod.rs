//! Protocol parsers. Each works on one connection's reassembled byte
//! streams and never panics on input.

pub mod fuzzing;
pub mod http1;
pub mod http2;
