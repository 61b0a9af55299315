//! `ts/generated.ts`: the names and numbers the TypeScript layer shares with the core, written from
//! the core so that they have one source. Fails when the file is out of date;
//! `OVSEG_WRITE_GENERATED=1 cargo test -p ovseg-core --test typescript` rewrites it.

use std::fmt::Write;
use std::path::Path;

use ovseg_core::aggregate::UNLABELED;
use ovseg_core::batcher::{
    DEFAULT_MAX_CROPS, DEFAULT_MAX_WAIT_MS, DEFAULT_ON_CPU, MAX_CROPS_LIMIT, MAX_WAIT_LIMIT_MS,
};
use ovseg_core::manifest::ProcessingSize;
use ovseg_core::sam::{AmgOptions, MAX_CROP_LAYERS, MAX_POINTS_PER_BATCH, MAX_POINTS_PER_SIDE};
use ovseg_core::segment::{MaskSource, Mode, DEFAULT_MAX_PIXELS, DEFAULT_SAM_MAX_MASKS};
use ovseg_core::{ErrorCode, ExecutionProvider, Named, Overflow, Precision};

fn names<T: Named>(out: &mut String, doc: &str, name: &str) {
    let list: Vec<String> = T::ALL.iter().map(|v| format!("'{}'", v.name())).collect();
    writeln!(
        out,
        "/** {doc} */\nexport const {name} = [{}] as const\n",
        list.join(", ")
    )
    .unwrap();
}

fn generated() -> String {
    let mut out = String::from(
        "// Generated from crates/ovseg-core by its test `typescript` (OVSEG_WRITE_GENERATED=1 cargo test\n\
         // -p ovseg-core --test typescript); do not edit.\n\n",
    );
    names::<ErrorCode>(
        &mut out,
        "The codes the native core gives its errors.",
        "CORE_ERROR_CODES",
    );
    names::<Mode>(&mut out, "`segment()` modes.", "SEGMENT_MODES");
    names::<Overflow>(
        &mut out,
        "What to do with a text past the context.",
        "OVERFLOW_POLICIES",
    );
    names::<Precision>(
        &mut out,
        "CLIP encoder precisions a model can be loaded with (the manifest names the non-float32 ones).",
        "PRECISIONS",
    );
    names::<ExecutionProvider>(
        &mut out,
        "Execution providers a model can ask for.",
        "EXECUTION_PROVIDERS",
    );
    names::<MaskSource>(
        &mut out,
        "Where a `segment()` mask came from.",
        "MASK_SOURCES",
    );
    let a = AmgOptions::default();
    writeln!(
        out,
        "/** SAM's automatic mask generator's defaults (segment-anything's), and how many masks `segment()` classifies. */\n\
         export const DEFAULT_SAM_OPTIONS = {{ pointsPerSide: {}, pointsPerBatch: {}, predIouThresh: {}, stabilityScoreThresh: {}, stabilityScoreOffset: {}, boxNmsThresh: {}, cropNLayers: {}, cropNmsThresh: {}, cropOverlapRatio: {}, cropNPointsDownscaleFactor: {}, minMaskRegionArea: {}, maxMasks: {DEFAULT_SAM_MAX_MASKS} }} as const\n\n\
         /** The largest SAM point grid side, decoder batch and number of crop layers. */\n\
         export const SAM_LIMITS = {{ pointsPerSide: {MAX_POINTS_PER_SIDE}, pointsPerBatch: {MAX_POINTS_PER_BATCH}, cropNLayers: {MAX_CROP_LAYERS} }} as const\n",
        a.points_per_side,
        a.points_per_batch,
        a.pred_iou_thresh,
        a.stability_score_thresh,
        a.stability_score_offset,
        a.box_nms_thresh,
        a.crop_n_layers,
        a.crop_nms_thresh,
        a.crop_overlap_ratio,
        a.crop_n_points_downscale_factor,
        a.min_mask_region_area
    )
    .unwrap();
    writeln!(
        out,
        "/** Label of pixels no selected mask covers (demo mode). */\nexport const UNLABELED = {UNLABELED}\n\n\
         /** Default pixel limit of `segment()` (sharp's `limitInputPixels`, 0x3FFF * 0x3FFF). */\n\
         export const DEFAULT_MAX_PIXELS = {DEFAULT_MAX_PIXELS}\n\n\
         /** The processing size of a model whose manifest sets none (OVSeg's). */\n\
         export const DEFAULT_PROCESSING = {{ shortSide: {}, maxSize: {} }} as const\n\n\
         /** Cross-request batching of `segment()`'s crops when a load leaves `batch` out (on CUDA only). */\n\
         export const DEFAULT_BATCH = {{ maxCrops: {DEFAULT_MAX_CROPS}, maxWaitMs: {DEFAULT_MAX_WAIT_MS}, onCpu: {DEFAULT_ON_CPU} }} as const\n\n\
         /** The largest `batch.maxCrops` and `batch.maxWaitMs` a load accepts. */\n\
         export const BATCH_LIMITS = {{ maxCrops: {MAX_CROPS_LIMIT}, maxWaitMs: {MAX_WAIT_LIMIT_MS} }} as const",
        ProcessingSize::OVSEG.short_side,
        ProcessingSize::OVSEG.max_size
    )
    .unwrap();
    out
}

#[test]
fn generated_typescript_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ts/generated.ts");
    let want = generated();
    if std::env::var_os("OVSEG_WRITE_GENERATED").is_some() {
        std::fs::write(&path, &want).unwrap();
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "{} is out of date: run OVSEG_WRITE_GENERATED=1 cargo test -p ovseg-core --test typescript",
        path.display()
    );
}
