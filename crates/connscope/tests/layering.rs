//! The workspace is layered, and these tests keep it so.
//!
//! - **Crates:** no arrow from a lower crate up to a higher one. Cargo refuses
//!   a circle of normal dependencies, but not one closed by a dev-dependency
//!   (a bench or test of a lower crate reaching for a higher one): the graph
//!   of every kind of dependency between workspace members must have no
//!   circle either.
//! - **Files:** no file imports from a file that imports from it. A circle
//!   between two files is the first sign of a layer mixed up (the collector's
//!   `http.rs` and `firewall.rs` once were one).
//!
//! A file's imports are the paths in its items (its `use` lines and the
//! paths in its code) that lead into its crate: from `crate::`, `super::`,
//! `self::` or a child module; each resolved to the file that defines the
//! longest module prefix of the path. Module declarations (`mod x;`) are not
//! imports.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use syn::visit::Visit;

/// Every `.rs` file under `src`, by its module path (`["kit", "error"]`).
fn module_files(src: &Path) -> BTreeMap<Vec<String>, PathBuf> {
    let mut files = BTreeMap::new();
    let mut dirs = vec![src.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(src).unwrap().with_extension("");
            let mut module: Vec<String> = relative
                .iter()
                .map(|part| part.to_string_lossy().into_owned())
                .collect();
            if matches!(module.last().map(String::as_str), Some("lib" | "mod")) {
                module.pop();
            }
            files.insert(module, path);
        }
    }
    files
}

/// Collects the module paths a file's items name, made absolute.
struct Imports {
    /// The module the visitor is in (the file's, plus inline `mod`s).
    here: Vec<String>,
    /// Module paths, each with the length its file's module path must have
    /// at least.
    found: BTreeSet<(Vec<String>, usize)>,
}

impl Imports {
    fn add(&mut self, segments: &[String]) {
        let Some(first) = segments.first() else {
            return;
        };
        let (mut absolute, mut rest) = match first.as_str() {
            "crate" => (Vec::new(), &segments[1..]),
            "self" => (self.here.clone(), &segments[1..]),
            "super" => (self.here.clone(), segments),
            // A path from a child module of this one (`use door::Door`), or
            // from elsewhere (`std::io`), which names no file of the crate.
            _ => (self.here.clone(), segments),
        };
        while rest.first().is_some_and(|s| s == "super") {
            absolute.pop();
            rest = &rest[1..];
        }
        // A path may lead to this module's file only when it says so.
        let shortest = if first == "crate" || first == "self" || first == "super" {
            absolute.len()
        } else {
            absolute.len() + 1
        };
        absolute.extend(rest.iter().cloned());
        self.found.insert((absolute, shortest));
    }

    fn add_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(path) => {
                prefix.push(path.ident.to_string());
                self.add_tree(prefix, &path.tree);
                prefix.pop();
            }
            syn::UseTree::Name(name) => {
                prefix.push(name.ident.to_string());
                self.add(prefix);
                prefix.pop();
            }
            syn::UseTree::Rename(rename) => {
                prefix.push(rename.ident.to_string());
                self.add(prefix);
                prefix.pop();
            }
            syn::UseTree::Glob(_) => self.add(prefix),
            syn::UseTree::Group(group) => {
                for tree in &group.items {
                    self.add_tree(prefix, tree);
                }
            }
        }
    }
}

impl<'ast> Visit<'ast> for Imports {
    /// A `pub use` shows a child's item at a door of its own (the crate's
    /// facade); only a private `use` is a file leaning on another.
    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        if matches!(item.vis, syn::Visibility::Inherited) {
            self.add_tree(&mut Vec::new(), &item.tree);
        }
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        self.add(&segments);
        syn::visit::visit_path(self, path);
    }

    /// `pub(crate)` and `pub(super)` say who may import, not what is imported.
    fn visit_visibility(&mut self, _: &'ast syn::Visibility) {}

    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        // `mod x;` declares a file; only an inline module's items are read,
        // and not those of tests beside the code (their fixtures are not a
        // layer of the crate).
        if is_test_only(&item.attrs) {
            return;
        }
        if let Some((_, items)) = &item.content {
            self.here.push(item.ident.to_string());
            for item in items {
                self.visit_item(item);
            }
            self.here.pop();
        }
    }
}

/// `#[cfg(test)]`: code that exists only in the crate's own test build.
fn is_test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|attr| {
        attr.path().is_ident("cfg")
            && attr
                .parse_args::<syn::Ident>()
                .is_ok_and(|ident| ident == "test")
    })
}

/// File -> the other files it imports from.
fn import_graph(src: &Path) -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let files = module_files(src);
    let mut graph = BTreeMap::new();
    for (module, path) in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let syntax = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut imports = Imports {
            here: module.clone(),
            found: BTreeSet::new(),
        };
        imports.visit_file(&syntax);
        let targets = imports
            .found
            .iter()
            .filter_map(|(named, shortest)| {
                (*shortest..=named.len())
                    .rev()
                    .find_map(|len| files.get(&named[..len]))
            })
            .filter(|target| *target != path)
            .cloned()
            .collect();
        graph.insert(path.clone(), targets);
    }
    graph
}

/// Every pair of nodes (files, crates) that lead to each other, directly or
/// through others: one circle per node that is on one.
fn circles<T: Ord + Clone>(graph: &BTreeMap<T, BTreeSet<T>>) -> Vec<Vec<T>> {
    let mut found = Vec::new();
    for start in graph.keys() {
        // Depth-first from `start`, looking for a way back to it.
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((file, way)) = stack.pop() {
            for next in graph.get(&file).into_iter().flatten() {
                if next == start {
                    found.push(way.clone());
                } else if seen.insert(next.clone()) {
                    let mut longer = way.clone();
                    longer.push(next.clone());
                    stack.push((next.clone(), longer));
                }
            }
        }
    }
    found
}

/// The workspace's members: name, manifest directory, and the members each
/// depends on (any kind), from `cargo metadata`.
fn members() -> Vec<(String, PathBuf, BTreeSet<String>)> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages = metadata["packages"].as_array().unwrap();
    let names: BTreeSet<&str> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    packages
        .iter()
        .map(|p| {
            let name = p["name"].as_str().unwrap().to_owned();
            let dir = Path::new(p["manifest_path"].as_str().unwrap())
                .parent()
                .unwrap()
                .to_owned();
            // A crate's dev-dependency on itself only turns on its features.
            let deps = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["name"].as_str().unwrap())
                .filter(|d| names.contains(d) && *d != name)
                .map(str::to_owned)
                .collect();
            (name, dir, deps)
        })
        .collect()
}

#[test]
fn no_crate_depends_on_a_crate_above_it() {
    let members = members();
    assert!(members.len() > 15, "only {} members", members.len());
    let graph: BTreeMap<String, BTreeSet<String>> = members
        .into_iter()
        .map(|(name, _, deps)| (name, deps))
        .collect();
    let circles = circles(&graph);
    assert!(
        circles.is_empty(),
        "crates in a circle (each depends on the next, the last on the first, \
         dev-dependencies included):\n{circles:#?}"
    );
}

#[test]
fn no_file_imports_from_a_file_that_imports_from_it() {
    let mut circles_by_crate = BTreeMap::new();
    let mut files = 0;
    for (name, dir, _) in members() {
        let src = dir.join("src");
        let graph = import_graph(&src);
        files += graph.len();
        let circles: Vec<Vec<String>> = circles(&graph)
            .iter()
            .map(|circle| {
                circle
                    .iter()
                    .map(|file| file.strip_prefix(&src).unwrap().display().to_string())
                    .collect()
            })
            .collect();
        if !circles.is_empty() {
            circles_by_crate.insert(name, circles);
        }
    }
    assert!(files > 150, "only {files} files read");
    assert!(
        circles_by_crate.is_empty(),
        "import circles (each file imports the next, the last the first):\n{circles_by_crate:#?}"
    );
}

/// The check sees a circle where there is one: two files naming each other,
/// one through `super::`, one through an inline module's path.
#[test]
fn a_circle_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir(src.join("room")).unwrap();
    std::fs::write(src.join("lib.rs"), "mod room;\nmod kit;\n").unwrap();
    std::fs::write(
        src.join("room/mod.rs"),
        "mod door;\nuse door::Door;\npub fn open(_: Door) {}\n",
    )
    .unwrap();
    std::fs::write(
        src.join("room/door.rs"),
        "pub struct Door;\nfn f() { crate::kit::key(); }\n",
    )
    .unwrap();
    std::fs::write(
        src.join("kit.rs"),
        "pub fn key() {}\nmod inner { fn g() -> super::super::room::Door { todo!() } }\n",
    )
    .unwrap();
    let graph = import_graph(src);
    let circles = circles(&graph);
    let names: BTreeSet<String> = circles
        .iter()
        .flatten()
        .map(|p| p.strip_prefix(src).unwrap().display().to_string())
        .collect();
    assert_eq!(
        names,
        ["kit.rs", "room/door.rs", "room/mod.rs"]
            .map(String::from)
            .into(),
        "{circles:?}"
    );
}
