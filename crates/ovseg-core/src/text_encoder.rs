//! Text encoder: token ids -> text features (EOT pooling, ln_final, projection inside the graph).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use ort::value::{TensorElementType, TensorRef};

use crate::error::{bail, Result};
use crate::features::Features;
use crate::graph::{Dim, Graph, Port, SessionOptions};
use crate::manifest::ClipGeometry;

/// Rows per graph run: bounds activation memory for long class lists x templates.
const MAX_ROWS_PER_RUN: usize = 256;

pub struct TextEncoder {
    pub(crate) graph: Graph,
    clip: ClipGeometry,
    runs: AtomicU64,
}

impl TextEncoder {
    pub fn load(path: &Path, clip: ClipGeometry, options: SessionOptions) -> Result<Self> {
        let inputs = [Port {
            name: "input_ids",
            ty: TensorElementType::Int64,
            dims: vec![Dim::Dynamic, Dim::Fixed(clip.context_length)],
        }];
        let outputs = [Port {
            name: "text_features",
            ty: TensorElementType::Float32,
            dims: vec![Dim::Dynamic, Dim::Fixed(clip.embed_dim)],
        }];
        Ok(Self {
            graph: Graph::load(path, options, &inputs, &outputs)?,
            clip,
            runs: AtomicU64::new(0),
        })
    }

    /// Graph runs so far.
    pub fn runs(&self) -> u64 {
        self.runs.load(Ordering::Relaxed)
    }

    /// `ids`: `[rows, context_length]` as the tokenizer makes them. Returns raw (unnormalized) features.
    pub fn encode_ids(&self, ids: &[i32]) -> Result<Features> {
        let context = self.clip.context_length;
        if ids.is_empty() {
            bail!(EmptyInput, "expected at least one row of token ids");
        }
        if !ids.len().is_multiple_of(context) {
            bail!(
                InvalidArgument,
                "{} token ids are not a whole number of rows of {context}",
                ids.len()
            );
        }
        if let Some(bad) = ids
            .iter()
            .find(|&&id| id < 0 || id as usize >= self.clip.vocab_size)
        {
            bail!(
                InvalidArgument,
                "token id {bad} is outside the vocabulary (0..{})",
                self.clip.vocab_size
            );
        }
        let rows = ids.len() / context;
        let mut data = Vec::with_capacity(rows * self.clip.embed_dim);
        let mut session_ms = 0.0;
        for chunk in ids.chunks(MAX_ROWS_PER_RUN * context) {
            let wide: Vec<i64> = chunk.iter().map(|&id| i64::from(id)).collect();
            let tensor =
                TensorRef::from_array_view(([chunk.len() / context, context], wide.as_slice()))?;
            let mut run = self.graph.run(ort::inputs!["input_ids" => tensor])?;
            data.extend(run.tensors.swap_remove(0).1);
            session_ms += run.session_ms;
            self.runs.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Features {
            data,
            rows,
            dim: self.clip.embed_dim,
            session_ms,
        })
    }
}
