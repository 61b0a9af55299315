//! Compares classification, ensemble and aggregation (classify.rs, aggregate.rs) with the PyTorch
//! reference's fixtures (tools/ovseg_tools/aggregate_reference.py). Exits non-zero on a difference:
//! probabilities and scores past 1e-4 (max abs), or a label other than on an exact tie.
//!
//!   cargo run --release -p ovseg-core --example aggregate_parity -- build/aggregate

use std::path::Path;

use ovseg_core::aggregate::{argmax_labels, bilinear_resize, semantic_scores};
use ovseg_core::classify::{clip_probabilities, ensemble, generator_probabilities};

fn f32s(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .expect("fixture")
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return f32::INFINITY;
    }
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn main() {
    let root = Path::new(
        std::env::args()
            .nth(1)
            .as_deref()
            .unwrap_or("build/aggregate"),
    )
    .to_path_buf();
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("index.json")).expect("index"))
            .expect("json");
    let cases = index["cases"].as_array().expect("cases");
    let (mut failures, mut worst_p, mut worst_s, mut ties) = (0, 0f32, 0f32, 0);
    for case in cases {
        let dir = Path::new(case["dir"].as_str().unwrap());
        let get = |k: &str| case[k].as_u64().unwrap() as usize;
        let (classes, dim) = (get("classes"), get("dim"));
        let size = |k: &str| {
            (
                case[k][0].as_u64().unwrap() as usize,
                case[k][1].as_u64().unwrap() as usize,
            )
        };
        let ((h, w), (out_h, out_w)) = (size("maskSize"), size("outSize"));
        let valid: Vec<bool> = case["valid"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_bool().unwrap())
            .collect();
        let lambda = case["lambda"].as_f64().unwrap() as f32;
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
        let e = ensemble(&p_gen, &p_clip, &valid, classes, lambda).unwrap();
        let kept_masks: Vec<f32> = e
            .kept
            .iter()
            .flat_map(|&q| masks[q * h * w..][..h * w].iter().copied())
            .collect();
        let scores = bilinear_resize(
            &semantic_scores(&e.probabilities, &kept_masks, classes, h * w).unwrap(),
            classes,
            (h, w),
            (out_h, out_w),
        );
        let labels = argmax_labels(&scores, classes, out_h * out_w).unwrap();

        let want_kept: Vec<usize> = case["kept"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let want_scores = f32s(&dir.join("expected_scores.bin"));
        let want_labels: Vec<u16> = std::fs::read(dir.join("expected_labels.bin"))
            .unwrap()
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        let dp = max_abs(
            &e.probabilities,
            &f32s(&dir.join("expected_probabilities.bin")),
        );
        let ds = max_abs(&scores, &want_scores);
        // A label may differ only where the reference's two best classes tie exactly.
        let plane = out_h * out_w;
        let mut bad_labels = 0;
        for (i, (&got, &want)) in labels.iter().zip(&want_labels).enumerate() {
            if got != want {
                let (a, b) = (
                    want_scores[usize::from(got) * plane + i],
                    want_scores[usize::from(want) * plane + i],
                );
                if a == b {
                    ties += 1;
                } else {
                    bad_labels += 1;
                }
            }
        }
        worst_p = worst_p.max(dp);
        worst_s = worst_s.max(ds);
        let ok = e.kept == want_kept && dp <= 1e-4 && ds <= 1e-4 && bad_labels == 0;
        if !ok {
            failures += 1;
            println!(
                "{}: kept {} probabilities {dp:.2e} scores {ds:.2e} labels differing {bad_labels}",
                case["name"],
                e.kept == want_kept
            );
        }
    }
    println!("aggregation parity: worst probabilities {worst_p:.2e}, worst scores {worst_s:.2e}, {ties} label ties");
    println!(
        "aggregation parity: {} passed, {failures} failed",
        cases.len() - failures
    );
    std::process::exit(i32::from(failures > 0));
}
