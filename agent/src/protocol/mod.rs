//! Protocol parsers. Each works on one connection's reassembled byte
//! streams and never panics on input.

pub mod http1;
