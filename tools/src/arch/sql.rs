//! A small SQL scanner that finds the tables a piece of SQL touches.
//!
//! It is not a parser: it tokenizes (skipping comments, string literals and placeholders) and
//! looks at the few places where a table name can stand — after `FROM`, `JOIN`, `INTO`,
//! `UPDATE`, `TABLE`, `REFERENCES`, `USING`, `CREATE INDEX … ON`. That is enough for the
//! hand-written SQL of this project and errs on the side of reporting a name, because a false
//! alarm is visible in review while a missed cross-module table is not.

use std::collections::BTreeSet;

/// A table named by some SQL, with the source line where the name stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableRef {
    /// The schema, when the name is qualified (`inventory.products`), lowercased.
    pub schema: Option<String>,
    /// The table name, lowercased (quoted identifiers too: the project never relies on case).
    pub name: String,
    pub line: usize,
}

/// What a piece of SQL says about tables.
#[derive(Debug, Default)]
pub(crate) struct SqlFacts {
    /// Every table referenced, including the ones being created.
    pub refs: Vec<TableRef>,
    /// Tables and views created (`CREATE TABLE`, `CREATE VIEW`, `ALTER TABLE … RENAME TO`).
    pub creates: Vec<TableRef>,
}

/// Whether a Rust string literal holds SQL rather than prose: some statement in it starts with a
/// statement keyword, written all upper- or all lowercase (prose starts sentences with
/// `Select …`), and followed by what that statement needs (`INSERT INTO`, `DELETE FROM`,
/// `CREATE TABLE`, `UPDATE t … SET`), so that "delete failed" or "update the order" are prose.
pub(crate) fn looks_like_sql(chars: &[(char, usize)]) -> bool {
    let tokens = tokenize(chars);
    statements(&tokens).any(|stmt| {
        let Some(first) = stmt.iter().position(|t| !t.is_punct('(')) else {
            return false;
        };
        let Some(Tok::Word {
            text,
            quoted: false,
        }) = stmt.get(first).map(|t| &t.tok)
        else {
            return false;
        };
        let uniform_case = *text == text.to_uppercase() || *text == text.to_lowercase();
        let next = stmt.get(first + 1);
        let next_is = |options: &[&str]| next.is_some_and(|t| options.iter().any(|o| t.is_kw(o)));
        uniform_case
            && match text.to_uppercase().as_str() {
                "SELECT" => true,
                "TRUNCATE" => {
                    next_is(&["TABLE"])
                        || stmt[first + 1..]
                            .iter()
                            .all(|t| t.name().is_some() || t.is_punct(',') || t.is_punct('.'))
                }
                "INSERT" => next_is(&["INTO", "OR"]),
                "REPLACE" => next_is(&["INTO"]),
                "DELETE" => next_is(&["FROM"]),
                "UPDATE" => stmt.iter().any(|t| t.is_kw("SET")),
                "WITH" => !cte_names(stmt).is_empty(),
                "CREATE" | "ALTER" | "DROP" => next_is(&[
                    "TABLE",
                    "INDEX",
                    "UNIQUE",
                    "VIEW",
                    "OR",
                    "TEMP",
                    "TEMPORARY",
                    "UNLOGGED",
                    "MATERIALIZED",
                    "TRIGGER",
                    "SCHEMA",
                    "SEQUENCE",
                    "TYPE",
                    "FUNCTION",
                    "VIRTUAL",
                ]),
                _ => false,
            }
    })
}

/// Convenience for tests and `.sql` files: every char of `text` with its line, from `first_line`.
pub(crate) fn with_lines(text: &str, first_line: usize) -> Vec<(char, usize)> {
    let mut line = first_line;
    text.chars()
        .map(|c| {
            let at = (c, line);
            if c == '\n' {
                line += 1;
            }
            at
        })
        .collect()
}

/// Finds the tables that `chars` (SQL, each char with its source line) creates and references.
pub(crate) fn analyze(chars: &[(char, usize)]) -> SqlFacts {
    let tokens = tokenize(chars);
    let t = &tokens;
    let ctes = cte_names(t);
    let mut facts = SqlFacts::default();
    let refer = |facts: &mut SqlFacts, r: Option<TableRef>, creates: bool| {
        let Some(r) = r else { return };
        if r.schema.is_none() && ctes.contains(&r.name) {
            return;
        }
        if creates {
            facts.creates.push(r.clone());
        }
        facts.refs.push(r);
    };
    let mut levels = vec![Level::default()];
    let mut statement_kw = String::new();
    for i in 0..t.len() {
        if i == 0 || t[i - 1].is_punct(';') {
            statement_kw = t[i].keyword().unwrap_or_default();
        }
        let creating = statement_kw == "CREATE";
        match &t[i].tok {
            Tok::Punct('(') => levels.push(Level::default()),
            Tok::Punct(')') if levels.len() > 1 => {
                levels.pop();
            }
            Tok::Punct(';') => levels = vec![Level::default()],
            // `FROM a x, b y` and `FROM a JOIN b ON …, c`: each comma starts another item.
            Tok::Punct(',') if levels.last().is_some_and(|l| l.in_from) => {
                refer(&mut facts, from_item(t, i + 1), false);
            }
            _ => {}
        }
        let Some(kw) = t[i].keyword() else { continue };
        let Some(level) = levels.last_mut() else {
            continue;
        };
        let prev_is = |k: &str| i > 0 && t[i - 1].is_kw(k);
        match kw.as_str() {
            "SELECT" => {
                *level = Level {
                    query: true,
                    in_from: false,
                }
            }
            "UPDATE" | "DELETE" | "MERGE" => level.query = true,
            kw if FROM_CLAUSE_ENDS.contains(&kw) => level.in_from = false,
            _ => {}
        }
        match kw.as_str() {
            "FROM" if level.query && !prev_is("DISTINCT") => {
                level.in_from = true;
                refer(&mut facts, from_item(t, i + 1), false);
            }
            "JOIN" => refer(&mut facts, from_item(t, i + 1), false),
            // `DELETE … USING other` and `MERGE … USING src`, but not `JOIN … USING (col)`,
            // `CREATE INDEX … USING gin` or `ALTER … TYPE uuid USING c::uuid`.
            "USING" if level.query && !t.get(i + 1).is_some_and(|n| n.is_punct('(')) => {
                level.in_from = true;
                refer(&mut facts, from_item(t, i + 1), false);
            }
            "INTO" | "REFERENCES" => refer(&mut facts, qualified_name(t, i + 1), false),
            // `DO UPDATE SET`, `FOR UPDATE`, `ON UPDATE CASCADE` are followed by a keyword,
            // which `qualified_name` refuses.
            "UPDATE" => {
                let mut j = i + 1;
                if t.get(j).is_some_and(|n| n.is_kw("OR")) {
                    j += 2; // SQLite: UPDATE OR IGNORE t
                }
                refer(
                    &mut facts,
                    qualified_name(t, skip_kws(t, j, &["ONLY"])),
                    false,
                );
            }
            "TRUNCATE" if t.get(i + 1).is_some_and(|n| n.is_kw("TABLE")) => {}
            // CREATE/ALTER/DROP TABLE, TRUNCATE [TABLE], LOCK TABLE; `RETURNS TABLE (` has none.
            "TABLE" | "TRUNCATE" | "VIEW" => {
                let mut j = skip_kws(t, i + 1, &["IF", "NOT", "EXISTS", "ONLY"]);
                while let Some(r) = qualified_name(t, j) {
                    let next = j + if r.schema.is_some() { 3 } else { 1 };
                    refer(&mut facts, Some(r), creating && kw != "TRUNCATE");
                    match t.get(next) {
                        Some(n) if n.is_punct(',') && !creating => j = next + 1,
                        _ => break,
                    }
                }
            }
            "INDEX" | "TRIGGER" if creating => {
                let on = (i + 1..t.len())
                    .take_while(|&j| !t[j].is_punct(';') && !t[j].is_punct('('))
                    .find(|&j| t[j].is_kw("ON"));
                if let Some(on) = on {
                    refer(
                        &mut facts,
                        qualified_name(t, skip_kws(t, on + 1, &["ONLY"])),
                        false,
                    );
                }
            }
            "RENAME" if statement_kw == "ALTER" && t.get(i + 1).is_some_and(|n| n.is_kw("TO")) => {
                refer(&mut facts, qualified_name(t, i + 2), true);
            }
            _ => {}
        }
    }
    facts
}

/// What the scanner knows about one parenthesis depth.
#[derive(Debug, Default, Clone, Copy)]
struct Level {
    /// A SELECT/UPDATE/DELETE started at this depth: only then is a `FROM` a table list, and
    /// not `EXTRACT(EPOCH FROM ts)` or `TRIM(x FROM y)`.
    query: bool,
    /// Inside that query's FROM (or DELETE's USING) clause, where commas separate tables.
    in_from: bool,
}

/// Keywords after which a comma no longer separates FROM items (`ON CONFLICT … DO UPDATE SET
/// a = 1, b = 2` must not make `b` a table).
const FROM_CLAUSE_ENDS: &[&str] = &[
    "WHERE",
    "GROUP",
    "ORDER",
    "HAVING",
    "LIMIT",
    "OFFSET",
    "FETCH",
    "WINDOW",
    "UNION",
    "EXCEPT",
    "INTERSECT",
    "RETURNING",
    "FOR",
    "SET",
    "DO",
    "CONFLICT",
    "VALUES",
    "WHEN",
];

/// The table of one `FROM`/`JOIN` item at `j`, if it is a table: subqueries and table
/// functions (`json_each(x)`) are not — the main scan still visits what is inside their
/// parentheses.
fn from_item(t: &[Token], j: usize) -> Option<TableRef> {
    let j = skip_kws(t, j, &["LATERAL", "ONLY"]);
    let r = qualified_name(t, j)?;
    let next = j + if r.schema.is_some() { 3 } else { 1 };
    if t.get(next).is_some_and(|n| n.is_punct('(')) {
        return None;
    }
    Some(r)
}

/// Names introduced by `WITH [RECURSIVE] name [(cols)] AS [NOT] [MATERIALIZED] (…), …`.
fn cte_names(t: &[Token]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for i in (0..t.len()).filter(|&i| t[i].is_kw("WITH")) {
        let mut j = skip_kws(t, i + 1, &["RECURSIVE"]);
        while let Some(name) = t.get(j).and_then(Token::name) {
            let mut k = j + 1;
            if t.get(k).is_some_and(|n| n.is_punct('(')) {
                k = skip_group(t, k);
            }
            if !t.get(k).is_some_and(|n| n.is_kw("AS")) {
                break;
            }
            k = skip_kws(t, k + 1, &["NOT", "MATERIALIZED"]);
            if !t.get(k).is_some_and(|n| n.is_punct('(')) {
                break;
            }
            names.insert(name);
            k = skip_group(t, k);
            if !t.get(k).is_some_and(|n| n.is_punct(',')) {
                break;
            }
            j = k + 1;
        }
    }
    names
}

/// `name` or `schema.name` at `j`.
fn qualified_name(t: &[Token], j: usize) -> Option<TableRef> {
    let first = t.get(j)?.name()?;
    let dotted = t.get(j + 1).is_some_and(|n| n.is_punct('.'));
    let (schema, name) = match t.get(j + 2).and_then(Token::name) {
        Some(second) if dotted => (Some(first), second),
        _ => (None, first),
    };
    Some(TableRef {
        schema,
        name,
        line: t[j].line,
    })
}

fn skip_kws(t: &[Token], mut j: usize, kws: &[&str]) -> usize {
    while t.get(j).is_some_and(|n| kws.iter().any(|k| n.is_kw(k))) {
        j += 1;
    }
    j
}

/// `j` is at `(`; returns the index after the matching `)` (or the end).
fn skip_group(t: &[Token], j: usize) -> usize {
    let mut depth = 0usize;
    for (k, tok) in t.iter().enumerate().skip(j) {
        if tok.is_punct('(') {
            depth += 1;
        } else if tok.is_punct(')') {
            depth -= 1;
            if depth == 0 {
                return k + 1;
            }
        }
    }
    t.len()
}

fn statements(tokens: &[Token]) -> impl Iterator<Item = &[Token]> {
    tokens.split(|t| t.is_punct(';'))
}

/// Words that never name a table when unquoted; they end alias detection and keep clauses like
/// `DO UPDATE SET` or `FOR UPDATE SKIP LOCKED` from being read as table names.
const RESERVED: &[&str] = &[
    "ACTION",
    "ALL",
    "ALTER",
    "AND",
    "AS",
    "ASC",
    "BEGIN",
    "BETWEEN",
    "BY",
    "CASCADE",
    "CASE",
    "CHECK",
    "COLLATE",
    "CONFLICT",
    "CONSTRAINT",
    "CREATE",
    "CROSS",
    "DEFAULT",
    "DELETE",
    "DESC",
    "DISTINCT",
    "DO",
    "DROP",
    "ELSE",
    "END",
    "EXCEPT",
    "EXISTS",
    "FETCH",
    "FOR",
    "FOREIGN",
    "FROM",
    "FULL",
    "GROUP",
    "HAVING",
    "IF",
    "IGNORE",
    "IN",
    "INDEX",
    "INNER",
    "INSERT",
    "INTERSECT",
    "INTO",
    "IS",
    "JOIN",
    "KEY",
    "LATERAL",
    "LEFT",
    "LIKE",
    "LIMIT",
    "LOCKED",
    "NATURAL",
    "NO",
    "NOT",
    "NOTHING",
    "NOWAIT",
    "NULL",
    "OF",
    "OFFSET",
    "ON",
    "ONLY",
    "OR",
    "ORDER",
    "OUTER",
    "PRIMARY",
    "RECURSIVE",
    "REFERENCES",
    "RESTRICT",
    "RETURNING",
    "RIGHT",
    "SELECT",
    "SET",
    "SKIP",
    "TABLE",
    "THEN",
    "TO",
    "TRUNCATE",
    "UNION",
    "UNIQUE",
    "UPDATE",
    "USING",
    "VALUES",
    "VIEW",
    "WHEN",
    "WHERE",
    "WINDOW",
    "WITH",
];

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word {
        text: String,
        quoted: bool,
    },
    Punct(char),
    /// String literals, numbers and placeholders: never a name.
    Other,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    line: usize,
}

impl Token {
    fn is_punct(&self, c: char) -> bool {
        self.tok == Tok::Punct(c)
    }

    /// The uppercased word, when this is an unquoted word.
    fn keyword(&self) -> Option<String> {
        match &self.tok {
            Tok::Word {
                text,
                quoted: false,
            } => Some(text.to_uppercase()),
            _ => None,
        }
    }

    fn is_kw(&self, kw: &str) -> bool {
        matches!(&self.tok, Tok::Word { text, quoted: false } if text.eq_ignore_ascii_case(kw))
    }

    /// The lowercased identifier, when this word can be a name (quoted, or not reserved).
    fn name(&self) -> Option<String> {
        match &self.tok {
            Tok::Word { text, quoted } if *quoted || !RESERVED.iter().any(|k| self.is_kw(k)) => {
                Some(text.to_lowercase())
            }
            _ => None,
        }
    }
}

fn tokenize(chars: &[(char, usize)]) -> Vec<Token> {
    let c = |i: usize| chars.get(i).map(|&(ch, _)| ch);
    let is_ident = |ch: char| ch.is_alphanumeric() || ch == '_' || ch == '$';
    let mut tokens = Vec::new();
    let mut i = 0;
    while let Some(ch) = c(i) {
        let line = chars[i].1;
        let start = i;
        let tok = match ch {
            _ if ch.is_whitespace() => {
                i += 1;
                continue;
            }
            '-' if c(i + 1) == Some('-') => {
                while c(i).is_some_and(|ch| ch != '\n') {
                    i += 1;
                }
                continue;
            }
            '/' if c(i + 1) == Some('*') => {
                let mut depth = 0;
                while let Some(ch) = c(i) {
                    match (ch, c(i + 1)) {
                        ('/', Some('*')) => (depth, i) = (depth + 1, i + 2),
                        ('*', Some('/')) => (depth, i) = (depth - 1, i + 2),
                        _ => i += 1,
                    }
                    if depth == 0 {
                        break;
                    }
                }
                continue;
            }
            '\'' | '"' | '`' => {
                // Doubling the quote escapes it in all three forms.
                let mut text = String::new();
                i += 1;
                while let Some(ch2) = c(i) {
                    i += 1;
                    if ch2 == ch {
                        if c(i) != Some(ch) {
                            break;
                        }
                        i += 1;
                    }
                    text.push(ch2);
                }
                if ch == '\'' {
                    Tok::Other
                } else {
                    Tok::Word { text, quoted: true }
                }
            }
            // `$1` placeholders; `$$` / `$tag$` dollar quotes are skipped so the body is scanned.
            '$' => {
                i += 1;
                if c(i).is_some_and(|d| d.is_ascii_digit()) {
                    while c(i).is_some_and(|d| d.is_ascii_digit()) {
                        i += 1;
                    }
                    Tok::Other
                } else {
                    let mut j = i;
                    while c(j).is_some_and(|ch| is_ident(ch) && ch != '$') {
                        j += 1;
                    }
                    if c(j) == Some('$') {
                        i = j + 1;
                    }
                    continue;
                }
            }
            _ if ch.is_ascii_digit() => {
                while c(i).is_some_and(|ch| ch.is_alphanumeric() || ch == '.' || ch == '_') {
                    i += 1;
                }
                Tok::Other
            }
            _ if is_ident(ch) => {
                while c(i).is_some_and(is_ident) {
                    i += 1;
                }
                Tok::Word {
                    text: chars[start..i].iter().map(|&(ch, _)| ch).collect(),
                    quoted: false,
                }
            }
            _ => {
                i += 1;
                Tok::Punct(ch)
            }
        };
        tokens.push(Token { tok, line });
    }
    tokens
}
