//! A server's storage root: path safety, content versions, listing, atomic writes.

use std::collections::HashMap;
use std::io::{Read, Write};

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::msg::{ErrorCode, FileInfo};

/// Prefix of temporary files during atomic writes; hidden, so never listed or served.
const TMP_PREFIX: &str = ".afs-tmp-";

/// A store error, with the code the peer gets.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct StoreError {
    pub code: ErrorCode,
    pub message: String,
}

impl StoreError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        StoreError {
            code,
            message: message.into(),
        }
    }
    fn io(what: &str, path: &Path, e: std::io::Error) -> Self {
        let code = if e.kind() == std::io::ErrorKind::NotFound {
            ErrorCode::NotFound
        } else {
            ErrorCode::Internal
        };
        StoreError::new(code, format!("{what} {}: {e}", path.display()))
    }
}

/// What identifies a file's content cheaply; when it is unchanged the cached version stands
/// (size, mtime, ctime and inode: a rewrite that keeps size and mtime still moves ctime).
pub use proto::files::Fingerprint;

pub use crate::names::Hasher;

/// [`crate::names::check_rel`], refused as [`ErrorCode::Forbidden`].
pub fn check_rel(rel: &str) -> Result<String, StoreError> {
    crate::names::check_rel(rel).map_err(|why| StoreError::new(ErrorCode::Forbidden, why))
}

/// An atomic write in progress (see [`Store::begin_write`]).
#[derive(Debug)]
pub struct PendingWrite {
    pub rel: String,
    /// The hidden temporary file to fill.
    pub tmp: PathBuf,
    target: PathBuf,
}

/// A storage root.
pub struct Store {
    root: PathBuf,
    max_file_bytes: u64,
    versions: Mutex<HashMap<String, (Fingerprint, String)>>,
    /// One lock per file being hashed, so that requests arriving together for a new file
    /// (two workers, the background warm-up) hash it once.
    hashing: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

impl Store {
    /// Opens (creating if needed) the root directory.
    pub fn open(root: &Path, max_file_bytes: u64) -> Result<Self, StoreError> {
        std::fs::create_dir_all(root).map_err(|e| StoreError::io("creating root", root, e))?;
        let root = root
            .canonicalize()
            .map_err(|e| StoreError::io("resolving root", root, e))?;
        Ok(Store {
            root,
            max_file_bytes,
            versions: Mutex::new(HashMap::new()),
            hashing: Mutex::new(HashMap::new()),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn max_file_bytes(&self) -> u64 {
        self.max_file_bytes
    }

    /// The absolute path of an existing file `rel`, after checking that it resolves (through
    /// any symlinks) to a regular file inside the root.
    pub fn resolve_existing(&self, rel: &str) -> Result<(String, PathBuf), StoreError> {
        let rel = check_rel(rel)?;
        let joined = self.root.join(&rel);
        // Fast path: a name directly under the (canonical) root that is a regular file, not
        // a symlink, is inside the root; canonicalize costs a readlink per component of the
        // whole path, the largest cost of serving a small file.
        if !rel.contains('/') {
            if let Ok(meta) = std::fs::symlink_metadata(&joined) {
                if meta.file_type().is_file() {
                    return Ok((rel, joined));
                }
            }
        }
        let real = joined
            .canonicalize()
            .map_err(|e| StoreError::io("opening", Path::new(&rel), e))?;
        if !real.starts_with(&self.root) {
            return Err(StoreError::new(
                ErrorCode::Forbidden,
                format!("path {rel:?} refused: it leads outside the root"),
            ));
        }
        if !real.is_file() {
            return Err(StoreError::new(
                ErrorCode::NotFound,
                format!("not a regular file: {rel}"),
            ));
        }
        Ok((rel, real))
    }

    /// Where a new file `rel` would be written, after checking that its directory stays
    /// inside the root (creating the directories as needed).
    fn resolve_new(&self, rel: &str) -> Result<(String, PathBuf), StoreError> {
        let rel = check_rel(rel)?;
        let target = self.root.join(&rel);
        let parent = target
            .parent()
            .ok_or_else(|| StoreError::new(ErrorCode::Forbidden, "no parent directory"))?;
        std::fs::create_dir_all(parent)
            .map_err(|e| StoreError::io("creating directory", parent, e))?;
        let real_parent = parent
            .canonicalize()
            .map_err(|e| StoreError::io("resolving", parent, e))?;
        if !real_parent.starts_with(&self.root) {
            return Err(StoreError::new(
                ErrorCode::Forbidden,
                format!("path {rel:?} refused: it leads outside the root"),
            ));
        }
        if let Ok(meta) = std::fs::symlink_metadata(&target) {
            if meta.file_type().is_symlink() {
                return Err(StoreError::new(
                    ErrorCode::Forbidden,
                    format!("{rel} is a symlink"),
                ));
            }
        }
        Ok((rel, target))
    }

    /// Size and version of `rel`, hashing the content only if its fingerprint changed.
    /// Blocking: call from a blocking thread for big files.
    pub fn info(&self, rel: &str) -> Result<FileInfo, StoreError> {
        self.info_fp(rel).map(|(i, _)| i)
    }

    /// [`Store::info`] without hashing: `Ok(None)` when the version has to be computed
    /// (the file is new or changed). Cheap (a path check and a stat): callable inline.
    pub fn cached_info(&self, rel: &str) -> Result<Option<(FileInfo, Fingerprint)>, StoreError> {
        let (rel, _, fp) = self.resolve_stat(rel)?;
        let version = match self.lock().get(&rel) {
            Some((cfp, v)) if *cfp == fp => v.clone(),
            _ => return Ok(None),
        };
        Ok(Some((
            FileInfo {
                path: rel,
                size: fp.size,
                version,
            },
            fp,
        )))
    }

    /// [`Store::info`] plus the fingerprint the version belongs to, so that a reader can
    /// check afterwards that what it read was that version.
    pub fn info_fp(&self, rel: &str) -> Result<(FileInfo, Fingerprint), StoreError> {
        if let Some(hit) = self.cached_info(rel)? {
            return Ok(hit);
        }
        let gate = self
            .hashing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(rel.to_string())
            .or_default()
            .clone();
        let _hashing = gate.lock().unwrap_or_else(|p| p.into_inner());
        let result = self.hash_file(rel);
        self.hashing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(rel);
        result
    }

    /// The version of `rel` from the cache if another caller just computed it, else by
    /// hashing the content (caller holds the file's hashing lock).
    fn hash_file(&self, rel: &str) -> Result<(FileInfo, Fingerprint), StoreError> {
        if let Some(hit) = self.cached_info(rel)? {
            return Ok(hit);
        }
        let started = std::time::Instant::now();
        let (rel, real, fp) = self.resolve_stat(rel)?;
        let mut f = std::fs::File::open(&real)
            .map_err(|e| StoreError::io("opening", Path::new(&rel), e))?;
        let mut h = Hasher::default();
        let mut buf = vec![0u8; fp.size.clamp(64 << 10, 1 << 20) as usize];
        loop {
            let n = f
                .read(&mut buf)
                .map_err(|e| StoreError::io("reading", Path::new(&rel), e))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        let version = h.finish();
        // Only trust the hash if the file did not change while we read it.
        let after = std::fs::metadata(&real).map(|m| Fingerprint::of(&m)).ok();
        if after == Some(fp) {
            self.lock().insert(rel.clone(), (fp, version.clone()));
        }
        tracing::debug!(
            path = rel,
            bytes = fp.size,
            ms = started.elapsed().as_millis() as u64,
            "hashed"
        );
        Ok((
            FileInfo {
                path: rel,
                size: fp.size,
                version,
            },
            fp,
        ))
    }

    /// A whole small file in memory with its version: one open, one read, the version
    /// hashed from the bytes read (so it is exactly theirs). `Ok(None)` when the file is
    /// larger than `limit` or changed while it was read: serve it the streaming way.
    pub fn read_small(
        &self,
        rel: &str,
        limit: u64,
    ) -> Result<Option<(FileInfo, Vec<u8>)>, StoreError> {
        let (rel, real) = self.resolve_existing(rel)?;
        let mut f = std::fs::File::open(&real)
            .map_err(|e| StoreError::io("opening", Path::new(&rel), e))?;
        let stat = |f: &std::fs::File| {
            f.metadata()
                .map(|m| Fingerprint::of(&m))
                .map_err(|e| StoreError::io("stat", Path::new(&rel), e))
        };
        let before = stat(&f)?;
        if before.size > limit {
            return Ok(None);
        }
        let mut bytes = Vec::with_capacity(before.size as usize + 1);
        f.read_to_end(&mut bytes)
            .map_err(|e| StoreError::io("reading", Path::new(&rel), e))?;
        if bytes.len() as u64 != before.size || stat(&f)? != before {
            return Ok(None);
        }
        let mut h = Hasher::default();
        h.update(&bytes);
        let version = h.finish();
        self.lock().insert(rel.clone(), (before, version.clone()));
        Ok(Some((
            FileInfo {
                path: rel,
                size: before.size,
                version,
            },
            bytes,
        )))
    }

    /// Normalized path, real path and current fingerprint of an existing file `rel`.
    fn resolve_stat(&self, rel: &str) -> Result<(String, PathBuf, Fingerprint), StoreError> {
        let (rel, real) = self.resolve_existing(rel)?;
        let meta =
            std::fs::metadata(&real).map_err(|e| StoreError::io("stat", Path::new(&rel), e))?;
        Ok((rel, real, Fingerprint::of(&meta)))
    }

    /// Path and fingerprint of `rel` now, without its version.
    pub fn stat(&self, rel: &str) -> Result<(String, Fingerprint), StoreError> {
        self.resolve_stat(rel).map(|(rel, _, fp)| (rel, fp))
    }

    /// The version of `rel` in fingerprint `fp`, if it was hashed in that state (no I/O).
    pub fn known_version(&self, rel: &str, fp: &Fingerprint) -> Option<String> {
        match self.lock().get(rel) {
            Some((cfp, v)) if cfp == fp => Some(v.clone()),
            _ => None,
        }
    }

    /// The current fingerprint of `rel`, if it still exists.
    pub fn fingerprint(&self, rel: &str) -> Option<Fingerprint> {
        self.resolve_stat(rel).ok().map(|(_, _, fp)| fp)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Fingerprint, String)>> {
        proto::lock(&self.versions)
    }

    /// Every regular, non-hidden file under the root with its fingerprint (no hashing).
    pub fn scan(&self) -> HashMap<String, Fingerprint> {
        proto::files::visible_files(&self.root)
            .into_iter()
            .map(|(rel, m)| (rel, Fingerprint::of(&m)))
            .collect()
    }

    /// Every file with its version (hashes what changed). Blocking.
    pub fn list(&self) -> Vec<FileInfo> {
        let mut files: Vec<FileInfo> = self
            .scan()
            .keys()
            .filter_map(|rel| self.info(rel).ok())
            .collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        files
    }

    /// Starts an atomic write of `size` bytes as `rel`: checks the path and the size limit
    /// and names a hidden temporary file beside the target. The caller fills the temporary
    /// file, then calls [`Store::finish_write`] (or [`Store::abort_write`]).
    pub fn begin_write(&self, rel: &str, size: u64) -> Result<PendingWrite, StoreError> {
        if size > self.max_file_bytes {
            return Err(StoreError::new(
                ErrorCode::TooLarge,
                format!("{size} bytes is over the limit of {}", self.max_file_bytes),
            ));
        }
        let (rel, target) = self.resolve_new(rel)?;
        let dir = target.parent().unwrap_or(&self.root).to_path_buf();
        let tmp = dir.join(format!("{TMP_PREFIX}{:016x}", rand::random::<u64>()));
        Ok(PendingWrite { rel, tmp, target })
    }

    /// Completes an atomic write: fsync, rename over the target, fsync the directory, so
    /// readers see the old content or the new, never a mix. Returns the new version.
    /// Blocking (it hashes the file).
    pub fn finish_write(&self, w: PendingWrite) -> Result<FileInfo, StoreError> {
        let result = (|| {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&w.tmp)
                .map_err(|e| StoreError::io("opening", &w.tmp, e))?;
            f.sync_all()
                .map_err(|e| StoreError::io("syncing", &w.tmp, e))?;
            std::fs::rename(&w.tmp, &w.target)
                .map_err(|e| StoreError::io("renaming", &w.target, e))?;
            if let Some(dir) = w.target.parent() {
                if let Ok(d) = std::fs::File::open(dir) {
                    let _ = d.sync_all();
                }
            }
            Ok(())
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&w.tmp);
            return Err(e);
        }
        self.info(&w.rel)
    }

    /// Drops a write that could not be completed.
    pub fn abort_write(&self, w: PendingWrite) {
        let _ = std::fs::remove_file(&w.tmp);
    }

    /// Writes `size` bytes from `body` as `rel` atomically (see [`Store::finish_write`]).
    /// Blocking.
    pub fn write_atomic(
        &self,
        rel: &str,
        size: u64,
        body: &mut dyn Read,
    ) -> Result<FileInfo, StoreError> {
        let w = self.begin_write(rel, size)?;
        let filled = (|| {
            let mut f =
                std::fs::File::create(&w.tmp).map_err(|e| StoreError::io("creating", &w.tmp, e))?;
            let copied = std::io::copy(&mut body.take(size), &mut f)
                .map_err(|e| StoreError::io("writing", &w.tmp, e))?;
            if copied != size {
                return Err(StoreError::new(ErrorCode::BadRequest, "body ended early"));
            }
            f.flush().map_err(|e| StoreError::io("writing", &w.tmp, e))
        })();
        match filled {
            Ok(()) => self.finish_write(w),
            Err(e) => {
                self.abort_write(w);
                Err(e)
            }
        }
    }

    /// Removes `rel` (missing is fine).
    pub fn delete(&self, rel: &str) -> Result<String, StoreError> {
        let (rel, target) = self.resolve_new(rel)?;
        match std::fs::remove_file(&target) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io("deleting", &target, e)),
        }
        self.lock().remove(&rel);
        Ok(rel)
    }

    /// Removes temporary files left by a crash mid-write.
    pub fn clean_temp_files(&self) {
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                if name.starts_with(TMP_PREFIX) {
                    let _ = std::fs::remove_file(e.path());
                } else if !name.starts_with('.')
                    && e.file_type().map(|t| t.is_dir()).unwrap_or(false)
                {
                    stack.push(e.path());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    /// Paths that could leave the root or reach hidden files are refused; plain ones pass.
    fn path_rules() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/./b",
            ".hidden",
            "a/.git/config",
            "a\0b",
            "a\\b",
        ] {
            assert!(check_rel(bad).is_err(), "{bad:?} should be refused");
        }
        assert_eq!(check_rel("a/b.txt").expect("ok"), "a/b.txt");
        assert_eq!(check_rel("a//b.txt").expect("ok"), "a/b.txt");
    }

    #[test]
    /// A symlink pointing outside the root is refused; versions follow content.
    fn symlink_escape_and_versions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("secret"), b"s").expect("write");
        let store = Store::open(&dir.path().join("root"), 1 << 20).expect("open");
        #[cfg(unix)]
        std::os::unix::fs::symlink(outside.path().join("secret"), store.root().join("link"))
            .expect("symlink");
        let err = store.resolve_existing("link").expect_err("escape refused");
        assert_eq!(err.code, ErrorCode::Forbidden);
        let a = store
            .write_atomic("x.txt", 3, &mut &b"abc"[..])
            .expect("write");
        assert_eq!(store.info("x.txt").expect("info").version, a.version);
        let b = store
            .write_atomic("x.txt", 3, &mut &b"abd"[..])
            .expect("write");
        assert_ne!(a.version, b.version);
        let listed: Vec<String> = store.list().into_iter().map(|f| f.path).collect();
        assert_eq!(
            listed,
            vec!["x.txt"],
            "symlink to a file outside is not listed as ours"
        );
        assert_eq!(
            store
                .write_atomic("big", 2 << 20, &mut &b""[..])
                .expect_err("too big")
                .code,
            ErrorCode::TooLarge
        );
    }
}
