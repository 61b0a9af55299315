//! The core on the bundled tiny model through a real ONNX Runtime (ORT_DYLIB_PATH, set by
//! scripts/test-all.sh to onnxruntime-node's library).

use std::path::{Path, PathBuf};

use ovseg_core::{ErrorCode, Model, ModelOptions, Overflow, Pixels, PromptSource};

mod common;

use common::runtime;

fn tiny() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/tiny-random")
}

#[test]
fn tiny_model_encodes_text_and_images() {
    runtime();
    let model = Model::load(&tiny(), &ModelOptions::default()).unwrap();
    assert_eq!(model.prompt_depth(), 3);
    assert_eq!(model.provider().name, "cpu");
    let text = model
        .encode_text(&["a photo of a cat", "a dog"], Overflow::Error, true)
        .unwrap();
    assert_eq!((text.rows, text.dim), (2, 16));
    let norm: f32 = text.data[..16].iter().map(|v| v * v).sum();
    assert!((norm - 1.0).abs() < 1e-5);

    let pixels = vec![128u8; 2 * 64 * 64 * 3];
    let mut masks = vec![0u8; 2 * 64 * 64];
    masks[..64 * 64].fill(1);
    let with = model
        .encode_image(Pixels::Rgb8(&pixels), Some(&masks), true, false)
        .unwrap();
    let without = model
        .encode_image(Pixels::Rgb8(&pixels), Some(&masks), false, false)
        .unwrap();
    // Image 0 has a full mask: prompts change nothing. Image 1 is all background: they do.
    let diff = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    };
    assert!(diff(&with.data[..16], &without.data[..16]) < 1e-5);
    assert!(diff(&with.data[16..], &without.data[16..]) > 1e-3);
}

#[test]
fn class_embeddings_have_unit_rows_and_optional_no_object() {
    runtime();
    let model = Model::load(
        &tiny(),
        &ModelOptions {
            prompts: PromptSource::Disabled,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(model.prompt_depth(), 0);
    let m = model
        .class_embeddings(&["grass", "sky"], None, Overflow::Error, true)
        .unwrap();
    assert_eq!(m.rows, 3);
    for row in m.data.chunks(m.dim) {
        let norm: f32 = row.iter().map(|v| v * v).sum();
        assert!((norm - 1.0).abs() < 1e-5);
    }
}

#[test]
fn bad_inputs_are_coded() {
    runtime();
    let model = Model::load(&tiny(), &ModelOptions::default()).unwrap();
    let err = |r: ovseg_core::Result<ovseg_core::Features>| r.unwrap_err().code;
    assert_eq!(
        err(model.encode_image(Pixels::Normalized(&[0.0; 10]), None, true, true)),
        ErrorCode::InvalidImage
    );
    assert_eq!(
        err(model.encode_image(Pixels::Rgb8(&[0; 64 * 64 * 3]), Some(&[1; 7]), true, true)),
        ErrorCode::InvalidMask
    );
    assert_eq!(
        err(model.encode_text(&[] as &[&str], Overflow::Error, true)),
        ErrorCode::EmptyInput
    );
    assert_eq!(
        err(model.class_embeddings(
            &["a"],
            Some(&["no slot".to_owned()]),
            Overflow::Error,
            false
        )),
        ErrorCode::InvalidArgument
    );
    let missing = Model::load(Path::new("/nonexistent/model"), &ModelOptions::default())
        .err()
        .unwrap();
    assert_eq!(missing.code, ErrorCode::ModelNotFound);
}
