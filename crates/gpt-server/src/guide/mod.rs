//! Constrained decoding: [`GuideEnv`] (llguidance over our vocabulary), [`GuidePlan`] (what
//! a request constrains) and [`HarmonyGuide`] (the engine's token guide).

mod env;
mod harmony;
mod plan;
pub mod schema;

pub use env::{GuideEnv, GuideError};
pub use harmony::HarmonyGuide;
pub use plan::{CallSpec, GuidePlan, Opens};
