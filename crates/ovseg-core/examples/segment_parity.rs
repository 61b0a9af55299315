//! Compares `Model::segment` (caller masks) with the PyTorch pipeline reference's fixtures
//! (tools/ovseg_tools/pipeline_reference.py): probabilities and scores within 1e-4 (max abs),
//! valid masks and processing size equal, label maps identical except exact ties.
//! Needs ORT_DYLIB_PATH (an absolute libonnxruntime path).
//!
//!   cargo run --release -p ovseg-core --example segment_parity -- build/pipeline

use std::path::Path;

use ovseg_core::segment::{MaskInput, SegmentOptions};
use ovseg_core::{init_runtime, Model, ModelOptions};

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
    let lib = std::env::var("ORT_DYLIB_PATH")
        .expect("set ORT_DYLIB_PATH to an absolute libonnxruntime path");
    init_runtime(Path::new(&lib)).expect("ONNX Runtime");
    let root = Path::new(
        std::env::args()
            .nth(1)
            .as_deref()
            .unwrap_or("build/pipeline"),
    )
    .to_path_buf();
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("index.json")).expect("index"))
            .expect("json");
    let cases = index["cases"].as_array().expect("cases");
    let mut failures = 0;
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let dir = Path::new(case["dir"].as_str().unwrap());
        let model = Model::load(
            Path::new(case["model"].as_str().unwrap()),
            &ModelOptions::default(),
        )
        .expect("model");
        let (h, w) = (
            case["size"][0].as_u64().unwrap() as usize,
            case["size"][1].as_u64().unwrap() as usize,
        );
        let classes: Vec<String> = case["classes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_owned())
            .collect();
        let image = std::fs::read(dir.join("image_u8.bin")).expect("image");
        let masks = f32s(&dir.join("masks_f32.bin"));
        let options = SegmentOptions {
            scores: true,
            ..Default::default()
        };
        let got = model
            .segment(&image, (h, w), MaskInput::Soft(&masks), &classes, &options)
            .expect("segment");

        let want_valid: Vec<bool> = case["valid"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_bool().unwrap())
            .collect();
        let got_valid: Vec<bool> = got.segments.iter().map(|s| s.valid).collect();
        let processing = (
            case["processingSize"][0].as_u64().unwrap() as usize,
            case["processingSize"][1].as_u64().unwrap() as usize,
        );
        let dp = max_abs(
            &got.probabilities,
            &f32s(&dir.join("expected_probabilities.bin")),
        );
        let want_scores = f32s(&dir.join("expected_scores.bin"));
        let ds = max_abs(got.scores.as_deref().unwrap(), &want_scores);
        let want_labels: Vec<u16> = std::fs::read(dir.join("expected_labels.bin"))
            .unwrap()
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        let plane = h * w;
        let (mut ties, mut bad) = (0, 0);
        for (i, (&g, &e)) in got.labels.iter().zip(&want_labels).enumerate() {
            if g != e {
                if want_scores[usize::from(g) * plane + i]
                    == want_scores[usize::from(e) * plane + i]
                {
                    ties += 1;
                } else {
                    bad += 1;
                }
            }
        }
        let ok = got_valid == want_valid
            && got.processing_size == processing
            && dp <= 1e-4
            && ds <= 1e-4
            && bad == 0
            && got.labels.len() == want_labels.len();
        println!(
            "{name}: {} masks ({} valid), processed at {:?}; probabilities {dp:.2e}, scores {ds:.2e}; labels differing {bad}, ties {ties}{}",
            got_valid.len(),
            got_valid.iter().filter(|&&v| v).count(),
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
