//! `manifest.json` of a model directory (format documented in docs/model-format.md).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{bail, Error, ErrorCode, Result};
use crate::segment::{valid_lambda, valid_threshold, Mode};
use crate::Named;

pub const FORMAT: &str = "ovseg-model";
/// The newest format version this build reads.
pub const FORMAT_VERSION: u64 = 3;
/// The oldest format version this build reads.
pub const MIN_FORMAT_VERSION: u64 = 1;
/// The version that added `defaults`.
const DEFAULTS_VERSION: u64 = 2;
/// The version that added `graphs.int8` and `graphs.float16`.
const VARIANTS_VERSION: u64 = 3;
pub const MANIFEST_FILE: &str = "manifest.json";

/// Upper bounds of the size fields (docs/model-format.md): far above any CLIP or OVSeg model, low
/// enough that nothing sized from them exhausts memory or overflows.
pub mod limits {
    pub const IMAGE_SIZE: usize = 2048;
    pub const PATCHES: usize = 16384;
    pub const VISION_WIDTH: usize = 8192;
    pub const VISION_LAYERS: usize = 256;
    /// `visionLayers x patches x visionWidth`: the mask-prompt table the encoder takes (256 MiB).
    pub const PROMPT_VALUES: usize = 1 << 26;
    pub const EMBED_DIM: usize = 8192;
    pub const CONTEXT_LENGTH: usize = 1024;
    pub const VOCAB_SIZE: usize = 1 << 20;
    pub const SIZE_DIVISIBILITY: usize = 256;
    pub const SHORT_SIDE: usize = 2048;
    pub const MAX_SIZE: usize = 4096;
    /// `pixelMean` / `pixelStd` magnitudes (a smaller std blows finite pixels up to infinity).
    pub const PIXEL_STD_MIN: f32 = 1e-4;
    pub const PIXEL_VALUE_MAX: f32 = 1e4;
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub version: u64,
    pub name: String,
    pub clip: ClipGeometry,
    pub pixel_mean: [f32; 3],
    pub pixel_std: [f32; 3],
    pub graphs: Graphs,
    pub tokenizer: TokenizerSpec,
    pub mask_prompts: Option<MaskPrompts>,
    pub no_object_embedding: Option<String>,
    pub templates: Vec<String>,
    /// The class-agnostic mask generator; `None` = masks come from the caller only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator: Option<GeneratorSpec>,
    /// The size `segment()` processes images at; `None` = OVSeg's (short side 640, long side at
    /// most 2560). For models trained at another scale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processing: Option<ProcessingSize>,
    /// `segment()`'s defaults for this model (format version 2); `None` = the built-in ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<Defaults>,
    /// Free-form provenance (checkpoint name, seed); not interpreted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClipGeometry {
    pub image_size: usize,
    pub patch_size: usize,
    pub vision_width: usize,
    pub vision_layers: usize,
    pub embed_dim: usize,
    pub context_length: usize,
    pub vocab_size: usize,
}

impl ClipGeometry {
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    pub fn patches(&self) -> usize {
        self.grid() * self.grid()
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Graphs {
    pub image_encoder: String,
    pub text_encoder: String,
    /// int8 CLIP encoders beside the float32 ones (format version 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub int8: Option<EncoderGraphs>,
    /// float16 CLIP encoders beside the float32 ones (format version 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub float16: Option<EncoderGraphs>,
}

/// The two CLIP encoders of one precision.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EncoderGraphs {
    pub image_encoder: String,
    pub text_encoder: String,
}

/// Which CLIP encoders a model loads: the float32 ones or a variant the manifest names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    Float32,
    Int8,
    Float16,
}

impl crate::Named for Precision {
    const ALL: &'static [Self] = &[Precision::Float32, Precision::Int8, Precision::Float16];

    fn name(self) -> &'static str {
        match self {
            Precision::Float32 => "float32",
            Precision::Int8 => "int8",
            Precision::Float16 => "float16",
        }
    }
}

impl Graphs {
    /// The image and text encoders of `precision`, with the manifest fields that name them.
    pub fn encoders(&self, precision: Precision) -> Result<[(&str, String); 2]> {
        let (variant, key) = match precision {
            Precision::Float32 => {
                return Ok([
                    (&self.image_encoder, "graphs.imageEncoder".into()),
                    (&self.text_encoder, "graphs.textEncoder".into()),
                ]
                .map(|(f, k)| (f.as_str(), k)))
            }
            Precision::Int8 => (&self.int8, "int8"),
            Precision::Float16 => (&self.float16, "float16"),
        };
        match variant {
            Some(v) => Ok([
                (v.image_encoder.as_str(), format!("graphs.{key}.imageEncoder")),
                (v.text_encoder.as_str(), format!("graphs.{key}.textEncoder")),
            ]),
            None => bail!(
                InvalidArgument,
                "this model has no {key} encoders (manifest graphs.{key} is absent): add them with `python -m ovseg_tools.export.{} DIR`",
                if key == "int8" { "int8" } else { "fp16" }
            ),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenizerSpec {
    pub vocab: String,
    /// Number of merges to use; `null` = every merge line in the file.
    pub merges: Option<usize>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MaskPrompts {
    pub file: String,
    pub depth: usize,
}

/// OVSeg's mask generator contract (docs/model-format.md): a normalized image padded to a multiple
/// of `sizeDivisibility` in, per-query mask logits at `1 / maskStride` scale and per-query
/// embeddings in CLIP's text space out.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GeneratorSpec {
    pub file: String,
    /// Normalization in 0..255 units: `(x - mean) / std` (MaskFormer: ImageNet's).
    pub pixel_mean: [f32; 3],
    pub pixel_std: [f32; 3],
    pub size_divisibility: usize,
    pub mask_stride: usize,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProcessingSize {
    pub short_side: usize,
    pub max_size: usize,
}

impl ProcessingSize {
    /// OVSeg's: short side 640, long side at most 2560.
    pub const OVSEG: Self = Self {
        short_side: 640,
        max_size: 2560,
    };
}

/// The settings `segment()` runs with where a call gives none, as the model was exported with
/// (OVSeg's config); a piece left out is the built-in one (`Mode`'s).
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semantic: Option<ModeDefaults>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub demo: Option<ModeDefaults>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModeDefaults {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lambda: Option<f32>,
}

impl Defaults {
    /// The mode of a call that gives none.
    pub fn mode(&self) -> Mode {
        self.mode.unwrap_or_default()
    }

    pub fn threshold(&self, mode: Mode) -> f32 {
        self.of(mode).threshold.unwrap_or(mode.default_threshold())
    }

    pub fn lambda(&self, mode: Mode) -> f32 {
        self.of(mode).lambda.unwrap_or(mode.default_lambda())
    }

    fn of(&self, mode: Mode) -> ModeDefaults {
        match mode {
            Mode::Semantic => self.semantic,
            Mode::Demo => self.demo,
        }
        .unwrap_or_default()
    }

    /// Every piece given, the built-in value where the manifest has none (what `ovseg info` shows).
    pub fn complete(&self) -> Self {
        let part = |mode| {
            Some(ModeDefaults {
                threshold: Some(self.threshold(mode)),
                lambda: Some(self.lambda(mode)),
            })
        };
        Self {
            mode: Some(self.mode()),
            semantic: part(Mode::Semantic),
            demo: part(Mode::Demo),
        }
    }

    /// As JSON (an `f32` as its shortest decimal: 0.35, not 0.3499999940395355).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("defaults always serialize")
    }

    /// `value`'s parts deserialized one at a time first: serde's messages name a bad key or value
    /// but not where it sits.
    fn check_json(value: &serde_json::Value) -> Result<()> {
        fn at<T: serde::de::DeserializeOwned>(path: &str, value: &serde_json::Value) -> Result<()> {
            // serde also takes a struct from an array of its fields.
            if value.is_array() {
                bail!(ManifestInvalid, "{path} must be an object, got an array");
            }
            T::deserialize(value).map(drop).map_err(|e| {
                Error::caused_by(ErrorCode::ManifestInvalid, format!("{path}: {e}"), e)
            })
        }
        if let Some(mode) = value.get("mode") {
            at::<Option<Mode>>("defaults.mode", mode)?;
        }
        for mode in Mode::ALL {
            if let Some(part) = value.get(mode.name()) {
                at::<Option<ModeDefaults>>(&format!("defaults.{}", mode.name()), part)?;
            }
        }
        at::<Defaults>("defaults", value)
    }
}

impl Manifest {
    /// `segment()`'s defaults: the manifest's, the built-in ones where it has none.
    pub fn segment_defaults(&self) -> Defaults {
        self.defaults.unwrap_or_default()
    }

    /// The size `segment()` processes images at.
    pub fn processing_size(&self) -> ProcessingSize {
        self.processing.unwrap_or(ProcessingSize::OVSEG)
    }

    /// Reads and validates `<dir>/manifest.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            bail!(
                ModelNotFound,
                "model directory {} does not exist or is not a directory",
                dir.display()
            );
        }
        let path = crate::files::resolve(dir, MANIFEST_FILE, "manifest")?;
        let bytes = crate::files::read_capped(
            &path,
            crate::files::MANIFEST_MAX_BYTES,
            "manifest",
            ErrorCode::ManifestInvalid,
        )?;
        Self::parse_bytes(&bytes).map_err(|e| e.in_file(&path))
    }

    /// `parse` of the file's bytes (not UTF-8: `MANIFEST_INVALID`).
    pub fn parse_bytes(bytes: &[u8]) -> Result<Self> {
        let text = std::str::from_utf8(bytes).map_err(|e| {
            Error::new(
                ErrorCode::ManifestInvalid,
                format!("not UTF-8 text (byte {})", e.valid_up_to()),
            )
        })?;
        Self::parse(text)
    }

    /// The manifest as JSON (what `read` parsed, re-serialized).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a manifest always serializes")
    }

    pub fn parse(text: &str) -> Result<Self> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
            Error::caused_by(
                ErrorCode::ManifestInvalid,
                format!("not valid JSON: {e}"),
                e,
            )
        })?;
        match value.get("format").and_then(|f| f.as_str()) {
            Some(FORMAT) => {}
            other => bail!(
                ManifestInvalid,
                "expected \"format\": \"{FORMAT}\" but found {other:?}"
            ),
        }
        let version = match value.get("version").and_then(|v| v.as_u64()) {
            Some(v @ MIN_FORMAT_VERSION..=FORMAT_VERSION) => v,
            Some(v) => bail!(
                ManifestVersion,
                "format version {v} is not supported by this build (it reads versions {MIN_FORMAT_VERSION} to {FORMAT_VERSION})"
            ),
            None => bail!(ManifestInvalid, "missing or non-integer \"version\""),
        };
        let graphs = value.get("graphs");
        for key in ["int8", "float16"] {
            if graphs.and_then(|g| g.get(key)).is_some() && version < VARIANTS_VERSION {
                bail!(
                    ManifestInvalid,
                    "graphs.{key} is a format version {VARIANTS_VERSION} field, but the manifest says version {version}"
                );
            }
        }
        if let Some(defaults) = value.get("defaults") {
            if version < DEFAULTS_VERSION {
                bail!(
                    ManifestInvalid,
                    "defaults is a format version {DEFAULTS_VERSION} field, but the manifest says version {version}"
                );
            }
            Defaults::check_json(defaults)?;
        }
        let manifest: Manifest = serde_json::from_value(value)
            .map_err(|e| Error::caused_by(ErrorCode::ManifestInvalid, e.to_string(), e))?;
        manifest.validate()?;
        Ok(manifest)
    }

    fn validate(&self) -> Result<()> {
        use limits::*;
        let c = &self.clip;
        for (name, v, max) in [
            ("clip.imageSize", c.image_size, IMAGE_SIZE),
            ("clip.patchSize", c.patch_size, IMAGE_SIZE),
            ("clip.visionWidth", c.vision_width, VISION_WIDTH),
            ("clip.visionLayers", c.vision_layers, VISION_LAYERS),
            ("clip.embedDim", c.embed_dim, EMBED_DIM),
            ("clip.vocabSize", c.vocab_size, VOCAB_SIZE),
        ] {
            if v == 0 || v > max {
                bail!(ManifestInvalid, "{name} must be in 1..={max}, got {v}");
            }
        }
        if !c.image_size.is_multiple_of(c.patch_size) {
            bail!(
                ManifestInvalid,
                "clip.imageSize {} is not a multiple of clip.patchSize {}",
                c.image_size,
                c.patch_size
            );
        }
        if c.patches() > PATCHES {
            bail!(
                ManifestInvalid,
                "clip.imageSize / clip.patchSize gives {} patches, at most {PATCHES} are supported",
                c.patches()
            );
        }
        // Bounded above, so the product cannot overflow.
        let prompt_values = c.vision_layers * c.patches() * c.vision_width;
        if prompt_values > PROMPT_VALUES {
            bail!(
                ManifestInvalid,
                "clip.visionLayers x patches x clip.visionWidth is {prompt_values}, at most {PROMPT_VALUES} are supported"
            );
        }
        if !(2..=CONTEXT_LENGTH).contains(&c.context_length) {
            bail!(
                ManifestInvalid,
                "clip.contextLength must be in 2..={CONTEXT_LENGTH}, got {}",
                c.context_length
            );
        }
        if let Some(merges) = self.tokenizer.merges {
            let ids = merges.checked_add(512 + 2);
            if ids != Some(c.vocab_size) {
                bail!(
                    ManifestInvalid,
                    "tokenizer.merges {merges} gives {} ids but clip.vocabSize is {}",
                    ids.map_or("too many".to_owned(), |n| n.to_string()),
                    c.vocab_size
                );
            }
        }
        check_normalization("pixelMean", "pixelStd", self.pixel_mean, self.pixel_std)?;
        if let Some(p) = &self.mask_prompts {
            if p.depth == 0 || p.depth > c.vision_layers {
                bail!(
                    ManifestInvalid,
                    "maskPrompts.depth must be in 1..={} (the ViT's blocks), got {}",
                    c.vision_layers,
                    p.depth
                );
            }
        }
        if let Some(g) = &self.generator {
            if g.size_divisibility == 0
                || g.mask_stride == 0
                || g.size_divisibility > SIZE_DIVISIBILITY
                || !g.size_divisibility.is_multiple_of(g.mask_stride)
            {
                bail!(
                    ManifestInvalid,
                    "generator.sizeDivisibility ({}) must be in 1..={SIZE_DIVISIBILITY} and a multiple of generator.maskStride ({})",
                    g.size_divisibility,
                    g.mask_stride
                );
            }
            check_normalization(
                "generator.pixelMean",
                "generator.pixelStd",
                g.pixel_mean,
                g.pixel_std,
            )?;
        }
        if let Some(p) = self.processing {
            if p.short_side == 0
                || p.short_side > SHORT_SIDE
                || p.max_size < p.short_side
                || p.max_size > MAX_SIZE
            {
                bail!(
                    ManifestInvalid,
                    "processing.shortSide ({}) must be in 1..={SHORT_SIDE} and at most processing.maxSize ({}), itself at most {MAX_SIZE}",
                    p.short_side,
                    p.max_size
                );
            }
        }
        if let Some(d) = &self.defaults {
            for mode in Mode::ALL {
                let part = d.of(*mode);
                let name = mode.name();
                if let Some(t) = part.threshold.filter(|&t| !valid_threshold(t)) {
                    bail!(
                        ManifestInvalid,
                        "defaults.{name}.threshold must be a finite number, got {t}"
                    );
                }
                if let Some(l) = part.lambda.filter(|&l| !valid_lambda(l)) {
                    bail!(
                        ManifestInvalid,
                        "defaults.{name}.lambda must be in [0, 1], got {l}"
                    );
                }
            }
        }
        if self.templates.is_empty() {
            bail!(ManifestInvalid, "templates must not be empty");
        }
        if let Some(t) = self.templates.iter().find(|t| !t.contains("{}")) {
            bail!(
                ManifestInvalid,
                "template {t:?} has no {{}} placeholder for the class name"
            );
        }
        Ok(())
    }
}

fn check_normalization(
    mean_name: &str,
    std_name: &str,
    mean: [f32; 3],
    std: [f32; 3],
) -> Result<()> {
    use limits::{PIXEL_STD_MIN, PIXEL_VALUE_MAX};
    if mean
        .iter()
        .any(|m| !m.is_finite() || m.abs() > PIXEL_VALUE_MAX)
    {
        bail!(
            ManifestInvalid,
            "{mean_name} must be finite and within ±{PIXEL_VALUE_MAX}, got {mean:?}"
        );
    }
    if std
        .iter()
        .any(|s| !(PIXEL_STD_MIN..=PIXEL_VALUE_MAX).contains(s))
    {
        bail!(
            ManifestInvalid,
            "{std_name} must be in [{PIXEL_STD_MIN}, {PIXEL_VALUE_MAX}], got {std:?}"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> serde_json::Value {
        serde_json::json!({
            "format": "ovseg-model", "version": 1, "name": "t",
            "clip": {"imageSize": 64, "patchSize": 16, "visionWidth": 32, "visionLayers": 3, "embedDim": 16,
                     "contextLength": 77, "vocabSize": 49408},
            "pixelMean": [0.5, 0.5, 0.5], "pixelStd": [0.25, 0.25, 0.25],
            "graphs": {"imageEncoder": "i.onnx", "textEncoder": "t.onnx"},
            "tokenizer": {"vocab": "v.txt.gz", "merges": 48894},
            "maskPrompts": {"file": "p.npy", "depth": 3}, "noObjectEmbedding": null,
            "templates": ["a photo of a {}."]
        })
    }

    fn parse_with(edit: impl FnOnce(&mut serde_json::Value)) -> Result<Manifest> {
        let mut v = valid();
        edit(&mut v);
        Manifest::parse(&v.to_string())
    }

    #[test]
    fn version_3_adds_encoder_variants() {
        let int8 = serde_json::json!({"imageEncoder": "i.int8.onnx", "textEncoder": "t.int8.onnx"});
        let with = |version: u64| {
            let int8 = int8.clone();
            parse_with(move |v| {
                v["version"] = version.into();
                v["graphs"]["int8"] = int8;
            })
        };
        assert_eq!(with(2).unwrap_err().code, ErrorCode::ManifestInvalid);
        let m = with(3).unwrap();
        let files = |p| m.graphs.encoders(p).map(|e| e.map(|(f, _)| f.to_owned()));
        assert_eq!(
            files(Precision::Int8).unwrap(),
            ["i.int8.onnx", "t.int8.onnx"]
        );
        assert_eq!(files(Precision::Float32).unwrap(), ["i.onnx", "t.onnx"]);
        assert_eq!(
            files(Precision::Float16).unwrap_err().code,
            ErrorCode::InvalidArgument
        );
        assert_eq!(Manifest::parse(&m.to_json()).unwrap(), m);
        let extra = parse_with(|v| {
            v["version"] = 3.into();
            v["graphs"]["int8"] =
                serde_json::json!({"imageEncoder": "i", "textEncoder": "t", "x": 1});
        });
        assert_eq!(extra.unwrap_err().code, ErrorCode::ManifestInvalid);
    }

    #[test]
    fn accepts_valid() {
        let m = parse_with(|_| {}).unwrap();
        assert_eq!(m.clip.patches(), 16);
        assert_eq!(Manifest::parse(&m.to_json()).unwrap(), m);
    }

    #[test]
    fn rejects_bad_manifests_with_codes() {
        let code = |r: Result<Manifest>| r.unwrap_err().code;
        assert_eq!(code(Manifest::parse("{")), ErrorCode::ManifestInvalid);
        for version in [0, 4] {
            assert_eq!(
                code(parse_with(|v| v["version"] = version.into())),
                ErrorCode::ManifestVersion
            );
        }
        assert_eq!(
            code(parse_with(|v| v["format"] = "x".into())),
            ErrorCode::ManifestInvalid
        );
        assert_eq!(
            code(parse_with(|v| drop(
                v.as_object_mut().unwrap().remove("clip")
            ))),
            ErrorCode::ManifestInvalid
        );
        assert_eq!(
            code(parse_with(|v| v["clip"]["patchSize"] = 15.into())),
            ErrorCode::ManifestInvalid
        );
        assert_eq!(
            code(parse_with(|v| v["tokenizer"]["merges"] = 10.into())),
            ErrorCode::ManifestInvalid
        );
        assert_eq!(
            code(parse_with(|v| v["maskPrompts"]["depth"] = 4.into())),
            ErrorCode::ManifestInvalid
        );
        assert_eq!(
            code(parse_with(
                |v| v["templates"] = serde_json::json!(["no slot"])
            )),
            ErrorCode::ManifestInvalid
        );
        assert_eq!(
            code(parse_with(|v| v["pixelStd"] = serde_json::json!([0, 1, 1]))),
            ErrorCode::ManifestInvalid
        );
        assert_eq!(
            code(parse_with(|v| v["extra"] = 1.into())),
            ErrorCode::ManifestInvalid
        );
        let generator = |divisibility: usize, stride: usize| {
            serde_json::json!({"file": "g.onnx", "pixelMean": [123.675, 116.28, 103.53],
                "pixelStd": [58.395, 57.12, 57.375], "sizeDivisibility": divisibility, "maskStride": stride})
        };
        assert!(parse_with(|v| v["generator"] = generator(32, 4))
            .unwrap()
            .generator
            .is_some());
        assert_eq!(
            code(parse_with(|v| v["generator"] = generator(30, 4))),
            ErrorCode::ManifestInvalid
        );
        assert_eq!(
            code(parse_with(|v| v["generator"] = generator(32, 0))),
            ErrorCode::ManifestInvalid
        );
        let processing =
            |short: usize, max: usize| serde_json::json!({"shortSide": short, "maxSize": max});
        assert_eq!(
            parse_with(|v| v["processing"] = processing(128, 512))
                .unwrap()
                .processing_size(),
            ProcessingSize {
                short_side: 128,
                max_size: 512
            }
        );
        assert_eq!(
            parse_with(|_| {}).unwrap().processing_size(),
            ProcessingSize::OVSEG
        );
        assert_eq!(
            code(parse_with(|v| v["processing"] = processing(0, 512))),
            ErrorCode::ManifestInvalid
        );
        assert_eq!(
            code(parse_with(|v| v["processing"] = processing(600, 512))),
            ErrorCode::ManifestInvalid
        );
        let missing = parse_with(|v| drop(v["clip"].as_object_mut().unwrap().remove("embedDim")))
            .unwrap_err();
        assert!(missing.message.contains("embedDim"), "{}", missing.message);
    }

    /// `valid()` as format version 2 with `defaults`.
    fn with_defaults(defaults: serde_json::Value) -> Result<Manifest> {
        parse_with(|v| {
            v["version"] = 2.into();
            v["defaults"] = defaults;
        })
    }

    #[test]
    fn version_2_adds_defaults() {
        // Version 1 and 2 without defaults: the built-in ones.
        for version in [1, 2] {
            let m = parse_with(|v| v["version"] = version.into()).unwrap();
            assert_eq!((m.version, m.defaults), (version, None));
            assert_eq!(m.segment_defaults(), Defaults::default());
        }
        let m = with_defaults(serde_json::json!({
            "mode": "demo", "semantic": {"threshold": 0.5, "lambda": 0.7}, "demo": {"lambda": 0.25}
        }))
        .unwrap();
        let d = m.segment_defaults();
        assert_eq!(d.mode(), Mode::Demo);
        assert_eq!(
            (d.threshold(Mode::Semantic), d.lambda(Mode::Semantic)),
            (0.5, 0.7)
        );
        // The piece the manifest leaves out is the built-in one.
        assert_eq!(
            (d.threshold(Mode::Demo), d.lambda(Mode::Demo)),
            (0.35, 0.25)
        );
        assert_eq!(Manifest::parse(&m.to_json()).unwrap(), m);
        assert_eq!(
            d.complete().to_json(),
            r#"{"mode":"demo","semantic":{"threshold":0.5,"lambda":0.7},"demo":{"threshold":0.35,"lambda":0.25}}"#
        );
        assert_eq!(
            Defaults::default().complete().to_json(),
            r#"{"mode":"semantic","semantic":{"threshold":0.4,"lambda":0.7},"demo":{"threshold":0.35,"lambda":0.0}}"#
        );
        // Every piece is optional.
        let empty = with_defaults(serde_json::json!({"semantic": {}})).unwrap();
        assert_eq!(
            empty.segment_defaults().complete(),
            Defaults::default().complete()
        );
    }

    #[test]
    fn bad_defaults_are_manifest_invalid_naming_the_field() {
        let message = |r: Result<Manifest>| {
            let e = r.unwrap_err();
            assert_eq!(e.code, ErrorCode::ManifestInvalid, "{}", e.message);
            e.message
        };
        let v1 = message(parse_with(|v| {
            v["defaults"] = serde_json::json!({"mode": "demo"})
        }));
        assert!(v1.contains("defaults") && v1.contains("version 2"), "{v1}");
        for (defaults, names) in [
            (
                serde_json::json!({"semantic": {"lambda": 1.5}}),
                "defaults.semantic.lambda",
            ),
            (
                serde_json::json!({"demo": {"lambda": -0.1}}),
                "defaults.demo.lambda",
            ),
            // Past f32's range: infinite.
            (
                serde_json::json!({"demo": {"threshold": 1e39}}),
                "defaults.demo.threshold",
            ),
            (
                serde_json::json!({"semantic": {"threshold": "0.5"}}),
                "defaults.semantic",
            ),
            (serde_json::json!({"mode": "panoptic"}), "defaults.mode"),
            (serde_json::json!({"mode": 1}), "defaults.mode"),
            (
                serde_json::json!({"semantic": {"treshold": 0.5}}),
                "defaults.semantic: unknown field `treshold`",
            ),
            (
                serde_json::json!({"panoptic": {}}),
                "defaults: unknown field `panoptic`",
            ),
            (serde_json::json!({"demo": 0.35}), "defaults.demo"),
            (
                serde_json::json!({"demo": [0.35, 0.0]}),
                "defaults.demo must be an object",
            ),
            (serde_json::json!([]), "defaults must be an object"),
        ] {
            let m = message(with_defaults(defaults.clone()));
            assert!(m.contains(names), "{defaults}: {m}");
        }
        // Lambda's bounds and any finite threshold are accepted.
        assert!(with_defaults(serde_json::json!({
            "semantic": {"threshold": -2.0, "lambda": 0.0}, "demo": {"threshold": 0.99, "lambda": 1.0}
        }))
        .is_ok());
    }

    #[test]
    fn absurd_sizes_are_manifest_invalid() {
        let code = |r: Result<Manifest>| r.map(|_| ()).err().map(|e| e.code);
        let generator = |divisibility: u64| {
            serde_json::json!({"file": "g.onnx", "pixelMean": [123.675, 116.28, 103.53],
                "pixelStd": [58.395, 57.12, 57.375], "sizeDivisibility": divisibility, "maskStride": 4})
        };
        type Edit = Box<dyn Fn(&mut serde_json::Value)>;
        let cases: Vec<(&str, Edit)> = vec![
            (
                "imageSize 8388608, no prompts",
                Box::new(|v| {
                    v["clip"]["imageSize"] = 8388608.into();
                    v["maskPrompts"] = serde_json::Value::Null;
                }),
            ),
            (
                "visionLayers 1e12",
                Box::new(|v| v["clip"]["visionLayers"] = 1_000_000_000_000u64.into()),
            ),
            (
                "sizeDivisibility 2^40",
                Box::new(move |v| v["generator"] = generator(1 << 40)),
            ),
            (
                "sizeDivisibility 65536",
                Box::new(move |v| v["generator"] = generator(65536)),
            ),
            (
                "shortSide 100000",
                Box::new(|v| {
                    v["processing"] = serde_json::json!({"shortSide": 100000, "maxSize": 100000})
                }),
            ),
            (
                "maxSize 100000",
                Box::new(|v| {
                    v["processing"] = serde_json::json!({"shortSide": 640, "maxSize": 100000})
                }),
            ),
            (
                "prompt table",
                Box::new(|v| {
                    v["clip"]["imageSize"] = 2048.into();
                    v["clip"]["patchSize"] = 16.into();
                    v["clip"]["visionWidth"] = 8192.into();
                }),
            ),
            (
                "patches",
                Box::new(|v| {
                    v["clip"]["imageSize"] = 2048.into();
                    v["clip"]["patchSize"] = 8.into();
                    v["clip"]["visionWidth"] = 1.into();
                }),
            ),
            (
                "contextLength",
                Box::new(|v| v["clip"]["contextLength"] = 1_000_000.into()),
            ),
            (
                "embedDim",
                Box::new(|v| v["clip"]["embedDim"] = 1_000_000.into()),
            ),
            (
                "merges overflow",
                Box::new(|v| v["tokenizer"]["merges"] = u64::MAX.into()),
            ),
            (
                "pixelStd 1e-45",
                Box::new(|v| v["pixelStd"] = serde_json::json!([1e-45, 0.25, 0.25])),
            ),
            (
                "pixelMean 1e30",
                Box::new(|v| v["pixelMean"] = serde_json::json!([1e30, 0.5, 0.5])),
            ),
        ];
        for (name, edit) in cases {
            assert_eq!(
                code(parse_with(edit)),
                Some(ErrorCode::ManifestInvalid),
                "{name}"
            );
        }
        // The bounds themselves are accepted.
        assert!(parse_with(|v| v["generator"] = generator(256)).is_ok());
        assert!(parse_with(
            |v| v["processing"] = serde_json::json!({"shortSide": 2048, "maxSize": 4096})
        )
        .is_ok());
    }

    #[test]
    fn non_utf8_is_manifest_invalid() {
        let mut bytes = valid().to_string().into_bytes();
        bytes.insert(1, 0xff);
        assert_eq!(
            Manifest::parse_bytes(&bytes).unwrap_err().code,
            ErrorCode::ManifestInvalid
        );
        assert!(Manifest::parse_bytes(valid().to_string().as_bytes()).is_ok());
    }
}
