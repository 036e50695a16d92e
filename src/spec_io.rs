//! Experiment files on disk: discovery, loading, and the files an experiment names (prompt
//! datasets, traces, a tokenizer.json), read relative to the experiment's own directory.
//! Parsing and validation are `spec`'s, which reads nothing itself.

use crate::core::tokens::{Tokenizer, TokenizerError};
use crate::spec::{self, Experiment, Files, SpecError};
use crate::tokenize::ModelTokenizer;
use std::path::{Path, PathBuf};

/// The experiment files (`*.toml`) in `dir`, sorted by name.
pub fn discover(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// Reads and validates one experiment file. Its name is the file stem.
pub fn load(path: &Path) -> Result<Experiment, SpecError> {
    let file = path.display().to_string();
    let src = std::fs::read_to_string(path).map_err(|source| SpecError::Io {
        file: file.clone(),
        source,
    })?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    parse(&file, &stem, &src)
}

/// Parses and validates `src` as if read from `file`: the files it names are read beside it.
pub fn parse(file: &str, name: &str, src: &str) -> Result<Experiment, SpecError> {
    spec::parse_with(file, name, src, &Beside::file(file))
}

/// Files named relative to an experiment file's directory.
pub struct Beside {
    dir: PathBuf,
}

impl Beside {
    /// Beside the experiment file `file`.
    pub fn file(file: &str) -> Self {
        Self {
            dir: Path::new(file)
                .parent()
                .unwrap_or(Path::new("."))
                .to_path_buf(),
        }
    }
}

impl Files for Beside {
    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    fn read(&self, file: &str) -> std::io::Result<String> {
        std::fs::read_to_string(self.dir.join(file))
    }

    fn tokenizer(&self, file: &str) -> Result<Tokenizer, TokenizerError> {
        ModelTokenizer::load(file, &self.dir.join(file))
    }
}
