//! Reading specs and snapshots from files: one YAML file or a directory of them
//! (`*.yaml`, `*.yml`, `*.json`, multi-document YAML allowed). Files and documents are read in
//! sorted order so that every command sees the same specs in the same order.
//!
//! The loader is strict, because a typo that is silently ignored changes what asenet
//! writes (issue 12): a misspelt `Mode:` would apply a spec meant to be planned only.
//!
//! - Every document must be an `AseConnectivity` of `apiVersion: asenet.io/v1alpha1`,
//!   spelt exactly. Only two kinds of document are skipped: `kind: Namespace` (so a folder
//!   that `kubectl apply` creates its namespace from still loads), and documents with
//!   neither `apiVersion` nor `kind` whose top-level keys are all keys of asenet's own
//!   snapshot or mock-seed formats. Any other document is an error naming file and
//!   document.
//! - Unknown fields anywhere in a spec are errors, with a "did you mean" when a known field
//!   of that object is close (the known fields come from the CRD schema, generated from
//!   the same Rust types).
//! - Every error names the file, the document index, the spec (once its metadata could be
//!   read), the field path and the value.
//! - The directory walk reads regular files only (a FIFO would block, `/dev/zero` never
//!   ends), follows no directory twice (two symlinks to `.` would make it exponential),
//!   reads a file reached by two paths once, and checks a file's size before reading it.
//!
//! A spec without a namespace gets `default`, as kubectl would give it.

use std::collections::BTreeSet;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::Deserialize;
use serde_yaml::Value;

use crate::api::AseConnectivity;
use crate::model::SpecKey;
use crate::snapshot::Snapshot;

/// The `apiVersion` and `kind` of a spec, exactly as the CRD defines them.
pub const API_VERSION: &str = "asenet.io/v1alpha1";
pub const KIND: &str = "AseConnectivity";

/// The largest spec or snapshot file read. A spec of 200 back ends is under 100 KiB; a
/// directory of thousands of specs is many files. The cap is checked on the file's size
/// before reading, and again while reading (a file may grow, or report no size).
pub const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// Directory nesting the walk descends into.
pub const MAX_DEPTH: usize = 32;

/// Top-level keys of asenet's snapshot format (`snapshot::Snapshot`) and of the mock ARM
/// seed (`subscriptions`): kind-less documents made only of these are not specs.
const DATA_FILE_KEYS: &[&str] = &[
    "virtualNetworks",
    "subnets",
    "networkSecurityGroups",
    "routeTables",
    "environments",
    "serviceTags",
    "subscriptions",
];

/// Fields of `metadata` (Kubernetes `ObjectMeta`), for "did you mean".
const METADATA_FIELDS: &[&str] = &[
    "name",
    "namespace",
    "labels",
    "annotations",
    "generateName",
    "generation",
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "finalizers",
    "ownerReferences",
    "managedFields",
    "selfLink",
];

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read `{path}`: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("`{path}` is {what}, not a regular file: only regular files are read")]
    NotRegularFile { path: PathBuf, what: &'static str },
    #[error(
        "`{path}` is {size} bytes; spec and snapshot files are limited to {limit} bytes (8 MiB)"
    )]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("`{path}` is nested more than {limit} directories deep")]
    TooDeep { path: PathBuf, limit: usize },
    #[error("{}", join_lines(.0))]
    Documents(Vec<DocumentError>),
    #[error("no AseConnectivity specs found in `{path}`")]
    Empty { path: PathBuf },
    #[error("{paths}: bad tenancy policy: {errors}")]
    Policy { paths: String, errors: String },
}

fn join_lines(errors: &[DocumentError]) -> String {
    errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// One problem in one document of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentError {
    pub path: PathBuf,
    /// 0-based index of the document in a multi-document file.
    pub index: usize,
    /// `namespace/name`, when the document's metadata could be read.
    pub spec: Option<SpecKey>,
    /// Field path, e.g. `spec.inbound[1].from[0].cidr`; empty for the document itself.
    pub field: String,
    /// The value found there, as compact text (empty when missing).
    pub value: String,
    pub message: String,
}

impl fmt::Display for DocumentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` document {}", self.path.display(), self.index)?;
        if let Some(s) = &self.spec {
            write!(f, " (spec {s})")?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        if !self.value.is_empty() {
            write!(f, " = {}", self.value)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl LoadError {
    /// The document errors, if this is a parse failure (for tests and reports).
    pub fn documents(&self) -> &[DocumentError] {
        match self {
            LoadError::Documents(d) => d,
            _ => &[],
        }
    }
}

/// A spec and the file it came from.
#[derive(Debug, Clone)]
pub struct LoadedSpec {
    pub source: PathBuf,
    pub spec: AseConnectivity,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LoadError + '_ {
    move |error| LoadError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// What a non-regular file is, for the error.
fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if meta.is_dir() {
        "a directory"
    } else {
        "a special file"
    }
}

fn is_spec_file(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

/// Lists the spec files under `path` (the path itself when it is a file), sorted, each
/// once. Symlinks are followed, but a directory already walked (by its canonical path) is
/// not walked again, so links to `.` or to a parent end the recursion.
fn spec_files(path: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let meta = std::fs::metadata(path).map_err(io(path))?;
    if !meta.is_dir() {
        check_regular(path, &meta)?;
        return Ok(vec![path.to_path_buf()]);
    }
    let mut seen_dirs = BTreeSet::new();
    let mut seen_files = BTreeSet::new();
    let mut files = Vec::new();
    walk(path, 0, &mut seen_dirs, &mut seen_files, &mut files)?;
    files.sort();
    Ok(files)
}

fn walk(
    dir: &Path,
    depth: usize,
    seen_dirs: &mut BTreeSet<PathBuf>,
    seen_files: &mut BTreeSet<PathBuf>,
    files: &mut Vec<PathBuf>,
) -> Result<(), LoadError> {
    if depth > MAX_DEPTH {
        return Err(LoadError::TooDeep {
            path: dir.to_path_buf(),
            limit: MAX_DEPTH,
        });
    }
    let canonical = std::fs::canonicalize(dir).map_err(io(dir))?;
    if !seen_dirs.insert(canonical) {
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        entries.push(entry.map_err(io(dir))?.path());
    }
    entries.sort();
    for p in entries {
        // `metadata` follows symlinks: a link is judged by what it points to.
        let meta = match std::fs::metadata(&p) {
            Ok(m) => m,
            // A dangling symlink that is not a spec file name is no concern of ours.
            Err(_) if !is_spec_file(&p) => continue,
            Err(e) => return Err(io(&p)(e)),
        };
        if meta.is_dir() {
            walk(&p, depth + 1, seen_dirs, seen_files, files)?;
        } else if is_spec_file(&p) {
            check_regular(&p, &meta)?;
            let canonical = std::fs::canonicalize(&p).map_err(io(&p))?;
            if seen_files.insert(canonical) {
                files.push(p);
            }
        }
    }
    Ok(())
}

fn check_regular(path: &Path, meta: &std::fs::Metadata) -> Result<(), LoadError> {
    if !meta.is_file() {
        return Err(LoadError::NotRegularFile {
            path: path.to_path_buf(),
            what: file_kind(meta),
        });
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(LoadError::TooLarge {
            path: path.to_path_buf(),
            size: meta.len(),
            limit: MAX_FILE_BYTES,
        });
    }
    Ok(())
}

/// Reads a regular file of at most [`MAX_FILE_BYTES`], checked before and while reading.
pub fn read_capped(path: &Path) -> Result<String, LoadError> {
    let meta = std::fs::metadata(path).map_err(io(path))?;
    check_regular(path, &meta)?;
    let file = std::fs::File::open(path).map_err(io(path))?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io(path))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(LoadError::TooLarge {
            path: path.to_path_buf(),
            size: bytes.len() as u64,
            limit: MAX_FILE_BYTES,
        });
    }
    String::from_utf8(bytes).map_err(|e| {
        io(path)(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        ))
    })
}

/// Loads every `AseConnectivity` document under each path. Every problem of every
/// document is reported, not just the first.
pub fn load_specs(paths: &[PathBuf]) -> Result<Vec<LoadedSpec>, LoadError> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        let before = out.len();
        let errors_before = errors.len();
        for file in spec_files(path)? {
            let text = read_capped(&file)?;
            match parse_specs(&file, &text) {
                Ok(specs) => out.extend(specs),
                Err(LoadError::Documents(mut e)) => errors.append(&mut e),
                Err(e) => return Err(e),
            }
        }
        if out.len() == before && errors.len() == errors_before {
            return Err(LoadError::Empty { path: path.clone() });
        }
    }
    if !errors.is_empty() {
        return Err(LoadError::Documents(errors));
    }
    Ok(out)
}

/// Parses the `AseConnectivity` documents of one multi-document YAML text. Returns every
/// document's errors together.
pub fn parse_specs(file: &Path, text: &str) -> Result<Vec<LoadedSpec>, LoadError> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (index, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let mut cx = DocCx {
            path: file,
            index,
            spec: None,
            errors: &mut errors,
        };
        let value = match Value::deserialize(doc) {
            Ok(v) => v,
            Err(e) => {
                cx.err("", "", e.to_string());
                // The parser cannot resynchronise after a syntax error.
                break;
            }
        };
        if let Some(spec) = parse_document(&mut cx, value) {
            out.push(LoadedSpec {
                source: file.to_path_buf(),
                spec,
            });
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(LoadError::Documents(errors))
    }
}

struct DocCx<'a> {
    path: &'a Path,
    index: usize,
    spec: Option<SpecKey>,
    errors: &'a mut Vec<DocumentError>,
}

impl DocCx<'_> {
    fn err(
        &mut self,
        field: impl Into<String>,
        value: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.errors.push(DocumentError {
            path: self.path.to_path_buf(),
            index: self.index,
            spec: self.spec.clone(),
            field: field.into(),
            value: value.into(),
            message: message.into(),
        });
    }
}

fn str_at<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key).and_then(Value::as_str)
}

/// A key of `map` equal to `key` ignoring ASCII case but spelt differently.
fn case_variant<'v>(map: &'v serde_yaml::Mapping, key: &str) -> Option<&'v str> {
    map.keys()
        .filter_map(Value::as_str)
        .find(|k| *k != key && k.eq_ignore_ascii_case(key))
}

/// One document: classify it, then deserialise it as a spec. `None` when it is skipped or
/// has errors (recorded in `cx`).
fn parse_document(cx: &mut DocCx<'_>, value: Value) -> Option<AseConnectivity> {
    let map = match &value {
        Value::Null => return None, // an empty document (`---` at the end of a file)
        Value::Mapping(m) => m,
        other => {
            cx.err(
                "",
                compact(other),
                "a document must be a mapping: an AseConnectivity object",
            );
            return None;
        }
    };
    // The spec's key, for the errors, when its metadata can be read.
    if let Some(meta) = value.get("metadata") {
        if let Some(name) = str_at(meta, "name").filter(|n| !n.is_empty()) {
            cx.spec = Some(SpecKey::new(
                str_at(meta, "namespace").unwrap_or("default"),
                name,
            ));
        }
    }
    check_header(cx, &value, map)?;
    let (result, unknown) = deserialize(&value);
    for (segs, text) in &unknown {
        unknown_field(cx, &value, segs, text);
    }
    let mut spec = match result {
        Ok(spec) => spec,
        Err(e) => {
            deserialize_error(cx, &value, e);
            return None;
        }
    };
    if !unknown.is_empty() {
        return None;
    }
    if spec.metadata.name.as_deref().unwrap_or_default().is_empty() {
        cx.err("metadata.name", "", "required field is missing");
        return None;
    }
    if spec.metadata.namespace.is_none() {
        spec.metadata.namespace = Some("default".to_string());
    }
    Some(spec)
}

/// Whether a document is an `AseConnectivity` by its `kind` and `apiVersion`: `None` when
/// it is not (a data file or Namespace skipped silently, anything else an error).
fn check_header(cx: &mut DocCx<'_>, value: &Value, map: &serde_yaml::Mapping) -> Option<()> {
    let kind = value.get("kind");
    let api_version = value.get("apiVersion");
    // `Kind:` or `apiversion:` instead of the field itself.
    let mut miscased = false;
    for (present, want) in [
        (kind.is_some(), "kind"),
        (api_version.is_some(), "apiVersion"),
    ] {
        if let Some(k) = case_variant(map, want).filter(|_| !present) {
            let found = value.get(k).map(compact).unwrap_or_default();
            cx.err(
                k,
                found,
                format!("unknown field `{k}`; did you mean `{want}`?"),
            );
            miscased = true;
        }
    }
    if miscased {
        return None;
    }
    if kind.is_none() && api_version.is_none() {
        let data_only = map
            .keys()
            .all(|k| k.as_str().is_some_and(|k| DATA_FILE_KEYS.contains(&k)));
        if data_only && !map.is_empty() {
            return None; // an asenet snapshot or mock seed next to the specs
        }
        cx.err(
            "kind",
            "",
            format!(
                "missing: every document must be `kind: {KIND}` with `apiVersion: {API_VERSION}`"
            ),
        );
        return None;
    }
    check_kind(cx, value, kind)?;
    check_api_version(cx, api_version)
}

fn check_kind(cx: &mut DocCx<'_>, value: &Value, kind: Option<&Value>) -> Option<()> {
    match kind.and_then(Value::as_str) {
        Some(KIND) => Some(()),
        Some("Namespace") if str_at(value, "apiVersion") == Some("v1") => None,
        Some(k) => {
            let hint = if k.eq_ignore_ascii_case(KIND) || strsim::damerau_levenshtein(k, KIND) <= 3
            {
                format!("; did you mean `{KIND}`?")
            } else {
                String::new()
            };
            cx.err(
                "kind",
                k,
                format!("`{k}` is not `{KIND}`: spec files hold only {KIND} documents (and Namespaces){hint}"),
            );
            None
        }
        None => {
            cx.err(
                "kind",
                kind.map(compact).unwrap_or_default(),
                format!("must be `{KIND}`"),
            );
            None
        }
    }
}

fn check_api_version(cx: &mut DocCx<'_>, api_version: Option<&Value>) -> Option<()> {
    match api_version.and_then(Value::as_str) {
        Some(API_VERSION) => Some(()),
        other => {
            let v = other
                .map(str::to_string)
                .unwrap_or_else(|| api_version.map(compact).unwrap_or_default());
            let hint = if other.is_some_and(|a| a.eq_ignore_ascii_case(API_VERSION)) {
                format!("; did you mean `{API_VERSION}`? (apiVersion is case-sensitive)")
            } else {
                String::new()
            };
            let what = if api_version.is_none() {
                "missing"
            } else {
                "wrong"
            };
            cx.err(
                "apiVersion",
                v,
                format!("{what}: {KIND} is served as `{API_VERSION}`{hint}"),
            );
            None
        }
    }
}

/// A path of unknown field, as segments and as text.
type Unknown = (Vec<Seg>, String);

/// Deserialises a spec, recording every field the spec type does not know.
fn deserialize(
    value: &Value,
) -> (
    Result<AseConnectivity, serde_path_to_error::Error<serde_yaml::Error>>,
    Vec<Unknown>,
) {
    let mut unknown: Vec<Unknown> = Vec::new();
    let result = {
        let mut record = |p: serde_ignored::Path<'_>| {
            let mut segs = Vec::new();
            ignored_segments(&p, &mut segs);
            // The derived `Deserialize` of a kube resource skips `apiVersion` and `kind`;
            // they were checked above.
            if let [Seg::Key(k)] = segs.as_slice() {
                if k == "apiVersion" || k == "kind" {
                    return;
                }
            }
            let text = segments_text(&segs);
            unknown.push((segs, text));
        };
        let de = serde_ignored::Deserializer::new(value, &mut record);
        serde_path_to_error::deserialize(de)
    };
    (result, unknown)
}

/// An unknown field, with the known field its name is closest to.
fn unknown_field(cx: &mut DocCx<'_>, value: &Value, segs: &[Seg], text: &str) {
    let (parent, last) = match segs.split_last() {
        Some((Seg::Key(k), parent)) => (parent, k.as_str()),
        _ => (segs, text),
    };
    let hint = suggestion(parent, last)
        .map(|s| format!("; did you mean `{s}`?"))
        .unwrap_or_default();
    let found = lookup(value, segs).map(compact).unwrap_or_default();
    cx.err(
        text.to_string(),
        found,
        format!("unknown field `{last}`{hint}"),
    );
}

/// A value of the wrong type, or a missing field, named by its path.
fn deserialize_error(
    cx: &mut DocCx<'_>,
    value: &Value,
    e: serde_path_to_error::Error<serde_yaml::Error>,
) {
    let mut segs: Vec<Seg> = e
        .path()
        .iter()
        .filter_map(|s| match s {
            serde_path_to_error::Segment::Seq { index } => Some(Seg::Index(*index)),
            serde_path_to_error::Segment::Map { key } => Some(Seg::Key(key.clone())),
            serde_path_to_error::Segment::Enum { variant } => Some(Seg::Key(variant.clone())),
            serde_path_to_error::Segment::Unknown => None,
        })
        .collect();
    let message = e.inner().to_string();
    // `missing field `x`` is reported at the parent object: name the field itself.
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|m| m.split('`').next())
        .map(str::to_string);
    if let Some(m) = &missing {
        segs.push(Seg::Key(m.clone()));
    }
    let found = if missing.is_some() {
        String::new()
    } else {
        lookup(value, &segs).map(compact).unwrap_or_default()
    };
    let message = match missing {
        Some(_) => "required field is missing".to_string(),
        // serde_yaml's words for an enum given as a number, list or map.
        None if message.contains("Value::Tagged enum") => {
            let names = schema_at(&segs)
                .and_then(|n| n.get("enum"))
                .and_then(|e| e.as_array())
                .map(|e| {
                    e.iter()
                        .filter_map(|v| v.as_str())
                        .map(|v| format!("`{v}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            format!("expected one of the names {names}")
        }
        None => message,
    };
    cx.err(segments_text(&segs), found, message);
}

/// A field path segment.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

fn ignored_segments(p: &serde_ignored::Path<'_>, out: &mut Vec<Seg>) {
    use serde_ignored::Path as P;
    match p {
        P::Root => {}
        P::Seq { parent, index } => {
            ignored_segments(parent, out);
            out.push(Seg::Index(*index));
        }
        P::Map { parent, key } => {
            ignored_segments(parent, out);
            out.push(Seg::Key(key.clone()));
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            ignored_segments(parent, out)
        }
    }
}

/// `spec.inbound[1].from[0].cidr`, the form `validate` uses.
fn segments_text(segs: &[Seg]) -> String {
    let mut s = String::new();
    for seg in segs {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

fn lookup<'v>(value: &'v Value, segs: &[Seg]) -> Option<&'v Value> {
    let mut v = value;
    for s in segs {
        v = match s {
            Seg::Key(k) => v.get(k.as_str())?,
            Seg::Index(i) => v.get(*i)?,
        };
    }
    Some(v)
}

/// A value as one short line of text (JSON-like), cut at 80 characters.
fn compact(v: &Value) -> String {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Null => "null".into(),
        other => serde_json::to_string(other).unwrap_or_else(|_| format!("{other:?}")),
    };
    if text.chars().count() > 80 {
        let cut: String = text.chars().take(77).collect();
        format!("{cut}...")
    } else {
        text
    }
}

/// The OpenAPI schema of the CRD, generated from the same types the loader deserialises,
/// so its `properties` are exactly the fields serde knows.
fn crd_schema() -> Option<&'static serde_json::Value> {
    static SCHEMA: OnceLock<Option<serde_json::Value>> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            use kube::CustomResourceExt;
            let crd = serde_json::to_value(AseConnectivity::crd()).ok()?;
            crd.pointer("/spec/versions/0/schema/openAPIV3Schema")
                .cloned()
        })
        .as_ref()
}

/// The CRD schema of the field at `path`.
fn schema_at(path: &[Seg]) -> Option<&'static serde_json::Value> {
    let mut node = crd_schema()?;
    for seg in path {
        node = match seg {
            Seg::Key(k) => node.get("properties")?.get(k.as_str())?,
            Seg::Index(_) => node.get("items")?,
        };
    }
    Some(node)
}

/// The field names known at `parent`.
fn known_fields(parent: &[Seg]) -> Vec<String> {
    if parent == [Seg::Key("metadata".into())] {
        return METADATA_FIELDS.iter().map(|s| s.to_string()).collect();
    }
    let Some(node) = schema_at(parent) else {
        return vec![];
    };
    node.get("properties")
        .and_then(|p| p.as_object())
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

/// The known field closest to `name`, if close enough to be a likely typo.
fn suggestion(parent: &[Seg], name: &str) -> Option<String> {
    let lower = name.to_ascii_lowercase();
    known_fields(parent)
        .into_iter()
        .filter_map(|k| {
            let known = k.to_ascii_lowercase();
            let d = strsim::damerau_levenshtein(&lower, &known);
            // An edit or two, or a shared stem (`priority` for `priorities`).
            let close = d <= 2 || strsim::jaro_winkler(&lower, &known) >= 0.9;
            close.then_some((d, k))
        })
        .min()
        .map(|(_, k)| k)
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
        let text = read_capped(path)?;
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
        let parse = |message: String| policy_error(file, index, String::new(), message);
        let value = serde_yaml::Value::deserialize(doc).map_err(|e| parse(e.to_string()))?;
        if value.is_null() {
            continue;
        }
        match value.get("kind").and_then(|k| k.as_str()) {
            Some("AseTenancyPolicy") => policies.push(typed_policy_document(file, index, value)?),
            Some("AseBackendGrant") => grants.push(typed_policy_document(file, index, value)?),
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

/// One problem of a policy file's document, in the loader's error shape (file, document,
/// field path).
fn policy_error(file: &Path, index: usize, field: String, message: String) -> LoadError {
    LoadError::Documents(vec![DocumentError {
        path: file.to_path_buf(),
        index,
        spec: None,
        field,
        value: String::new(),
        message,
    }])
}

/// A tenancy document as its type, a type error naming the field path.
fn typed_policy_document<T: serde::de::DeserializeOwned>(
    file: &Path,
    index: usize,
    value: serde_yaml::Value,
) -> Result<T, LoadError> {
    serde_path_to_error::deserialize(value)
        .map_err(|e| policy_error(file, index, e.path().to_string(), e.inner().to_string()))
}

/// A namespace's name and labels.
pub type NamespaceLabels = (String, std::collections::BTreeMap<String, String>);

/// The labels of the `Namespace` documents of one multi-document YAML text, by name.
pub fn parse_namespace_labels(file: &Path, text: &str) -> Result<Vec<NamespaceLabels>, LoadError> {
    let mut out = Vec::new();
    for (index, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let parse = |message: String| policy_error(file, index, String::new(), message);
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
    let text = read_capped(path)?;
    let de = serde_yaml::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        LoadError::Documents(vec![DocumentError {
            path: path.to_path_buf(),
            index: 0,
            spec: None,
            field: e.path().to_string(),
            value: String::new(),
            message: e.inner().to_string(),
        }])
    })
}
