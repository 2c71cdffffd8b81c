//! gpt-engine (work in progress)
