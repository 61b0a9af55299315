//! Cancelling core calls (`Cancel`, what an AbortSignal drives) on the bundled tiny model through a
//! real ONNX Runtime (ORT_DYLIB_PATH, set by scripts/test-all.sh).

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use ovseg_core::segment::SegmentOptions;
use ovseg_core::{Cancel, ErrorCode, Model, ModelOptions, Pixels};

fn model() -> Model {
    common::runtime();
    let tiny = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/tiny-random");
    Model::load(&tiny, &ModelOptions::default()).unwrap()
}

fn image(side: usize) -> Vec<u8> {
    (0..side * side * 3)
        .map(|i| (i * 7919 % 251) as u8)
        .collect()
}

fn classes(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix} {i}")).collect()
}

#[test]
fn a_call_cancelled_before_it_starts_runs_nothing() {
    let model = model();
    let token = Cancel::new();
    token.cancel();
    let rgb = image(64);
    let err = token
        .scope(|| {
            model.segment(
                &rgb,
                (64, 64),
                None,
                &classes("a", 3),
                &SegmentOptions::default(),
            )
        })
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Aborted);
    assert_eq!(model.stats().text_encoder_runs, 0);
    // The same model still works outside the cancelled scope.
    let ok = model.segment(
        &rgb,
        (64, 64),
        None,
        &classes("a", 3),
        &SegmentOptions::default(),
    );
    assert!(ok.is_ok(), "{ok:?}");
}

#[test]
fn onnx_runtime_stops_a_run_whose_call_was_cancelled() {
    // encode_image has no stage boundary: only ONNX Runtime's terminate flag can stop it.
    let model = model();
    let token = Cancel::new();
    token.cancel();
    let pixels = image(64);
    let err = token
        .scope(|| model.encode_image(Pixels::Rgb8(&pixels), None, true, true))
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Aborted, "{}", err.message);
}

#[test]
fn a_running_segment_stops_when_cancelled_from_another_thread() {
    let model = Arc::new(model());
    let side = 512;
    let rgb = Arc::new(image(side));
    let options = SegmentOptions {
        scores: true,
        ..Default::default()
    };
    // How long the whole call takes here (other class names below: the class cache must not help).
    let start = Instant::now();
    model
        .segment(&rgb, (side, side), None, &classes("first", 64), &options)
        .unwrap();
    let full = start.elapsed();

    let token = Cancel::new();
    let worker = {
        let (model, rgb, token, options) = (model.clone(), rgb.clone(), token.clone(), options);
        std::thread::spawn(move || {
            token
                .scope(|| model.segment(&rgb, (side, side), None, &classes("second", 64), &options))
        })
    };
    // A quarter of the way in: the call is running, far from its end.
    std::thread::sleep(full / 4);
    let cancelled_at = Instant::now();
    token.cancel();
    let result = worker.join().unwrap();
    let stopped_after = cancelled_at.elapsed();
    assert_eq!(
        result.map(|_| ()).unwrap_err().code,
        ErrorCode::Aborted,
        "the call ran to its end ({full:?}) despite the cancel at {:?}",
        full / 4
    );
    eprintln!("full call {full:?}; stopped {stopped_after:?} after the cancel");
}
