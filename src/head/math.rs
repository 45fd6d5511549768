//! Vector arithmetic of the heads: means, norms, dot products, softmax. Pure
//! functions on `f32` slices (sums of many terms accumulate in f64 or in eight
//! lanes).

use std::time::Duration;

/// Mean of equally long vectors, accumulated in f64.
pub fn mean_of<'a>(vs: impl Iterator<Item = &'a [f32]>, dim: usize) -> Vec<f32> {
    let mut acc = vec![0f64; dim];
    let mut n = 0usize;
    for v in vs {
        for (a, x) in acc.iter_mut().zip(v) {
            *a += *x as f64;
        }
        n += 1;
    }
    acc.into_iter()
        .map(|a| (a / n.max(1) as f64) as f32)
        .collect()
}

/// `|v - center|`.
pub fn distance(v: &[f32], center: &[f32]) -> f32 {
    v.iter()
        .zip(center)
        .map(|(a, c)| (a - c) * (a - c))
        .sum::<f32>()
        .sqrt()
}

/// `(v - center) / scale`.
pub fn scaled_centered(v: &[f32], center: &[f32], scale: f32) -> Vec<f32> {
    v.iter().zip(center).map(|(a, c)| (a - c) / scale).collect()
}

/// Scale `z` to unit L2 norm in place (a zero vector stays zero).
pub fn l2_normalize(z: &mut [f32]) {
    let n = z.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        z.iter_mut().for_each(|x| *x /= n);
    }
}

/// The dot product of two vectors of the same length.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent sums let the compiler vectorize.
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `ln softmax(logits)`, computed stably.
pub fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = max + logits.iter().map(|l| (l - max).exp()).sum::<f32>().ln();
    logits.iter().map(|l| l - lse).collect()
}

/// `softmax(logits)`: probabilities summing to 1, computed stably.
pub fn softmax_of(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// A duration in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
