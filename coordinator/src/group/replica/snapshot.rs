//! A replica's state-machine snapshots: the one kept on disk (`snapshot.json`, the lengths
//! of the files it covers), its data packed for a peer when first needed, building one,
//! and installing or merging one received.

use std::path::{Path, PathBuf};

use anyhow::Context;
use openraft::storage::Snapshot;
use openraft::{RaftSnapshotBuilder, SnapshotMeta, StorageError, StoredMembership};
use serde::{Deserialize, Serialize};
use tracing::info;

use super::{sm_err, Replica, State};
use crate::group::files;
use crate::group::{LogId, Member, TypeConfig};
use crate::primes::PrimesFile;
use crate::ranges::Finished;
use crate::state::lock;

impl State {
    /// Adds `files` (names relative to its folder) to what the replica holds: the primes and
    /// ledger entries it lacks, and the reports (which replace its own).
    pub(super) fn merge(&mut self, files: Vec<(String, Vec<u8>)>) -> anyhow::Result<()> {
        let (mut small, mut big, mut finished) = (Vec::new(), Vec::new(), Vec::new());
        let (primes, output) = self.paths();
        for (name, bytes) in files {
            let path = files::place(&name, &primes, &output)?;
            match name.as_str() {
                "primes.txt" => {
                    for line in bytes.split(|b| *b == b'\n') {
                        let Ok(t) = std::str::from_utf8(line) else {
                            continue;
                        };
                        let t = t.trim();
                        if let Ok(v) = t.parse::<u64>() {
                            small.push(v);
                        } else if !t.is_empty()
                            && !t.starts_with('0')
                            && t.bytes().all(|b| b.is_ascii_digit())
                        {
                            big.push(t.to_string());
                        }
                    }
                }
                "primes.txt.ranges" => {
                    for line in bytes.split(|b| *b == b'\n') {
                        if let Ok(f) = serde_json::from_slice::<Finished>(line) {
                            if !self.primes.finished.contains(&f) && !finished.contains(&f) {
                                finished.push(f);
                            }
                        }
                    }
                }
                _ => proto::files::write_atomic(&path, &bytes, true)
                    .with_context(|| format!("writing {}", path.display()))?,
            }
        }
        self.primes.append(&small, &big, &[], &finished)?;
        Ok(())
    }

    /// Replaces the replica's files with `files` (as [`files::collect_files`] names them).
    pub(super) fn install(&mut self, files: Vec<(String, Vec<u8>)>) -> anyhow::Result<()> {
        let (primes, output) = self.paths();
        for (name, _) in &files {
            files::place(name, &primes, &output)?;
        }
        if output.exists() {
            std::fs::remove_dir_all(&output)
                .with_context(|| format!("clearing {}", output.display()))?;
        }
        files::write_files(&files, &primes, &output, true)?;
        self.primes = PrimesFile::open(&primes)?;
        self.primes.set_sync(false);
        Ok(())
    }

    /// The snapshot kept on disk, if any.
    pub(super) fn read_kept(&self) -> anyhow::Result<Option<Kept>> {
        let path = self.dir.join(KEPT);
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(
                serde_json::from_slice(&b)
                    .with_context(|| format!("reading {}", path.display()))?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    pub(super) fn save_kept(&self, k: &Kept) -> anyhow::Result<()> {
        let path = self.dir.join(KEPT);
        let bytes = serde_json::to_vec(k).context("encoding the snapshot's meta")?;
        proto::files::write_atomic(&path, &bytes, true)
            .with_context(|| format!("writing {}", path.display()))
    }
}

/// The snapshot a member keeps: its meta and the lengths of the primes file and ledger it
/// covers (both only grow at the end, so their first bytes stay what they were). The data
/// a peer receives is packed from the files when a peer first needs it
/// (`snapshot-<id>.data`), streamed, never held in memory.
#[derive(Serialize, Deserialize)]
pub(super) struct Kept {
    pub(super) meta: SnapshotMeta<u64, Member>,
    pub(super) primes_len: u64,
    pub(super) ledger_len: u64,
}

/// The kept snapshot's meta file in a member's folder.
const KEPT: &str = "snapshot.json";
/// Where a snapshot being received is written.
pub(super) const RECEIVING: &str = "snapshot.recv";

pub(super) fn data_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("snapshot-{id}.data"))
}

/// Removes the data files of snapshots other than `keep` (and the pre-streaming
/// `snapshot.bin`).
pub(super) fn remove_other_data(dir: &Path, keep: &Path) {
    let _ = std::fs::remove_file(dir.join("snapshot.bin"));
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("snapshot-") && name.ends_with(".data") && e.path() != keep {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// The data of snapshot `k` of the member in `dir`: packed now, streaming, unless it
/// already is. Runs without the replica's lock (the files' first bytes do not change; a
/// report may be newer than the snapshot, which the entries after it write again anyway).
pub(super) fn data_of(dir: &Path, k: &Kept) -> anyhow::Result<PathBuf> {
    let path = data_path(dir, &k.meta.snapshot_id);
    if path.exists() {
        return Ok(path);
    }
    let tmp = dir.join(format!(".snapshot-{}.tmp", k.meta.snapshot_id));
    let file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    files::stream::pack_to(
        &dir.join("primes.txt"),
        (k.primes_len, k.ledger_len),
        &dir.join("output"),
        &mut w,
    )?;
    let file = w
        .into_inner()
        .map_err(|e| anyhow::anyhow!("writing {}: {}", tmp.display(), e.error()))?;
    file.sync_all()
        .with_context(|| format!("syncing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("renaming {}", tmp.display()))?;
    remove_other_data(dir, &path);
    Ok(path)
}

/// Records a snapshot: the files as they were made durable when asked (see `Kept`).
pub struct Builder {
    pub(super) replica: Replica,
    pub(super) applied: Option<LogId>,
    pub(super) membership: StoredMembership<u64, Member>,
    pub(super) lens: anyhow::Result<(u64, u64)>,
}

impl RaftSnapshotBuilder<TypeConfig> for Builder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        let (primes_len, ledger_len) =
            std::mem::replace(&mut self.lens, Ok((0, 0))).map_err(sm_err)?;
        let id = match self.applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, rand::random::<u32>()),
            None => format!("empty-{}", rand::random::<u32>()),
        };
        let kept = Kept {
            meta: SnapshotMeta {
                last_log_id: self.applied,
                last_membership: self.membership.clone(),
                snapshot_id: id,
            },
            primes_len,
            ledger_len,
        };
        let replica = self.replica.clone();
        let path = tokio::task::block_in_place(|| {
            let g = lock(&replica.inner);
            g.save_kept(&kept)?;
            Ok::<_, anyhow::Error>(g.dir.join(KEPT))
        })
        .map_err(sm_err)?;
        info!(index = ?kept.meta.last_log_id.map(|l| l.index), primes_len, "state-machine snapshot recorded");
        // openraft keeps only the meta of a snapshot it built; the data is read through
        // get_current_snapshot when a peer needs it.
        let file = tokio::fs::File::open(&path)
            .await
            .with_context(|| format!("opening {}", path.display()))
            .map_err(sm_err)?;
        Ok(Snapshot {
            meta: kept.meta,
            snapshot: Box::new(file),
        })
    }
}
