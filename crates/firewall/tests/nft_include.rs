//! `include` as nft reads it: a file, a glob (sorted, empty is fine), nested
//! includes, the include path, and the errors (a missing file names the
//! including line; a cycle and too deep a nesting are refused). Files only,
//! no root: the kernel's view of the same files is `include_differential.rs`.

use std::path::{Path, PathBuf};

use connscope_firewall::nft::{self, Ruleset};

struct Tree(tempfile::TempDir);

impl Tree {
    fn new() -> Tree {
        Tree(tempfile::tempdir().unwrap())
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
}

const TABLE: &str = "table inet f {\n  chain input {\n    type filter hook input priority 0; policy drop;\n  }\n}\n";

/// The rules of `inet f input`, as written.
fn input_rules(ruleset: &Ruleset) -> Vec<String> {
    ruleset.tables[0]
        .chains
        .iter()
        .find(|c| c.name == "input")
        .expect("chain input")
        .rules
        .iter()
        .map(|r| r.text.clone())
        .collect()
}

fn read(path: &Path) -> Ruleset {
    nft::parse_file(path).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn an_included_file_is_read_where_it_is_named() {
    let tree = Tree::new();
    tree.write("table.nft", TABLE);
    let main = tree.write(
        "main.nft",
        "include \"table.nft\"\nadd rule inet f input tcp dport 22 accept\n",
    );
    let ruleset = read(&main);
    assert_eq!(input_rules(&ruleset), ["tcp dport 22 accept"]);
    // A rule keeps the file it was written in.
    let rule = &ruleset.tables[0].chains[0].rules[0];
    assert!(
        rule.location
            .to_string()
            .starts_with(&main.display().to_string()),
        "{}",
        rule.location
    );

    // `;` ends an include as a newline does, and a file without a final
    // newline ends its last statement.
    tree.write("rule.nft", "add rule inet f input tcp dport 80 accept");
    let main = tree.write(
        "semi.nft",
        "include \"table.nft\"; include \"rule.nft\"; add rule inet f input tcp dport 443 accept\n",
    );
    assert_eq!(
        input_rules(&read(&main)),
        ["tcp dport 80 accept", "tcp dport 443 accept"]
    );
}

#[test]
fn an_include_may_stand_in_a_table_or_a_chain() {
    let tree = Tree::new();
    tree.write("chain.nft", "chain extra {\n  tcp dport 3 accept\n}\n");
    tree.write("rules.nft", "tcp dport 1 accept\n");
    let main = tree.write(
        "main.nft",
        "table inet f {\n  include \"chain.nft\"\n  chain input {\n    type filter hook input priority 0; policy drop;\n    include \"rules.nft\"\n    tcp dport 2 accept\n  }\n}\n",
    );
    let ruleset = read(&main);
    assert_eq!(
        input_rules(&ruleset),
        ["tcp dport 1 accept", "tcp dport 2 accept"]
    );
    let names: Vec<&str> = ruleset.tables[0]
        .chains
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["extra", "input"]);
}

#[test]
fn a_glob_includes_its_matches_in_sorted_order_and_may_match_nothing() {
    let tree = Tree::new();
    tree.write(
        "conf.d/20-web.nft",
        "add rule inet f input tcp dport 80 accept\n",
    );
    tree.write(
        "conf.d/10-ssh.nft",
        "add rule inet f input tcp dport 22 accept\n",
    );
    tree.write(
        "conf.d/.hidden.nft",
        "add rule inet f input tcp dport 1 accept\n",
    );
    tree.write("conf.d/notes.txt", "not nft at all\n");
    std::fs::create_dir(tree.path("conf.d/sub.nft")).unwrap();
    std::fs::create_dir(tree.path("empty.d")).unwrap();
    let main = tree.write(
        "main.nft",
        &format!("{TABLE}include \"conf.d/*.nft\"\ninclude \"empty.d/*.nft\"\ninclude \"absent.d/*.nft\"\n"),
    );
    assert_eq!(
        input_rules(&read(&main)),
        ["tcp dport 22 accept", "tcp dport 80 accept"]
    );
}

#[test]
fn includes_nest_and_resolve_next_to_the_including_file() {
    let tree = Tree::new();
    tree.write(
        "rules/inner/last.nft",
        "add rule inet f input tcp dport 3 accept\n",
    );
    tree.write(
        "rules/middle.nft",
        "add rule inet f input tcp dport 2 accept\ninclude \"inner/last.nft\"\nadd rule inet f input tcp dport 4 accept\n",
    );
    let main = tree.write(
        "main.nft",
        &format!("{TABLE}add rule inet f input tcp dport 1 accept\ninclude \"rules/middle.nft\"\nadd rule inet f input tcp dport 5 accept\n"),
    );
    let ports: Vec<String> = input_rules(&read(&main));
    assert_eq!(
        ports,
        (1..=5)
            .map(|p| format!("tcp dport {p} accept"))
            .collect::<Vec<_>>()
    );

    // An absolute path is taken as it is.
    let abs = tree.write(
        "abs.nft",
        &format!("include \"{}\"\n", tree.path("main.nft").display()),
    );
    assert_eq!(input_rules(&read(&abs)).len(), 5);
}

#[test]
fn the_include_path_is_searched_after_the_including_files_directory() {
    let tree = Tree::new();
    tree.write("lib/table.nft", TABLE);
    tree.write("lib/rule.nft", "add rule inet f input tcp dport 9 accept\n");
    tree.write("etc/rule.nft", "add rule inet f input tcp dport 7 accept\n");
    let main = tree.write(
        "etc/main.nft",
        "include \"table.nft\"\ninclude \"rule.nft\"\n",
    );

    let err = nft::parse_file(&main).unwrap_err();
    assert!(err.message.contains("table.nft"), "{err}");

    let ruleset = nft::parse_file_with_include_path(&main, &[tree.path("lib")])
        .unwrap_or_else(|e| panic!("{e}"));
    // `rule.nft` next to main.nft wins over the one in the include path.
    assert_eq!(input_rules(&ruleset), ["tcp dport 7 accept"]);

    let read = nft::read_ruleset_file_with_include_path(&main, &[tree.path("lib")]).unwrap();
    assert_eq!(input_rules(&read), ["tcp dport 7 accept"]);
}

#[test]
fn a_missing_file_is_an_error_at_the_including_line() {
    let tree = Tree::new();
    tree.write("table.nft", TABLE);
    let inner = tree.write("inner.nft", "# rules\n\ninclude \"absent.nft\"\n");
    let main = tree.write("main.nft", "include \"table.nft\"\ninclude \"inner.nft\"\n");
    let err = nft::parse_file(&main).unwrap_err();
    assert_eq!(err.file, inner.display().to_string(), "{err}");
    assert_eq!(err.line, 3, "{err}");
    assert!(
        err.message.contains("cannot include \"absent.nft\""),
        "{err}"
    );

    let err = nft::read_ruleset_file(&main).unwrap_err();
    assert_eq!(err.line, Some(3), "{err:?}");
    assert!(
        err.error.starts_with(&format!("{}:3:", inner.display())),
        "{err:?}"
    );
}

#[test]
fn an_include_cycle_is_refused_and_named() {
    let tree = Tree::new();
    tree.write("a.nft", &format!("{TABLE}include \"b.nft\"\n"));
    tree.write("b.nft", "include \"a.nft\"\n");
    let err = nft::parse_file(&tree.path("a.nft")).unwrap_err();
    assert!(err.message.contains("include cycle"), "{err}");
    assert!(
        err.message.contains("a.nft") && err.message.contains("b.nft"),
        "{err}"
    );
    assert_eq!(err.file, tree.path("b.nft").display().to_string(), "{err}");

    // A file including itself through a glob is a cycle too.
    let main = tree.write("self.d/all.nft", "include \"*.nft\"\n");
    let err = nft::parse_file(&main).unwrap_err();
    assert!(err.message.contains("include cycle"), "{err}");

    // The same file twice side by side is no cycle.
    tree.write("rule.nft", "add rule inet f input tcp dport 22 accept\n");
    let twice = tree.write(
        "twice.nft",
        &format!("{TABLE}include \"rule.nft\"\ninclude \"rule.nft\"\n"),
    );
    assert_eq!(input_rules(&read(&twice)).len(), 2);
}

#[test]
fn include_depth_is_bounded_as_in_nft() {
    let tree = Tree::new();
    // 15 levels below the top file load; 16 do not (as `nft -f` 1.0.6).
    let chain = |levels: usize, tag: &str| {
        tree.write(&format!("{tag}{levels}.nft"), TABLE);
        for i in (0..levels).rev() {
            tree.write(
                &format!("{tag}{i}.nft"),
                &format!("include \"{tag}{}.nft\"\n", i + 1),
            );
        }
        tree.path(&format!("{tag}0.nft"))
    };
    assert_eq!(read(&chain(15, "ok")).tables.len(), 1);
    let err = nft::parse_file(&chain(16, "deep")).unwrap_err();
    assert!(err.message.contains("nested too deeply"), "{err}");
}

#[test]
fn text_without_a_file_still_refuses_include() {
    let err = nft::parse_str("request", "include \"/etc/nftables.conf\"\n").unwrap_err();
    assert!(err.message.contains("only supported"), "{err}");
    let err = nft::read_ruleset("request", "include \"/etc/passwd\"\n").unwrap_err();
    assert_eq!(err.line, Some(1), "{err:?}");
}
