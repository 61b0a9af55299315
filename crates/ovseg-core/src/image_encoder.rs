//! Image encoder: normalized pixels + per-patch keep mask + mask prompts -> image features.

use std::path::Path;

use ort::value::{TensorElementType, TensorRef};
use rayon::prelude::*;

use crate::batcher::RunRows;
use crate::error::{bail, Result};
use crate::features::Features;
use crate::graph::{Dim, Graph, Port, SessionOptions};
use crate::keep_mask::patch_keep_mask;
use crate::manifest::ClipGeometry;
use crate::mask_prompts::MaskPromptSet;

/// A batch of square images at the encoder's input size.
#[derive(Debug, Clone, Copy)]
pub enum Pixels<'a> {
    /// `[batch, 3, size, size]`, already normalized with the model's mean/std.
    Normalized(&'a [f32]),
    /// `[batch, size, size, 3]` RGB bytes; normalized here as `(x - mean*255) / (std*255)`.
    Rgb8(&'a [u8]),
}

pub struct ImageEncoder {
    pub(crate) graph: Graph,
    clip: ClipGeometry,
    mean: [f32; 3],
    std: [f32; 3],
}

impl ImageEncoder {
    pub fn load(
        path: &Path,
        clip: ClipGeometry,
        mean: [f32; 3],
        std: [f32; 3],
        options: SessionOptions,
    ) -> Result<Self> {
        let (s, p, l, w) = (
            clip.image_size,
            clip.patches(),
            clip.vision_layers,
            clip.vision_width,
        );
        let f32t = TensorElementType::Float32;
        let inputs = [
            Port {
                name: "pixels",
                ty: f32t,
                dims: vec![Dim::Dynamic, Dim::Fixed(3), Dim::Fixed(s), Dim::Fixed(s)],
            },
            Port {
                name: "keep",
                ty: f32t,
                dims: vec![Dim::Dynamic, Dim::Fixed(p)],
            },
            Port {
                name: "prompts",
                ty: f32t,
                dims: vec![Dim::Fixed(l), Dim::Fixed(p), Dim::Fixed(w)],
            },
            Port {
                name: "prompt_gate",
                ty: f32t,
                dims: vec![Dim::Fixed(l)],
            },
        ];
        let outputs = [Port {
            name: "image_features",
            ty: f32t,
            dims: vec![Dim::Dynamic, Dim::Fixed(clip.embed_dim)],
        }];
        Ok(Self {
            graph: Graph::load(path, options, &inputs, &outputs)?,
            clip,
            mean,
            std,
        })
    }

    /// Number of images in a pixel buffer, or a coded error when it is not whole.
    pub fn batch_size(&self, pixels: Pixels) -> Result<usize> {
        let per_image = 3 * self.clip.image_size * self.clip.image_size;
        let len = match pixels {
            Pixels::Normalized(d) => d.len(),
            Pixels::Rgb8(d) => d.len(),
        };
        if len == 0 || !len.is_multiple_of(per_image) {
            let s = self.clip.image_size;
            bail!(
                InvalidImage,
                "expected {s}x{s}x3 values per image (a whole, non-empty batch), got {len} values"
            );
        }
        Ok(len / per_image)
    }

    /// Raw (unnormalized) features. `masks`: `[batch, size, size]`, nonzero = foreground; `None` keeps every patch.
    pub fn encode(
        &self,
        pixels: Pixels,
        masks: Option<&[u8]>,
        prompts: &MaskPromptSet,
    ) -> Result<Features> {
        let batch = self.batch_size(pixels)?;
        let (s, patches) = (self.clip.image_size, self.clip.patches());
        let keep = match masks {
            Some(m) if m.len() != batch * s * s => {
                bail!(
                    InvalidMask,
                    "expected {batch} masks of {s}x{s} ({} values), got {} values",
                    batch * s * s,
                    m.len()
                )
            }
            Some(m) => patch_keep_mask(m, s, self.clip.patch_size)?,
            None => vec![1.0; batch * patches],
        };
        let normalized;
        let pixel_data: &[f32] = match pixels {
            Pixels::Normalized(d) => {
                if let Some(i) = d.iter().position(|v| !v.is_finite()) {
                    bail!(
                        InvalidImage,
                        "pixel value {} at index {i} is not finite",
                        d[i]
                    );
                }
                d
            }
            Pixels::Rgb8(d) => {
                normalized = normalize_rgb8(d, s * s, self.mean, self.std);
                &normalized
            }
        };
        let out = self.run(pixel_data, &keep, batch, prompts)?;
        Ok(Features {
            data: out.features,
            rows: batch,
            dim: self.clip.embed_dim,
            session_ms: out.session_ms,
        })
    }

    /// One session run of `batch` normalized images and their `[batch, patches]` keep masks.
    pub(crate) fn run(
        &self,
        pixels: &[f32],
        keep: &[f32],
        batch: usize,
        prompts: &MaskPromptSet,
    ) -> Result<RunRows> {
        let (s, patches) = (self.clip.image_size, self.clip.patches());
        let (l, w) = (self.clip.vision_layers, self.clip.vision_width);
        let mut run = self.graph.run(ort::inputs![
            "pixels" => TensorRef::from_array_view(([batch, 3, s, s], pixels))?,
            "keep" => TensorRef::from_array_view(([batch, patches], keep))?,
            "prompts" => TensorRef::from_array_view(([l, patches, w], prompts.prompts.as_slice()))?,
            "prompt_gate" => TensorRef::from_array_view(([l], prompts.gate.as_slice()))?,
        ])?;
        Ok(RunRows {
            features: run.tensors.swap_remove(0).1,
            session_ms: run.session_ms,
        })
    }
}

/// `[batch, plane, 3]` RGB bytes -> `[batch, 3, plane]` floats, `(x - mean*255) / (std*255)` (the
/// reference's formula), one (image, channel) plane per rayon task. Serves the encoder's byte input
/// and the mask cropper's whole-image planes.
pub fn normalize_rgb8(hwc: &[u8], plane: usize, mean: [f32; 3], std: [f32; 3]) -> Vec<f32> {
    let mut out = vec![0f32; hwc.len()];
    out.par_chunks_exact_mut(plane)
        .enumerate()
        .for_each(|(i, channel)| {
            let (image, c) = (&hwc[i / 3 * plane * 3..][..plane * 3], i % 3);
            let (m, sd) = (mean[c] * 255.0, std[c] * 255.0);
            for (dst, px) in channel.iter_mut().zip(image.chunks_exact(3)) {
                *dst = (f32::from(px[c]) - m) / sd;
            }
        });
    out
}
