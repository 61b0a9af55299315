//! Times SAM's mask post-processing (`sam::process_batch`: upscaling, stability score, binary mask
//! and box) on one decoder batch of synthetic logits, with every mask kept (the worst case of
//! bench/sam.ts's "every mask kept"): 64 prompts, 3 masks each, 256x256 logits to a 1024x768
//! picture. Prints the median milliseconds per mask.
//!
//!   cargo bench -p ovseg-core --bench sam_postprocess -- 11

use std::time::Instant;

use ovseg_core::sam::{process_batch, AmgOptions, DecodedBatch, Frames};

fn main() {
    // `cargo bench` passes `--bench` first.
    let args: Vec<String> = std::env::args().filter(|a| a != "--bench").collect();
    let runs: usize = args.get(1).map_or(11, |r| r.parse().expect("runs"));
    let (m, points) = (256, 64);
    // Discs of logits around each point, as a decoder's (their sizes vary).
    let low_res: Vec<f32> = (0..points * 3)
        .flat_map(|k| {
            let (cx, cy, r) = ((k * 37) % m, (k * 53) % m, 10.0 + (k % 7) as f32 * 12.0);
            (0..m * m).map(move |i| {
                let (x, y) = ((i % m) as f32 - cx as f32, (i / m) as f32 - cy as f32);
                (r - (x * x + y * y).sqrt()) / 4.0
            })
        })
        .collect();
    let iou = vec![0.9f32; points * 3];
    let pts: Vec<[f64; 2]> = (0..points).map(|k| [k as f64, k as f64]).collect();
    let frames = Frames {
        mask_size: m,
        image_size: 1024,
        input_size: (768, 1024),
        original: (768, 1024),
        crop: [0, 0, 1024, 768],
        image: (768, 1024),
        mask_threshold: 0.0,
    };
    let options = AmgOptions {
        pred_iou_thresh: 0.0,
        stability_score_thresh: 0.0,
        ..AmgOptions::default()
    };
    let batch = DecodedBatch {
        low_res: &low_res,
        iou: &iou,
        points: &pts,
    };
    let mut times = Vec::new();
    let mut kept = 0;
    for _ in 0..runs {
        let start = Instant::now();
        kept = process_batch(&batch, &frames, &options).len();
        times.push(start.elapsed().as_secs_f64() * 1e3 / (points * 3) as f64);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{{\"masks\": {}, \"kept\": {kept}, \"threads\": {}, \"msPerMask\": {:.4}}}",
        points * 3,
        rayon::current_num_threads(),
        times[runs / 2]
    );
}
