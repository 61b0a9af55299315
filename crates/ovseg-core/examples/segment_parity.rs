//! Compares `Model::segment` (generator masks, caller masks, both; semantic and demo modes) with the
//! PyTorch pipeline reference's fixtures (tools/ovseg_tools/pipeline_reference.py): probabilities
//! and scores within 1e-4 (max abs), valid and used masks, classes and processing size equal, label
//! maps identical except exact ties.
//! Needs ORT_DYLIB_PATH (an absolute libonnxruntime path).
//!
//!   cargo run --release -p ovseg-core --example segment_parity -- build/pipeline

mod common;

use std::path::Path;

use common::{f32s, label_differences, max_abs, pair, read_json, u16s};
use ovseg_core::segment::{MaskInput, Mode, SegmentOptions};
use ovseg_core::{init_runtime, Model, ModelOptions};

fn main() {
    let lib = std::env::var("ORT_DYLIB_PATH")
        .expect("set ORT_DYLIB_PATH to an absolute libonnxruntime path");
    init_runtime(Path::new(&lib)).expect("ONNX Runtime");
    let root = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "build/pipeline".into());
    let index = read_json(&Path::new(&root).join("index.json"));
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
        let strings = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_owned())
                .collect()
        };
        let image = std::fs::read(dir.join("image_u8.bin")).expect("image");
        let masks = case["callerMasks"]
            .as_bool()
            .unwrap()
            .then(|| f32s(&dir.join("masks_f32.bin")));
        let o = &case["options"];
        let options = SegmentOptions {
            mode: match o["mode"].as_str() {
                Some("demo") => Mode::Demo,
                _ => Mode::Semantic,
            },
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

        let want_valid: Vec<bool> = case["valid"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_bool().unwrap())
            .collect();
        let got_valid: Vec<bool> = got.segments.iter().map(|s| s.valid).collect();
        let want_used: Vec<usize> = case["used"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let got_used: Vec<usize> = (0..got.segments.len())
            .filter(|&q| got.segments[q].used)
            .collect();
        let want_scores = f32s(&dir.join("expected_scores.bin"));
        let dp = max_abs(
            &got.probabilities,
            &f32s(&dir.join("expected_probabilities.bin")),
        );
        let ds = max_abs(got.scores.as_deref().unwrap(), &want_scores);
        let (bad, ties) = label_differences(
            &got.labels,
            &u16s(&dir.join("expected_labels.bin")),
            &want_scores,
            h * w,
        );
        let ok = got_valid == want_valid
            && got_used == want_used
            && got.classes == strings(&case["classes"])
            && got.processing_size == pair(&case["processingSize"])
            && dp <= 1e-4
            && ds <= 1e-4
            && bad == 0;
        println!(
            "{}: {} masks ({} valid, {} used), processed at {:?}; probabilities {dp:.2e}, scores {ds:.2e}; labels differing {bad}, ties {ties}{}",
            case["name"].as_str().unwrap(),
            got_valid.len(),
            got_valid.iter().filter(|&&v| v).count(),
            got_used.len(),
            got.processing_size,
            if ok { "" } else { "  <-- FAIL" }
        );
        failures += usize::from(!ok);
    }
    println!(
        "segment parity: {} passed, {failures} failed",
        cases.len() - failures
    );
    std::process::exit(i32::from(failures > 0));
}
