//! `--state FILE`: load the store at start and save it after each write with an atomic
//! write (temporary file + rename), so a restart keeps the resources (issue 3).
//! Operations and the write history are in memory only.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::store::Snapshot;
use crate::{lock, MockState};

#[derive(Debug, Default)]
pub(crate) struct Persist {
    path: Option<PathBuf>,
    written: u64,
}

/// Load `path` if it exists (replacing seeded resources with the same id), then persist.
pub(crate) fn attach(state: &MockState, path: PathBuf) -> anyhow::Result<()> {
    if path.exists() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("failed to read state file {}", path.display()))?;
        let snapshot: Snapshot = serde_json::from_str(&text)
            .with_context(|| format!("failed to parse state file {}", path.display()))?;
        state.store().restore(snapshot);
    }
    lock(&state.inner.persist).path = Some(path);
    save(state);
    Ok(())
}

pub(crate) fn save(state: &MockState) {
    let mut persist = lock(&state.inner.persist);
    let Some(path) = persist.path.clone() else {
        return;
    };
    let snapshot = state.store().snapshot();
    if snapshot.version < persist.written && persist.written != 0 {
        return;
    }
    match write_atomic(&path, &snapshot) {
        Ok(()) => persist.written = snapshot.version,
        Err(err) => tracing::error!("failed to persist state to {}: {err:#}", path.display()),
    }
}

fn write_atomic(path: &Path, snapshot: &Snapshot) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(snapshot)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, text).with_context(|| format!("failed to write {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("failed to rename {} to {}", tmp.display(), path.display()))?;
    Ok(())
}
