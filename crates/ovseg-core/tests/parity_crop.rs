//! Compares `mask_crop::crop_masks` with the PyTorch reference's fixtures
//! (tools/ovseg_tools/mask_crop_reference.py). Exits non-zero on any difference past 1e-4.
//!
//!   cargo run --release -p ovseg-core --example crop_parity -- build/crops
//!   cargo run --release -p ovseg-core --example crop_parity -- build/crops --time bench-100-blobs 20

mod common;

use std::path::Path;
use std::time::Instant;

use common::{f32s, max_abs, read_json};

use ovseg_core::mask_crop::{crop_masks, crop_masks_into, CropOptions};

fn rgb(v: &serde_json::Value) -> [f32; 3] {
    [0, 1, 2].map(|i| v[i].as_f64().expect("3 numbers") as f32)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let root = Path::new(args.get(1).expect("usage: crop_parity DIR [--time CASE N]"));
    let index = read_json(&root.join("index.json"));
    let timing = args.get(2).map(|a| a == "--time").unwrap_or(false);
    let mut failures = 0;
    for case in index["cases"].as_array().expect("cases") {
        let name = case["name"].as_str().unwrap();
        if timing && name != args[3] {
            continue;
        }
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
        if timing {
            let runs: usize = args[4].parse().expect("runs");
            let median = |mut seconds: Vec<f64>| {
                seconds.sort_by(f64::total_cmp);
                seconds[seconds.len() / 2]
            };
            let time = |f: &mut dyn FnMut()| {
                f();
                median(
                    (0..runs)
                        .map(|_| {
                            let t0 = Instant::now();
                            f();
                            t0.elapsed().as_secs_f64()
                        })
                        .collect(),
                )
            };
            let fresh = time(&mut || {
                std::hint::black_box(crop_masks(&image, h, w, &masks, &options).unwrap());
            });
            let mut reused = crop_masks(&image, h, w, &masks, &options).unwrap();
            let reuse = time(&mut || {
                crop_masks_into(&image, h, w, &masks, &options, &mut reused).unwrap();
                std::hint::black_box(&reused);
            });
            println!("{{\"case\": \"{name}\", \"freshOutputSeconds\": {fresh}, \"reusedOutputSeconds\": {reuse}, \"runs\": {runs}}}");
            return;
        }
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
    let total = index["cases"].as_array().unwrap().len();
    println!(
        "mask-crop parity: {} passed, {failures} failed",
        total - failures
    );
    std::process::exit(i32::from(failures > 0));
}
