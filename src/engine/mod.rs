//! Generation and evaluation on top of [`crate::model::Model`].

pub mod chat_template;
pub mod generate;
pub mod imatrix;
pub mod perplexity;
pub mod sampler;

pub use chat_template::{ChatMessage, ChatTemplate, ChatTemplateError};
pub use generate::{
    Engine, EngineOptions, Event, FinishReason, Finished, GenerateError, GenerateParams, Output,
    Prompt, Sink, Utf8Stream,
};
pub use imatrix::{compute_imatrix, ImatrixOptions, ImatrixRun};
pub use perplexity::{perplexity, PerplexityOptions, PerplexityResult};
pub use sampler::{Sampler, SamplingParams};
