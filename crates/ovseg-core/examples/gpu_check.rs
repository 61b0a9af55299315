//! CUDA-vs-CPU parity and GPU timings of the core (scripts/gpu-check.sh runs it; the GPU machine
//! needs no Node.js). For each `--model NAME=DIR[,VARIANT]` (VARIANT: a copy of DIR with float16 or
//! int8 CLIP encoders, ovseg_tools.export.fp16 / .int8): the same model on CPU and on
//! `--provider`, compared on text features, 100 masked crops, the generator's masks and
//! `segment()`'s label map; then, on the provider, the image encoder over 100 masked crops in
//! batches of 1, 32 and 100 and `segment()` end to end at the generator's 100 proposals.
//! With `--concurrency N` (default 16; 0: none), N threads make `segment()` calls with 8 caller
//! masks each at once, cross-request batching off and on: images/s and p50/p99 latency.
//! Writes `--out` (JSON) and the same as a markdown table beside it. `--no-parity` skips the CPU
//! side; `--profile 1,100` adds ONNX Runtime's profile of the image encoder at those batch sizes.
//!
//! cargo run --release --example gpu_check -- --runtime /abs/libonnxruntime.so \
//!   --provider cuda --model vit-b-16=DIR,DIR16 --out report.json [--repeats 10]

use std::path::{Path, PathBuf};
use std::time::Instant;

use ovseg_core::batcher::BatchOptions;
use ovseg_core::segment::{MaskInput, SegmentOptions, Segmentation};
use ovseg_core::{ExecutionProvider, Model, ModelOptions, Overflow, Pixels};
use serde_json::{json, Value};

const CLASSES: [&str; 6] = ["wall", "road", "sky", "grass", "car", "person"];
const CROPS: usize = 100;
const IMAGE: (usize, usize) = (480, 640);
/// Largest difference of unit-row features and generator mask probabilities accepted between
/// the provider and CPU: float32 graphs, and float16 encoders against the float32 CPU model.
const TOLERANCE_FLOAT32: f64 = 1e-3;
const TOLERANCE_FP16: f64 = 1e-2;
const PRECISIONS: [&str; 3] = ["float32", "fp16", "int8"];

struct Args {
    runtime: PathBuf,
    provider: ExecutionProvider,
    models: Vec<(String, PathBuf, Option<PathBuf>)>,
    out: PathBuf,
    repeats: usize,
    /// Skip the CPU reference and the parity checks (timings and profiles only).
    no_parity: bool,
    /// Profile the image encoder at these batch sizes.
    profile: Vec<usize>,
    /// Threads of concurrent `segment()` calls for the batching rows (0: none).
    concurrency: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let (mut runtime, mut provider, mut out, mut repeats) =
        (None, ExecutionProvider::Cuda, None, 10);
    let (mut no_parity, mut profile, mut concurrency) = (false, Vec::new(), 16);
    let mut models = Vec::new();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--runtime" => runtime = Some(PathBuf::from(value()?)),
            "--no-parity" => no_parity = true,
            "--profile" => {
                profile = value()?
                    .split(',')
                    .map(|b| b.parse().map_err(|e| format!("--profile: {e}")))
                    .collect::<Result<_, _>>()?
            }
            "--out" => out = Some(PathBuf::from(value()?)),
            "--concurrency" => {
                concurrency = value()?
                    .parse()
                    .map_err(|e| format!("--concurrency: {e}"))?
            }
            "--repeats" => repeats = value()?.parse().map_err(|e| format!("--repeats: {e}"))?,
            "--provider" => {
                provider = match value()?.as_str() {
                    "cpu" => ExecutionProvider::Cpu,
                    "cuda" => ExecutionProvider::Cuda,
                    "auto" => ExecutionProvider::Auto,
                    other => return Err(format!("unknown provider {other}")),
                }
            }
            "--model" => {
                let spec = value()?;
                let (name, dirs) = spec.split_once('=').ok_or("--model NAME=DIR[,VARIANT]")?;
                let mut dirs = dirs.split(',').map(PathBuf::from);
                let fp32 = dirs.next().ok_or("--model needs a directory")?;
                models.push((name.to_owned(), fp32, dirs.next()));
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Args {
        runtime: runtime.ok_or("--runtime is required")?,
        provider,
        models,
        out: out.ok_or("--out is required")?,
        repeats: repeats.max(1),
        no_parity,
        profile,
        concurrency,
    })
}

/// Deterministic pseudo-random bytes (64-bit LCG), so every machine feeds the same input.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }
}

/// A `[h, w, 3]` picture of smooth bands and blocks with a little noise.
fn test_image((h, w): (usize, usize)) -> Vec<u8> {
    let mut rng = Lcg(7);
    let mut rgb = vec![0u8; h * w * 3];
    for y in 0..h {
        for x in 0..w {
            let block = ((x / 80) + 3 * (y / 60)) % 5;
            let base = [40 + 40 * block, 200 - 30 * block, (x * 255 / w) % 256];
            for (c, b) in base.iter().enumerate() {
                let noise = (rng.next() % 16) as usize;
                rgb[(y * w + x) * 3 + c] = (b + noise).min(255) as u8;
            }
        }
    }
    rgb
}

/// `n` crops of `s x s` RGB bytes and a binary mask each (an axis-aligned ellipse).
fn test_crops(n: usize, s: usize) -> (Vec<u8>, Vec<u8>) {
    let mut rng = Lcg(11);
    let pixels = (0..n * s * s * 3)
        .map(|_| (rng.next() % 256) as u8)
        .collect();
    let mut masks = vec![0u8; n * s * s];
    for (i, mask) in masks.chunks_mut(s * s).enumerate() {
        let (cx, cy) = (
            (rng.next() as usize % s) as f32,
            (rng.next() as usize % s) as f32,
        );
        let (rx, ry) = (s as f32 * (0.15 + 0.01 * (i % 30) as f32), s as f32 * 0.3);
        for y in 0..s {
            for x in 0..s {
                let (dx, dy) = ((x as f32 - cx) / rx, (y as f32 - cy) / ry);
                mask[y * s + x] = u8::from(dx * dx + dy * dy <= 1.0);
            }
        }
    }
    (pixels, masks)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn load(dir: &Path, provider: ExecutionProvider) -> Result<Model, String> {
    load_with(dir, provider, ModelOptions::default().batch)
}

fn load_with(
    dir: &Path,
    provider: ExecutionProvider,
    batch: Option<BatchOptions>,
) -> Result<Model, String> {
    let options = ModelOptions {
        provider,
        batch,
        ..ModelOptions::default()
    };
    Model::load(dir, &options).map_err(|e| format!("{}: {e}", dir.display()))
}

/// Caller masks per request of the concurrency rows, and requests per thread.
const MASKS_PER_REQUEST: usize = 8;
const REQUESTS_PER_THREAD: usize = 4;

/// `MASKS_PER_REQUEST` rectangles at the image size, different for each request `r`.
fn request_masks(r: usize) -> Vec<u8> {
    let (h, w) = IMAGE;
    let mut masks = vec![0u8; MASKS_PER_REQUEST * h * w];
    for (i, mask) in masks.chunks_mut(h * w).enumerate() {
        let seed = r * 131 + i * 17;
        let (x0, y0) = ((seed * 37) % (w - 200), (seed * 53) % (h - 150));
        let (bw, bh) = (40 + (seed * 3) % 160, 30 + (seed * 5) % 120);
        for y in y0..y0 + bh {
            mask[y * w + x0..y * w + x0 + bw].fill(1);
        }
    }
    masks
}

/// `threads` threads each making `REQUESTS_PER_THREAD` caller-mask `segment()` calls (no
/// generator), batching off then on: images/s, p50 and p99 latency, image-encoder runs.
fn concurrency(dir: &Path, provider: ExecutionProvider, threads: usize) -> Result<Value, String> {
    let rgb = test_image(IMAGE);
    let requests: Vec<Vec<u8>> = (0..threads * REQUESTS_PER_THREAD)
        .map(request_masks)
        .collect();
    let options = SegmentOptions {
        generator: false,
        ..SegmentOptions::default()
    };
    let mut out = serde_json::Map::new();
    // "on" batches on the CPU too, so that the dry run measures the same code path.
    let on = BatchOptions {
        on_cpu: true,
        ..BatchOptions::default()
    };
    for (key, batch) in [("off", None), ("on", Some(on))] {
        let model = load_with(dir, provider, batch)?;
        let call = |masks: &[u8]| {
            let start = Instant::now();
            model
                .segment(
                    &rgb,
                    IMAGE,
                    Some(MaskInput::Binary(masks)),
                    &CLASSES,
                    &options,
                )
                .map(|_| start.elapsed().as_secs_f64() * 1e3)
                .map_err(|e| e.to_string())
        };
        call(&requests[0])?; // the class matrix, cached for the timed calls
        let start = Instant::now();
        let latencies = std::thread::scope(|scope| {
            let handles: Vec<_> = requests
                .chunks(REQUESTS_PER_THREAD)
                .map(|mine| scope.spawn(|| mine.iter().map(|m| call(m)).collect::<Vec<_>>()))
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("a request thread panicked"))
                .collect::<Result<Vec<f64>, String>>()
        })?;
        let wall = start.elapsed().as_secs_f64();
        let mut sorted = latencies.clone();
        sorted.sort_by(f64::total_cmp);
        let pick = |p: f64| sorted[((p * sorted.len() as f64).ceil() as usize).max(1) - 1];
        out.insert(
            key.into(),
            json!({
                "imagesPerS": latencies.len() as f64 / wall,
                "p50Ms": pick(0.5),
                "p99Ms": pick(0.99),
                "encoderRuns": model.stats().crop_batches,
            }),
        );
    }
    Ok(json!({
        "threads": threads,
        "requests": requests.len(),
        "masksPerRequest": MASKS_PER_REQUEST,
        "batching": out,
    }))
}

fn segment(model: &Model, rgb: &[u8]) -> Result<Segmentation, String> {
    let options = SegmentOptions {
        scores: true,
        ..SegmentOptions::default()
    };
    model
        .segment(rgb, IMAGE, None, &CLASSES, &options)
        .map_err(|e| e.to_string())
}

/// Pixels whose labels differ, and how many of them are not near-ties on the reference: a
/// pixel whose best two CPU scores are within `tie` may go either way on other hardware.
fn label_diff(reference: &Segmentation, other: &Segmentation, tie: f32) -> (usize, usize) {
    let scores = reference.scores.as_ref().expect("scores were asked for");
    let plane = reference.labels.len();
    let classes = reference.classes.len();
    let mut differ = 0;
    let mut not_ties = 0;
    for (p, (a, b)) in reference.labels.iter().zip(&other.labels).enumerate() {
        if a == b {
            continue;
        }
        differ += 1;
        let mut column: Vec<f32> = (0..classes).map(|c| scores[c * plane + p]).collect();
        column.sort_by(|x, y| y.total_cmp(x));
        if classes < 2 || column[0] - column[1] > tie {
            not_ties += 1;
        }
    }
    (differ, not_ties)
}

/// The CPU model's outputs that every variant is compared with (computed once: a ViT-L/14 pass
/// over 100 crops takes tens of seconds on CPU).
struct Reference {
    text: Vec<f32>,
    image: Vec<f32>,
    segmentation: Segmentation,
    resized: Vec<u8>,
    proposals: Option<ovseg_core::mask_generator::Proposals>,
}

fn reference(cpu: &Model, rgb: &[u8], crops: &(Vec<u8>, Vec<u8>)) -> Result<Reference, String> {
    let e = |e: ovseg_core::Error| e.to_string();
    let segmentation = segment(cpu, rgb)?;
    let (h, w) = segmentation.processing_size;
    let resized = ovseg_core::resample::resize_rgb(rgb, IMAGE, (h, w)).map_err(e)?;
    let proposals = match cpu.has_generator() {
        true => Some(cpu.propose(&resized, (h, w)).map_err(e)?),
        false => None,
    };
    Ok(Reference {
        text: cpu
            .class_embeddings(&CLASSES, None, Overflow::Error, false)
            .map_err(e)?
            .data,
        image: cpu
            .encode_image(Pixels::Rgb8(&crops.0), Some(&crops.1), true, true)
            .map_err(e)?
            .data,
        segmentation,
        resized,
        proposals,
    })
}

/// Compares `other` with the CPU reference. Features are L2-normalized (unit rows).
fn parity(
    reference: &Reference,
    other: &Model,
    rgb: &[u8],
    crops: &(Vec<u8>, Vec<u8>),
) -> Result<Value, String> {
    let e = |e: ovseg_core::Error| e.to_string();
    let text = other
        .class_embeddings(&CLASSES, None, Overflow::Error, false)
        .map_err(e)?;
    let image = other
        .encode_image(Pixels::Rgb8(&crops.0), Some(&crops.1), true, true)
        .map_err(e)?;
    let seg = segment(other, rgb)?;
    let ref_seg = &reference.segmentation;
    let (differ, not_ties) = label_diff(ref_seg, &seg, 1e-3);
    let mut out = json!({
        "textFeaturesMaxAbsDiff": max_abs_diff(&reference.text, &text.data),
        "imageFeaturesMaxAbsDiff": max_abs_diff(&reference.image, &image.data),
        "labelsDiffer": differ,
        "labelsDifferNotNearTie": not_ties,
        "pixels": ref_seg.labels.len(),
        "scoresMaxAbsDiff": max_abs_diff(ref_seg.scores.as_ref().unwrap(), seg.scores.as_ref().unwrap()),
    });
    if let Some(a) = &reference.proposals {
        let b = other
            .propose(&reference.resized, ref_seg.processing_size)
            .map_err(e)?;
        out["generatorMasksMaxAbsDiff"] = json!(max_abs_diff(&a.masks, &b.masks));
        out["generatorEmbeddingsMaxAbsDiff"] = json!(max_abs_diff(&a.embeddings, &b.embeddings));
    }
    Ok(out)
}

/// Milliseconds per 100 masked crops in batches of `batch` (median of `repeats` passes).
fn time_crops(
    model: &Model,
    crops: &(Vec<u8>, Vec<u8>),
    batch: usize,
    repeats: usize,
) -> Result<f64, String> {
    let s = model.manifest.clip.image_size;
    let pass = || -> Result<f64, String> {
        let start = Instant::now();
        let mut done = 0;
        while done < CROPS {
            let n = batch.min(CROPS - done);
            let px = &crops.0[done * s * s * 3..(done + n) * s * s * 3];
            let mk = &crops.1[done * s * s..(done + n) * s * s];
            model
                .encode_image(Pixels::Rgb8(px), Some(mk), true, true)
                .map_err(|e| e.to_string())?;
            done += n;
        }
        Ok(start.elapsed().as_secs_f64() * 1e3)
    };
    pass()?;
    let times = (0..repeats)
        .map(|_| pass())
        .collect::<Result<Vec<_>, _>>()?;
    Ok(median(times))
}

fn timings(
    model: &Model,
    rgb: &[u8],
    crops: &(Vec<u8>, Vec<u8>),
    repeats: usize,
) -> Result<Value, String> {
    let mut batches = serde_json::Map::new();
    for batch in [1, 32, 100] {
        batches.insert(
            batch.to_string(),
            json!(time_crops(model, crops, batch, repeats)?),
        );
    }
    let options = SegmentOptions::default();
    let run = || {
        model
            .segment(rgb, IMAGE, None, &CLASSES, &options)
            .map_err(|e| e.to_string())
    };
    let first = Instant::now();
    run()?; // the class matrix is computed here and cached for the timed calls
    let cold_ms = first.elapsed().as_secs_f64() * 1e3;
    let runs = (0..repeats).map(|_| run()).collect::<Result<Vec<_>, _>>()?;
    let pick = |f: fn(&Segmentation) -> f64| median(runs.iter().map(f).collect());
    Ok(json!({
        "cropsMsPer100": batches,
        "segmentFirstCallMs": cold_ms,
        "segmentMs": pick(|s| s.timings.total_ms),
        "generatorMs": pick(|s| s.timings.generator_ms),
        "cropMs": pick(|s| s.timings.crop_ms),
        "imageEncoderMs": pick(|s| s.timings.image_encoder_ms),
        "aggregateMs": pick(|s| s.timings.aggregate_ms),
        "proposals": runs[0].segments.len(),
        "validMasks": runs[0].segments.iter().filter(|s| s.valid).count(),
        "processingSize": [runs[0].processing_size.0, runs[0].processing_size.1],
    }))
}

/// ONNX Runtime's profile of the image encoder on `provider` at `batch` crops: per operator type,
/// the nodes, their provider and the summed time of `RUNS` runs after a warm-up, plus the whole
/// runs. On CUDA a node's time is its host side (kernel launches are asynchronous); the
/// device-to-host copy at the end waits for the GPU, so the node list shows where the host
/// blocks and which nodes fell back to CPU, not GPU kernel time.
fn profile_image_encoder(
    dir: &Path,
    provider: ExecutionProvider,
    batch: usize,
    prefix: &Path,
) -> Result<Value, String> {
    use ort::session::Session;
    use ort::value::Tensor;
    const RUNS: usize = 3;
    let e = |e: ort::Error| e.to_string();
    let manifest = ovseg_core::manifest::Manifest::read(dir).map_err(|e| e.to_string())?;
    let clip = manifest.clip;
    let (s, p, l, w) = (
        clip.image_size,
        clip.patches(),
        clip.vision_layers,
        clip.vision_width,
    );
    let environment = ovseg_core::runtime::environment().map_err(|e| e.to_string())?;
    let mut builder = Session::builder(&environment).map_err(e)?;
    ovseg_core::runtime::apply_provider(&mut builder, provider).map_err(|e| e.to_string())?;
    let mut builder = builder.with_profiling(prefix).map_err(|e| e.to_string())?;
    let mut session = builder
        .commit_from_file(dir.join(&manifest.graphs.image_encoder))
        .map_err(e)?;
    let mut rng = Lcg(5);
    let pixels: Vec<f32> = (0..batch * 3 * s * s)
        .map(|_| (rng.next() % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let keep: Vec<f32> = (0..batch * p).map(|i| (i % 2) as f32).collect();
    let prompts = vec![0.01f32; l * p * w];
    let gate = vec![1.0f32; l];
    let mut run = || -> Result<f64, String> {
        let start = Instant::now();
        session
            .run(ort::inputs![
                "pixels" => Tensor::from_array(([batch, 3, s, s], pixels.clone())).map_err(e)?,
                "keep" => Tensor::from_array(([batch, p], keep.clone())).map_err(e)?,
                "prompts" => Tensor::from_array(([l, p, w], prompts.clone())).map_err(e)?,
                "prompt_gate" => Tensor::from_array(([l], gate.clone())).map_err(e)?,
            ])
            .map_err(e)?;
        Ok(start.elapsed().as_secs_f64() * 1e3)
    };
    run()?;
    let wall: Vec<f64> = (0..RUNS).map(|_| run()).collect::<Result<_, _>>()?;
    let file = session.end_profiling().map_err(e)?;
    let events: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(&file).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    // The first run (warm-up) is in the profile too: keep the last RUNS model_run windows.
    let mut windows: Vec<(u64, u64)> = events
        .iter()
        .filter(|ev| ev["cat"] == "Session" && ev["name"] == "model_run")
        .filter_map(|ev| Some((ev["ts"].as_u64()?, ev["ts"].as_u64()? + ev["dur"].as_u64()?)))
        .collect();
    windows.sort_unstable();
    let windows = &windows[windows.len().saturating_sub(RUNS)..];
    let mut by_op: std::collections::BTreeMap<(String, String), (usize, u64)> = Default::default();
    for ev in &events {
        let (Some(ts), Some(dur)) = (ev["ts"].as_u64(), ev["dur"].as_u64()) else {
            continue;
        };
        if ev["cat"] != "Node" || !windows.iter().any(|&(a, b)| ts >= a && ts < b) {
            continue;
        }
        if !ev["name"]
            .as_str()
            .is_some_and(|n| n.ends_with("_kernel_time"))
        {
            continue;
        }
        let op = ev["args"]["op_name"].as_str().unwrap_or("?").to_owned();
        let provider = ev["args"]["provider"]
            .as_str()
            .unwrap_or("?")
            .replace("ExecutionProvider", "");
        let slot = by_op.entry((op, provider)).or_default();
        slot.0 += 1;
        slot.1 += dur;
    }
    let mut ops: Vec<_> = by_op.into_iter().collect();
    ops.sort_by_key(|op| std::cmp::Reverse(op.1 .1));
    let _ = std::fs::remove_file(&file);
    Ok(json!({
        "batch": batch,
        "runMs": median(wall),
        "ops": ops.iter().take(15).map(|((op, provider), (n, us))| json!({
            "op": op, "provider": provider, "nodesPerRun": n / RUNS, "msPerRun": *us as f64 / 1e3 / RUNS as f64,
        })).collect::<Vec<_>>(),
        "cpuNodesPerRun": ops.iter().filter(|((_, p), _)| p == "CPU").map(|(_, (n, _))| n / RUNS).sum::<usize>(),
    }))
}

/// "fp16" or "int8": what ovseg_tools.export.fp16 / .int8 recorded in a converted directory's manifest.
fn precision_of(manifest: &ovseg_core::manifest::Manifest) -> &'static str {
    let source = manifest.source.as_ref();
    match source.and_then(|s| s.get("int8")) {
        Some(_) => "int8",
        None if source.and_then(|s| s.get("fp16")).is_some() => "fp16",
        None => "float32",
    }
}

fn check_model(
    args: &Args,
    name: &str,
    fp32: &Path,
    variant: Option<&Path>,
) -> Result<Value, String> {
    let rgb = test_image(IMAGE);
    let manifest = ovseg_core::manifest::Manifest::read(fp32).map_err(|e| e.to_string())?;
    let crops = test_crops(CROPS, manifest.clip.image_size);
    let reference = match args.no_parity {
        true => None,
        false => {
            let start = Instant::now();
            let cpu = load(fp32, ExecutionProvider::Cpu)?;
            let reference = reference(&cpu, &rgb, &crops)?;
            eprintln!(
                "{name}: CPU reference in {:.1} s",
                start.elapsed().as_secs_f64()
            );
            Some(reference)
        }
    };
    let mut report = json!({ "model": name, "dir": fp32.display().to_string() });
    for (i, dir) in std::iter::once(fp32).chain(variant).enumerate() {
        let start = Instant::now();
        let model = load(dir, args.provider)?;
        let precision = precision_of(&model.manifest);
        if (i == 0) != (precision == "float32") {
            return Err(format!(
                "{}: expected a {} model directory, found {precision}",
                dir.display(),
                ["float32", "fp16 or int8"][i.min(1)]
            ));
        }
        let load_ms = start.elapsed().as_secs_f64() * 1e3;
        eprintln!(
            "{name} {precision}: loaded on {} in {load_ms:.0} ms",
            model.provider().name
        );
        let mut parity = Value::Null;
        if let Some(reference) = &reference {
            parity = self::parity(reference, &model, &rgb, &crops)?;
            // int8 has no tolerance to hold: its differences are reported, not judged.
            let tolerance = match precision {
                "float32" => Some(TOLERANCE_FLOAT32),
                "fp16" => Some(TOLERANCE_FP16),
                _ => None,
            };
            if let Some(tolerance) = tolerance {
                let pass = [
                    "textFeaturesMaxAbsDiff",
                    "imageFeaturesMaxAbsDiff",
                    "generatorMasksMaxAbsDiff",
                ]
                .into_iter()
                .all(|key| parity[key].as_f64().is_none_or(|d| d <= tolerance))
                    && parity["labelsDifferNotNearTie"] == 0;
                parity["tolerance"] = json!(tolerance);
                parity["pass"] = json!(pass);
            }
            eprintln!("{name} {precision}: parity {parity}");
        }
        let times = timings(&model, &rgb, &crops, args.repeats)?;
        eprintln!("{name} {precision}: timings {times}");
        let mut profiles = Vec::new();
        for &batch in &args.profile {
            let prefix = std::env::temp_dir().join(format!("gpu_check-{name}-{precision}-{batch}"));
            let profile = profile_image_encoder(dir, args.provider, batch, &prefix)?;
            eprintln!("{name} {precision}: profile {profile}");
            profiles.push(profile);
        }
        report[precision] = json!({
            "provider": model.provider().name,
            "providerReason": model.provider().reason,
            "loadMs": load_ms,
            "parity": parity,
            "timings": times,
            "profiles": profiles,
        });
        // Its own loads (batching off and on); this one's memory is freed first.
        drop(model);
        if args.concurrency > 0 {
            let rows = concurrency(dir, args.provider, args.concurrency)?;
            eprintln!("{name} {precision}: concurrency {rows}");
            report[precision]["timings"]["concurrency"] = rows;
        }
    }
    Ok(report)
}

fn markdown(report: &Value) -> String {
    let mut md = String::from(
        "| model | precision | provider | pass | text max diff | crop features max diff | labels differing (not near-tie) | generator masks max diff | 100 crops, batch 1 / 32 / 100 (ms) | segment() median (ms) | generator / crops / encoder / aggregate (ms) |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for m in report["models"].as_array().into_iter().flatten() {
        for precision in PRECISIONS {
            let r = &m[precision];
            if r.is_null() {
                continue;
            }
            let (p, t) = (&r["parity"], &r["timings"]);
            let f = |v: &Value| v.as_f64().map_or("-".into(), |x| format!("{x:.1e}"));
            let ms = |v: &Value| v.as_f64().map_or("-".into(), |x| format!("{x:.1}"));
            md += &format!(
                "| {} | {precision} | {} | {} | {} | {} | {} / {} ({}) | {} | {} / {} / {} | {} | {} / {} / {} / {} |\n",
                m["model"].as_str().unwrap_or(""),
                r["provider"].as_str().unwrap_or(""),
                p["pass"],
                f(&p["textFeaturesMaxAbsDiff"]),
                f(&p["imageFeaturesMaxAbsDiff"]),
                p["labelsDiffer"],
                p["pixels"],
                p["labelsDifferNotNearTie"],
                f(&p["generatorMasksMaxAbsDiff"]),
                ms(&t["cropsMsPer100"]["1"]),
                ms(&t["cropsMsPer100"]["32"]),
                ms(&t["cropsMsPer100"]["100"]),
                ms(&t["segmentMs"]),
                ms(&t["generatorMs"]),
                ms(&t["cropMs"]),
                ms(&t["imageEncoderMs"]),
                ms(&t["aggregateMs"]),
            );
        }
    }
    md += "\n| model | precision | threads x requests, masks each | batching off: images/s, p50 / p99 ms | on: images/s, p50 / p99 ms | on/off | encoder runs on |\n|---|---|---|---|---|---|---|\n";
    for m in report["models"].as_array().into_iter().flatten() {
        for precision in PRECISIONS {
            let c = &m[precision]["timings"]["concurrency"];
            if c.is_null() {
                continue;
            }
            let (off, on) = (&c["batching"]["off"], &c["batching"]["on"]);
            let row = |v: &Value| {
                format!(
                    "{:.1}, {:.0} / {:.0}",
                    v["imagesPerS"].as_f64().unwrap_or(f64::NAN),
                    v["p50Ms"].as_f64().unwrap_or(f64::NAN),
                    v["p99Ms"].as_f64().unwrap_or(f64::NAN)
                )
            };
            md += &format!(
                "| {} | {precision} | {} x {}, {} | {} | {} | {:.2}x | {} |\n",
                m["model"].as_str().unwrap_or(""),
                c["threads"],
                REQUESTS_PER_THREAD,
                c["masksPerRequest"],
                row(off),
                row(on),
                on["imagesPerS"].as_f64().unwrap_or(f64::NAN)
                    / off["imagesPerS"].as_f64().unwrap_or(f64::NAN),
                on["encoderRuns"],
            );
        }
    }
    md
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("gpu_check: {e}");
            std::process::exit(2);
        }
    };
    let info = match ovseg_core::init_runtime(&args.runtime) {
        Ok(info) => info,
        Err(e) => {
            eprintln!("gpu_check: {e}");
            std::process::exit(1);
        }
    };
    let mut models = Vec::new();
    let mut failed = false;
    for (name, fp32, fp16) in &args.models {
        match check_model(&args, name, fp32, fp16.as_deref()) {
            Ok(r) => {
                failed |= PRECISIONS.iter().any(|p| r[p]["parity"]["pass"] == false);
                models.push(r)
            }
            Err(e) => {
                eprintln!("gpu_check: {name}: {e}");
                models.push(json!({ "model": name, "error": e }));
                failed = true;
            }
        }
    }
    let report = json!({
        "runtime": { "path": info.library_path.display().to_string(), "version": info.version },
        "repeats": args.repeats,
        "image": [IMAGE.0, IMAGE.1],
        "classes": CLASSES,
        "models": models,
    });
    let text = serde_json::to_string_pretty(&report).expect("a JSON value serializes");
    let md = markdown(&report);
    if let Err(e) = std::fs::write(&args.out, text + "\n")
        .and_then(|()| std::fs::write(args.out.with_extension("md"), &md))
    {
        eprintln!("gpu_check: cannot write {}: {e}", args.out.display());
        std::process::exit(1);
    }
    print!("{md}");
    std::process::exit(i32::from(failed));
}
