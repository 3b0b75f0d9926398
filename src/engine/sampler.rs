//! Token sampling: greedy, temperature, top-k, top-p, min-p, repeat penalty, seeded.
//!
//! The chain runs in llama.cpp's default order: repeat penalty, top-k, top-p, min-p, temperature,
//! then a draw from the softmax. A temperature of 0 (or below) is greedy (argmax, first index wins
//! ties, like llama.cpp's greedy sampler).

/// Sampling parameters (llama.cpp's defaults).
#[derive(Debug, Clone)]
pub struct SamplingParams {
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
    pub min_p: f32,
    pub repeat_penalty: f32,
    /// How many recent tokens the repeat penalty looks at.
    pub repeat_last_n: usize,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 0,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding.
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: 0.0,
            ..Default::default()
        }
    }
}

/// SplitMix64: small, seedable, good enough for sampling.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A sampler with its own random state and history of produced tokens.
pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
    history: Vec<u32>,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Sampler {
        let rng = Rng(params.seed);
        Sampler {
            params,
            rng,
            history: Vec::new(),
        }
    }

    /// Record tokens (e.g. the prompt) for the repeat penalty.
    pub fn accept(&mut self, tok: u32) {
        self.history.push(tok);
    }

    /// Pick the next token from `logits` and record it.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let tok = self.pick(logits);
        self.accept(tok);
        tok
    }

    fn pick(&mut self, logits: &[f32]) -> u32 {
        let p = &self.params;
        let mut cand: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, l))
            .collect();
        if p.repeat_penalty != 1.0 && p.repeat_last_n > 0 {
            let start = self.history.len().saturating_sub(p.repeat_last_n);
            let mut seen = std::collections::HashSet::new();
            for &t in &self.history[start..] {
                if seen.insert(t) {
                    if let Some(c) = cand.get_mut(t as usize) {
                        c.1 = if c.1 <= 0.0 {
                            c.1 * p.repeat_penalty
                        } else {
                            c.1 / p.repeat_penalty
                        };
                    }
                }
            }
        }
        if p.temperature <= 0.0 {
            let mut best = 0;
            for (i, c) in cand.iter().enumerate() {
                if c.1 > cand[best].1 {
                    best = i;
                }
            }
            return cand[best].0;
        }
        // Sort descending by logit (stable, so ties keep the lower id first).
        cand.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap_or(std::cmp::Ordering::Equal));
        if p.top_k > 0 && p.top_k < cand.len() {
            cand.truncate(p.top_k);
        }
        let softmax = |c: &[(u32, f32)]| -> Vec<f64> {
            let max = c[0].1 as f64;
            let e: Vec<f64> = c.iter().map(|x| (x.1 as f64 - max).exp()).collect();
            let s: f64 = e.iter().sum();
            e.into_iter().map(|x| x / s).collect()
        };
        if p.top_p < 1.0 {
            let probs = softmax(&cand);
            let mut cum = 0.0;
            let mut keep = cand.len();
            for (i, pr) in probs.iter().enumerate() {
                cum += pr;
                if cum >= p.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
            cand.truncate(keep.max(1));
        }
        if p.min_p > 0.0 {
            let probs = softmax(&cand);
            let thresh = probs[0] * p.min_p as f64;
            let keep = probs.iter().take_while(|&&x| x >= thresh).count();
            cand.truncate(keep.max(1));
        }
        for c in cand.iter_mut() {
            c.1 /= p.temperature;
        }
        let probs = softmax(&cand);
        let r = self.rng.next_f64();
        let mut cum = 0.0;
        for (i, pr) in probs.iter().enumerate() {
            cum += pr;
            if r < cum {
                return cand[i].0;
            }
        }
        cand[cand.len() - 1].0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_first_maximum() {
        let mut s = Sampler::new(SamplingParams::greedy());
        assert_eq!(s.sample(&[0.0, 3.0, 1.0, 3.0]), 1);
    }

    #[test]
    fn top_k_one_is_greedy_at_any_temperature() {
        let mut s = Sampler::new(SamplingParams {
            temperature: 5.0,
            top_k: 1,
            ..Default::default()
        });
        for _ in 0..20 {
            assert_eq!(s.sample(&[0.5, -1.0, 2.0, 1.9]), 2);
        }
    }

    #[test]
    fn seed_makes_draws_repeatable_and_frequencies_follow_softmax() {
        let logits = [0.0f32, (2.0f32).ln(), (3.0f32).ln()]; // probabilities 1/6, 2/6, 3/6
        let params = SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: 7,
            ..Default::default()
        };
        let draw = |p: &SamplingParams| {
            let mut s = Sampler::new(p.clone());
            (0..6000).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        let a = draw(&params);
        assert_eq!(a, draw(&params));
        let mut counts = [0usize; 3];
        for t in &a {
            counts[*t as usize] += 1;
        }
        for (i, want) in [1000.0, 2000.0, 3000.0].iter().enumerate() {
            assert!((counts[i] as f64 - want).abs() < 200.0, "counts {counts:?}");
        }
    }

    #[test]
    fn repeat_penalty_demotes_seen_tokens() {
        let mut s = Sampler::new(SamplingParams {
            repeat_penalty: 2.0,
            ..SamplingParams::greedy()
        });
        s.accept(0);
        assert_eq!(s.sample(&[3.0, 2.0]), 1);
    }

    #[test]
    fn min_p_and_top_p_cut_the_tail() {
        // With min_p 0.5 only the two big logits survive; token 2 must never be drawn.
        let mut s = Sampler::new(SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.5,
            seed: 1,
            ..Default::default()
        });
        for _ in 0..500 {
            assert_ne!(s.sample(&[5.0, 5.0, 0.0]), 2);
        }
        let mut s = Sampler::new(SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 0.5,
            min_p: 0.0,
            seed: 1,
            ..Default::default()
        });
        for _ in 0..500 {
            assert_eq!(s.sample(&[5.0, 1.0, 0.0]), 0);
        }
    }
}
