//! Is a snapshot's layout safe to restore? Every path safe, none listed twice, nothing
//! beneath something that is not a directory (a file or a link): checked before anything is
//! written.
//!
//! [`LayoutCheck`] checks a tree as it streams, in memory bounded by one path: in walk order
//! (`a`, `a/b`, `a.txt`: what dr's directory walk writes) or in byte order (a bucket's keys),
//! the paths that begin with a given path come right after it, so the earlier entries a new
//! one can be beneath are all prefixes of the previous entry, and a path listed twice is next
//! to itself. A tree in neither order (crafted, or from a writer dr does not know) is checked
//! whole by [`check_layout`] instead.

use dr_core::{Error, Result};

use super::tree::{check_relative_path, component_order, EntryKind, TreeEntry};

/// The streaming check of a tree's layout; [`LayoutCheck::sorted`] says at the end whether
/// it applied.
#[derive(Debug)]
pub(crate) struct LayoutCheck {
    /// The previous entry's path: every entry of `open` is a prefix of it.
    last: String,
    /// Earlier entries that later ones may be beneath: (length of their path, a prefix of
    /// `last`; whether it is a directory), shortest first.
    open: Vec<(usize, bool)>,
    /// Whether the paths so far are in walk order, and in byte order.
    walk_order: bool,
    byte_order: bool,
    /// Whether any entry came yet.
    started: bool,
}

impl Default for LayoutCheck {
    fn default() -> LayoutCheck {
        LayoutCheck {
            last: String::new(),
            open: Vec::new(),
            walk_order: true,
            byte_order: true,
            started: false,
        }
    }
}

impl LayoutCheck {
    /// Check the next entry. An error is final; an unsorted tree is not an error here (see
    /// [`LayoutCheck::sorted`]).
    pub fn push(&mut self, e: &TreeEntry) -> Result<()> {
        check_paths(e)?;
        let path = e.path.as_str();
        if self.started {
            self.walk_order &= component_order(&self.last, path).is_lt();
            self.byte_order &= self.last.as_str() < path;
        }
        self.started = true;
        if !self.sorted() {
            return Ok(()); // checked whole at the end
        }
        while let Some(&(len, _)) = self.open.last() {
            if path.starts_with(&self.last[..len]) {
                break;
            }
            self.open.pop();
        }
        for &(len, dir) in &self.open {
            if !dir && path.as_bytes().get(len) == Some(&b'/') {
                return Err(beneath(path));
            }
        }
        self.open
            .push((path.len(), matches!(e.kind, EntryKind::Dir)));
        self.last.clear();
        self.last.push_str(path);
        Ok(())
    }

    /// Whether the tree came in walk or byte order, so that [`LayoutCheck::push`] checked it
    /// all; otherwise [`check_layout`] must.
    pub fn sorted(&self) -> bool {
        self.walk_order || self.byte_order
    }
}

fn check_paths(e: &TreeEntry) -> Result<()> {
    check_relative_path(&e.path)?;
    if let EntryKind::Hardlink { target } = &e.kind {
        check_relative_path(target)?;
    }
    Ok(())
}

fn beneath(path: &str) -> Error {
    Error::corrupt(format!(
        "the snapshot puts '{path}' beneath something that is not a directory: refusing it"
    ))
}

/// Check the layout of a tree in any order, held whole: sorting by components puts every
/// path right before its descendants, so comparing neighbours finds both faults.
pub(crate) fn check_layout(entries: &[(String, bool)]) -> Result<()> {
    let mut order: Vec<u32> = (0..entries.len() as u32).collect();
    order.sort_by(|a, b| component_order(&entries[*a as usize].0, &entries[*b as usize].0));
    for pair in order.windows(2) {
        let (a, b) = (&entries[pair[0] as usize], &entries[pair[1] as usize]);
        if a.0 == b.0 {
            return Err(Error::corrupt(format!(
                "the snapshot lists '{}' twice: refusing it",
                a.0
            )));
        }
        let under =
            b.0.strip_prefix(a.0.as_str())
                .is_some_and(|rest| rest.starts_with('/'));
        if under && !a.1 {
            return Err(beneath(&b.0));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, dir: bool) -> TreeEntry {
        TreeEntry {
            path: path.into(),
            mode: 0o755,
            mtime_ns: 0,
            kind: if dir {
                EntryKind::Dir
            } else {
                EntryKind::Symlink { target: "x".into() }
            },
        }
    }

    /// Both checks on `paths` ('/' at the end marks a directory): the streaming one's verdict
    /// (None when the tree is unsorted) and the whole one's.
    fn verdicts(paths: &[&str]) -> (Option<bool>, bool) {
        let entries: Vec<TreeEntry> = paths
            .iter()
            .map(|p| entry(p.trim_end_matches('/'), p.ends_with('/')))
            .collect();
        let mut check = LayoutCheck::default();
        let streamed = entries.iter().try_for_each(|e| check.push(e)).is_ok();
        let whole: Vec<(String, bool)> = entries
            .iter()
            .map(|e| (e.path.clone(), matches!(e.kind, EntryKind::Dir)))
            .collect();
        let whole = check_layout(&whole).is_ok();
        let streamed = if !streamed {
            Some(false)
        } else {
            check.sorted().then_some(true)
        };
        (streamed, whole)
    }

    #[test]
    fn the_streaming_check_agrees_with_the_whole_one_on_sorted_trees() {
        let cases: &[(&[&str], bool)] = &[
            // Walk order.
            (&["a/", "a/b", "a/c/", "a/c/d", "a b", "a.txt", "b"], true),
            (&["a", "a/b"], false),
            (&["a/", "a/b", "a/b/c"], false),
            (&["a/", "a/b/", "a/b/c", "a b", "a b/c"], false),
            (&["a", "a b", "a.txt"], true),
            // Byte order: `a.txt` and `a-1` between `a` and `a/…`.
            (&["a", "a-1", "a.txt", "a/b"], false),
            (&["a/", "a-1", "a.txt", "a/b"], true),
            (&["a/", "a-1/", "a-1/x", "a.txt", "a/b/", "a/b/c"], true),
            (&["a/", "a-1/", "a-1/x", "a.txt", "a/b", "a/b/c"], false),
            (&["x/", "x/a", "x/a.b", "x/a/c"], false),
        ];
        for (paths, safe) in cases {
            let (streamed, whole) = verdicts(paths);
            assert_eq!(whole, *safe, "{paths:?}");
            assert_eq!(streamed, Some(*safe), "{paths:?}");
        }
    }

    #[test]
    fn twice_listed_and_unsorted_trees_are_left_to_the_whole_check() {
        assert_eq!(verdicts(&["a", "a"]), (None, false));
        assert_eq!(verdicts(&["b/x", "b"]), (None, false));
        assert_eq!(verdicts(&["b", "a"]), (None, true));
    }
}
