//! The text encoder cut to each batch's longest text against the full context, side by side: a new
//! vocabulary of 6 classes x OVSeg's 14 templates, per model, alternating which runs first;
//! medians of `--repeats` runs, and the largest difference of the unit features.
//!
//! cargo run --release --example text_length -- --runtime /abs/libonnxruntime.so [--repeats 5] DIR...

use std::path::PathBuf;
use std::time::Instant;

use ovseg_core::{Model, ModelOptions, Overflow};

const CLASSES: [&str; 6] = ["wall", "road", "sky", "grass", "red car", "person"];

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let (mut runtime, mut repeats, mut dirs) = (None, 5usize, Vec::new());
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runtime" => runtime = args.next().map(PathBuf::from),
            "--repeats" => {
                repeats = args
                    .next()
                    .and_then(|r| r.parse().ok())
                    .ok_or("--repeats N")?
            }
            dir => dirs.push(PathBuf::from(dir)),
        }
    }
    let runtime = runtime.ok_or("--runtime /abs/libonnxruntime.so is required")?;
    let info = ovseg_core::init_runtime(&runtime).map_err(|e| e.to_string())?;
    println!("| model | texts | longest text (tokens) | full context (ms) | cut (ms) | speed-up | max abs diff (unit rows) |");
    println!("|---|---|---|---|---|---|---|");
    for dir in dirs {
        let model = Model::load(&dir, &ModelOptions::default()).map_err(|e| e.to_string())?;
        if !model.text_dynamic_length() {
            return Err(format!(
                "{}: its text encoder has a fixed token axis",
                dir.display()
            ));
        }
        let texts: Vec<String> = CLASSES
            .iter()
            .flat_map(|c| {
                model
                    .manifest
                    .templates
                    .iter()
                    .map(move |t| t.replace("{}", c))
            })
            .collect();
        let ids = model
            .tokenize(&texts, Overflow::Error)
            .map_err(|e| e.to_string())?;
        let context = model.manifest.clip.context_length;
        let longest = ids
            .chunks(context)
            .map(ovseg_core::text_encoder::text_length)
            .max()
            .unwrap_or(0);
        let full = || model.encode_text_full_context(&texts, Overflow::Error, true);
        let cut = || model.encode_text(&texts, Overflow::Error, true);
        let diff = {
            let (a, b) = (
                full().map_err(|e| e.to_string())?,
                cut().map_err(|e| e.to_string())?,
            );
            a.data
                .iter()
                .zip(&b.data)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max)
        };
        let (mut t_full, mut t_cut) = (Vec::new(), Vec::new());
        for i in 0..repeats {
            for first in [i % 2 == 0, i % 2 != 0] {
                let start = Instant::now();
                if first { full() } else { cut() }.map_err(|e| e.to_string())?;
                let ms = start.elapsed().as_secs_f64() * 1e3;
                if first {
                    t_full.push(ms)
                } else {
                    t_cut.push(ms)
                }
            }
        }
        let (f, c) = (median(t_full), median(t_cut));
        println!(
            "| {} | {} | {longest} of {context} | {f:.1} | {c:.1} | {:.2}x | {diff:.1e} |",
            model.manifest.name,
            texts.len(),
            f / c
        );
    }
    println!(
        "\nONNX Runtime {}, {repeats} repeats each, medians",
        info.version
    );
    Ok(())
}
