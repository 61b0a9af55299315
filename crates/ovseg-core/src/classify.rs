//! Mask classification and OVSeg's ensemble (docs/ovseg.md, section 1 steps 3,
//! 6, 7): cosine logits at scale 100, the generator's softmax over C + no-object (then dropped), CLIP's
//! softmax over C (no-object dropped first), and the geometric ensemble.

use crate::class_embeddings::l2_normalize_rows;
use crate::error::{bail, Result};

/// OVSeg's fixed logit scale (not CLIP's learned `exp(logit_scale)`).
pub const LOGIT_SCALE: f32 = 100.0;

/// `scale * a @ b^T` for `a`: `[n, dim]`, `b`: `[k, dim]` (rows are expected to be unit vectors).
pub fn scaled_dot(a: &[f32], b: &[f32], dim: usize, scale: f32) -> Vec<f32> {
    let mut out = Vec::with_capacity(a.len() / dim * (b.len() / dim));
    for row in a.chunks_exact(dim) {
        out.extend(
            b.chunks_exact(dim)
                .map(|col| scale * row.iter().zip(col).map(|(x, y)| x * y).sum::<f32>()),
        );
    }
    out
}

/// Softmax of each `width`-long row, in place (max-subtracted for stability).
pub fn softmax_rows(data: &mut [f32], width: usize) {
    for row in data.chunks_exact_mut(width) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        for v in row.iter_mut() {
            *v = (*v - max).exp();
            sum += *v;
        }
        row.iter_mut().for_each(|v| *v /= sum);
    }
}

/// The first `keep` columns of each `width`-long row.
fn take_columns(data: &[f32], width: usize, keep: usize) -> Vec<f32> {
    data.chunks_exact(width)
        .flat_map(|row| row[..keep].iter().copied())
        .collect()
}

/// CLIP's class probabilities of the valid crops `[valid, classes]`: 100 * cos against the class
/// matrix `[classes (+1 no-object row), dim]`, no-object column dropped FIRST, softmax over the classes.
pub fn clip_probabilities(
    image_features: &[f32],
    class_matrix: &[f32],
    classes: usize,
    dim: usize,
) -> Vec<f32> {
    let rows = class_matrix.len() / dim;
    let mut logits = take_columns(
        &scaled_dot(image_features, class_matrix, dim, LOGIT_SCALE),
        rows,
        classes,
    );
    softmax_rows(&mut logits, classes);
    logits
}

/// The generator's class probabilities `[queries, classes]`: 100 * cos of the (normalized) query
/// embeddings against the class matrix with its no-object row `[classes + 1, dim]`, softmax over
/// classes + 1, then the no-object column dropped.
pub fn generator_probabilities(
    query_embeddings: &[f32],
    class_matrix: &[f32],
    dim: usize,
) -> Result<Vec<f32>> {
    let rows = class_matrix.len() / dim;
    if rows < 2 {
        bail!(
            InvalidArgument,
            "the generator's class matrix needs the classes plus a no-object row"
        );
    }
    let mut queries = query_embeddings.to_vec();
    l2_normalize_rows(&mut queries, dim);
    let mut logits = scaled_dot(&queries, class_matrix, dim, LOGIT_SCALE);
    softmax_rows(&mut logits, rows);
    Ok(take_columns(&logits, rows, rows - 1))
}

/// Per-query class probabilities after the ensemble, and which queries they belong to.
#[derive(Debug, Clone, PartialEq)]
pub struct Ensembled {
    /// `[kept.len(), classes]`.
    pub probabilities: Vec<f32>,
    /// Query indices, ascending.
    pub kept: Vec<usize>,
}

/// OVSeg's ensemble. `lambda > 0`: `p = p_gen^(1 - lambda) * p_clip^lambda` (not renormalized) over
/// every query, invalid queries taking `p_clip = 1`. `lambda <= 0`: CLIP only, valid queries only.
/// Without any valid query the intended result is the generator's (p_clip = 1 everywhere).
/// `p_clip`: `[valid, classes]` in query order of `valid`.
pub fn ensemble(
    p_gen: &[f32],
    p_clip: &[f32],
    valid: &[bool],
    classes: usize,
    lambda: f32,
) -> Result<Ensembled> {
    let queries = valid.len();
    let valid_count = valid.iter().filter(|&&v| v).count();
    if p_gen.len() != queries * classes || p_clip.len() != valid_count * classes {
        bail!(
            InvalidArgument,
            "ensemble inputs disagree: {queries} queries, {valid_count} valid, {classes} classes"
        );
    }
    if !lambda.is_finite() || lambda > 1.0 {
        bail!(
            InvalidArgument,
            "Expected a number in [0, 1] for `lambda` but received {lambda}"
        );
    }
    if lambda <= 0.0 && valid_count > 0 {
        let kept = (0..queries).filter(|&q| valid[q]).collect();
        return Ok(Ensembled {
            probabilities: p_clip.to_vec(),
            kept,
        });
    }
    let mut probabilities = p_gen.to_vec();
    if lambda > 0.0 {
        let mut clip_rows = p_clip.chunks_exact(classes);
        for (row, _) in probabilities
            .chunks_exact_mut(classes)
            .zip(valid)
            .filter(|(_, &v)| v)
        {
            let clip = clip_rows.next().expect("one CLIP row per valid query");
            for (p, &c) in row.iter_mut().zip(clip) {
                *p = p.powf(1.0 - lambda) * c.powf(lambda);
            }
        }
        // Invalid queries: p_gen^(1 - lambda) * 1^lambda.
        for (row, _) in probabilities
            .chunks_exact_mut(classes)
            .zip(valid)
            .filter(|(_, &v)| !v)
        {
            row.iter_mut().for_each(|p| *p = p.powf(1.0 - lambda));
        }
    }
    Ok(Ensembled {
        probabilities,
        kept: (0..queries).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_is_stable_and_sums_to_one() {
        let mut x = vec![1000.0, 1001.0, 1002.0];
        softmax_rows(&mut x, 3);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(x[2] > x[1] && x[1] > x[0]);
    }

    #[test]
    fn clip_drops_no_object_before_softmax() {
        // One crop along e0; classes e0, e1; no-object along e0 too: dropped first, so it takes nothing.
        let p = clip_probabilities(&[1.0, 0.0], &[1.0, 0.0, 0.0, 1.0, 1.0, 0.0], 2, 2);
        let expected = 1.0 / (1.0 + (-100f32).exp());
        assert!((p[0] - expected).abs() < 1e-6 && (p[0] + p[1] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn generator_softmax_includes_no_object_then_drops_it() {
        // Query along the no-object row: most mass goes to no-object, dropped afterwards.
        let p = generator_probabilities(&[0.0, 3.0], &[1.0, 0.0, 0.0, 1.0], 2).unwrap();
        assert_eq!(p.len(), 1);
        assert!(p[0] < 1e-6);
    }

    #[test]
    fn ensemble_rules() {
        let p_gen = [0.5, 0.25, 0.8, 0.1];
        let p_clip = [0.9, 0.1];
        let valid = [false, true];
        let e = ensemble(&p_gen, &p_clip, &valid, 2, 0.5).unwrap();
        assert_eq!(e.kept, vec![0, 1]);
        let want = [
            0.5f32.sqrt(),
            0.25f32.sqrt(),
            (0.8f32 * 0.9).sqrt(),
            (0.1f32 * 0.1).sqrt(),
        ];
        e.probabilities
            .iter()
            .zip(want)
            .for_each(|(g, w)| assert!((g - w).abs() < 1e-6));
        let clip_only = ensemble(&p_gen, &p_clip, &valid, 2, 0.0).unwrap();
        assert_eq!(
            clip_only,
            Ensembled {
                probabilities: p_clip.to_vec(),
                kept: vec![1]
            }
        );
        let none_valid = ensemble(&p_gen, &[], &[false, false], 2, 0.0).unwrap();
        assert_eq!(
            none_valid,
            Ensembled {
                probabilities: p_gen.to_vec(),
                kept: vec![0, 1]
            }
        );
        assert!(ensemble(&p_gen, &p_clip, &valid, 2, 1.5).is_err());
    }
}
