//! Tokenizer throughput on class prompts (OVSeg's 14 templates x 150 names), OpenAI's vocabulary.
//! cargo bench -p ovseg-core --bench tokenizer

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ovseg_core::{Overflow, Tokenizer};

const TEMPLATES: [&str; 4] = [
    "a photo of a {}.",
    "There is a {} in the scene",
    "This is a photo of a large {}.",
    "a photo of a small {}.",
];
const NAMES: &str = "wall building sky floor tree ceiling road bed windowpane grass cabinet sidewalk person earth door table \
mountain plant curtain chair car water painting sofa shelf house sea mirror rug field armchair seat fence desk rock wardrobe \
lamp bathtub railing cushion base box column signboard chest counter sand sink skyscraper fireplace refrigerator grandstand \
path stairs runway case pool pillow screen stairway river bridge bookcase blind toilet flower book hill bench countertop stove \
palm kitchen computer boat bar arcade hovel bus towel light truck tower chandelier awning streetlight booth television airplane";

fn bench(c: &mut Criterion) {
    let vocab = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../models/tiny-random/bpe_simple_vocab_16e6.txt.gz");
    let tokenizer = Tokenizer::from_file(&vocab, Some(48_894), 77).expect("vocabulary");
    let prompts: Vec<String> = NAMES
        .split(' ')
        .flat_map(|n| TEMPLATES.iter().map(move |t| t.replace("{}", n)))
        .collect();
    let mut group = c.benchmark_group("tokenizer");
    group.throughput(Throughput::Elements(prompts.len() as u64));
    group.bench_function("class prompts", |b| {
        b.iter(|| tokenizer.tokenize(&prompts, Overflow::Error).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
