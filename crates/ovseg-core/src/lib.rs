//! ovseg-core: the native core of ovseg. No N-API code lives here.

pub mod error;
pub mod text_clean;
#[rustfmt::skip]
mod text_tables;
pub mod tokenizer;

pub use error::{Error, ErrorCode, Result};
pub use tokenizer::{Overflow, Tokenizer};
