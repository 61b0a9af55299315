//! Compares `mask_crop::crop_masks` with the PyTorch reference's fixtures
//! (`ovseg_tools.reference.mask_crop`): boxes and masks equal, crops within 1e-4.
//!
//!   cargo test --release -p ovseg-core --test parity_crop -- --nocapture

mod common;

use std::path::Path;

use common::{assert_all_passed, f32s, fixture, max_abs, read_json};

use ovseg_core::mask_crop::{crop_masks, CropOptions};

fn rgb(v: &serde_json::Value) -> [f32; 3] {
    [0, 1, 2].map(|i| v[i].as_f64().expect("3 numbers") as f32)
}

#[test]
fn crops_match_pytorch() {
    let index = read_json(&fixture("crops").join("index.json"));
    let mut failures = 0;
    for case in index["cases"].as_array().expect("cases") {
        let name = case["name"].as_str().unwrap();
        let dir = Path::new(case["dir"].as_str().unwrap());
        let (h, w) = (
            case["height"].as_u64().unwrap() as usize,
            case["width"].as_u64().unwrap() as usize,
        );
        let image = std::fs::read(dir.join("image_u8.bin")).expect("image");
        let masks = f32s(&dir.join("masks_f32.bin"));
        let options = CropOptions {
            threshold: case["threshold"].as_f64().unwrap() as f32,
            size: case["size"].as_u64().unwrap() as usize,
            mean: rgb(&case["mean"]),
            std: rgb(&case["std"]),
        };
        let got = crop_masks(&image, h, w, &masks, &options).expect("crop");
        let boxes: Vec<Option<[usize; 4]>> = case["boxes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                b.as_array()
                    .map(|a| [0, 1, 2, 3].map(|i| a[i].as_u64().unwrap() as usize))
            })
            .collect();
        let want_pixels = f32s(&dir.join("expected_pixels.bin"));
        let want_masks = std::fs::read(dir.join("expected_masks.bin")).expect("masks");
        let pixel_diff = max_abs(&got.pixels, &want_pixels);
        let masks_equal = got.masks == want_masks;
        let ok = got.boxes == boxes && masks_equal && pixel_diff <= 1e-4;
        println!(
            "{name}: {} queries, {} valid; boxes {}, masks {}, crops max abs diff {pixel_diff:.2e}",
            boxes.len(),
            got.valid_count(),
            if got.boxes == boxes {
                "equal"
            } else {
                "DIFFER"
            },
            if masks_equal { "equal" } else { "DIFFER" },
        );
        failures += usize::from(!ok);
    }
    assert_all_passed(
        "mask-crop parity",
        index["cases"].as_array().unwrap().len(),
        failures,
    );
}
