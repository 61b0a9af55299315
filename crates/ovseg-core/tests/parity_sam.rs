//! The SAM automatic mask generator against segment-anything's `SamAutomaticMaskGenerator`
//! (`ovseg_tools.reference.sam_amg`: a tiny random-weight SAM, three images). Per image:
//! - the encoder input (PIL resize, normalization, padding): equal within 1e-6;
//! - the image embeddings of the exported encoder: within 1e-4, of the image and of a crop;
//! - the whole generator on the exported graphs, of a ViT SAM and of a TinyViT one (MobileSAM's
//!   encoder): the same masks (count, order, each matched with IoU >= 0.99), predicted IoUs
//!   within 1e-4;
//! - everything after the decoder on synthetic decoder outputs (discs of three radii around each
//!   point), where the IoU and stability filters and the box NMS have varied masks to work on:
//!   the same masks, boxes within a pixel;
//! - the same with one layer of crops and small-region removal (`crops`: islands beside the discs,
//!   holes inside them; OpenCV's connected components in the reference).
//!
//!   cargo test --release -p ovseg-core --test parity_sam -- --nocapture

mod common;

use std::path::Path;

use common::{f32s, fixture, max_abs, read_json, runtime};
use ovseg_core::graph::SessionOptions;
use ovseg_core::runtime::ExecutionProvider;
use ovseg_core::sam::{
    crop_boxes, crop_rgb, image_points, preprocess_shape, process_batch, AmgOptions, DecodedBatch,
    MaskSet, SamMask, SamModel,
};

/// The reference's options; those it leaves out at segment-anything's defaults.
fn options(v: &serde_json::Value) -> AmgOptions {
    let d = AmgOptions::default();
    let f = |k: &str, default: f32| v[k].as_f64().map_or(default, |x| x as f32);
    let u = |k: &str, default: usize| v[k].as_u64().map_or(default, |x| x as usize);
    AmgOptions {
        points_per_side: u("points_per_side", d.points_per_side),
        points_per_batch: u("points_per_batch", d.points_per_batch),
        pred_iou_thresh: f("pred_iou_thresh", d.pred_iou_thresh),
        stability_score_thresh: f("stability_score_thresh", d.stability_score_thresh),
        stability_score_offset: f("stability_score_offset", d.stability_score_offset),
        box_nms_thresh: f("box_nms_thresh", d.box_nms_thresh),
        crop_n_layers: u("crop_n_layers", d.crop_n_layers),
        crop_nms_thresh: f("crop_nms_thresh", d.crop_nms_thresh),
        crop_overlap_ratio: v["crop_overlap_ratio"]
            .as_f64()
            .unwrap_or(d.crop_overlap_ratio),
        crop_n_points_downscale_factor: u(
            "crop_n_points_downscale_factor",
            d.crop_n_points_downscale_factor,
        ),
        min_mask_region_area: v["min_mask_region_area"]
            .as_u64()
            .unwrap_or(d.min_mask_region_area),
    }
}

/// The generator after the decoder, on decoder outputs read from a file (every crop's batches in turn).
fn from_decoder_outputs(
    model: &SamModel,
    (h, w): (usize, usize),
    o: &AmgOptions,
    low_res: &[f32],
    ious: &[f32],
) -> Vec<SamMask> {
    let m = model.manifest.mask_size;
    let mut set = MaskSet::new((h, w));
    let mut start = 0;
    for (crop, layer) in crop_boxes((h, w), o.crop_n_layers, o.crop_overlap_ratio) {
        let size = (crop[3] - crop[1], crop[2] - crop[0]);
        let input_size = preprocess_shape(size.0, size.1, model.manifest.image_size);
        let frames = model.frames(input_size, crop, (h, w));
        let points = image_points(o.points_per_side_on(layer), size);
        let mut candidates = Vec::new();
        for batch in points.chunks(o.points_per_batch) {
            candidates.extend(process_batch(
                &DecodedBatch {
                    low_res: &low_res[start * 3 * m * m..][..batch.len() * 3 * m * m],
                    iou: &ious[start * 3..][..batch.len() * 3],
                    points: batch,
                },
                &frames,
                o,
            ));
            start += batch.len();
        }
        set.add_crop(crop, candidates, o);
    }
    assert_eq!(
        low_res.len(),
        start * 3 * m * m,
        "decoder outputs of every point"
    );
    set.finish(o)
}

fn iou(a: &[u8], b: &[u8]) -> f64 {
    let inter = a.iter().zip(b).filter(|(&x, &y)| x != 0 && y != 0).count();
    let union = a.iter().zip(b).filter(|(&x, &y)| x != 0 || y != 0).count();
    if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    }
}

/// The generated masks against the reference's masks file and records; the failures, printed.
fn compare(
    what: &str,
    got: &[SamMask],
    dir: &Path,
    file: &str,
    records: &serde_json::Value,
    plane: usize,
) -> usize {
    let want = std::fs::read(dir.join(file)).expect("masks file");
    let records = records.as_array().expect("records");
    let mut failures = 0;
    if got.len() != records.len() || want.len() != records.len() * plane {
        println!(
            "{what}: {} masks, the reference {}",
            got.len(),
            records.len()
        );
        return 1;
    }
    let mut worst = 1.0f64;
    for (k, (g, r)) in got.iter().zip(records).enumerate() {
        let overlap = iou(&g.mask, &want[k * plane..][..plane]);
        worst = worst.min(overlap);
        let b = &r["box"]; // x, y, w, h of the inclusive box
        let want_box = [0, 1, 2, 3].map(|i| b[i].as_u64().expect("box") as i64);
        let got_box = [
            g.bbox[0] as i64,
            g.bbox[1] as i64,
            (g.bbox[2] - g.bbox[0]) as i64,
            (g.bbox[3] - g.bbox[1]) as i64,
        ];
        let box_off = got_box
            .iter()
            .zip(&want_box)
            .map(|(a, b)| (a - b).abs())
            .max()
            .unwrap_or(0);
        let iou_off = (g.predicted_iou - r["predictedIou"].as_f64().expect("iou") as f32).abs();
        let point = [
            r["point"][0].as_f64().expect("x"),
            r["point"][1].as_f64().expect("y"),
        ];
        if overlap < 0.99
            || box_off > 1
            || iou_off > 1e-4
            || (g.point[0] - point[0]).abs() > 1e-9
            || (g.point[1] - point[1]).abs() > 1e-9
        {
            println!("{what} mask {k}: IoU {overlap:.4} with the reference's, box {got_box:?} vs {want_box:?}, predicted IoU off by {iou_off:e}, point {:?} vs {point:?}", g.point);
            failures += 1;
        }
    }
    println!(
        "{what}: {} masks, worst IoU with the reference's {worst:.4}",
        got.len()
    );
    failures
}

#[test]
fn automatic_masks_match_segment_anything() {
    runtime();
    let dir = fixture("sam");
    let index = read_json(&dir.join("index.json"));
    // The model directory `index[key]` names, on the CPU.
    let load = |key: &str| {
        SamModel::load(
            &dir.join(index[key].as_str().expect(key)),
            SessionOptions {
                provider: ExecutionProvider::Cpu,
                threads: None,
            },
        )
        .unwrap_or_else(|e| panic!("{key}: {e}"))
    };
    let model = load("model");
    let tiny_vit = load("tinyVitModel");
    let graph_options = options(&index["graphOptions"]);
    let runs = [
        ("synthetic", options(&index["syntheticOptions"])),
        ("crops", options(&index["cropOptions"])),
    ];
    let mut failures = 0;
    let mut cases = 0;
    for case in index["cases"].as_array().expect("cases") {
        let name = case["name"].as_str().expect("name");
        let (h, w) = (
            case["height"].as_u64().unwrap() as usize,
            case["width"].as_u64().unwrap() as usize,
        );
        let rgb = std::fs::read(dir.join(format!("{name}.rgb"))).expect("image");

        let (input, input_size) = model.preprocess(&rgb, (h, w)).expect("preprocess");
        let input_off = max_abs(&input, &f32s(&dir.join(format!("{name}.input.f32"))));
        let want_size = (
            case["inputSize"][0].as_u64().unwrap() as usize,
            case["inputSize"][1].as_u64().unwrap() as usize,
        );
        let embedded = model.embed(&rgb, (h, w)).expect("embed");
        let embed_off = max_abs(
            &embedded.embeddings,
            &f32s(&dir.join(format!("{name}.embeddings.f32"))),
        );
        println!("{name}: input off by {input_off:e}, embeddings by {embed_off:e}");
        cases += 2;
        if input_off > 1e-6 || input_size != want_size {
            println!("{name}: the encoder input differs (size {input_size:?} vs {want_size:?})");
            failures += 1;
        }
        if embed_off > 1e-4 {
            failures += 1;
        }
        let b = &case["cropBox"];
        let crop = [0, 1, 2, 3].map(|i| b[i].as_u64().expect("cropBox") as usize);
        let crop_embedded = model
            .embed(
                &crop_rgb(&rgb, (h, w), crop),
                (crop[3] - crop[1], crop[2] - crop[0]),
            )
            .expect("embed a crop");
        let crop_off = max_abs(
            &crop_embedded.embeddings,
            &f32s(&dir.join(format!("{name}.crop.embeddings.f32"))),
        );
        println!("{name}: crop {crop:?} embeddings off by {crop_off:e}");
        cases += 1;
        if crop_off > 1e-4 {
            failures += 1;
        }

        let (got, _) = model
            .generate(&rgb, (h, w), &graph_options)
            .expect("generate");
        cases += 1;
        failures += compare(
            &format!("{name}/graph"),
            &got,
            &dir,
            &format!("{name}.graph.masks.u8"),
            &case["graph"],
            h * w,
        );
        let (got, _) = tiny_vit
            .generate(&rgb, (h, w), &graph_options)
            .expect("generate (TinyViT)");
        cases += 1;
        failures += compare(
            &format!("{name}/tiny-vit-graph"),
            &got,
            &dir,
            &format!("{name}.tiny-vit.graph.masks.u8"),
            &case["tinyVitGraph"],
            h * w,
        );

        for (run, o) in &runs {
            let low_res = f32s(&dir.join(format!("{name}.{run}.lowres.f32")));
            let ious = f32s(&dir.join(format!("{name}.{run}.iou.f32")));
            let got = from_decoder_outputs(&model, (h, w), o, &low_res, &ious);
            cases += 1;
            failures += compare(
                &format!("{name}/{run}"),
                &got,
                &dir,
                &format!("{name}.{run}.masks.u8"),
                &case[*run],
                h * w,
            );
        }
    }
    common::assert_all_passed("SAM automatic masks", cases, failures);
}
