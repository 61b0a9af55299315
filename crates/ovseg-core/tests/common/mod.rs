//! Fixture reading and comparison shared by the parity tests.
#![allow(dead_code)] // each test file uses a subset

use std::path::{Path, PathBuf};

/// `build/<relative>` of the checkout, where `scripts/make-fixtures.sh` writes the reference's
/// fixtures; a missing one fails the test with how to make it.
pub fn fixture(relative: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../build")
        .join(relative);
    assert!(
        path.exists(),
        "{} is missing: make the PyTorch reference's fixtures with `bash scripts/make-fixtures.sh` \
         (after scripts/setup.sh; npm test does both)",
        path.display()
    );
    path
}

/// Loads ONNX Runtime from ORT_DYLIB_PATH (scripts/test-all.sh sets it).
pub fn runtime() {
    let lib = std::env::var("ORT_DYLIB_PATH")
        .expect("set ORT_DYLIB_PATH to an absolute libonnxruntime path (scripts/test-all.sh does)");
    ovseg_core::init_runtime(Path::new(&lib)).expect("load ONNX Runtime");
}

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

/// Max abs difference; infinite when the lengths differ or a value is NaN on one side only.
pub fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return f32::INFINITY;
    }
    a.iter()
        .zip(b)
        .map(|(x, y)| match (x - y).abs() {
            d if d.is_nan() && x.is_nan() != y.is_nan() => f32::INFINITY,
            d if d.is_nan() => 0.0, // NaN on both sides
            d => d,
        })
        .fold(0.0, f32::max)
}

/// A JSON array's elements, each read by `item` (panics on anything else: a malformed fixture).
fn array<T>(v: &serde_json::Value, item: impl Fn(&serde_json::Value) -> Option<T>) -> Vec<T> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| item(x).expect("array element of the expected type"))
        .collect()
}

pub fn usizes(v: &serde_json::Value) -> Vec<usize> {
    array(v, |x| x.as_u64().map(|n| n as usize))
}

pub fn bools(v: &serde_json::Value) -> Vec<bool> {
    array(v, serde_json::Value::as_bool)
}

pub fn strings(v: &serde_json::Value) -> Vec<String> {
    array(v, |x| x.as_str().map(str::to_owned))
}

/// Prints `what`'s tally and fails when any case failed (each printed its own line before).
pub fn assert_all_passed(what: &str, cases: usize, failures: usize) {
    println!("{what}: {} passed, {failures} failed", cases - failures);
    assert_eq!(failures, 0, "{what} failed (cases above)");
}

/// `[a, b]` of a JSON pair as `(usize, usize)`.
pub fn pair(v: &serde_json::Value) -> (usize, usize) {
    (
        v[0].as_u64().expect("number") as usize,
        v[1].as_u64().expect("number") as usize,
    )
}

/// The scores of every class at `pixel`, of `[classes, plane]` scores.
fn column(scores: &[f32], plane: usize, pixel: usize) -> impl Iterator<Item = f32> + '_ {
    scores.iter().skip(pixel).step_by(plane).copied()
}

/// A label map compared with the reference's under a numeric tolerance on the scores.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LabelCheck {
    /// Labels that differ from the reference's where its scores decide them, or that are not an
    /// argmax of the implementation's own scores: failures.
    pub differing: usize,
    /// Pixels whose reference top-two margin is within the tolerance: near-ties, whose argmax
    /// the last bits of the scores decide (and so the CPU's float rounding), not the method.
    pub near_ties: usize,
    /// Of the near-ties, those labelled otherwise than by the reference: accepted.
    pub tie_differences: usize,
}

/// Compares `got` with the reference's `want` labels, each the argmax over `[classes, plane]`
/// scores (`got_scores`, `want_scores`).
///
/// Where the reference's best score leads its runner-up by more than `tol` (the scores' parity
/// tolerance), the label must be the reference's. Within `tol` the pixel is a near-tie: which
/// label wins there depends on the float rounding of the machine that made the fixture (summation
/// order, vector width, FMA), so a different label is accepted if the reference scores it within
/// `tol` of its best and it is an argmax of the implementation's own scores.
///
/// `unlabeled`: the label of a pixel where every class scores exactly 0 (demo mode), which then
/// competes as a class scoring 0.
pub fn compare_labels(
    got: &[u16],
    got_scores: &[f32],
    want: &[u16],
    want_scores: &[f32],
    plane: usize,
    tol: f32,
    unlabeled: Option<u16>,
) -> LabelCheck {
    let mut check = LabelCheck {
        differing: got.len().abs_diff(want.len()),
        ..Default::default()
    };
    let classes = want_scores.len() / plane.max(1);
    let shapes_agree = want_scores.len() == classes * plane
        && got_scores.len() == want_scores.len()
        && want.len() == plane;
    if !shapes_agree {
        check.differing += got.iter().zip(want).filter(|(g, w)| g != w).count();
        return check;
    }
    // The score of `label` at `pixel`: a class's, 0 for `unlabeled`, None for anything else.
    let score = |scores: &[f32], label: u16, pixel: usize| -> Option<f32> {
        match usize::from(label) {
            c if c < classes => Some(scores[c * plane + pixel]),
            _ if Some(label) == unlabeled => Some(0.0),
            _ => None,
        }
    };
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let column = |scores| column(scores, plane, i);
        // Top two of the reference's candidates (the classes, and `unlabeled` at 0).
        let (mut top1, mut top2) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
        for s in column(want_scores).chain(unlabeled.map(|_| 0.0)) {
            if s > top1 {
                (top1, top2) = (s, top1);
            } else if s > top2 {
                top2 = s;
            }
        }
        let near_tie = top1 - top2 <= tol;
        check.near_ties += usize::from(near_tie);
        if g == w {
            continue;
        }
        // Is `g` what the implementation's own scores say? (Its argmax, and `unlabeled`
        // exactly where they are all 0.)
        let all_zero = column(got_scores).all(|s| s == 0.0);
        let own_best = column(got_scores).fold(f32::NEG_INFINITY, f32::max);
        let own_argmax = match score(got_scores, g, i) {
            Some(_) if Some(g) == unlabeled => all_zero,
            Some(s) => s >= own_best && !(unlabeled.is_some() && all_zero),
            None => false,
        };
        let near_best = score(want_scores, g, i).is_some_and(|s| top1 - s <= tol);
        if near_tie && near_best && own_argmax {
            check.tie_differences += 1;
        } else {
            check.differing += 1;
        }
    }
    check
}
