//! From per-query class probabilities and soft masks to the label map (docs/ovseg.md,
//! section 1 step 8): `S[c] = sum_q p[q, c] * mask[q]`, bilinear resize to the original image size
//! (PyTorch semantics, align_corners=False), argmax over the classes.

use rayon::prelude::*;

use crate::cancel;
use crate::error::{bail, Result};

/// Label of pixels no selected mask covers (demo mode).
pub const UNLABELED: u16 = u16::MAX;

/// `[classes, plane]` scores from `probabilities` `[rows, classes]` and one `plane`-long mask per row.
pub fn semantic_scores(
    probabilities: &[f32],
    masks: &[&[f32]],
    classes: usize,
    plane: usize,
) -> Result<Vec<f32>> {
    if classes == 0
        || probabilities.len() != masks.len() * classes
        || masks.iter().any(|m| m.len() != plane)
    {
        bail!(
            InvalidArgument,
            "{} probabilities and {} masks do not fit {classes} classes of {plane} pixels",
            probabilities.len(),
            masks.len()
        );
    }
    let mut scores = vec![0f32; classes * plane];
    let stopped = cancel::stopped();
    scores
        .par_chunks_exact_mut(plane)
        .enumerate()
        .for_each(|(c, out)| {
            if stopped() {
                return;
            }
            for (q, mask) in masks.iter().enumerate() {
                let p = probabilities[q * classes + c];
                for (o, &m) in out.iter_mut().zip(mask.iter()) {
                    *o += p * m;
                }
            }
        });
    cancel::check()?;
    Ok(scores)
}

/// OVSeg's demo selection: for each of the first `select_for` classes, the row with the highest
/// probability (the first on ties); distinct rows, ascending.
pub fn best_rows_per_class(probabilities: &[f32], classes: usize, select_for: usize) -> Vec<usize> {
    let mut rows: Vec<usize> = (0..select_for.min(classes))
        .filter_map(|c| {
            probabilities
                .chunks_exact(classes)
                .enumerate()
                .fold(None, |best: Option<(usize, f32)>, (q, row)| match best {
                    Some((_, p)) if p >= row[c] => best,
                    _ => Some((q, row[c])),
                })
                .map(|(q, _)| q)
        })
        .collect();
    rows.sort_unstable();
    rows.dedup();
    rows
}

/// Sets `UNLABELED` where every class scores exactly 0 (no selected mask covers the pixel).
pub fn mark_unlabeled(labels: &mut [u16], scores: &[f32], classes: usize) {
    let plane = labels.len();
    for (p, label) in labels.iter_mut().enumerate() {
        if (0..classes).all(|c| scores[c * plane + p] == 0.0) {
            *label = UNLABELED;
        }
    }
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
        cancel::check()?;
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
        let masks: [&[f32]; 2] = [&[1.0, 0.5, 0.0], &[0.0, 0.5, 1.0]];
        let s = semantic_scores(&[0.9, 0.1, 0.2, 0.8], &masks, 2, 3).unwrap();
        let want = [0.9, 0.55, 0.2, 0.1, 0.45, 0.8];
        s.iter()
            .zip(want)
            .for_each(|(g, w)| assert!((g - w).abs() < 1e-6));
        assert_eq!(argmax_labels(&s, 2, 3).unwrap(), vec![0, 0, 1]);
    }

    #[test]
    fn demo_selects_the_best_row_per_class_and_marks_uncovered_pixels() {
        // 3 rows x 3 classes; rows 1 and 2 tie for class 2 (the first wins); class 2 not selected
        // with select_for = 2.
        let p = [0.9, 0.1, 0.0, 0.2, 0.3, 0.5, 0.1, 0.2, 0.5];
        assert_eq!(best_rows_per_class(&p, 3, 3), vec![0, 1]);
        assert_eq!(best_rows_per_class(&p, 3, 1), vec![0]);
        let mut labels = vec![1, 1];
        mark_unlabeled(&mut labels, &[0.0, 0.5, 0.0, 0.0], 2);
        assert_eq!(labels, vec![UNLABELED, 1]);
    }

    #[test]
    fn argmax_takes_the_first_on_ties() {
        assert_eq!(
            argmax_labels(&[1.0, 2.0, 1.0, 2.0], 2, 2).unwrap(),
            vec![0, 0]
        );
    }
}
