//! Model file sources: a local directory, or a Hugging Face Hub id resolved from the
//! local Hub cache and, with the `hub` feature, downloaded when missing.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::EncoderError;

/// The three files of a model in the Hugging Face layout.
pub const MODEL_FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];

/// The 4-bit multilingual-e5-small weights file; a directory with it and `tokenizer.json`
/// needs no `config.json`, because the file's header carries the model's dimensions.
pub const E5_Q4_FILE: &str = "e5-small-q4.bin";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    Directory(PathBuf),
    /// A Hub repository id such as `sentence-transformers/all-MiniLM-L6-v2`, with a revision.
    Hub { id: String, revision: String },
}

/// Paths of a model's files on local disk.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// Model name as configured, for messages and the manifest.
    pub name: String,
    pub tokenizer: PathBuf,
    pub weights: ModelWeights,
}

/// The weights of a model and the format they are stored in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelWeights {
    /// `config.json` and `model.safetensors` with tensors named as in Hugging Face BERT.
    Safetensors { config: PathBuf, weights: PathBuf },
    /// An `e5-small-q4.bin` file: header with the model's dimensions, then Q4_0 and f32 tensors.
    E5Q4 { path: PathBuf },
}

impl ModelSource {
    /// Reads `model.source`: an existing directory, anything containing a path separator that
    /// looks local (`./`, `/`, `models/`), or else a Hub id of the form `owner/name`.
    pub fn parse(source: &str, revision: &str) -> Self {
        let path = Path::new(source);
        let looks_local = path.is_dir()
            || path.is_absolute()
            || source.starts_with('.')
            || source.starts_with("models/")
            || source.matches('/').count() != 1;
        if looks_local {
            ModelSource::Directory(path.to_path_buf())
        } else {
            ModelSource::Hub { id: source.to_string(), revision: revision.to_string() }
        }
    }

    /// Finds the model files on disk, downloading them first when this is a Hub id that is
    /// not cached and the `hub` feature is on.
    pub fn resolve(&self) -> Result<ModelFiles, EncoderError> {
        match self {
            ModelSource::Directory(dir) => resolve_directory(dir),
            ModelSource::Hub { id, revision } => resolve_hub(id, revision),
        }
    }
}

/// Resolves a model directory. It is in the e5 4-bit layout when it has `e5-small-q4.bin` and
/// neither `config.json` nor `model.safetensors`, and in the Hugging Face layout otherwise.
fn resolve_directory(dir: &Path) -> Result<ModelFiles, EncoderError> {
    if !dir.is_dir() {
        return Err(EncoderError::ModelNotFound {
            source_name: dir.display().to_string(),
            hint: "the directory does not exist; run scripts/fetch-models.sh or set model.source".into(),
        });
    }
    let [config, tokenizer, weights] = MODEL_FILES.map(|name| dir.join(name));
    let q4_path = dir.join(E5_Q4_FILE);
    let is_e5_q4 = q4_path.is_file() && !config.is_file() && !weights.is_file();
    let weights = if is_e5_q4 {
        ModelWeights::E5Q4 { path: q4_path }
    } else {
        ModelWeights::Safetensors { config, weights }
    };

    let files = ModelFiles { name: dir.display().to_string(), tokenizer, weights };
    if let Some(missing) = files.paths().into_iter().find(|path| !path.is_file()) {
        return Err(EncoderError::MissingFile { path: missing.to_path_buf() });
    }
    Ok(files)
}

fn resolve_hub(id: &str, revision: &str) -> Result<ModelFiles, EncoderError> {
    let repo = hf_hub::Repo::with_revision(id.to_string(), hf_hub::RepoType::Model, revision.to_string());
    let cached = hf_hub::Cache::from_env().repo(repo.clone());
    let found: Option<Vec<PathBuf>> = MODEL_FILES.iter().map(|name| cached.get(name)).collect();
    let paths = match found {
        Some(paths) => paths,
        None => download_from_hub(id, repo)?,
    };
    Ok(ModelFiles {
        name: id.to_string(),
        tokenizer: paths[1].clone(),
        weights: ModelWeights::Safetensors { config: paths[0].clone(), weights: paths[2].clone() },
    })
}

#[cfg(feature = "hub")]
fn download_from_hub(id: &str, repo: hf_hub::Repo) -> Result<Vec<PathBuf>, EncoderError> {
    let fail = |message: String| EncoderError::Download { source_name: id.to_string(), message };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|err| fail(err.to_string()))?;
    runtime.block_on(async {
        let api = hf_hub::api::tokio::ApiBuilder::from_env().build().map_err(|err| fail(err.to_string()))?;
        let remote = api.repo(repo);
        let mut paths = Vec::with_capacity(MODEL_FILES.len());
        for name in MODEL_FILES {
            paths.push(remote.get(name).await.map_err(|err| fail(format!("{name}: {err}")))?);
        }
        Ok(paths)
    })
}

#[cfg(not(feature = "hub"))]
fn download_from_hub(id: &str, _repo: hf_hub::Repo) -> Result<Vec<PathBuf>, EncoderError> {
    Err(EncoderError::ModelNotFound {
        source_name: id.to_string(),
        hint: "it is not in the local Hugging Face cache (HF_HOME) and this binary was built without the `hub` \
               feature; download it, or rebuild with `--features hub`, or point model.source at a local directory"
            .into(),
    })
}

impl ModelFiles {
    /// Returns every file the encoder reads, in the order the fingerprint hashes them.
    pub fn paths(&self) -> Vec<&Path> {
        match &self.weights {
            ModelWeights::Safetensors { config, weights } => vec![config, &self.tokenizer, weights],
            ModelWeights::E5Q4 { path } => vec![&self.tokenizer, path],
        }
    }

    /// Hashes every file the encoder reads, so an index is never served with another model.
    /// For the Hugging Face layout the order is config, tokenizer, weights, as it always was,
    /// so existing data directories keep their fingerprint.
    pub fn fingerprint(&self) -> Result<String, EncoderError> {
        let mut hasher = Sha256::new();
        for path in self.paths() {
            let io_error = |source| EncoderError::Io { path: path.to_path_buf(), source };
            let mut file = std::fs::File::open(path).map_err(io_error)?;
            std::io::copy(&mut file, &mut hasher).map_err(io_error)?;
        }
        Ok(hex::encode(hasher.finalize()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_parse_distinguishes_directories_and_hub_ids() {
        assert_eq!(
            ModelSource::parse("models/all-MiniLM-L6-v2", "main"),
            ModelSource::Directory("models/all-MiniLM-L6-v2".into())
        );
        assert_eq!(ModelSource::parse("/opt/model", "main"), ModelSource::Directory("/opt/model".into()));
        assert_eq!(
            ModelSource::parse("sentence-transformers/all-MiniLM-L6-v2", "main"),
            ModelSource::Hub { id: "sentence-transformers/all-MiniLM-L6-v2".into(), revision: "main".into() }
        );
    }

    #[test]
    fn missing_directory_names_fetch_script() {
        let err = ModelSource::Directory("/nonexistent/model".into()).resolve().unwrap_err();
        assert!(err.to_string().contains("fetch-models.sh"), "{err}");
    }

    #[test]
    fn directory_with_q4_file_resolves_to_e5_q4() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tokenizer.json"), "{}").unwrap();
        std::fs::write(dir.path().join(E5_Q4_FILE), "E5S1").unwrap();
        let files = ModelSource::Directory(dir.path().to_path_buf()).resolve().unwrap();
        assert_eq!(files.weights, ModelWeights::E5Q4 { path: dir.path().join(E5_Q4_FILE) });
        assert_eq!(files.paths(), [dir.path().join("tokenizer.json"), dir.path().join(E5_Q4_FILE)]);
    }

    #[test]
    fn safetensors_files_take_precedence_over_q4_file() {
        let dir = tempfile::tempdir().unwrap();
        for name in MODEL_FILES.iter().chain([&E5_Q4_FILE]) {
            std::fs::write(dir.path().join(name), name).unwrap();
        }
        let files = ModelSource::Directory(dir.path().to_path_buf()).resolve().unwrap();
        assert_eq!(
            files.weights,
            ModelWeights::Safetensors { config: dir.path().join("config.json"), weights: dir.path().join("model.safetensors") }
        );
    }

    #[test]
    fn missing_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let resolve = || ModelSource::Directory(dir.path().to_path_buf()).resolve().unwrap_err().to_string();
        assert_eq!(resolve(), format!("model file {} not found", dir.path().join("config.json").display()));

        std::fs::write(dir.path().join(E5_Q4_FILE), "E5S1").unwrap();
        assert_eq!(resolve(), format!("model file {} not found", dir.path().join("tokenizer.json").display()));

        std::fs::write(dir.path().join("tokenizer.json"), "{}").unwrap();
        std::fs::write(dir.path().join("config.json"), "{}").unwrap();
        assert_eq!(resolve(), format!("model file {} not found", dir.path().join("model.safetensors").display()));
    }

    #[test]
    fn fingerprint_hashes_the_files_in_use() {
        let dir = tempfile::tempdir().unwrap();
        for name in MODEL_FILES.iter().chain([&E5_Q4_FILE]) {
            std::fs::write(dir.path().join(name), format!("contents of {name}")).unwrap();
        }
        let safetensors = ModelSource::Directory(dir.path().to_path_buf()).resolve().unwrap();
        let expected = Sha256::digest("contents of config.jsoncontents of tokenizer.jsoncontents of model.safetensors");
        assert_eq!(safetensors.fingerprint().unwrap(), hex::encode(expected));

        std::fs::remove_file(dir.path().join("config.json")).unwrap();
        std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
        let q4 = ModelSource::Directory(dir.path().to_path_buf()).resolve().unwrap();
        let expected = Sha256::digest(format!("contents of tokenizer.jsoncontents of {E5_Q4_FILE}"));
        assert_eq!(q4.fingerprint().unwrap(), hex::encode(expected));
    }
}
