//! The text encoder runs each batch cut to its longest text (graphs with a dynamic token axis) and
//! gives the features of the full-context run: within 1e-5 on unit rows, for the tiny, ViT-B/16 and
//! ViT-L/14 geometries of the parity fixtures, on texts of every length up to the context. A graph
//! whose token axis is fixed (exports before format version 3) still loads and runs at the context.
//!
//!   cargo test --release -p ovseg-core --test text_length -- --nocapture

mod common;

use common::{fixture, max_abs, read_json, runtime, strings};
use ovseg_core::{Model, ModelOptions, Overflow};

const TOL: f32 = 1e-5;

/// The parity case's texts, OVSeg's templates filled with `classes` class names of varied length
/// (24 make over 256 texts: more than one run, sorted by length across them), and one text of
/// exactly the context (truncated).
fn texts(case_texts: Vec<String>, model: &Model, classes: usize) -> Vec<String> {
    let mut all = case_texts;
    for i in 0..classes {
        let class = match i % 3 {
            0 => format!("thing {i}"),
            1 => format!("a red car parked next to a tall glass skyscraper {i}"),
            _ => "sky".repeat(1 + i / 3),
        };
        all.extend(
            model
                .manifest
                .templates
                .iter()
                .map(|t| t.replace("{}", &class)),
        );
    }
    all.push("word ".repeat(200));
    all
}

#[test]
fn cut_runs_equal_the_full_context() {
    runtime();
    let index = read_json(&fixture("parity/index.json"));
    for case in index["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let dir = std::path::Path::new(case["dir"].as_str().unwrap()).join("model");
        let model = Model::load(&dir, &ModelOptions::default()).unwrap();
        assert!(
            model.text_dynamic_length(),
            "{name}: the export has a dynamic token axis"
        );
        // The tiny geometry runs several text-encoder batches; the large ones one (CI time).
        let classes = if name == "tiny" { 24 } else { 3 };
        let texts = texts(strings(&case["texts"]), &model, classes);
        let cut = model.encode_text(&texts, Overflow::Truncate, true).unwrap();
        let full = model
            .encode_text_full_context(&texts, Overflow::Truncate, true)
            .unwrap();
        let diff = max_abs(&cut.data, &full.data);
        println!(
            "{name}: {} texts, cut vs full context max abs {diff:.2e}",
            texts.len()
        );
        assert!(diff <= TOL, "{name}: {diff}");
    }
}

#[test]
fn a_fixed_token_axis_runs_at_the_context() {
    runtime();
    let index = read_json(&fixture("variants/index.json"));
    let dynamic = Model::load(
        std::path::Path::new(index["model"].as_str().unwrap()),
        &ModelOptions::default(),
    )
    .unwrap();
    let fixed = Model::load(
        std::path::Path::new(index["fixedText"].as_str().unwrap()),
        &ModelOptions::default(),
    )
    .unwrap();
    assert!(dynamic.text_dynamic_length() && !fixed.text_dynamic_length());
    let texts = ["a photo of a cat.", "sky", "a red car next to a skyscraper"];
    let a = fixed.encode_text(&texts, Overflow::Error, true).unwrap();
    let b = dynamic.encode_text(&texts, Overflow::Error, true).unwrap();
    assert!(max_abs(&a.data, &b.data) <= TOL);
}
