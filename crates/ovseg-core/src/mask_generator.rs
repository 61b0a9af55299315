//! OVSeg's class-agnostic mask generator (docs/ovseg.md, section 1 step 2): the
//! resized image normalized with the generator's mean/std and zero-padded to a multiple of
//! `sizeDivisibility` (MaskFormer's `ImageList`); per-query mask logits at `1 / maskStride` scale,
//! upsampled bilinearly to the padded size, cropped to the image, sigmoid; per-query embeddings in
//! CLIP's text space.

use std::path::Path;

use ort::value::{TensorElementType, TensorRef};
use rayon::prelude::*;

use crate::error::{bail, Result};
use crate::graph::{Dim, Graph, Port, SessionOptions};
use crate::manifest::GeneratorSpec;
use crate::resample::bilinear_resize_window;

pub struct MaskGenerator {
    graph: Graph,
    spec: GeneratorSpec,
    embed_dim: usize,
}

/// The generator's proposals for one image.
#[derive(Debug, Clone, PartialEq)]
pub struct Proposals {
    pub queries: usize,
    /// `[queries, height, width]` sigmoid mask probabilities at the image's size.
    pub masks: Vec<f32>,
    /// `[queries, embed_dim]` query embeddings (not normalized).
    pub embeddings: Vec<f32>,
    pub session_ms: f64,
}

/// `1 / (1 + exp(-x))` with a branch-free `exp` that the compiler vectorizes (`f32::exp` is a
/// libm call per value: it was half the generator's post-processing time at 100 queries).
/// Cephes' `expf`: Cody-Waite reduction by ln 2 and a degree-6 polynomial, about 1 ulp.
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp_approx(-x))
}

fn exp_approx(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5 * 2^23 rounds to the nearest integer n and leaves n in the low mantissa bits
    // (no libm `round`, no float-to-int conversion: the loop vectorizes).
    const ROUND: f32 = 12_582_912.0;
    // Plain max/min (minps/maxps); NaN logits are rejected before this runs.
    #[allow(clippy::manual_clamp)]
    let x = x.max(-87.0).min(88.0);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_2e-4 * r + 1.398_2e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let y = p * r * r + r + 1.0;
    // 2^n: n + 127 (in 1..=254 after the clamp) shifted into the exponent field.
    y * f32::from_bits(t.to_bits().wrapping_add(127) << 23)
}

fn round_up(n: usize, multiple: usize) -> usize {
    n.div_ceil(multiple) * multiple
}

/// `[3, padded_h, padded_w]` from `[h, w, 3]` bytes: `(x - mean) / std` inside the image, 0 in
/// the padding (MaskFormer pads after normalizing).
pub fn padded_input(
    rgb: &[u8],
    (h, w): (usize, usize),
    spec: &GeneratorSpec,
) -> (Vec<f32>, (usize, usize)) {
    let div = spec.size_divisibility;
    let (ph, pw) = (round_up(h, div), round_up(w, div));
    let mut input = vec![0f32; 3 * ph * pw];
    input
        .par_chunks_exact_mut(ph * pw)
        .enumerate()
        .for_each(|(c, plane)| {
            let (mean, std) = (spec.pixel_mean[c], spec.pixel_std[c]);
            for (dst, src) in plane.chunks_exact_mut(pw).zip(rgb.chunks_exact(w * 3)) {
                for (d, px) in dst.iter_mut().zip(src.chunks_exact(3)) {
                    *d = (f32::from(px[c]) - mean) / std;
                }
            }
        });
    (input, (ph, pw))
}

/// `mask_generator.onnx`'s inputs and outputs (docs/model-format.md) for CLIP's `embed_dim`.
pub fn graph_ports(embed_dim: usize) -> ([Port; 1], [Port; 2]) {
    let f32t = TensorElementType::Float32;
    let inputs = [Port {
        name: "image",
        ty: f32t,
        dims: vec![Dim::Any, Dim::Fixed(3), Dim::Dynamic, Dim::Dynamic],
    }];
    let outputs = [
        Port {
            name: "mask_logits",
            ty: f32t,
            dims: vec![Dim::Any, Dim::Any, Dim::Dynamic, Dim::Dynamic],
        },
        Port {
            name: "query_embeddings",
            ty: f32t,
            dims: vec![Dim::Any, Dim::Any, Dim::Fixed(embed_dim)],
        },
    ];
    (inputs, outputs)
}

impl MaskGenerator {
    pub fn load(
        path: &Path,
        spec: GeneratorSpec,
        embed_dim: usize,
        options: SessionOptions,
    ) -> Result<Self> {
        let (inputs, outputs) = graph_ports(embed_dim);
        Ok(Self {
            graph: Graph::load(path, options, &inputs, &outputs)?,
            spec,
            embed_dim,
        })
    }

    /// Proposals for `rgb` (`[h, w, 3]` bytes, already at the processing size).
    pub fn propose(&self, rgb: &[u8], (h, w): (usize, usize)) -> Result<Proposals> {
        if h == 0 || w == 0 || rgb.len() != h * w * 3 {
            bail!(
                InvalidImage,
                "expected {w}x{h}x3 RGB bytes, got {} values",
                rgb.len()
            );
        }
        let (input, (ph, pw)) = padded_input(rgb, (h, w), &self.spec);
        let mut run = self.graph.run(ort::inputs![
            "image" => TensorRef::from_array_view(([1, 3, ph, pw], input.as_slice()))?,
        ])?;
        let (embedding_shape, embeddings) = run.tensors.pop().expect("two outputs");
        let (logit_shape, logits) = run.tensors.pop().expect("two outputs");
        let stride = self.spec.mask_stride;
        let (sh, sw) = (ph / stride, pw / stride);
        let queries = logit_shape.get(1).copied().unwrap_or(0);
        if logit_shape != [1, queries, sh, sw] || embedding_shape != [1, queries, self.embed_dim] {
            bail!(
                GraphMismatch,
                "for a {pw}x{ph} input the generator must give mask_logits [1, Q, {sh}, {sw}] and \
                 query_embeddings [1, Q, {}], got {logit_shape:?} and {embedding_shape:?}",
                self.embed_dim
            );
        }
        if queries == 0 {
            bail!(GraphMismatch, "the generator gave no queries");
        }
        if let Some(i) = logits.iter().position(|v| v.is_nan()) {
            bail!(
                InferenceFailed,
                "the generator's mask logit {i} is NaN (query {})",
                i / (sh * sw)
            );
        }
        let masks = bilinear_resize_window(&logits, queries, (sh, sw), (ph, pw), (h, w), sigmoid);
        crate::cancel::check()?;
        Ok(Proposals {
            queries,
            masks,
            embeddings,
            session_ms: run.session_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_sigmoid_matches_f64() {
        let (mut worst_exp, mut worst_sigmoid) = (0f64, 0f64);
        for i in -870_000..=870_000 {
            let x = i as f32 * 1e-4;
            let want = f64::from(x).exp();
            worst_exp = worst_exp.max((f64::from(exp_approx(x)) - want).abs() / want);
            let want = 1.0 / (1.0 + (-f64::from(x)).exp());
            worst_sigmoid = worst_sigmoid.max((f64::from(sigmoid(x)) - want).abs());
        }
        assert!(worst_exp < 3e-7, "exp relative error {worst_exp:e}");
        assert!(worst_sigmoid < 1.2e-7, "sigmoid error {worst_sigmoid:e}");
        assert_eq!((sigmoid(200.0), sigmoid(-200.0) < 1e-37), (1.0, true));
    }

    #[test]
    fn sizes_round_up_to_the_divisibility() {
        assert_eq!(round_up(640, 32), 640);
        assert_eq!(round_up(641, 32), 672);
        assert_eq!(round_up(1, 32), 32);
    }

    #[test]
    fn input_is_normalized_then_zero_padded() {
        let spec = GeneratorSpec {
            file: String::new(),
            pixel_mean: [10.0, 20.0, 30.0],
            pixel_std: [2.0, 4.0, 5.0],
            size_divisibility: 4,
            mask_stride: 2,
        };
        // 1x2 image: pixels (12, 24, 40) and (10, 20, 30).
        let (input, size) = padded_input(&[12, 24, 40, 10, 20, 30], (1, 2), &spec);
        assert_eq!(size, (4, 4));
        assert_eq!(input.len(), 48);
        assert_eq!(
            (input[0], input[1], input[16], input[32]),
            (1.0, 0.0, 1.0, 2.0)
        );
        let mut padding = input.iter().enumerate().filter(|(i, _)| i % 16 >= 2);
        assert!(padding.clone().count() == 42 && padding.all(|(_, &v)| v == 0.0));
    }
}
