//! From per-query class probabilities and soft masks to the label map (../shared/docs/ovseg-reference.md,
//! section 1 step 8): `S[c] = sum_q p[q, c] * mask[q]`, bilinear resize to the original image size
//! (PyTorch semantics, align_corners=False), argmax over the classes.

use rayon::prelude::*;

use crate::error::{bail, Result};

/// `[classes, plane]` scores from `probabilities` `[queries, classes]` and `masks` `[queries, plane]`.
pub fn semantic_scores(
    probabilities: &[f32],
    masks: &[f32],
    classes: usize,
    plane: usize,
) -> Result<Vec<f32>> {
    let queries = probabilities.len() / classes.max(1);
    if classes == 0 || probabilities.len() != queries * classes || masks.len() != queries * plane {
        bail!(
            InvalidArgument,
            "{} probabilities and {} mask values do not fit {classes} classes",
            probabilities.len(),
            masks.len()
        );
    }
    let mut scores = vec![0f32; classes * plane];
    scores
        .par_chunks_exact_mut(plane)
        .enumerate()
        .for_each(|(c, out)| {
            for (q, mask) in masks.chunks_exact(plane).enumerate() {
                let p = probabilities[q * classes + c];
                for (o, &m) in out.iter_mut().zip(mask) {
                    *o += p * m;
                }
            }
        });
    Ok(scores)
}

/// Source rows/columns and weights of PyTorch's bilinear interpolation (align_corners=False):
/// `src = max(0, (dst + 0.5) * (in / out) - 0.5)`, scale rounded to f32, the index in f64 as
/// PyTorch's CPU kernel computes it.
fn linear_taps(input: usize, output: usize) -> Vec<(usize, usize, f32, f32)> {
    let scale = f64::from(input as f32 / output as f32);
    (0..output)
        .map(|dst| {
            let real = (scale * (dst as f64 + 0.5) - 0.5).max(0.0);
            let i0 = (real.floor() as usize).min(input - 1);
            let i1 = if i0 < input - 1 { i0 + 1 } else { i0 };
            let w1 = (real - i0 as f64) as f32;
            (i0, i1, 1.0 - w1, w1)
        })
        .collect()
}

/// `F.interpolate(x, (out_h, out_w), mode='bilinear', align_corners=False)` of `[channels, in_h, in_w]`.
pub fn bilinear_resize(
    input: &[f32],
    channels: usize,
    (in_h, in_w): (usize, usize),
    (out_h, out_w): (usize, usize),
) -> Vec<f32> {
    let rows = linear_taps(in_h, out_h);
    let cols = linear_taps(in_w, out_w);
    let mut out = vec![0f32; channels * out_h * out_w];
    out.par_chunks_exact_mut(out_h * out_w)
        .enumerate()
        .for_each(|(c, plane_out)| {
            let plane = &input[c * in_h * in_w..][..in_h * in_w];
            for (dst_row, &(y0, y1, wy0, wy1)) in plane_out.chunks_exact_mut(out_w).zip(&rows) {
                let (r0, r1) = (&plane[y0 * in_w..][..in_w], &plane[y1 * in_w..][..in_w]);
                for (dst, &(x0, x1, wx0, wx1)) in dst_row.iter_mut().zip(&cols) {
                    *dst =
                        wy0 * (wx0 * r0[x0] + wx1 * r0[x1]) + wy1 * (wx0 * r1[x0] + wx1 * r1[x1]);
                }
            }
        });
    out
}

/// Per pixel, the index of the highest class score (the first one on ties).
pub fn argmax_labels(scores: &[f32], classes: usize, plane: usize) -> Result<Vec<u16>> {
    if classes == 0 || classes > usize::from(u16::MAX) + 1 || scores.len() != classes * plane {
        bail!(
            InvalidArgument,
            "{classes} classes do not fit a 16-bit label map of {plane} pixels"
        );
    }
    let mut labels = vec![0u16; plane];
    let mut best = scores[..plane].to_vec();
    for c in 1..classes {
        for ((label, b), &s) in labels
            .iter_mut()
            .zip(best.iter_mut())
            .zip(&scores[c * plane..][..plane])
        {
            if s > *b {
                *b = s;
                *label = c as u16;
            }
        }
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_sum_probability_weighted_masks() {
        // 2 queries, 2 classes, 3 pixels.
        let s =
            semantic_scores(&[0.9, 0.1, 0.2, 0.8], &[1.0, 0.5, 0.0, 0.0, 0.5, 1.0], 2, 3).unwrap();
        let want = [0.9, 0.55, 0.2, 0.1, 0.45, 0.8];
        s.iter()
            .zip(want)
            .for_each(|(g, w)| assert!((g - w).abs() < 1e-6));
        assert_eq!(argmax_labels(&s, 2, 3).unwrap(), vec![0, 0, 1]);
    }

    #[test]
    fn argmax_takes_the_first_on_ties() {
        assert_eq!(
            argmax_labels(&[1.0, 2.0, 1.0, 2.0], 2, 2).unwrap(),
            vec![0, 0]
        );
    }

    #[test]
    fn bilinear_keeps_constants_and_identity() {
        let out = bilinear_resize(&[3.0; 6], 1, (2, 3), (5, 4));
        assert!(out.iter().all(|v| (v - 3.0).abs() < 1e-6));
        let x: Vec<f32> = (0..12).map(|i| i as f32).collect();
        assert_eq!(bilinear_resize(&x, 1, (3, 4), (3, 4)), x);
    }
}
