//! Generation and evaluation on top of [`crate::model::Model`].

pub mod imatrix;
pub mod perplexity;
pub mod sampler;

pub use imatrix::{compute_imatrix, ImatrixOptions, ImatrixRun};
pub use perplexity::{perplexity, PerplexityOptions, PerplexityResult};
pub use sampler::{Sampler, SamplingParams};
