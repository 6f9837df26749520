//! Reading specs and snapshots from files: one YAML file or a directory of them
//! (`*.yaml`, `*.yml`, `*.json`, multi-document YAML allowed). Files and documents are read in
//! sorted order so that every command sees the same specs in the same order.
//!
//! Documents of other kinds (a snapshot file, a kustomization) are skipped: only documents
//! with `kind: AseConnectivity` are specs. A spec without a namespace gets `default`, as
//! kubectl would give it.

use std::path::{Path, PathBuf};

use crate::api::AseConnectivity;
use crate::snapshot::Snapshot;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read `{path}`: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{path}` document {index}: {message}")]
    Parse {
        path: PathBuf,
        index: usize,
        message: String,
    },
    #[error("no AseConnectivity specs found in `{path}`")]
    Empty { path: PathBuf },
    #[error("{paths}: bad tenancy policy: {errors}")]
    Policy { paths: String, errors: String },
}

/// A spec and the file it came from.
#[derive(Debug, Clone)]
pub struct LoadedSpec {
    pub source: PathBuf,
    pub spec: AseConnectivity,
}

/// Lists the spec files under `path` (the path itself when it is a file), sorted.
fn spec_files(path: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let io = |source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    };
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(io)? {
        let p = entry.map_err(io)?.path();
        if p.is_dir() {
            files.extend(spec_files(&p)?);
        } else if matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}

/// Loads every `AseConnectivity` document under each path.
pub fn load_specs(paths: &[PathBuf]) -> Result<Vec<LoadedSpec>, LoadError> {
    let mut out = Vec::new();
    for path in paths {
        let before = out.len();
        for file in spec_files(path)? {
            let text = std::fs::read_to_string(&file).map_err(|source| LoadError::Io {
                path: file.clone(),
                source,
            })?;
            out.extend(parse_specs(&file, &text)?);
        }
        if out.len() == before {
            return Err(LoadError::Empty { path: path.clone() });
        }
    }
    Ok(out)
}

/// Parses the `AseConnectivity` documents of one multi-document YAML text.
pub fn parse_specs(file: &Path, text: &str) -> Result<Vec<LoadedSpec>, LoadError> {
    let mut out = Vec::new();
    for (index, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let parse = |message: String| LoadError::Parse {
            path: file.to_path_buf(),
            index,
            message,
        };
        let value = serde_yaml::Value::deserialize(doc).map_err(|e| parse(e.to_string()))?;
        if value.is_null() || value.get("kind").and_then(|k| k.as_str()) != Some("AseConnectivity")
        {
            continue;
        }
        let mut spec: AseConnectivity =
            serde_yaml::from_value(value).map_err(|e| parse(e.to_string()))?;
        if spec.metadata.namespace.is_none() {
            spec.metadata.namespace = Some("default".to_string());
        }
        if spec.metadata.name.as_deref().unwrap_or_default().is_empty() {
            return Err(parse("metadata.name is missing".to_string()));
        }
        out.push(LoadedSpec {
            source: file.to_path_buf(),
            spec,
        });
    }
    Ok(out)
}

/// Loads tenancy policy files (`--policy FILE`, repeatable): `AseTenancyPolicy` and
/// `AseBackendGrant` documents, as the operator reads them from the cluster, and `Namespace`
/// documents for the labels `namespaceSelector` matches (a namespace without one has no
/// labels the CLI knows: no selector selects it). Any other kind is an error (a misspelt
/// kind would otherwise silently grant nothing), and so is a bad entry: the CLI refuses to
/// plan under a policy it cannot read whole.
pub fn load_policy(paths: &[PathBuf]) -> Result<crate::tenancy::PolicySet, LoadError> {
    use crate::tenancy::PolicySet;
    let mut policies = Vec::new();
    let mut grants = Vec::new();
    let mut labels = std::collections::BTreeMap::new();
    for path in paths {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let (p, g) = parse_policy(path, &text)?;
        policies.extend(p);
        grants.extend(g);
        labels.extend(parse_namespace_labels(path, &text)?);
    }
    let (set, errors) = PolicySet::enforce(&policies, &grants);
    let set = set.with_namespace_labels(labels);
    if errors.is_empty() {
        Ok(set)
    } else {
        Err(LoadError::Policy {
            paths: paths
                .iter()
                .map(|p| format!("`{}`", p.display()))
                .collect::<Vec<_>>()
                .join(", "),
            errors: errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; "),
        })
    }
}

/// The tenancy objects of a policy file.
pub type PolicyDocuments = (
    Vec<crate::tenancy::AseTenancyPolicy>,
    Vec<crate::tenancy::AseBackendGrant>,
);

/// The tenancy documents of one multi-document YAML text.
pub fn parse_policy(file: &Path, text: &str) -> Result<PolicyDocuments, LoadError> {
    let mut policies = Vec::new();
    let mut grants = Vec::new();
    for (index, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let parse = |message: String| LoadError::Parse {
            path: file.to_path_buf(),
            index,
            message,
        };
        let value = serde_yaml::Value::deserialize(doc).map_err(|e| parse(e.to_string()))?;
        if value.is_null() {
            continue;
        }
        match value.get("kind").and_then(|k| k.as_str()) {
            Some("AseTenancyPolicy") => {
                policies.push(serde_yaml::from_value(value).map_err(|e| parse(e.to_string()))?)
            }
            Some("AseBackendGrant") => {
                grants.push(serde_yaml::from_value(value).map_err(|e| parse(e.to_string()))?)
            }
            Some("Namespace") => {}
            other => {
                return Err(parse(format!(
                    "kind `{}` is not AseTenancyPolicy, AseBackendGrant or Namespace",
                    other.unwrap_or_default()
                )))
            }
        }
    }
    Ok((policies, grants))
}

/// A namespace's name and labels.
pub type NamespaceLabels = (String, std::collections::BTreeMap<String, String>);

/// The labels of the `Namespace` documents of one multi-document YAML text, by name.
pub fn parse_namespace_labels(file: &Path, text: &str) -> Result<Vec<NamespaceLabels>, LoadError> {
    let mut out = Vec::new();
    for (index, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let parse = |message: String| LoadError::Parse {
            path: file.to_path_buf(),
            index,
            message,
        };
        let value = serde_yaml::Value::deserialize(doc).map_err(|e| parse(e.to_string()))?;
        if value.get("kind").and_then(|k| k.as_str()) != Some("Namespace") {
            continue;
        }
        let ns: k8s_openapi::api::core::v1::Namespace =
            serde_yaml::from_value(value).map_err(|e| parse(e.to_string()))?;
        let name = ns
            .metadata
            .name
            .ok_or_else(|| parse("metadata.name is missing".to_string()))?;
        out.push((name, ns.metadata.labels.unwrap_or_default()));
    }
    Ok(out)
}

/// Loads a snapshot file (YAML or JSON, see `snapshot::Snapshot`).
pub fn load_snapshot(path: &Path) -> Result<Snapshot, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_yaml::from_str(&text).map_err(|e| LoadError::Parse {
        path: path.to_path_buf(),
        index: 0,
        message: e.to_string(),
    })
}

use serde::Deserialize;
