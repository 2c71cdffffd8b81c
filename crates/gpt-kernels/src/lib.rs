//! gpt-kernels (work in progress)
