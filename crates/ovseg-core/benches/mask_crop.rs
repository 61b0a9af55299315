//! Times `crop_masks` (a fresh output) and `crop_masks_into` (reused buffers, as `segment()` does)
//! on one case of the mask-crop fixtures; bench/mask_crop.py puts it beside the PyTorch reference.
//! Prints one JSON line of median seconds.
//!
//!   cargo bench -p ovseg-core --bench mask_crop -- build/crops bench-100-blobs 11

use std::path::Path;
use std::time::Instant;

use ovseg_core::mask_crop::{crop_masks, crop_masks_into, CropOptions};

fn main() {
    // `cargo bench` passes `--bench` first.
    let args: Vec<String> = std::env::args().filter(|a| a != "--bench").collect();
    let (Some(root), Some(name), Some(runs)) = (args.get(1), args.get(2), args.get(3)) else {
        panic!("usage: mask_crop FIXTURE_DIR CASE RUNS");
    };
    let runs: usize = runs.parse().expect("runs");
    let read = |p: &Path| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let index: serde_json::Value =
        serde_json::from_slice(&read(&Path::new(root).join("index.json"))).expect("index.json");
    let case = index["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .find(|c| c["name"] == name.as_str())
        .unwrap_or_else(|| panic!("no case {name}"));
    let dir = Path::new(case["dir"].as_str().unwrap());
    let (h, w) = (
        case["height"].as_u64().unwrap() as usize,
        case["width"].as_u64().unwrap() as usize,
    );
    let image = read(&dir.join("image_u8.bin"));
    let masks: Vec<f32> = read(&dir.join("masks_f32.bin"))
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let rgb = |v: &serde_json::Value| [0, 1, 2].map(|i| v[i].as_f64().expect("3 numbers") as f32);
    let options = CropOptions {
        threshold: case["threshold"].as_f64().unwrap() as f32,
        size: case["size"].as_u64().unwrap() as usize,
        mean: rgb(&case["mean"]),
        std: rgb(&case["std"]),
    };
    let median = |f: &mut dyn FnMut()| {
        f();
        let mut seconds: Vec<f64> = (0..runs)
            .map(|_| {
                let t0 = Instant::now();
                f();
                t0.elapsed().as_secs_f64()
            })
            .collect();
        seconds.sort_by(f64::total_cmp);
        seconds[seconds.len() / 2]
    };
    let fresh = median(&mut || {
        std::hint::black_box(crop_masks(&image, h, w, &masks, &options).unwrap());
    });
    let mut reused = crop_masks(&image, h, w, &masks, &options).unwrap();
    let reuse = median(&mut || {
        crop_masks_into(&image, h, w, &masks, &options, &mut reused).unwrap();
        std::hint::black_box(&reused);
    });
    println!("{{\"case\": \"{name}\", \"freshOutputSeconds\": {fresh}, \"reusedOutputSeconds\": {reuse}, \"runs\": {runs}}}");
}
