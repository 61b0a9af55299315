//! Compares `Model::segment` (generator masks, caller masks, both; semantic and demo modes) with the
//! PyTorch pipeline reference's fixtures (`ovseg_tools.reference.pipeline`): probabilities
//! and scores within `TOL` (max abs), valid and used masks, classes and processing size equal, label
//! maps identical wherever the reference's own scores separate its best label from the runner-up by
//! more than `TOL`. Closer than that the pixel is a near-tie that float rounding decides (the
//! fixtures are computed on the machine that runs the check); there the label must be an argmax of
//! our own scores and one the reference scores within `TOL` of its best (`common::compare_labels`;
//! in demo mode `UNLABELED` competes as a score of 0). The fixtures' thresholds are chosen so that
//! mask pixels within rounding distance of them cannot change validity, selection or probabilities;
//! in demo mode, which sums binarized masks, the output pixels whose scores they can change are
//! listed as fragile (`fragile_u8.bin`) and left out of the score and label comparison. Where no
//! threshold makes a case robust (ViT-B/16 crops of generator masks: one flipped pixel changes a
//! patch's mask prompt), the fixture widens that case's tolerance to twice the reference's own
//! change under such a flip (`tolerance` in index.json, printed).
//! Needs ORT_DYLIB_PATH (an absolute libonnxruntime path).
//!
//!   cargo test --release -p ovseg-core --test parity_segment -- --nocapture

mod common;

use std::path::Path;

use common::{
    assert_all_passed, bools, compare_labels, f32s, fixture, max_abs, pair, read_json, runtime,
    strings, u16s, usizes,
};
use ovseg_core::aggregate::UNLABELED;
use ovseg_core::segment::{MaskInput, Mode, SegmentOptions};
use ovseg_core::{Model, ModelOptions};

/// Max abs difference allowed on probabilities and scores; also the margin below which a label
/// is a near-tie.
const TOL: f64 = 1e-4;

#[test]
fn segment_matches_the_pytorch_pipeline() {
    check_cases(&fixture("pipeline"));
}

/// OVSeg's released generators (CI-sized Swin-B and R101c, `ovseg_tools.reference.maskformer`):
/// the ensemble at the config's weight and at 0, and demo mode.
#[test]
fn released_generators_segment_like_the_pytorch_pipeline() {
    check_cases(&fixture("maskformer"));
}

fn check_cases(fixtures: &Path) {
    runtime();
    let index = read_json(&fixtures.join("index.json"));
    let cases = index["cases"].as_array().expect("cases");
    let mut failures = 0;
    for case in cases {
        let dir = Path::new(case["dir"].as_str().unwrap());
        let model = Model::load(
            Path::new(case["model"].as_str().unwrap()),
            &ModelOptions::default(),
        )
        .expect("model");
        let (h, w) = pair(&case["size"]);
        let image = std::fs::read(dir.join("image_u8.bin")).expect("image");
        let masks = case["callerMasks"]
            .as_bool()
            .unwrap()
            .then(|| f32s(&dir.join("masks_f32.bin")));
        let o = &case["options"];
        let options = SegmentOptions {
            mode: o["mode"].as_str().map(|m| match m {
                "demo" => Mode::Demo,
                _ => Mode::Semantic,
            }),
            threshold: o["threshold"].as_f64().map(|v| v as f32),
            lambda: o["lambda"].as_f64().map(|v| v as f32),
            generator: case["generator"].as_bool().unwrap(),
            scores: true,
            ..Default::default()
        };
        let got = model
            .segment(
                &image,
                (h, w),
                masks.as_deref().map(MaskInput::Soft),
                &strings(&case["inputClasses"]),
                &options,
            )
            .expect("segment");

        let want_valid = bools(&case["valid"]);
        let got_valid: Vec<bool> = got.segments.iter().map(|s| s.valid).collect();
        let want_used = usizes(&case["used"]);
        let got_used: Vec<usize> = (0..got.segments.len())
            .filter(|&q| got.segments[q].used)
            .collect();
        let dp = max_abs(
            &got.probabilities,
            &f32s(&dir.join("expected_probabilities.bin")),
        );
        // Demo mode's fragile pixels (see the module comment) are left out of scores and labels.
        let fragile = std::fs::read(dir.join("fragile_u8.bin")).expect("fragile_u8.bin");
        let kept: Vec<usize> = (0..h * w).filter(|&i| fragile[i] == 0).collect();
        let plane = |scores: &[f32]| -> Vec<f32> {
            scores
                .chunks(h * w)
                .flat_map(|c| kept.iter().map(move |&i| c[i]))
                .collect()
        };
        let (got_scores, want_scores) = (
            plane(got.scores.as_deref().unwrap()),
            plane(&f32s(&dir.join("expected_scores.bin"))),
        );
        let all_want_labels = u16s(&dir.join("expected_labels.bin"));
        let (got_labels, want_labels): (Vec<u16>, Vec<u16>) = kept
            .iter()
            .map(|&i| (got.labels[i], all_want_labels[i]))
            .unzip();
        let ds = max_abs(&got_scores, &want_scores);
        let tol = case["tolerance"].as_f64().unwrap_or(TOL) as f32;
        let l = compare_labels(
            &got_labels,
            &got_scores,
            &want_labels,
            &want_scores,
            kept.len(),
            tol,
            (options.mode == Some(Mode::Demo)).then_some(UNLABELED),
        );
        let ok = got_valid == want_valid
            && got_used == want_used
            && got.classes == strings(&case["classes"])
            && got.processing_size == pair(&case["processingSize"])
            && dp <= tol
            && ds <= tol
            && l.differing == 0;
        println!(
            "{}: {} masks ({} valid, {} used), processed at {:?}; probabilities {dp:.2e}, scores {ds:.2e} (tolerance {tol:.1e}); labels differing {}, near-ties {} ({} labelled otherwise), fragile {}{}",
            case["name"].as_str().unwrap(),
            got_valid.len(),
            got_valid.iter().filter(|&&v| v).count(),
            got_used.len(),
            got.processing_size,
            l.differing,
            l.near_ties,
            l.tie_differences,
            h * w - kept.len(),
            if ok { "" } else { "  <-- FAIL" }
        );
        failures += usize::from(!ok);
    }
    assert_all_passed("segment parity", cases.len(), failures);
}
