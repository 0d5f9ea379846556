//! openraft's `RaftStateMachine` over a [`Replica`]: applying committed entries, and the
//! snapshot calls (build, receive, install, the current one).

use anyhow::Context;
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, SnapshotMeta, StorageError, StoredMembership};
use tracing::{info, warn};

use super::snapshot::{data_of, data_path, remove_other_data, Kept, RECEIVING};
use super::{sm_err, Applied, Builder, Replica};
use crate::group::files;
use crate::group::{LogEntry, LogId, Member, Outcome, TypeConfig};
use crate::primes::PrimesFile;
use crate::state::lock;

impl RaftStateMachine<TypeConfig> for Replica {
    type SnapshotBuilder = Builder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership<u64, Member>), StorageError<u64>> {
        let g = lock(&self.inner);
        Ok((g.applied.applied, g.applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, StorageError<u64>>
    where
        I: IntoIterator<Item = LogEntry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<LogEntry> = entries.into_iter().collect();
        let (inner, view) = (self.inner.clone(), self.view.clone());
        tokio::task::block_in_place(move || {
            let mut g = lock(&inner);
            let mut out = Vec::with_capacity(entries.len());
            let mut membership = false;
            for e in entries {
                let outcome = match e.payload {
                    EntryPayload::Blank => Outcome::Nothing,
                    EntryPayload::Normal(cmd) => match super::refused(&cmd, e.log_id) {
                        Some(refused) => refused,
                        None => g.apply_one(cmd)?,
                    },
                    EntryPayload::Membership(m) => {
                        g.applied.membership = StoredMembership::new(Some(e.log_id), m);
                        membership = true;
                        Outcome::Nothing
                    }
                };
                g.applied.applied = Some(e.log_id);
                *lock(&view) = g.view();
                out.push(outcome);
            }
            // What was applied is made durable (and recorded in applied.json) only before a
            // snapshot lets the log go, and with a membership: until then a crash re-applies
            // the entries from the log, which adds nothing twice (one fsync per entry, the
            // log's, instead of four).
            if membership {
                g.make_durable()?;
            }
            g.follow();
            // Following the root files can give them up (a failed copy): the view says so.
            *lock(&view) = g.view();
            Ok(out)
        })
        .map_err(sm_err)
    }

    async fn get_snapshot_builder(&mut self) -> Builder {
        tokio::task::block_in_place(|| {
            let mut g = lock(&self.inner);
            // Durable first: the log up to this snapshot may be purged once it is built.
            let lens = g
                .make_durable()
                .map(|()| (g.primes.bytes(), g.primes.ledger_bytes()));
            Builder {
                replica: self.clone(),
                applied: g.applied.applied,
                membership: g.applied.membership.clone(),
                lens,
            }
        })
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<tokio::fs::File>, StorageError<u64>> {
        let path = self.dir.join(RECEIVING);
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await
            .with_context(|| format!("creating {}", path.display()))
            .map_err(sm_err)?;
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, Member>,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError<u64>> {
        snapshot
            .sync_all()
            .await
            .context("syncing a received snapshot")
            .map_err(sm_err)?;
        drop(snapshot);
        let (inner, view) = (self.inner.clone(), self.view.clone());
        let meta = meta.clone();
        tokio::task::block_in_place(move || {
            let mut g = lock(&inner);
            let received = g.dir.join(RECEIVING);
            let file = std::fs::File::open(&received)
                .with_context(|| format!("opening {}", received.display()))?;
            let (primes, output) = g.paths();
            files::stream::unpack_from(
                &mut std::io::BufReader::with_capacity(1 << 20, file),
                &primes,
                &output,
            )?;
            g.primes = PrimesFile::open(&primes)?;
            g.primes.set_sync(false);
            g.applied = Applied {
                applied: meta.last_log_id,
                membership: meta.last_membership.clone(),
            };
            g.make_durable()?;
            *lock(&view) = g.view();
            let data = data_path(&g.dir, &meta.snapshot_id);
            std::fs::rename(&received, &data)
                .with_context(|| format!("renaming {}", received.display()))?;
            remove_other_data(&g.dir, &data);
            let kept = Kept {
                meta: meta.clone(),
                primes_len: g.primes.bytes(),
                ledger_len: g.primes.ledger_bytes(),
            };
            g.save_kept(&kept)?;
            let dir = g.dir.clone();
            if let Err(e) = g.mirror.relink(&dir) {
                warn!(
                    error = format!("{e:#}"),
                    "stopped keeping the root files after installing a snapshot"
                );
            }
            info!(index = ?meta.last_log_id.map(|l| l.index), primes = g.primes.len(), "installed a snapshot from the leader");
            Ok::<_, anyhow::Error>(())
        })
        .map_err(sm_err)
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        let inner = self.inner.clone();
        let found = tokio::task::block_in_place(move || {
            let (dir, kept) = {
                let g = lock(&inner);
                (g.dir.clone(), g.read_kept()?)
            };
            let Some(kept) = kept else {
                return Ok(None);
            };
            let data = data_of(&dir, &kept)?;
            Ok::<_, anyhow::Error>(Some((kept.meta, data)))
        })
        .map_err(sm_err)?;
        let Some((meta, data)) = found else {
            return Ok(None);
        };
        let file = tokio::fs::File::open(&data)
            .await
            .with_context(|| format!("opening {}", data.display()))
            .map_err(sm_err)?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(file),
        }))
    }
}
