//! `manifest.json`: what a data directory was built with, checked before it is served.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::CatalogError;

pub const MANIFEST_FILE: &str = "manifest.json";

/// Bumped when the data directory layout changes incompatibly.
pub const MANIFEST_FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub model: ModelRecord,
    pub head: HeadRecord,
    pub index: IndexRecord,
    pub item_count: u64,
    pub id_field: String,
    pub text_fields: Vec<String>,
    /// Unix seconds.
    pub created_at: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRecord {
    /// The model as configured (directory or Hub id), for messages only.
    pub name: String,
    /// SHA-256 of the model files the encoder reads (`ModelFiles::fingerprint`): the identity
    /// that is checked.
    pub fingerprint: String,
    pub max_tokens: usize,
    /// Prefix put before queries; empty in data directories from before prefixes existed.
    #[serde(default)]
    pub query_prefix: String,
    /// Prefix put before item texts when they were embedded.
    #[serde(default)]
    pub passage_prefix: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadRecord {
    /// SHA-256 of the head's parameter values.
    pub checksum: String,
    /// True when the data directory contains a trained head in head.safetensors; false means
    /// the untrained head (mean pooling).
    pub stored: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexRecord {
    pub dimensions: usize,
    pub metric: String,
    pub scalar: String,
    pub connectivity: usize,
}

impl Manifest {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(MANIFEST_FILE)
    }

    pub fn read(data_dir: &Path) -> Result<Self, CatalogError> {
        let path = Self::path(data_dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(CatalogError::NotIndexed {
                    dir: data_dir.to_path_buf(),
                    hint: format!("{MANIFEST_FILE} is missing; build it with `attnrec index --catalog FILE --data-dir {}`", data_dir.display()),
                })
            }
            Err(source) => return Err(CatalogError::Io { path, source }),
        };
        let manifest: Manifest =
            serde_json::from_str(&text).map_err(|err| CatalogError::InvalidManifest { path: path.clone(), message: err.to_string() })?;
        if manifest.format != MANIFEST_FORMAT {
            return Err(CatalogError::InvalidManifest {
                path,
                message: format!("format {} is not supported (expected {MANIFEST_FORMAT}); rebuild with `attnrec index`", manifest.format),
            });
        }
        Ok(manifest)
    }

    /// Writes the manifest atomically (temporary file, then rename).
    pub fn write(&self, data_dir: &Path) -> Result<(), CatalogError> {
        let path = Self::path(data_dir);
        let partial = path.with_extension("json.partial");
        let text = serde_json::to_string_pretty(self).expect("manifest serializes");
        std::fs::write(&partial, text).map_err(|source| CatalogError::Io { path: partial.clone(), source })?;
        std::fs::rename(&partial, &path).map_err(|source| CatalogError::Io { path, source })
    }

    /// Fails with a message naming both values when the directory was built with another
    /// model or head than the ones about to serve it.
    pub fn check_compatible(&self, data_dir: &Path, model_fingerprint: &str, head_checksum: &str) -> Result<(), CatalogError> {
        let mismatch = |message: String| CatalogError::ManifestMismatch { dir: data_dir.to_path_buf(), message };
        if self.model.fingerprint != model_fingerprint {
            return Err(mismatch(format!(
                "it was indexed with model {} (fingerprint {}), but the configured model has fingerprint {}; \
                 pass --model {} (or set model.source) to serve it with that model, or re-run `attnrec index`",
                self.model.name,
                short(&self.model.fingerprint),
                short(model_fingerprint),
                self.model.name
            )));
        }
        if self.head.checksum != head_checksum {
            return Err(mismatch(format!(
                "it was indexed with head {}, but the configured head is {}; clear head.path to use the data directory's \
                 own head, or re-run `attnrec index --head FILE`",
                short(&self.head.checksum),
                short(head_checksum)
            )));
        }
        Ok(())
    }
}

impl Manifest {
    /// Fails when the configured model profile puts other prefixes before texts than the ones
    /// the index was built with, since its item vectors would not match new queries.
    pub fn check_prefixes(&self, data_dir: &Path, prefixes: &crate::encoder::TextPrefixes) -> Result<(), CatalogError> {
        if self.model.query_prefix == prefixes.query && self.model.passage_prefix == prefixes.passage {
            return Ok(());
        }
        Err(CatalogError::ManifestMismatch {
            dir: data_dir.to_path_buf(),
            message: format!(
                "it was indexed with the prefixes {:?} (queries) and {:?} (items), but the model profile sets {:?} and {:?}; \
                 set model.profile to the profile it was built with, or re-run `attnrec index`",
                self.model.query_prefix, self.model.passage_prefix, prefixes.query, prefixes.passage
            ),
        })
    }
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT,
            model: ModelRecord {
                name: "models/tiny".into(),
                fingerprint: "aaaa".repeat(16),
                max_tokens: 128,
                query_prefix: String::new(),
                passage_prefix: String::new(),
            },
            head: HeadRecord { checksum: "bbbb".repeat(16), stored: false },
            index: IndexRecord { dimensions: 32, metric: "ip".into(), scalar: "f32".into(), connectivity: 16 },
            item_count: 3,
            id_field: "id".into(),
            text_fields: vec!["title".into()],
            created_at: 0,
        }
    }

    #[test]
    fn write_and_read_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        manifest().write(dir.path()).unwrap();
        assert_eq!(Manifest::read(dir.path()).unwrap(), manifest());
    }

    #[test]
    fn missing_manifest_suggests_index_command() {
        let dir = tempfile::tempdir().unwrap();
        let err = Manifest::read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("attnrec index"), "{err}");
    }

    #[test]
    fn other_model_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let err = manifest().check_compatible(dir.path(), &"cccc".repeat(16), &"bbbb".repeat(16)).unwrap_err();
        assert!(err.to_string().contains("models/tiny"), "{err}");
    }

    #[test]
    fn other_head_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let err = manifest().check_compatible(dir.path(), &"aaaa".repeat(16), &"dddd".repeat(16)).unwrap_err();
        assert!(err.to_string().contains("head"), "{err}");
    }

    #[test]
    fn other_prefixes_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let e5 = crate::encoder::TextPrefixes { query: "query: ".into(), passage: "passage: ".into() };
        let err = manifest().check_prefixes(dir.path(), &e5).unwrap_err();
        assert!(err.to_string().contains("passage: "), "{err}");
        manifest().check_prefixes(dir.path(), &Default::default()).unwrap();
    }

    #[test]
    fn same_model_and_head_pass() {
        let dir = tempfile::tempdir().unwrap();
        manifest().check_compatible(dir.path(), &"aaaa".repeat(16), &"bbbb".repeat(16)).unwrap();
    }
}
