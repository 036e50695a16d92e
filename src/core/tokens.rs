//! Token counting as an experiment holds it: a model's tokenizer, named by the file written in
//! the experiment, with the word pool synthetic prompts are drawn from and a counter behind a
//! trait, so the experiment stays data (loading a `tokenizer.json` is `tokenize`'s).

use std::path::PathBuf;
use std::sync::Arc;

/// The words synthetic prompts are made of: the first `first` are single tokens with or
/// without a leading space (a message's first word has none), the rest with one.
#[derive(Debug, Clone, PartialEq)]
pub struct WordPool {
    pub words: Vec<String>,
    pub first: usize,
}

/// Counts a text's tokens.
pub trait TokenCount: Send + Sync {
    /// Tokens in `text`, special tokens (BOS) not added; `None` when it cannot be encoded.
    fn count(&self, text: &str) -> Option<usize>;
}

/// A model's tokenizer: the file as written in the experiment, the word pool drawn from its
/// vocabulary, and what counts with it.
#[derive(Clone)]
pub struct Tokenizer {
    pub file: String,
    pub pool: Arc<WordPool>,
    pub counter: Arc<dyn TokenCount>,
}

impl Tokenizer {
    pub fn count(&self, text: &str) -> Option<usize> {
        self.counter.count(text)
    }
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("file", &self.file)
            .field("words", &self.pool.words.len())
            .finish()
    }
}

/// Why a tokenizer file cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("tokenizer file {} does not exist", .0.display())]
    Missing(PathBuf),
    #[error("{} is not a tokenizer.json: {message}", path.display())]
    NotATokenizer { path: PathBuf, message: String },
    #[error("the tokenizer has no plain word that is a single token")]
    NoWords,
    #[error(
        "the tokenizer has too few plain words that are single tokens ({all} in all, {alone} on their own; 64 and 8 are needed)"
    )]
    TooFewWords { all: usize, alone: usize },
}
