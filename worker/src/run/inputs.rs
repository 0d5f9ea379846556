//! The inputs of tasks, fetched through the AFS client: one client per executor (so that
//! no executor's fetch waits for another's), a file of one chunk through the whole-file
//! cache, a chunk of a larger file by range, a batch of small files pipelined.

use std::sync::Arc;

use afs::client::{AfsClient, AfsError, ClientConfig};
use proto::msg::Assignment;

use crate::chunk::{read_chunk, ChunkBytes};

/// The AFS clients of a worker: one per executor, each with its own connection and its own
/// whole-file cache (`<cache root>/<id>/` for the first, `<id>.e<N>/` beside it for the
/// others, each with its share of the cache limit), so that no executor's fetch ever waits
/// for another's.
#[derive(Clone)]
pub(super) struct Afs {
    clients: Vec<Arc<tokio::sync::Mutex<AfsClient>>>,
    /// The client of the executor holding this handle.
    mine: usize,
}

impl Afs {
    pub(super) fn new(cfg: ClientConfig, executors: usize) -> Result<Self, AfsError> {
        let executors = executors.max(1);
        let clients = (0..executors)
            .map(|n| {
                let mut c = cfg.clone();
                c.cache_limit_bytes = cfg.cache_limit_bytes / executors as u64;
                c.memory_limit_bytes = cfg.memory_limit_bytes / executors as u64;
                if n > 0 {
                    c.client_id = format!("{}.e{n}", cfg.client_id);
                }
                AfsClient::new(c).map(|c| Arc::new(tokio::sync::Mutex::new(c)))
            })
            .collect::<Result<_, _>>()?;
        Ok(Afs { clients, mine: 0 })
    }

    pub(super) fn for_executor(&self, n: usize) -> Self {
        Afs {
            mine: n % self.clients.len().max(1),
            ..self.clone()
        }
    }

    /// Every cached file, as far as no fetch holds a client now (for snapshot markers).
    pub(super) fn cached(&self) -> Option<Vec<String>> {
        let mut all = Vec::new();
        for c in &self.clients {
            all.extend(c.try_lock().ok()?.cached().into_iter().map(|(p, _)| p));
        }
        all.sort();
        all.dedup();
        Some(all)
    }

    /// Fetches what task `a` tests. A file of one chunk goes through the AFS whole-file
    /// cache (validated with the server: the coordinator may have queued a change the
    /// server's scan has not announced yet). A chunk of a larger file is read by range
    /// ([`read_chunk`]): each worker then moves only the bytes it tests, once, instead of
    /// every worker copying the whole file into its cache.
    async fn fetch(&self, a: &Assignment, max_line: u64) -> Result<Fetched, AfsError> {
        let Some(client) = self.clients.get(self.mine) else {
            return Err(AfsError::Unavailable {
                message: "no AFS client".into(),
            });
        };
        let mut client = client.lock().await;
        if a.chunks > 1 {
            if let Some(c) = read_chunk(&mut client, &a.file, a.start, a.end, max_line).await? {
                return Ok(Fetched::Range(c));
            }
        }
        client.open_validated(&a.file).await.map(Fetched::Whole)
    }

    /// Fetches the inputs of a batch: [`Afs::fetch`] for one task, the whole files of a
    /// batch of small ones with their requests pipelined. Results in the batch's order.
    pub(super) async fn fetch_batch(
        &self,
        batch: &[Assignment],
        max_line: u64,
    ) -> Vec<Result<Fetched, AfsError>> {
        if let [a] = batch {
            if a.work.is_some() {
                return vec![Ok(Fetched::Nothing)];
            }
            return vec![self.fetch(a, max_line).await];
        }
        let Some(client) = self.clients.get(self.mine) else {
            return batch
                .iter()
                .map(|_| {
                    Err(AfsError::Unavailable {
                        message: "no AFS client".into(),
                    })
                })
                .collect();
        };
        let paths: Vec<String> = batch.iter().map(|a| a.file.clone()).collect();
        let opened = client.lock().await.open_many(&paths).await;
        opened.into_iter().map(|r| r.map(Fetched::Whole)).collect()
    }
}

/// A task's input, fetched: a whole file in the AFS cache (files of one chunk), or the
/// bytes of one chunk of a larger file read by range into memory.
pub(super) enum Fetched {
    Whole(afs::client::OpenedFile),
    Range(ChunkBytes),
    /// A generation task reads no input.
    Nothing,
}
