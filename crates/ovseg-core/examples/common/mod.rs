//! Fixture reading and comparison shared by the parity examples.
#![allow(dead_code)] // each example uses a subset

use std::path::Path;

pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Little-endian float32 values of a fixture file.
pub fn f32s(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Little-endian uint16 values of a fixture file.
pub fn u16s(path: &Path) -> Vec<u16> {
    std::fs::read(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect()
}

/// Max abs difference; infinite when the lengths differ.
pub fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return f32::INFINITY;
    }
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// `[a, b]` of a JSON pair as `(usize, usize)`.
pub fn pair(v: &serde_json::Value) -> (usize, usize) {
    (
        v[0].as_u64().expect("number") as usize,
        v[1].as_u64().expect("number") as usize,
    )
}

/// Labels that differ from the reference: `(not on a tie, on an exact tie)`, a tie being equal
/// reference scores (`[classes, plane]`) for both labels.
pub fn label_differences(
    got: &[u16],
    want: &[u16],
    want_scores: &[f32],
    plane: usize,
) -> (usize, usize) {
    let (mut bad, mut ties) = (0, 0);
    let classes = want_scores.len() / plane;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if g != w {
            // An unlabeled pixel (demo mode) against a label is never a tie.
            let (g, w) = (usize::from(g), usize::from(w));
            if g < classes
                && w < classes
                && want_scores[g * plane + i] == want_scores[w * plane + i]
            {
                ties += 1;
            } else {
                bad += 1;
            }
        }
    }
    (bad + got.len().abs_diff(want.len()), ties)
}
