//! Text encoder: token ids -> text features (EOT pooling, ln_final, projection inside the graph).
//!
//! CLIP's text transformer is causal and reads its features at the end-of-text token (the highest
//! id of a row), so the ids after the longest text of a batch cannot change any row's features:
//! a graph with a dynamic token axis runs each batch cut to that length (exported models since
//! format version 3 have one; older graphs with a fixed axis run at the full context).

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
    /// Whether the graph takes fewer tokens than the context.
    dynamic_length: bool,
}

impl TextEncoder {
    pub fn load(path: &Path, clip: ClipGeometry, options: SessionOptions) -> Result<Self> {
        let inputs = [Port {
            name: "input_ids",
            ty: TensorElementType::Int64,
            dims: vec![Dim::Dynamic, Dim::FixedOrDynamic(clip.context_length)],
        }];
        let outputs = [Port {
            name: "text_features",
            ty: TensorElementType::Float32,
            dims: vec![Dim::Dynamic, Dim::Fixed(clip.embed_dim)],
        }];
        let graph = Graph::load(path, options, &inputs, &outputs)?;
        let encoder = Self {
            dynamic_length: graph.input_is_dynamic(0, 1),
            graph,
            clip,
            runs: AtomicU64::new(0),
        };
        if encoder.dynamic_length {
            encoder.check_context(path)?;
        }
        Ok(encoder)
    }

    /// A dynamic token axis does not say how long a text the graph takes (its positional
    /// embedding does): one run at the full context tells, before any call needs it.
    fn check_context(&self, path: &Path) -> Result<()> {
        let context = self.clip.context_length;
        let ids = vec![0i64; context];
        let tensor = TensorRef::from_array_view(([1, context], ids.as_slice()))?;
        match self.graph.run(ort::inputs!["input_ids" => tensor]) {
            Err(e) if e.code != crate::error::ErrorCode::Aborted => bail!(
                GraphMismatch,
                "{}: the text encoder does not run {context} tokens (clip.contextLength): {}",
                path.display(),
                e.message
            ),
            other => other.map(|_| ()),
        }
    }

    /// Whether batches run at their longest text rather than the full context.
    pub fn dynamic_length(&self) -> bool {
        self.dynamic_length
    }

    /// Graph runs so far.
    pub fn runs(&self) -> u64 {
        self.runs.load(Ordering::Relaxed)
    }

    /// `ids`: `[rows, context_length]` as the tokenizer makes them. Returns raw (unnormalized)
    /// features. Each run is cut to its longest text when the graph allows it.
    pub fn encode_ids(&self, ids: &[i32]) -> Result<Features> {
        self.encode_ids_cut(ids, self.dynamic_length)
    }

    /// `encode_ids` at the full context (`cut = false`) or cut to each run's longest text.
    pub fn encode_ids_cut(&self, ids: &[i32], cut: bool) -> Result<Features> {
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
        if cut && !self.dynamic_length {
            bail!(
                InvalidArgument,
                "this text encoder takes exactly {context} tokens (its graph has no dynamic token axis)"
            );
        }
        let dim = self.clip.embed_dim;
        let rows: Vec<&[i32]> = ids.chunks_exact(context).collect();
        // Cut runs take the rows shortest first, so that each run's rows are of similar length.
        let mut order: Vec<usize> = (0..rows.len()).collect();
        if cut {
            order.sort_by_key(|&r| text_length(rows[r]));
        }
        let mut data = vec![0f32; rows.len() * dim];
        let mut session_ms = 0.0;
        for run_rows in order.chunks(MAX_ROWS_PER_RUN) {
            let length = match cut {
                true => run_rows
                    .iter()
                    .map(|&r| text_length(rows[r]))
                    .max()
                    .unwrap_or(context),
                false => context,
            };
            let wide: Vec<i64> = run_rows
                .iter()
                .flat_map(|&r| rows[r][..length].iter().map(|&id| i64::from(id)))
                .collect();
            let tensor = TensorRef::from_array_view(([run_rows.len(), length], wide.as_slice()))?;
            let mut run = self.graph.run(ort::inputs!["input_ids" => tensor])?;
            let features = run.tensors.swap_remove(0).1;
            for (&r, row) in run_rows.iter().zip(features.chunks_exact(dim)) {
                data[r * dim..(r + 1) * dim].copy_from_slice(row);
            }
            session_ms += run.session_ms;
            self.runs.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Features {
            data,
            rows: rows.len(),
            dim,
            session_ms,
        })
    }
}

/// Tokens up to and including a row's end-of-text token: the first position of its highest id
/// (where the graph pools, as CLIP's `argmax` does).
pub fn text_length(row: &[i32]) -> usize {
    let top = row.iter().copied().max().unwrap_or(0);
    row.iter().position(|&id| id == top).unwrap_or(0) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_ends_at_its_first_highest_id() {
        // SOT=9, EOT=10, padding 0; a truncated row ends with EOT at the last position.
        assert_eq!(text_length(&[9, 1, 10, 0, 0]), 3);
        assert_eq!(text_length(&[9, 2, 3, 10, 0]), 4);
        assert_eq!(text_length(&[9, 1, 2, 3, 10]), 5);
        // Repeated highest ids: the graph pools at the first (argmax), so nothing after it counts.
        assert_eq!(text_length(&[9, 10, 10, 0, 0]), 2);
    }
}
