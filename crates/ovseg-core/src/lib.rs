//! ovseg-core: the native core of ovseg — CLIP tokenizer, model directory, mask-prompted CLIP
//! encoders over ONNX Runtime. No N-API code lives here (the binding is crates/ovseg-node).

pub mod aggregate;
pub mod batcher;
pub mod cancel;
pub mod class_embeddings;
pub mod class_file;
pub mod classify;
pub mod error;
pub mod features;
pub mod files;
pub mod graph;
pub mod image_encoder;

pub mod keep_mask;
pub mod manifest;
pub mod mask_crop;
pub mod mask_generator;
pub mod mask_prompts;
pub mod model;
pub mod npy;
pub mod resample;
pub mod runtime;
pub mod sam;
pub mod segment;
pub mod text_clean;
pub mod text_encoder;
#[rustfmt::skip]
mod text_tables;
pub mod tokenizer;

pub use cancel::Cancel;
pub use error::{Error, ErrorCode, Result};
pub use features::Features;
pub use image_encoder::Pixels;
pub use manifest::Precision;
pub use model::{Model, ModelOptions, ModelStats, PromptSource};
pub use runtime::{init_runtime, runtime_info, ExecutionProvider, ProviderChoice, RuntimeInfo};
pub use tokenizer::{Overflow, Tokenizer};

/// Locks `m`, ignoring poisoning: a panic in a holder becomes an `INTERNAL` error for that call,
/// and no value guarded in ovseg is left half-updated by one (each is replaced or read whole).
pub fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A closed set of named values (modes, policies, providers, error codes): the names are part of
/// the public API, and `tests/typescript.rs` writes them into `ts/generated.ts` for the TS layer.
pub trait Named: Copy + 'static {
    const ALL: &'static [Self];
    fn name(self) -> &'static str;

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.name() == name)
    }
}
