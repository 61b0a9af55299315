//! Compares classification, ensemble and aggregation (classify.rs, aggregate.rs) with the PyTorch
//! reference's fixtures (`ovseg_tools.reference.aggregate`). Fails on a difference:
//! probabilities and scores past `TOL` (max abs), or a label other than the reference's where the
//! reference's own scores separate its best class from the runner-up by more than `TOL`. Closer
//! than that the pixel is a near-tie that float rounding decides (the fixtures are computed on the
//! machine that runs the check); there the label must be an argmax of our own scores and one the
//! reference scores within `TOL` of its best (see `common::compare_labels`).
//!
//!   cargo test --release -p ovseg-core --test parity_aggregate -- --nocapture

mod common;

use std::path::Path;

use common::{
    assert_all_passed, bools, compare_labels, f32s, fixture, max_abs, pair, read_json, u16s,
    usizes, LabelCheck,
};
use ovseg_core::aggregate::{argmax_labels, semantic_scores};
use ovseg_core::classify::{clip_probabilities, ensemble, generator_probabilities};
use ovseg_core::resample::bilinear_resize;

/// Max abs difference allowed on probabilities and scores; also the margin below which a label
/// is a near-tie.
const TOL: f32 = 1e-4;

#[test]
fn classification_and_aggregation_match_pytorch() {
    let index = read_json(&fixture("aggregate").join("index.json"));
    let cases = index["cases"].as_array().expect("cases");
    let (mut failures, mut worst_p, mut worst_s) = (0, 0f32, 0f32);
    let mut ties = LabelCheck::default();
    for case in cases {
        let dir = Path::new(case["dir"].as_str().unwrap());
        let (classes, dim) = (
            case["classes"].as_u64().unwrap() as usize,
            case["dim"].as_u64().unwrap() as usize,
        );
        let ((h, w), (out_h, out_w)) = (pair(&case["maskSize"]), pair(&case["outSize"]));
        let valid = bools(&case["valid"]);
        let class_matrix = f32s(&dir.join("class_matrix.bin"));
        let masks = f32s(&dir.join("soft_masks.bin"));

        let p_gen =
            generator_probabilities(&f32s(&dir.join("query_embeddings.bin")), &class_matrix, dim)
                .unwrap();
        let p_clip = clip_probabilities(
            &f32s(&dir.join("image_features.bin")),
            &class_matrix,
            classes,
            dim,
        );
        let e = ensemble(
            &p_gen,
            &p_clip,
            &valid,
            classes,
            case["lambda"].as_f64().unwrap() as f32,
        )
        .unwrap();
        let kept_masks: Vec<&[f32]> = e
            .kept
            .iter()
            .map(|&q| &masks[q * h * w..][..h * w])
            .collect();
        let sums = semantic_scores(&e.probabilities, &kept_masks, classes, h * w).unwrap();
        let scores = bilinear_resize(&sums, classes, (h, w), (out_h, out_w));
        let labels = argmax_labels(&scores, classes, out_h * out_w).unwrap();

        let want_kept = usizes(&case["kept"]);
        let want_scores = f32s(&dir.join("expected_scores.bin"));
        let dp = max_abs(
            &e.probabilities,
            &f32s(&dir.join("expected_probabilities.bin")),
        );
        let ds = max_abs(&scores, &want_scores);
        let l = compare_labels(
            &labels,
            &scores,
            &u16s(&dir.join("expected_labels.bin")),
            &want_scores,
            out_h * out_w,
            TOL,
            None,
        );
        ties.near_ties += l.near_ties;
        ties.tie_differences += l.tie_differences;
        worst_p = worst_p.max(dp);
        worst_s = worst_s.max(ds);
        if e.kept != want_kept || !(dp <= TOL && ds <= TOL) || l.differing > 0 {
            failures += 1;
            println!(
                "{}: kept {} probabilities {dp:.2e} scores {ds:.2e} labels differing {}, near-ties {} ({} labelled otherwise)",
                case["name"],
                e.kept == want_kept,
                l.differing,
                l.near_ties,
                l.tie_differences
            );
        }
    }
    println!(
        "aggregation parity: worst probabilities {worst_p:.2e}, worst scores {worst_s:.2e}; {} near-tie pixels (reference margin <= {TOL:e}), {} of them labelled otherwise",
        ties.near_ties, ties.tie_differences
    );
    assert_all_passed("aggregation parity", cases.len(), failures);
}
