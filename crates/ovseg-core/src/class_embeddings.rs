//! Feature normalization, OVSeg's template ensembling of class embeddings, and their cache.

use std::collections::VecDeque;
use std::sync::Arc;

/// L2-normalizes each `dim`-long row in place (a zero row stays zero).
pub fn l2_normalize_rows(data: &mut [f32], dim: usize) {
    for row in data.chunks_exact_mut(dim) {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            row.iter_mut().for_each(|v| *v /= norm);
        }
    }
}

/// Fills each template with the class name, verbatim (`template.format(name)`).
pub fn fill_templates(classes: &[impl AsRef<str>], templates: &[impl AsRef<str>]) -> Vec<String> {
    classes
        .iter()
        .flat_map(|c| {
            templates
                .iter()
                .map(move |t| t.as_ref().replacen("{}", c.as_ref(), 1))
        })
        .collect()
}

/// `features`: text features `[classes * templates, dim]`, class-major (as `fill_templates` orders them).
/// Returns `[classes, dim]`: normalize each, average over templates, normalize again.
pub fn ensemble_templates(mut features: Vec<f32>, templates: usize, dim: usize) -> Vec<f32> {
    l2_normalize_rows(&mut features, dim);
    let mut out: Vec<f32> = features
        .chunks_exact(templates * dim)
        .flat_map(|class| {
            let mut mean = vec![0f32; dim];
            for row in class.chunks_exact(dim) {
                mean.iter_mut().zip(row).for_each(|(m, v)| *m += v);
            }
            mean.iter_mut().for_each(|m| *m /= templates as f32);
            mean
        })
        .collect();
    l2_normalize_rows(&mut out, dim);
    out
}

/// What a class matrix depends on besides the model: the names, the templates, the overflow policy.
pub type ClassKey = (Vec<String>, Vec<String>, bool);

/// The cache key of `classes` under `templates` and `overflow`.
pub fn class_key(
    classes: &[impl AsRef<str>],
    templates: &[String],
    overflow: crate::tokenizer::Overflow,
) -> ClassKey {
    (
        classes.iter().map(|c| c.as_ref().to_owned()).collect(),
        templates.to_vec(),
        overflow == crate::tokenizer::Overflow::Truncate,
    )
}

/// The most recently used class matrices (`[classes, dim]`, unit rows), so a repeated vocabulary
/// runs no text encoder.
pub struct ClassEmbeddingCache {
    entries: VecDeque<(ClassKey, Arc<Vec<f32>>)>,
    capacity: usize,
    pub hits: u64,
    pub misses: u64,
}

impl ClassEmbeddingCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: VecDeque::with_capacity(capacity),
            capacity,
            hits: 0,
            misses: 0,
        }
    }

    /// The cached matrix, moved to the front; counts a hit or a miss.
    pub fn get(&mut self, key: &ClassKey) -> Option<Arc<Vec<f32>>> {
        match self.entries.iter().position(|(k, _)| k == key) {
            Some(i) => {
                self.hits += 1;
                let entry = self.entries.remove(i).expect("index from position");
                let value = Arc::clone(&entry.1);
                self.entries.push_front(entry);
                Some(value)
            }
            None => {
                self.misses += 1;
                None
            }
        }
    }

    pub fn insert(&mut self, key: ClassKey, value: Arc<Vec<f32>>) {
        self.entries.retain(|(k, _)| *k != key);
        self.entries.push_front((key, value));
        self.entries.truncate(self.capacity);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_keeps_the_most_recent_and_counts() {
        let key = |c: &str| (vec![c.to_owned()], vec!["{}".to_owned()], false);
        let mut cache = ClassEmbeddingCache::new(2);
        assert!(cache.get(&key("a")).is_none());
        cache.insert(key("a"), Arc::new(vec![1.0]));
        cache.insert(key("b"), Arc::new(vec![2.0]));
        assert_eq!(*cache.get(&key("a")).unwrap(), vec![1.0]); // "a" is now the most recent
        cache.insert(key("c"), Arc::new(vec![3.0])); // evicts "b"
        assert!(cache.get(&key("b")).is_none());
        assert!(cache.get(&key("a")).is_some() && cache.get(&key("c")).is_some());
        assert_eq!((cache.hits, cache.misses), (3, 2));
    }

    #[test]
    fn templates_fill_verbatim() {
        let names = fill_templates(
            &["building, edifice"],
            &["a photo of a {}.", "There is a {} in the scene"],
        );
        assert_eq!(
            names,
            [
                "a photo of a building, edifice.",
                "There is a building, edifice in the scene"
            ]
        );
    }

    #[test]
    fn ensemble_normalizes_mean_normalizes() {
        // Class 0: templates (3,4) and (0,2) -> normalized (0.6,0.8), (0,1) -> mean (0.3,0.9) -> normalized.
        // Class 1: one direction twice.
        let out = ensemble_templates(vec![3.0, 4.0, 0.0, 2.0, 1.0, 0.0, 5.0, 0.0], 2, 2);
        let n = (0.3f32 * 0.3 + 0.9 * 0.9).sqrt();
        assert!((out[0] - 0.3 / n).abs() < 1e-6 && (out[1] - 0.9 / n).abs() < 1e-6);
        assert_eq!(&out[2..], &[1.0, 0.0]);
    }
}
