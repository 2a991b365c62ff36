//! No file of the collector imports from a file that imports from it: the
//! collector is layered (router above handlers above the kit; the syslog
//! listener's serving above its pure framing and envelope parsing), and a
//! circle between two files is the first sign of a layer mixed up.
//!
//! A file's imports are the paths in its items (its `use` lines and the
//! paths in its code) that lead into the crate: from `crate::`, `super::`,
//! `self::` or a child module; each resolved to the file that defines the
//! longest module prefix of the path. Module
//! declarations (`mod x;`) are not imports.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

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
    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        self.add_tree(&mut Vec::new(), &item.tree);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        self.add(&segments);
        syn::visit::visit_path(self, path);
    }

    /// `pub(crate)` and `pub(super)` say who may import, not what is imported.
    fn visit_visibility(&mut self, _: &'ast syn::Visibility) {}

    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        // `mod x;` declares a file; only an inline module's items are read.
        if let Some((_, items)) = &item.content {
            self.here.push(item.ident.to_string());
            for item in items {
                self.visit_item(item);
            }
            self.here.pop();
        }
    }
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

/// Every pair of files that import from each other, directly or through
/// others: one circle per file that is on one.
fn circles(graph: &BTreeMap<PathBuf, BTreeSet<PathBuf>>) -> Vec<Vec<PathBuf>> {
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

#[test]
fn no_file_imports_from_a_file_that_imports_from_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = import_graph(&src);
    assert!(graph.len() > 20, "only {} files read", graph.len());
    let circles: Vec<Vec<String>> = circles(&graph)
        .iter()
        .map(|circle| {
            circle
                .iter()
                .map(|file| file.strip_prefix(&src).unwrap().display().to_string())
                .collect()
        })
        .collect();
    assert!(
        circles.is_empty(),
        "import circles (each file imports the next, the last the first):\n{circles:#?}"
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
    std::fs::write(src.join("room/mod.rs"), "mod door;\npub use door::Door;\n").unwrap();
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
