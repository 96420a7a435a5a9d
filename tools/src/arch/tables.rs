//! Rule 5, statically: a module's SQL touches only tables its own migrations create, and a
//! module embeds only its own migrations.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use anyhow::Context as _;

use super::sql::{self, TableRef};
use super::{Rule, Violation, Workspace, relative};

/// Checks every module of `ws` against its own `migrations/<m>/` directory.
pub(crate) fn check(ws: &Workspace) -> anyhow::Result<Vec<Violation>> {
    let migrations_root = ws.root.join("migrations");
    let kernel_tables: BTreeSet<String> = sql_files(&ws.root.join("shared-kernel/migrations"))?
        .iter()
        .map(|f| Ok(sql_facts(f)?.creates))
        .collect::<anyhow::Result<Vec<_>>>()?
        .into_iter()
        .flatten()
        .map(|r| r.name)
        .collect();

    // Everything each module's migrations say, gathered first so that a message can name the
    // module that does own a table.
    let mut owners: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut per_module = Vec::new();
    for (module, dir) in ws.module_dirs() {
        let mut uses = Vec::new();
        let mut owned = BTreeSet::new();
        for file in sql_files(&migrations_root.join(module))? {
            let facts = sql_facts(&file)?;
            owned.extend(facts.creates.into_iter().map(|r| r.name));
            uses.extend(facts.refs.into_iter().map(|r| (file.clone(), r)));
        }
        for table in &owned {
            owners
                .entry(table.clone())
                .or_default()
                .insert(module.to_owned());
        }
        let mut migrate_paths = Vec::new();
        for file in source_files(&dir.join("src"))? {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            if file.extension().is_some_and(|e| e == "sql") {
                let facts = sql::analyze(&sql::with_lines(&text, 1));
                uses.extend(facts.refs.into_iter().map(|r| (file.clone(), r)));
                continue;
            }
            for literal in string_literals(&text) {
                if literal.migrate_path {
                    migrate_paths.push((file.clone(), literal.line, literal.value()));
                } else if sql::looks_like_sql(&literal.chars) {
                    let facts = sql::analyze(&literal.chars);
                    uses.extend(facts.refs.into_iter().map(|r| (file.clone(), r)));
                }
            }
            // `migrate!()` without a path embeds `modules/<m>/migrations`, not the module's own.
            for line in empty_migrate_calls(&text) {
                migrate_paths.push((file.clone(), line, "migrations".to_owned()));
            }
        }
        per_module.push((module, dir, owned, uses, migrate_paths));
    }

    let mut violations = Vec::new();
    for (module, dir, owned, uses, migrate_paths) in per_module {
        let mut seen = BTreeSet::new();
        for (file, r) in uses {
            let at = format!("{}:{}", relative(&ws.root, &file), r.line);
            let Some(why) = ownership_problem(module, &owned, &r, &owners, &kernel_tables) else {
                continue;
            };
            let table = match &r.schema {
                Some(schema) => format!("{schema}.{}", r.name),
                None => r.name.clone(),
            };
            if seen.insert((at.clone(), table.clone())) {
                violations.push(Violation {
                    rule: Rule::SqlTableOwnership,
                    message: format!("module `{module}` uses table `{table}` at {at}, but {why}"),
                });
            }
        }
        let own_dir = migrations_root.join(module);
        for (file, line, path) in migrate_paths {
            let target = normalize(&dir.join(&path));
            if !target.starts_with(&own_dir) {
                violations.push(Violation {
                    rule: Rule::OwnMigrations,
                    message: format!(
                        "module `{module}` embeds migrations from `{path}` (that is {}) at {}:{line}, \
                         not from migrations/{module}/",
                        relative(&ws.root, &target),
                        relative(&ws.root, &file),
                    ),
                });
            }
        }
    }
    Ok(violations)
}

/// Why `module` may not use table `r`, or `None` when it may.
fn ownership_problem(
    module: &str,
    owned: &BTreeSet<String>,
    r: &TableRef,
    owners: &BTreeMap<String, BTreeSet<String>>,
    kernel_tables: &BTreeSet<String>,
) -> Option<String> {
    match r.schema.as_deref() {
        // System catalogs are nobody's data.
        Some("pg_catalog" | "information_schema") => return None,
        // A module's own schemas: `<m>` and the ones it derives (`orders_read` for its read
        // store); `main`/`temp` are SQLite's names for the module's own file.
        Some(s) if s == module || s.starts_with(&format!("{module}_")) => {}
        Some("main" | "temp" | "pg_temp") => {}
        Some(schema) => {
            return Some(format!(
                "schema `{schema}` is not its own schema `{module}`"
            ));
        }
        None if r.name.starts_with("pg_") || r.name.starts_with("sqlite_") => return None,
        None => {}
    }
    if owned.contains(&r.name) {
        None
    } else if kernel_tables.contains(&r.name) {
        Some(
            "it is a shared-kernel table (shared-kernel/migrations), reached only through the \
             kernel's API"
                .to_owned(),
        )
    } else if let Some(others) = owners.get(&r.name) {
        let others: Vec<_> = others.iter().map(|m| format!("`{m}`")).collect();
        Some(format!(
            "migrations/{module}/ does not create it (the migrations of {} do)",
            others.join(", ")
        ))
    } else {
        Some(format!("no migration in migrations/{module}/ creates it"))
    }
}

fn sql_facts(file: &Path) -> anyhow::Result<sql::SqlFacts> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let mut facts = sql::analyze(&sql::with_lines(&text, 1));
    // Ownership is by name: migrations run inside the module's own schema or file.
    for r in &mut facts.creates {
        r.schema = None;
    }
    Ok(facts)
}

fn sql_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    files_with(dir, &["sql"])
}

fn source_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    files_with(dir, &["rs", "sql"])
}

/// Files under `dir` (recursively, sorted) with one of `extensions`; none if `dir` is missing.
fn files_with(dir: &Path, extensions: &[&str]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if !dir.is_dir() {
        return Ok(out);
    }
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?
        {
            let path = entry
                .with_context(|| format!("listing {}", dir.display()))?
                .path();
            if path.is_dir() {
                pending.push(path);
            } else if path
                .extension()
                .is_some_and(|e| extensions.iter().any(|x| e == *x))
            {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Lexically resolves `.` and `..`, as `sqlx::migrate!` does with its relative path.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// A string literal of Rust source: its decoded chars, each with the source line it came from
/// (so that `\`-continued and multi-line SQL reports the right line).
#[derive(Debug)]
pub(crate) struct Literal {
    pub line: usize,
    pub chars: Vec<(char, usize)>,
    /// The literal is the argument of `migrate!(…)`.
    pub migrate_path: bool,
}

impl Literal {
    pub fn value(&self) -> String {
        self.chars.iter().map(|&(c, _)| c).collect()
    }
}

/// The string literals of a Rust file — normal, byte, C and raw strings — skipping comments,
/// char literals and lifetimes. Escapes are decoded as far as SQL cares.
pub(crate) fn string_literals(src: &str) -> Vec<Literal> {
    let s: Vec<char> = src.chars().collect();
    let c = |i: usize| s.get(i).copied();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    while let Some(ch) = c(i) {
        match ch {
            '\n' => {
                line += 1;
                i += 1;
            }
            '/' if c(i + 1) == Some('/') => {
                while c(i).is_some_and(|ch| ch != '\n') {
                    i += 1;
                }
            }
            '/' if c(i + 1) == Some('*') => {
                let mut depth = 0;
                while let Some(ch) = c(i) {
                    match (ch, c(i + 1)) {
                        ('/', Some('*')) => (depth, i) = (depth + 1, i + 2),
                        ('*', Some('/')) => (depth, i) = (depth - 1, i + 2),
                        ('\n', _) => (line, i) = (line + 1, i + 1),
                        _ => i += 1,
                    }
                    if depth == 0 {
                        break;
                    }
                }
            }
            // A char literal ('x', '\'', '"') or a lifetime/label ('a).
            '\'' => {
                if c(i + 1) == Some('\\') {
                    i += 2;
                    while c(i).is_some_and(|ch| ch != '\'') {
                        i += 1;
                    }
                    i += 1;
                } else if c(i + 2) == Some('\'') {
                    i += 3;
                } else {
                    i += 1;
                }
            }
            '"' => {
                let start = i;
                let lit_line = line;
                let chars = cooked_string(&s, &mut i, &mut line);
                out.push(Literal {
                    line: lit_line,
                    chars,
                    migrate_path: follows_migrate(&s, start),
                });
            }
            _ if ch.is_alphanumeric() || ch == '_' => {
                let start = i;
                while c(i).is_some_and(|ch| ch.is_alphanumeric() || ch == '_') {
                    i += 1;
                }
                let word: String = s[start..i].iter().collect();
                let hashes = (i..).take_while(|&j| c(j) == Some('#')).count();
                if matches!(word.as_str(), "r" | "br" | "cr") && c(i + hashes) == Some('"') {
                    let lit_line = line;
                    i += hashes + 1;
                    let mut chars = Vec::new();
                    while let Some(ch) = c(i) {
                        if ch == '"' && (1..=hashes).all(|k| c(i + k) == Some('#')) {
                            i += hashes + 1;
                            break;
                        }
                        chars.push((ch, line));
                        if ch == '\n' {
                            line += 1;
                        }
                        i += 1;
                    }
                    out.push(Literal {
                        line: lit_line,
                        chars,
                        migrate_path: follows_migrate(&s, start),
                    });
                } else if matches!(word.as_str(), "b" | "c") && c(i) == Some('"') {
                    let lit_line = line;
                    let chars = cooked_string(&s, &mut i, &mut line);
                    out.push(Literal {
                        line: lit_line,
                        chars,
                        migrate_path: follows_migrate(&s, start),
                    });
                }
            }
            _ => i += 1,
        }
    }
    out
}

/// Decodes a `"…"` string starting at `s[*i]`, leaving `*i` after its closing quote.
fn cooked_string(s: &[char], i: &mut usize, line: &mut usize) -> Vec<(char, usize)> {
    let c = |i: usize| s.get(i).copied();
    let mut chars = Vec::new();
    *i += 1;
    while let Some(ch) = c(*i) {
        *i += 1;
        match ch {
            '"' => break,
            '\\' => {
                let Some(esc) = c(*i) else { break };
                *i += 1;
                let decoded = match esc {
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    '0' => '\0',
                    // A line continuation: the newline and the next line's indentation vanish.
                    '\n' => {
                        *line += 1;
                        while c(*i).is_some_and(char::is_whitespace) {
                            if c(*i) == Some('\n') {
                                *line += 1;
                            }
                            *i += 1;
                        }
                        continue;
                    }
                    // \x41 and \u{…} never matter to SQL structure; keep a placeholder char.
                    'x' => {
                        *i += 2;
                        '?'
                    }
                    'u' => {
                        while c(*i).is_some_and(|ch| ch != '}') {
                            *i += 1;
                        }
                        *i += 1;
                        '?'
                    }
                    other => other,
                };
                chars.push((decoded, *line));
            }
            '\n' => {
                chars.push(('\n', *line));
                *line += 1;
            }
            other => chars.push((other, *line)),
        }
    }
    chars
}

/// Whether the literal starting at `start` is the first argument of `migrate!(`.
fn follows_migrate(s: &[char], start: usize) -> bool {
    let end = s[..start]
        .iter()
        .rposition(|c| !c.is_whitespace())
        .map_or(0, |p| p + 1);
    let before: String = s[end.saturating_sub(9)..end].iter().collect();
    before == "migrate!("
}

/// Lines of `migrate!()` calls without a path argument.
fn empty_migrate_calls(text: &str) -> Vec<usize> {
    text.match_indices("migrate!")
        .filter(|&(at, m)| {
            let rest = text[at + m.len()..].trim_start();
            rest.strip_prefix('(')
                .is_some_and(|r| r.trim_start().starts_with(')'))
        })
        .map(|(at, _)| text[..at].matches('\n').count() + 1)
        .collect()
}
