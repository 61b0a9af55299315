//! Encoder outputs: row-major `[rows, dim]` features owned by Rust (handed to JS without a copy).

#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    pub data: Vec<f32>,
    pub rows: usize,
    pub dim: usize,
    /// Time spent inside ONNX Runtime's session runs to make them (0 for cached or derived rows).
    pub session_ms: f64,
}
