//! The HTTP handlers, one module per endpoint family.

pub mod chat;
pub mod completions;
pub mod misc;
pub mod responses;
