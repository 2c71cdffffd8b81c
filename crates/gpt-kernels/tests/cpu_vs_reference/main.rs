//! Every CPU kernel against its slow candle-ops reference (`gpt_kernels::reference`) on seeded
//! random inputs with ragged shapes. Tolerances are named consts in each module.

mod attention;
mod common;
mod elementwise;
mod isa;
mod moe;
mod mxfp4;
mod paged;
