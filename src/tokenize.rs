//! Exact prompt lengths with the model's own tokenizer: a local `tokenizer.json` named in the
//! experiment (`[model] tokenizer`), never downloaded.
//!
//! Synthetic prompts are words, one token each. Without a tokenizer the words come from a
//! list that is single-token in Llama-family vocabularies (lengths elsewhere are approximate,
//! and the summary says so). With one, the words are drawn from its own vocabulary — entries
//! that encode to exactly one token with and without a leading space — and every planned prompt
//! is counted with it before the run, so the summary can say the lengths are exact, or which
//! ones are not.

use std::path::Path;
use std::sync::Arc;

use crate::core::tokens::{TokenCount, Tokenizer};
pub use crate::core::tokens::{TokenizerError, WordPool};

/// A `tokenizer.json`, loaded: what counts an experiment's tokens.
pub struct ModelTokenizer(tokenizers::Tokenizer);

impl TokenCount for ModelTokenizer {
    fn count(&self, text: &str) -> Option<usize> {
        self.0.encode(text, false).ok().map(|e| e.get_ids().len())
    }
}

/// Most words taken from a vocabulary (by token id, so the pool is stable).
const MAX_WORDS: usize = 4096;

impl ModelTokenizer {
    /// Loads `path` (written as `file` in the experiment) and draws its word pool.
    pub fn load(file: &str, path: &Path) -> Result<Tokenizer, TokenizerError> {
        if !path.is_file() {
            return Err(TokenizerError::Missing(path.to_path_buf()));
        }
        let tokenizer =
            tokenizers::Tokenizer::from_file(path).map_err(|e| TokenizerError::NotATokenizer {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        let pool = word_pool(&tokenizer)?;
        Ok(Tokenizer {
            file: file.to_string(),
            pool: Arc::new(pool),
            counter: Arc::new(ModelTokenizer(tokenizer)),
        })
    }
}

/// Vocabulary entries that read as a plain lower-case word and stay one token after another
/// word and a space; those that are one token on their own too come first.
fn word_pool(t: &tokenizers::Tokenizer) -> Result<WordPool, TokenizerError> {
    let count = |text: &str| t.encode(text, false).map_or(0, |e| e.get_ids().len());
    let mut vocab: Vec<(String, u32)> = t.get_vocab(false).into_iter().collect();
    vocab.sort_by_key(|(_, id)| *id);
    let mut candidates = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (_, id) in vocab {
        let Ok(text) = t.decode(&[id], true) else {
            continue;
        };
        let w = text.trim();
        if (2..=12).contains(&w.len())
            && w.bytes().all(|b| b.is_ascii_lowercase())
            && seen.insert(w.to_string())
        {
            candidates.push(w.to_string());
        }
    }
    // Words that are one token alone and after a space: they can start a prompt.
    let both: Vec<String> = candidates
        .iter()
        .filter(|w| count(w) == 1 && count(&format!("{w} {w}")) == 2)
        .take(MAX_WORDS)
        .cloned()
        .collect();
    let Some(anchor) = both.first().cloned() else {
        return Err(TokenizerError::NoWords);
    };
    let in_both: std::collections::HashSet<&String> = both.iter().collect();
    let spaced: Vec<String> = candidates
        .iter()
        .filter(|w| !in_both.contains(w) && count(&format!("{anchor} {w}")) == 2)
        .take(MAX_WORDS.saturating_sub(both.len()))
        .cloned()
        .collect();
    if both.len() < 8 || both.len() + spaced.len() < 64 {
        return Err(TokenizerError::TooFewWords {
            all: both.len() + spaced.len(),
            alone: both.len(),
        });
    }
    let first = both.len();
    let mut words = both;
    words.extend(spaced);
    Ok(WordPool { words, first })
}
