//! Model file sources: a local directory, or a Hugging Face Hub id resolved from the
//! local Hub cache and, with the `hub` feature, downloaded when missing.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::EncoderError;

/// The three files an encoder is built from.
pub const MODEL_FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];

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
    pub config: PathBuf,
    pub tokenizer: PathBuf,
    pub weights: PathBuf,
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

fn resolve_directory(dir: &Path) -> Result<ModelFiles, EncoderError> {
    if !dir.is_dir() {
        return Err(EncoderError::ModelNotFound {
            source_name: dir.display().to_string(),
            hint: "the directory does not exist; run scripts/fetch-models.sh or set model.source".into(),
        });
    }
    let [config, tokenizer, weights] = MODEL_FILES.map(|name| dir.join(name));
    for path in [&config, &tokenizer, &weights] {
        if !path.is_file() {
            return Err(EncoderError::MissingFile { path: path.clone() });
        }
    }
    Ok(ModelFiles { name: dir.display().to_string(), config, tokenizer, weights })
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
        config: paths[0].clone(),
        tokenizer: paths[1].clone(),
        weights: paths[2].clone(),
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
    /// Hashes the config, tokenizer and weights, so an index is never served with another model.
    pub fn fingerprint(&self) -> Result<String, EncoderError> {
        let mut hasher = Sha256::new();
        for path in [&self.config, &self.tokenizer, &self.weights] {
            let mut file = std::fs::File::open(path).map_err(|source| EncoderError::Io { path: path.clone(), source })?;
            std::io::copy(&mut file, &mut hasher).map_err(|source| EncoderError::Io { path: path.clone(), source })?;
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
}
