//! Generation and evaluation on top of [`crate::model::Model`].

pub mod perplexity;
pub mod sampler;

pub use perplexity::{perplexity, PerplexityOptions, PerplexityResult};
pub use sampler::{Sampler, SamplingParams};
