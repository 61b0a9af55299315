//! Compares `image_resize` with PIL (fixtures from tools/ovseg_tools/image_resize_reference.py):
//! sizes by detectron2's rule and every output byte must be identical. Exits non-zero otherwise.
//!
//!   cargo run --release -p ovseg-core --example resize_parity -- build/resize

use std::path::Path;

use ovseg_core::image_resize::{resize_rgb, shortest_edge_size};

fn main() {
    let root =
        Path::new(std::env::args().nth(1).as_deref().unwrap_or("build/resize")).to_path_buf();
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("index.json")).expect("index"))
            .expect("json");
    let cases = index["cases"].as_array().expect("cases");
    let mut failures = 0;
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let pair = |k: &str| {
            (
                case[k][0].as_u64().unwrap() as usize,
                case[k][1].as_u64().unwrap() as usize,
            )
        };
        let (size, out_size) = (pair("size"), pair("outSize"));
        let input = std::fs::read(root.join(format!("{name}.in.bin"))).expect("input");
        let want = std::fs::read(root.join(format!("{name}.out.bin"))).expect("output");
        let got = resize_rgb(&input, size, out_size).expect("resize");
        let size_ok = case["kind"] != "shortest-edge"
            || shortest_edge_size(size.0, size.1, 640, 2560) == out_size;
        let differing =
            got.iter().zip(&want).filter(|(a, b)| a != b).count() + got.len().abs_diff(want.len());
        if differing > 0 || !size_ok {
            failures += 1;
            println!(
                "{name}: {differing} bytes differ, size rule {}",
                if size_ok { "ok" } else { "DIFFERS" }
            );
        }
    }
    println!(
        "resize parity: {} passed, {failures} failed",
        cases.len() - failures
    );
    std::process::exit(i32::from(failures > 0));
}
