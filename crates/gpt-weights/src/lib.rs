//! gpt-weights (work in progress)
