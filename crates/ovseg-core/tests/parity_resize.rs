//! Compares `resample::resize_rgb` with PIL (fixtures from `ovseg_tools.reference.image_resize`):
//! sizes by detectron2's rule and every output byte must be identical.
//!
//!   cargo test --release -p ovseg-core --test parity_resize -- --nocapture

mod common;

use common::{assert_all_passed, fixture, pair, read_json};
use ovseg_core::resample::{resize_rgb, shortest_edge_size};

#[test]
fn resize_matches_pil() {
    let root = fixture("resize");
    let index = read_json(&root.join("index.json"));
    let cases = index["cases"].as_array().expect("cases");
    let mut failures = 0;
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let (size, out_size) = (pair(&case["size"]), pair(&case["outSize"]));
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
    assert_all_passed("resize parity", cases.len(), failures);
}
