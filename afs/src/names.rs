//! What client and server agree on about files, without either's machinery: which paths
//! are acceptable (relative, no `..`, nothing hidden) and how a content version is computed.

/// Content version of some bytes: xxh3-128 in hex. Content-derived, so two replicas holding
/// the same bytes agree on the version.
pub struct Hasher(xxhash_rust::xxh3::Xxh3);

impl Default for Hasher {
    fn default() -> Self {
        Hasher(xxhash_rust::xxh3::Xxh3::new())
    }
}

impl Hasher {
    pub fn update(&mut self, b: &[u8]) {
        self.0.update(b);
    }
    pub fn finish(&self) -> String {
        format!("{:032x}", self.0.digest128())
    }
}

/// Checks that `rel` is a plain relative path: no root, no `..`, no `.` or empty parts, no
/// hidden component, no NUL. Returns its normalized form (parts joined by `/`), or why it
/// is refused.
pub fn check_rel(rel: &str) -> Result<String, String> {
    let bad = |why: &str| format!("path {rel:?} refused: {why}");
    if rel.is_empty() || rel.len() > 4096 {
        return Err(bad("empty or longer than 4096 bytes"));
    }
    if rel.contains('\0') || rel.contains('\\') {
        return Err(bad("contains NUL or backslash"));
    }
    if rel.starts_with('/') {
        return Err(bad("absolute paths are not allowed"));
    }
    let mut parts = Vec::new();
    for part in rel.split('/') {
        match part {
            "" => continue, // "a//b" is "a/b"
            "." => return Err(bad("'.' components are not allowed")),
            ".." => return Err(bad("'..' is not allowed")),
            p if p.starts_with('.') => {
                return Err(bad("hidden files and directories are not served"))
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err(bad("no file name"));
    }
    Ok(parts.join("/"))
}
