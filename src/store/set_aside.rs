//! Files a local lake's commits replace, set aside and freed later, off the commit's path.
//!
//! Why: renaming a staged file over the partition file it replaces frees the old file's blocks
//! inside the `rename`, and on a file system mounted with `discard` (cloud VM disks, ext4
//! without a journal: `ext4_free_blocks` issues the TRIM synchronously) or with a journal to
//! checkpoint, that waits for the device. A reseller's re-delivered bill replaces 20,000 files
//! in one commit: 20,000 renames over existing files took 2.1-2.4 s on this project's VM disk,
//! against 0.5-0.9 s when each old file is first hard-linked aside (`link` + `rename`, nothing
//! freed), and the freeing then takes its 1.9-2.5 s wherever it is done (Python, 44 KB files).
//!
//! So before a commit renames over a file, it links the file into
//! `_billpipe/replaced/<run id>/<n>`, and the device's work is done by the *next* run that takes
//! a lock on the lake, on a thread of its own (`billpipe-free`) while that run reads and writes;
//! the run waits for it before it releases its lock, so a lake never holds more than one run's
//! replaced files for longer than one run. Delta Lake and Iceberg go further (replaced files stay
//! until a `VACUUM`); billpipe keeps them only until the next run, because nothing reads them.
//!
//! Safety does not depend on timing: each name in `replaced/` is an extra hard link, so removing
//! it never removes a lake file — before the rename it drops the link count of the live file,
//! after it frees the old one. Any run may therefore free any other run's folder at any moment
//! (two shards at once, a run killed mid-way); a commit whose link fails (no hard links on this
//! file system, the folder freed under it by another run) just renames over the file as before.
//! The names carry no `.parquet` suffix, so readers globbing the lake never see them.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread::JoinHandle;

/// The lake folder (under `_billpipe/`) of replaced files, one folder per run.
pub const REPLACED_DIR: &str = "_billpipe/replaced";

/// This run's folder of replaced files, and the thread freeing earlier runs'.
pub struct SetAside {
    root: PathBuf,
    /// `<root>/_billpipe/replaced/<run id>`, made when the first file is set aside.
    dir: PathBuf,
    made: AtomicBool,
    next: AtomicU64,
    freeing: Mutex<Option<JoinHandle<()>>>,
}

impl SetAside {
    /// For the lake at `root`, run `run_id`.
    pub fn new(root: &Path, run_id: &str) -> SetAside {
        SetAside {
            root: root.to_path_buf(),
            dir: root.join(REPLACED_DIR).join(run_id),
            made: AtomicBool::new(false),
            next: AtomicU64::new(0),
            freeing: Mutex::new(None),
        }
    }

    /// Links the files at `rels` (lake paths about to be replaced, those the unit's previous
    /// snapshot had) into this run's folder. A path with no file or a link that fails is left
    /// to the rename, which then frees the old file itself.
    pub fn before_replacing<'a>(&self, rels: impl Iterator<Item = &'a str>) {
        let mut set_aside = 0usize;
        for rel in rels {
            let target = self.root.join(rel);
            if !self.made.load(Ordering::Relaxed) {
                // Only in a real folder: through a symbolic link the links would land where
                // the freeing (which follows none) never removes them.
                let real = |dir: &Path| {
                    std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_dir())
                };
                if std::fs::create_dir_all(&self.dir).is_err()
                    || !real(&self.root.join(REPLACED_DIR))
                    || !real(&self.dir)
                {
                    return;
                }
                self.made.store(true, Ordering::Relaxed);
            }
            let name = self
                .dir
                .join(self.next.fetch_add(1, Ordering::Relaxed).to_string());
            match std::fs::hard_link(&target, &name) {
                Ok(()) => set_aside += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::debug!("{}: not set aside ({e})", target.display()),
            }
        }
        if set_aside > 0 {
            tracing::debug!(
                "{set_aside} files to be replaced set aside in {}",
                self.dir.display()
            );
        }
    }

    /// Starts freeing the replaced files of every other run (this run holds a lock now).
    /// Symbolic links are never followed: `replaced/` and its run folders must be real folders
    /// (a link planted there could otherwise make the freeing delete a partition folder's
    /// files, or files outside the lake).
    pub fn start_freeing(&self) {
        let replaced = self.root.join(REPLACED_DIR);
        let real_dir = std::fs::symlink_metadata(&replaced).is_ok_and(|m| m.file_type().is_dir());
        let Some(entries) = real_dir
            .then(|| std::fs::read_dir(&replaced).ok())
            .flatten()
        else {
            return;
        };
        let folders: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .filter(|p| *p != self.dir)
            .collect();
        if folders.is_empty() {
            return;
        }
        let freeing = std::thread::Builder::new()
            .name("billpipe-free".into())
            .spawn(move || free(&folders));
        match (freeing, self.freeing.lock()) {
            (Ok(handle), Ok(mut slot)) => *slot = Some(handle),
            (Err(e), _) => tracing::debug!("replaced files not freed now: {e}"),
            (Ok(handle), Err(_)) => {
                let _ = handle.join();
            }
        }
    }

    /// Waits until the files `start_freeing` found are freed.
    pub fn wait(&self) {
        let handle = self.freeing.lock().ok().and_then(|mut slot| slot.take());
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

/// Removes the folders. Another run may be removing them too (a shard): what is gone already
/// is no error, and whatever is left is the next run's.
fn free(folders: &[PathBuf]) {
    let started = std::time::Instant::now();
    let mut files = 0usize;
    for folder in folders {
        if let Ok(entries) = std::fs::read_dir(folder) {
            // Unlinking a file or a symbolic link removes that name only; a folder is left.
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| !t.is_dir()) {
                    files += std::fs::remove_file(e.path()).is_ok() as usize;
                }
            }
        }
        let _ = std::fs::remove_dir(folder);
    }
    tracing::debug!(
        "freed {files} files replaced by earlier runs in {:.3} s",
        started.elapsed().as_secs_f64()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_file_keeps_its_bytes_until_the_next_run_frees_it() {
        let root = tempfile::tempdir().unwrap();
        let part = root
            .path()
            .join("billing_period=2025-11/billing_account_id=1");
        std::fs::create_dir_all(&part).unwrap();
        std::fs::write(part.join("u.parquet"), b"old").unwrap();
        let first = SetAside::new(root.path(), "run-1");
        let rels = [
            "billing_period=2025-11/billing_account_id=1/u.parquet",
            "new/x.parquet",
        ];
        first.before_replacing(rels.iter().copied());
        let staged = root.path().join("staged");
        std::fs::write(&staged, b"new").unwrap();
        std::fs::rename(&staged, part.join("u.parquet")).unwrap();
        let aside = root.path().join(REPLACED_DIR).join("run-1/0");
        assert_eq!(std::fs::read(&aside).unwrap(), b"old");
        assert_eq!(std::fs::read(part.join("u.parquet")).unwrap(), b"new");
        // The run's own folder is not freed by itself; the next run's is not touched either.
        first.start_freeing();
        first.wait();
        assert!(aside.exists());
        let next = SetAside::new(root.path(), "run-2");
        next.start_freeing();
        next.wait();
        assert!(!aside.exists());
        assert!(!root.path().join(REPLACED_DIR).join("run-1").exists());
        assert_eq!(std::fs::read(part.join("u.parquet")).unwrap(), b"new");
    }

    /// Links planted in `replaced/` (a run folder that is a link to a partition folder or to a
    /// folder outside the lake, or `replaced/` itself a link) are never followed.
    #[cfg(unix)]
    #[test]
    fn freeing_follows_no_symbolic_link() {
        use std::os::unix::fs::symlink;
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("precious.txt"), b"keep").unwrap();
        let part = root
            .path()
            .join("billing_period=2025-11/billing_account_id=1");
        std::fs::create_dir_all(&part).unwrap();
        std::fs::write(part.join("u.parquet"), b"live").unwrap();
        let replaced = root.path().join(REPLACED_DIR);
        std::fs::create_dir_all(replaced.join("real")).unwrap();
        std::fs::write(replaced.join("real/0"), b"old").unwrap();
        symlink(&part, replaced.join("to-partition")).unwrap();
        symlink(outside.path(), replaced.join("to-outside")).unwrap();
        symlink(outside.path().join("precious.txt"), replaced.join("real/1")).unwrap();
        let next = SetAside::new(root.path(), "next");
        next.start_freeing();
        next.wait();
        assert!(part.join("u.parquet").exists());
        assert!(outside.path().join("precious.txt").exists());
        assert!(!replaced.join("real").exists(), "the real folder is freed");
        // `replaced/` itself a link to the partition's month.
        std::fs::remove_dir_all(&replaced).unwrap();
        symlink(root.path().join("billing_period=2025-11"), &replaced).unwrap();
        let again = SetAside::new(root.path(), "again");
        again.start_freeing();
        again.wait();
        again.before_replacing(
            ["billing_period=2025-11/billing_account_id=1/u.parquet"].into_iter(),
        );
        assert!(part.join("u.parquet").exists());
        assert_eq!(
            std::fs::read_dir(&part).unwrap().count(),
            1,
            "no link made through it"
        );
    }

    #[test]
    fn freeing_before_the_rename_removes_nothing_of_the_lake() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("a.parquet"), b"live").unwrap();
        let killed = SetAside::new(root.path(), "killed");
        killed.before_replacing(["a.parquet"].into_iter());
        // Killed before its rename: the next run frees the extra link only.
        let next = SetAside::new(root.path(), "next");
        next.start_freeing();
        next.wait();
        assert_eq!(
            std::fs::read(root.path().join("a.parquet")).unwrap(),
            b"live"
        );
        assert!(!root.path().join(REPLACED_DIR).join("killed").exists());
    }
}
