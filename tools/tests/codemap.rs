//! `docs/ARCHITECTURE.md` is the map a newcomer reads first. This test keeps it honest: every
//! repository path it names exists, and every Rust module its codemap bullets start with is a
//! file or directory of the crate the bullet is under. A rename that forgets the map fails here.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tools lives in the workspace")
        .to_owned()
}

/// The module crates, as directories under `modules/`.
fn modules(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root.join("modules"))
        .expect("modules/")
        .map(|entry| entry.expect("a directory entry").file_name())
        .map(|name| name.to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `a/{x,y}/b` → `a/x/b`, `a/y/b`; `<m>` → every module.
fn expand(path: &str, modules: &[String]) -> Vec<String> {
    if path.contains("<m>") {
        return modules
            .iter()
            .flat_map(|m| expand(&path.replace("<m>", m), modules))
            .collect();
    }
    if let (Some(open), Some(close)) = (path.find('{'), path.find('}')) {
        let (head, tail) = (&path[..open], &path[close + 1..]);
        return path[open + 1..close]
            .split(',')
            .flat_map(|choice| expand(&format!("{head}{choice}{tail}"), modules))
            .collect();
    }
    vec![path.to_owned()]
}

/// The code spans of a line: the text between backticks.
fn code_spans(line: &str) -> impl Iterator<Item = &str> {
    line.split('`').skip(1).step_by(2)
}

/// Whether `module` (`a::b`) is a file or directory under `src`.
fn module_exists(src: &Path, module: &str) -> bool {
    let relative: PathBuf = module.split("::").collect();
    src.join(&relative).with_extension("rs").is_file() || src.join(&relative).is_dir()
}

/// The leading module path of a code span that starts with a module (`storage::ModuleDb` →
/// `storage`, `outbox::append` → `outbox::append`'s module `outbox`); `None` for a type, a
/// macro or anything that is not a path.
fn leading_module(span: &str) -> Option<String> {
    if span.ends_with('!')
        || !span
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        return None;
    }
    let segments: Vec<&str> = span.split("::").collect();
    let lowercase = |s: &&str| s.chars().next().is_some_and(|c| c.is_ascii_lowercase());
    let mut modules: Vec<&str> = segments.iter().copied().take_while(lowercase).collect();
    // `outbox::append`: the last lowercase segment after a module is a function.
    if modules.len() > 1 && modules.len() == segments.len() {
        modules.pop();
    }
    (!modules.is_empty()).then(|| modules.join("::"))
}

#[test]
fn every_path_the_architecture_doc_names_exists() {
    let root = root();
    let modules = modules(&root);
    let doc = std::fs::read_to_string(root.join("docs/ARCHITECTURE.md")).expect("the doc");
    let tops = [
        "app/",
        "shared-kernel/",
        "tools/",
        "modules/",
        "migrations/",
        "docs/",
        "benches/",
    ];
    let mut missing = Vec::new();
    let mut checked = 0;
    for span in doc.lines().flat_map(code_spans) {
        if !tops.iter().any(|top| span.starts_with(top)) || span.contains(' ') {
            continue;
        }
        for path in expand(span, &modules) {
            checked += 1;
            if !root.join(&path).exists() {
                missing.push(path);
            }
        }
    }
    assert!(checked >= 10, "the doc names only {checked} paths");
    assert!(missing.is_empty(), "docs/ARCHITECTURE.md names {missing:?}");
}

#[test]
fn every_module_the_codemap_lists_is_in_its_crate() {
    let root = root();
    let modules = modules(&root);
    let doc = std::fs::read_to_string(root.join("docs/ARCHITECTURE.md")).expect("the doc");
    let codemap = doc
        .split("\n## Codemap")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("a Codemap section");

    // The crates (their `src`) the current heading is about, and the module a bullet opened
    // for its nested bullets.
    let mut crates: Vec<PathBuf> = Vec::new();
    let mut parent: Option<String> = None;
    let mut module_crates = false;
    let mut missing = Vec::new();
    let mut checked = 0;
    for line in logical_lines(codemap) {
        let line = line.as_str();
        if let Some(heading) = line.strip_prefix("### ") {
            let name = code_spans(heading).next().unwrap_or_default();
            module_crates = name == "modules/<m>";
            crates = match name {
                // Bullets of the module crates name the crate first: handled below.
                "modules/<m>" => Vec::new(),
                name if name.starts_with("modules/") || !name.contains('/') => {
                    expand(name, &modules)
                        .into_iter()
                        .map(|krate| root.join(krate).join("src"))
                        .filter(|src| src.is_dir())
                        .collect()
                }
                _ => Vec::new(),
            };
            parent = None;
            continue;
        }
        let (nested, bullet) = match (line.strip_prefix("  - `"), line.strip_prefix("- `")) {
            (Some(rest), _) => (true, rest),
            (None, Some(rest)) => (false, rest),
            _ => continue,
        };
        let first = bullet.split('`').next().unwrap_or_default();
        if module_crates && modules.iter().any(|m| m == first) {
            // `- \`orders\` — \`service\` (…), \`saga\` (…)`: each named file of that crate.
            let src = root.join("modules").join(first).join("src");
            for span in code_spans(&format!("`{bullet}")).skip(1) {
                let named = bullet.contains(&format!("`{span}` ("));
                if named && let Some(module) = leading_module(span) {
                    checked += 1;
                    if !module_exists(&src, &module) {
                        missing.push(format!("modules/{first}/src: {module}"));
                    }
                }
            }
            continue;
        }
        let Some(module) = leading_module(first) else {
            continue;
        };
        let module = match (&parent, nested) {
            (Some(parent), true) => format!("{parent}::{module}"),
            _ => module,
        };
        if !nested {
            parent = Some(module.clone());
        }
        for src in &crates {
            checked += 1;
            if !module_exists(src, &module) {
                missing.push(format!("{}: {module}", src.display()));
            }
        }
    }
    assert!(checked >= 20, "the codemap lists only {checked} modules");
    assert!(missing.is_empty(), "the codemap lists {missing:?}");
}

/// The lines of `text` with each bullet's continuation lines joined to it.
fn logical_lines(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for line in text.lines() {
        let continues = line.starts_with("  ") && !line.trim_start().starts_with("- ");
        match lines.last_mut() {
            Some(last) if continues && last.trim_start().starts_with("- ") => {
                last.push(' ');
                last.push_str(line.trim_start());
            }
            _ => lines.push(line.to_owned()),
        }
    }
    lines
}
