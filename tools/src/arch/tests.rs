//! The lint on the real tree, on copies of it with one injected violation each, and its SQL
//! and Rust scanners on tricky input.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use super::sql::{self, analyze, looks_like_sql, with_lines};
use super::tables::string_literals;
use super::*;

fn real_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A copy of the workspace without build output, VCS data or runtime data.
fn copy_of_workspace() -> TempDir {
    fn copy_dir(from: &Path, to: &Path, top: bool) {
        for entry in fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name();
            let skip = name == "target" || name == ".git" || (top && name == "data");
            let kind = entry.file_type().unwrap();
            if skip || kind.is_symlink() {
                continue;
            }
            let dest = to.join(&name);
            if kind.is_dir() {
                fs::create_dir_all(&dest).unwrap();
                copy_dir(&entry.path(), &dest, false);
            } else {
                fs::copy(entry.path(), dest).unwrap();
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&real_root(), dir.path(), true);
    dir
}

fn write(root: &Path, rel: &str, contents: &str) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, contents).unwrap();
}

/// Adds `line` at the top of `[section]` of a manifest, creating the section if needed.
fn add_to_section(root: &Path, manifest: &str, section: &str, line: &str) {
    let path = root.join(manifest);
    let text = fs::read_to_string(&path).unwrap();
    let header = format!("[{section}]\n");
    let text = match text.find(&header) {
        Some(at) => {
            let (head, tail) = text.split_at(at + header.len());
            format!("{head}{line}\n{tail}")
        }
        None => format!("{text}\n{header}{line}\n"),
    };
    fs::write(path, text).unwrap();
}

/// A minimal manifest for the api crate of `module`, replacing whatever it declares now.
fn api_manifest(module: &str, extra: &str) -> String {
    format!(
        "[package]\nname = \"{module}-api\"\nversion = \"0.0.0\"\nedition = \"2024\"\n\
         publish = false\n\n[dependencies]\nshared-kernel.workspace = true\nserde.workspace = true\n\
         {extra}\n"
    )
}

fn of_rule(report: &Report, rule: Rule) -> Vec<&Violation> {
    report
        .violations
        .iter()
        .filter(|v| v.rule == rule)
        .collect()
}

/// The single violation of `rule` whose message contains `needle`.
fn the_violation<'r>(report: &'r Report, rule: Rule, needle: &str) -> &'r Violation {
    let found: Vec<_> = of_rule(report, rule)
        .into_iter()
        .filter(|v| v.message.contains(needle))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {} violation naming {needle:?}, got: {:#?}",
        rule.id(),
        report.violations
    );
    found[0]
}

fn messages(report: &Report) -> String {
    report
        .violations
        .iter()
        .map(|v| format!("  {v}\n"))
        .collect()
}

// ---- the whole lint ---------------------------------------------------------------------------

#[test]
fn the_real_workspace_is_clean() {
    let report = check(&real_root()).unwrap();
    assert!(report.is_clean(), "violations:\n{}", messages(&report));
    for module in ["customers", "inventory", "orders", "payments"] {
        assert!(
            report.graph.modules.iter().any(|m| m == module),
            "{module} missing"
        );
    }
}

#[test]
fn a_missing_workspace_is_an_error_not_a_report() {
    let empty = tempfile::tempdir().unwrap();
    assert!(check(empty.path()).is_err());
}

#[test]
fn a_module_depending_on_another_module_breaks_rule_1() {
    let ws = copy_of_workspace();
    add_to_section(
        ws.path(),
        "modules/orders/Cargo.toml",
        "dependencies",
        "inventory = { path = \"../inventory\" }",
    );
    let report = check(ws.path()).unwrap();
    assert!(!report.is_clean());
    let v = the_violation(
        &report,
        Rule::ModuleDependsOnModule,
        "`orders -> inventory`",
    );
    assert!(v.message.contains("modules/orders/Cargo.toml"), "{v}");
    let shown = v.to_string();
    assert!(
        shown.starts_with("rule 1 (module-depends-on-module): "),
        "{shown}"
    );
    // Rule 1 is the specific rule for this edge; it is not reported twice.
    assert_eq!(report.violations.len(), 1, "{}", messages(&report));
}

#[test]
fn a_dev_dependency_on_another_module_breaks_rule_1_too() {
    let ws = copy_of_workspace();
    add_to_section(
        ws.path(),
        "modules/payments/Cargo.toml",
        "dev-dependencies",
        "orders = { path = \"../orders\" }",
    );
    let report = check(ws.path()).unwrap();
    let v = the_violation(&report, Rule::ModuleDependsOnModule, "`payments -> orders`");
    assert!(v.message.contains("[dev-dependencies]"), "{v}");
}

#[test]
fn a_module_depending_on_app_breaks_rule_1() {
    let ws = copy_of_workspace();
    add_to_section(
        ws.path(),
        "modules/customers/Cargo.toml",
        "dependencies",
        "app = { path = \"../../app\" }",
    );
    let report = check(ws.path()).unwrap();
    the_violation(&report, Rule::ModuleDependsOnModule, "`customers -> app`");
}

#[test]
fn the_tools_crate_depending_on_a_module_breaks_rule_4() {
    let ws = copy_of_workspace();
    add_to_section(
        ws.path(),
        "tools/Cargo.toml",
        "dependencies",
        "orders = { path = \"../modules/orders\" }",
    );
    let report = check(ws.path()).unwrap();
    let v = the_violation(&report, Rule::OnlyAppDependsOnModules, "`tools -> orders`");
    assert!(v.message.contains("tools crate `tools`"), "{v}");
}

#[test]
fn an_api_crate_depending_on_a_module_breaks_rule_2() {
    let ws = copy_of_workspace();
    let extra = "inventory = { path = \"../../inventory\" }";
    write(
        ws.path(),
        "modules/customers/api/Cargo.toml",
        &api_manifest("customers", extra),
    );
    let report = check(ws.path()).unwrap();
    let v = the_violation(
        &report,
        Rule::ApiCrateDependency,
        "`customers-api -> inventory`",
    );
    assert!(v.message.contains("module crate `inventory`"), "{v}");
}

#[test]
fn an_api_crate_depending_on_another_api_crate_breaks_rule_2() {
    let ws = copy_of_workspace();
    let extra = "inventory-api.workspace = true";
    write(
        ws.path(),
        "modules/orders/api/Cargo.toml",
        &api_manifest("orders", extra),
    );
    let report = check(ws.path()).unwrap();
    the_violation(
        &report,
        Rule::ApiCrateDependency,
        "`orders-api -> inventory-api`",
    );
}

#[test]
fn an_api_crate_depending_on_a_third_party_crate_off_the_allow_list_breaks_rule_2() {
    let ws = copy_of_workspace();
    let extra = "sqlx.workspace = true\nuuid.workspace = true\n\n[dev-dependencies]\n\
                 insta.workspace = true\ntokio.workspace = true";
    write(
        ws.path(),
        "modules/customers/api/Cargo.toml",
        &api_manifest("customers", extra),
    );
    let report = check(ws.path()).unwrap();
    let v = the_violation(&report, Rule::ApiCrateDependency, "`customers-api -> sqlx`");
    assert!(v.message.contains("allow-list"), "{v}");
    the_violation(
        &report,
        Rule::ApiCrateDependency,
        "`customers-api -> tokio`",
    );
    // uuid is allowed, and insta is allowed for tests.
    assert_eq!(
        of_rule(&report, Rule::ApiCrateDependency).len(),
        2,
        "{}",
        messages(&report)
    );
}

#[test]
fn reqwest_is_allowed_in_an_api_crate_only_behind_feature_client() {
    let ws = copy_of_workspace();
    let optional = "reqwest = { workspace = true, optional = true }\n\n\
                    [features]\nclient = [\"dep:reqwest\"]";
    write(
        ws.path(),
        "modules/orders/api/Cargo.toml",
        &api_manifest("orders", optional),
    );
    let always = "reqwest.workspace = true";
    write(
        ws.path(),
        "modules/payments/api/Cargo.toml",
        &api_manifest("payments", always),
    );
    let by_default = "reqwest = { workspace = true, optional = true }\n\n\
                      [features]\ndefault = [\"client\"]\nclient = [\"dep:reqwest\"]";
    write(
        ws.path(),
        "modules/inventory/api/Cargo.toml",
        &api_manifest("inventory", by_default),
    );
    let report = check(ws.path()).unwrap();
    let flagged = of_rule(&report, Rule::ApiCrateDependency);
    assert!(
        !flagged.iter().any(|v| v.message.contains("orders-api")),
        "{}",
        messages(&report)
    );
    the_violation(
        &report,
        Rule::ApiCrateDependency,
        "`payments-api -> reqwest`",
    );
    the_violation(
        &report,
        Rule::ApiCrateDependency,
        "`inventory-api -> reqwest`",
    );
}

#[test]
fn the_kernel_depending_on_a_workspace_crate_breaks_rule_3() {
    let ws = copy_of_workspace();
    add_to_section(
        ws.path(),
        "shared-kernel/Cargo.toml",
        "dependencies",
        "customers-api = { path = \"../modules/customers/api\" }",
    );
    let report = check(ws.path()).unwrap();
    the_violation(
        &report,
        Rule::KernelDependsOnWorkspace,
        "`shared-kernel -> customers-api`",
    );
}

#[test]
fn another_workspace_crate_depending_on_a_module_breaks_rule_4() {
    let ws = copy_of_workspace();
    let root_manifest = fs::read_to_string(ws.path().join("Cargo.toml")).unwrap();
    let with_probe = root_manifest.replacen("members = [", "members = [\n    \"tools/probe\",", 1);
    assert_ne!(
        root_manifest, with_probe,
        "the root manifest has no `members = [`"
    );
    fs::write(ws.path().join("Cargo.toml"), with_probe).unwrap();
    write(
        ws.path(),
        "tools/probe/Cargo.toml",
        "[package]\nname = \"probe\"\nversion = \"0.0.0\"\nedition = \"2024\"\n\n\
         [dependencies]\norders.workspace = true\norders-api.workspace = true\n",
    );
    write(ws.path(), "tools/probe/src/lib.rs", "");
    let report = check(ws.path()).unwrap();
    the_violation(&report, Rule::OnlyAppDependsOnModules, "`probe -> orders`");
    assert_eq!(report.violations.len(), 1, "{}", messages(&report));
}

/// Gives orders a migration creating `arch_probe` (so the tests know one table orders owns)
/// and inventory one creating `arch_probe_stock`.
fn with_probe_tables(root: &Path) {
    write(
        root,
        "migrations/orders/sqlite/9999_arch_probe.sql",
        "CREATE TABLE arch_probe (id TEXT PRIMARY KEY);\n",
    );
    write(
        root,
        "migrations/inventory/sqlite/9999_arch_probe.sql",
        "CREATE TABLE IF NOT EXISTS arch_probe_stock (id TEXT PRIMARY KEY);\n",
    );
}

#[test]
fn module_sql_on_a_table_its_migrations_do_not_create_breaks_rule_5() {
    let ws = copy_of_workspace();
    with_probe_tables(ws.path());
    write(
        ws.path(),
        "modules/orders/src/arch_probe.rs",
        r##"//! Injected by the architecture lint's tests.
async fn probe(pool: &sqlx::SqlitePool) {
    sqlx::query("SELECT * FROM products").execute(pool).await.ok();
    sqlx::query("SELECT id FROM arch_probe WHERE id = $1").execute(pool).await.ok();
    let _ = sqlx::query(
        "SELECT s.id \
         FROM arch_probe_stock s",
    );
    let _ = r#"
        UPDATE arch_probe SET id = 'x'
        WHERE id IN (SELECT id FROM
            arch_probe_stock)"#;
}
"##,
    );
    let report = check(ws.path()).unwrap();
    let v = the_violation(&report, Rule::SqlTableOwnership, "`products`");
    assert!(v.message.contains("module `orders`"), "{v}");
    assert!(
        v.message.contains("modules/orders/src/arch_probe.rs:3"),
        "{v}"
    );
    // The line of a `\`-continued literal and of a raw multi-line one is where the name stands.
    let v = the_violation(&report, Rule::SqlTableOwnership, "arch_probe.rs:7");
    assert!(v.message.contains("`arch_probe_stock`"), "{v}");
    assert!(v.message.contains("migrations of `inventory`"), "{v}");
    the_violation(&report, Rule::SqlTableOwnership, "arch_probe.rs:12");
    // orders' own table is fine.
    assert_eq!(
        of_rule(&report, Rule::SqlTableOwnership).len(),
        3,
        "{}",
        messages(&report)
    );
}

#[test]
fn a_schema_qualified_name_in_another_modules_schema_breaks_rule_5() {
    let ws = copy_of_workspace();
    with_probe_tables(ws.path());
    write(
        ws.path(),
        "modules/orders/src/arch_probe.rs",
        "const A: &str = \"SELECT p.name FROM inventory.products p\";\n\
         const B: &str = \"SELECT * FROM orders.arch_probe\";\n",
    );
    let report = check(ws.path()).unwrap();
    let v = the_violation(&report, Rule::SqlTableOwnership, "`inventory.products`");
    assert!(v.message.contains("schema `inventory`"), "{v}");
    assert!(
        v.message.contains("modules/orders/src/arch_probe.rs:1"),
        "{v}"
    );
    assert_eq!(
        of_rule(&report, Rule::SqlTableOwnership).len(),
        1,
        "{}",
        messages(&report)
    );
}

#[test]
fn a_foreign_key_to_another_modules_table_breaks_rule_5() {
    let ws = copy_of_workspace();
    write(
        ws.path(),
        "migrations/orders/postgres/9998_arch_probe.sql",
        "-- Injected by the architecture lint's tests.\n\
         CREATE TABLE arch_probe_orders (\n    id UUID PRIMARY KEY,\n\
         \x20   customer_id UUID NOT NULL REFERENCES customers(id)\n);\n",
    );
    let report = check(ws.path()).unwrap();
    let v = the_violation(&report, Rule::SqlTableOwnership, "`customers`");
    assert!(
        v.message
            .contains("migrations/orders/postgres/9998_arch_probe.sql:4"),
        "{v}"
    );
}

#[test]
fn module_sql_on_a_kernel_table_breaks_rule_5() {
    let ws = copy_of_workspace();
    write(
        ws.path(),
        "modules/payments/src/arch_probe.rs",
        "const SQL: &str = \"DELETE FROM idempotency_keys WHERE created_at < $1\";\n",
    );
    let report = check(ws.path()).unwrap();
    let v = the_violation(&report, Rule::SqlTableOwnership, "`idempotency_keys`");
    assert!(v.message.contains("shared-kernel"), "{v}");
}

#[test]
fn embedding_another_modules_migrations_breaks_rule_5() {
    let ws = copy_of_workspace();
    write(
        ws.path(),
        "modules/orders/src/arch_probe.rs",
        "static OWN: sqlx::migrate::Migrator = sqlx::migrate!(\"../../migrations/orders/sqlite\");\n\
         static THEIRS: sqlx::migrate::Migrator =\n    \
             sqlx::migrate!(\"../../migrations/inventory/sqlite\");\n\
         static DEFAULT: sqlx::migrate::Migrator = sqlx::migrate!();\n",
    );
    let report = check(ws.path()).unwrap();
    let v = the_violation(&report, Rule::OwnMigrations, "arch_probe.rs:3");
    assert!(v.message.contains("migrations/inventory/sqlite"), "{v}");
    the_violation(&report, Rule::OwnMigrations, "arch_probe.rs:4");
    assert_eq!(
        of_rule(&report, Rule::OwnMigrations).len(),
        2,
        "{}",
        messages(&report)
    );
}

#[test]
fn prose_in_module_string_literals_is_not_taken_for_sql() {
    let ws = copy_of_workspace();
    write(
        ws.path(),
        "modules/orders/src/arch_probe.rs",
        r#"#[derive(Debug, thiserror::Error)]
enum E {
    #[error("Select a warehouse from the list first")]
    A,
    #[error("delete failed: order not found in the store")]
    B,
    #[error("update conflicts with a change made from another session")]
    C,
    #[error("could not insert into the outbox")]
    D,
}
// sqlx::query("SELECT * FROM products") in a comment is not code.
/* nor "DELETE FROM products" in a block comment */
const QUOTE: char = '"';
fn f<'a>(x: &'a str) -> &'a str { x }
"#,
    );
    let report = check(ws.path()).unwrap();
    assert!(
        of_rule(&report, Rule::SqlTableOwnership).is_empty(),
        "{}",
        messages(&report)
    );
}

#[test]
fn call_edges_come_from_dependencies_on_api_crates() {
    let ws = copy_of_workspace();
    write(
        ws.path(),
        "modules/payments/Cargo.toml",
        "[package]\nname = \"payments\"\nversion = \"0.0.0\"\nedition = \"2024\"\n\n\
         [dependencies]\npayments-api.workspace = true\ncustomers-api.workspace = true\ninventory-api.workspace = true\n\
         shared-kernel.workspace = true\n\n[dev-dependencies]\norders-api.workspace = true\n",
    );
    let report = check(ws.path()).unwrap();
    assert!(report.is_clean(), "{}", messages(&report));
    let edges = &report.graph.call_edges;
    assert!(
        edges.contains(&("payments".into(), "inventory".into())),
        "{edges:?}"
    );
    // A module's own api is not an edge; a test-only dependency is not a call.
    assert!(
        !edges
            .iter()
            .any(|(a, b)| a == "payments" && (b == "payments" || b == "orders"))
    );
    // inventory consumes orders' events and calls nothing of orders: an event edge only.
    assert!(!edges.contains(&("inventory".into(), "orders".into())));
    assert!(
        report
            .graph
            .event_edges
            .contains(&("orders".into(), "inventory".into()))
    );
}

// ---- the graph --------------------------------------------------------------------------------

#[test]
fn mermaid_draws_calls_solid_and_events_dashed() {
    let graph = ModuleGraph {
        modules: vec!["inventory".into(), "orders".into()],
        call_edges: vec![("orders".into(), "inventory".into())],
        event_edges: vec![("inventory".into(), "orders".into())],
    };
    let text = graph.mermaid();
    assert!(text.starts_with("flowchart LR\n"), "{text}");
    assert!(text.contains("    orders -->|calls| inventory\n"), "{text}");
    assert!(
        text.contains("    inventory -.->|events| orders\n"),
        "{text}"
    );
    assert!(text.contains("    inventory[\"inventory\"]\n"), "{text}");
}

#[test]
fn every_rule_displays_its_number_id_and_statement() {
    let rules = [
        Rule::ModuleDependsOnModule,
        Rule::ApiCrateDependency,
        Rule::KernelDependsOnWorkspace,
        Rule::OnlyAppDependsOnModules,
        Rule::SqlTableOwnership,
        Rule::OwnMigrations,
    ];
    let ids: BTreeSet<_> = rules.iter().map(|r| r.id()).collect();
    assert_eq!(ids.len(), rules.len());
    for rule in rules {
        let shown = rule.to_string();
        assert!(shown.starts_with("rule "), "{shown}");
        assert!(shown.ends_with(rule.statement()), "{shown}");
        assert!(!shown.contains('\n'), "{shown}");
    }
}

// ---- the SQL scanner --------------------------------------------------------------------------

fn tables(sql: &str) -> BTreeSet<String> {
    analyze(&with_lines(sql, 1))
        .refs
        .into_iter()
        .map(|r| match r.schema {
            Some(schema) => format!("{schema}.{}", r.name),
            None => r.name,
        })
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

#[test]
fn aliases_joins_and_comma_lists_yield_only_table_names() {
    assert_eq!(
        tables(
            "SELECT o.id, c.name FROM orders o JOIN customers AS c ON c.id = o.customer_id \
             LEFT OUTER JOIN order_lines l USING (order_id), payments p WHERE p.id = o.id"
        ),
        set(&["orders", "customers", "order_lines", "payments"])
    );
    assert_eq!(
        tables("select * from a x, b as y, c where x.id = y.id"),
        set(&["a", "b", "c"])
    );
}

#[test]
fn subqueries_and_table_functions_are_looked_into_not_named() {
    assert_eq!(
        tables(
            "SELECT * FROM (SELECT id FROM stock_levels WHERE qty > 0) AS s, \
             json_each($1) j, LATERAL (SELECT 1 FROM reservations r) x, warehouses w"
        ),
        set(&["stock_levels", "reservations", "warehouses"])
    );
}

#[test]
fn upserts_name_only_their_target() {
    assert_eq!(
        tables(
            "INSERT INTO stock_levels (product_id, qty) VALUES ($1, $2) \
             ON CONFLICT (product_id) DO UPDATE SET qty = stock_levels.qty + EXCLUDED.qty \
             RETURNING qty"
        ),
        set(&["stock_levels"])
    );
    assert_eq!(
        tables("INSERT OR IGNORE INTO inbox (id) VALUES (?) ON CONFLICT DO NOTHING"),
        set(&["inbox"])
    );
}

#[test]
fn cte_names_are_not_tables() {
    assert_eq!(
        tables(
            "WITH RECURSIVE picked AS (SELECT * FROM stock_levels FOR UPDATE SKIP LOCKED), \
             totals (n) AS NOT MATERIALIZED (SELECT count(*) FROM picked) \
             UPDATE stock_levels SET qty = qty - 1 FROM picked, totals WHERE picked.id = 1"
        ),
        set(&["stock_levels"])
    );
}

#[test]
fn from_inside_functions_and_is_distinct_from_are_not_table_lists() {
    assert_eq!(
        tables(
            "SELECT EXTRACT(EPOCH FROM created_at), TRIM(BOTH ' ' FROM name), \
             SUBSTRING(code FROM 2 FOR 3) FROM orders WHERE a IS NOT DISTINCT FROM b"
        ),
        set(&["orders"])
    );
}

#[test]
fn updates_deletes_and_locking_clauses() {
    assert_eq!(
        tables("UPDATE ONLY reservations r SET state = 'x' FROM holds h WHERE h.id = r.id"),
        set(&["reservations", "holds"])
    );
    assert_eq!(
        tables("DELETE FROM a USING b WHERE a.id = b.id"),
        set(&["a", "b"])
    );
    assert_eq!(
        tables("SELECT id FROM outbox ORDER BY seq LIMIT 10 FOR NO KEY UPDATE SKIP LOCKED"),
        set(&["outbox"])
    );
    assert_eq!(
        tables("SELECT * FROM t FOR UPDATE OF t NOWAIT"),
        set(&["t"])
    );
}

#[test]
fn ddl_names_created_altered_dropped_and_referenced_tables() {
    let facts = analyze(&with_lines(
        "CREATE TABLE IF NOT EXISTS order_lines (\n\
         \x20   order_id UUID NOT NULL REFERENCES orders(id) ON DELETE CASCADE ON UPDATE CASCADE,\n\
         \x20   at TIMESTAMP WITH TIME ZONE NOT NULL\n);\n\
         CREATE UNIQUE INDEX IF NOT EXISTS order_lines_pk ON order_lines USING btree (order_id);\n\
         CREATE INDEX ON ONLY archive (at);\n\
         CREATE VIEW open_orders AS SELECT * FROM orders WHERE state = 'open';\n\
         ALTER TABLE orders ALTER COLUMN total TYPE BIGINT USING total::bigint;\n\
         ALTER TABLE staging RENAME TO settled;\n\
         DROP TABLE IF EXISTS old_a, old_b;\n\
         TRUNCATE scratch;\n",
        1,
    ));
    let creates: BTreeSet<_> = facts.creates.iter().map(|r| r.name.clone()).collect();
    assert_eq!(creates, set(&["order_lines", "open_orders", "settled"]));
    let refs: BTreeSet<_> = facts.refs.iter().map(|r| r.name.clone()).collect();
    assert_eq!(
        refs,
        set(&[
            "order_lines",
            "orders",
            "archive",
            "open_orders",
            "staging",
            "settled",
            "old_a",
            "old_b",
            "scratch"
        ])
    );
    let orders_fk = facts.refs.iter().find(|r| r.name == "orders").unwrap();
    assert_eq!(orders_fk.line, 2);
}

#[test]
fn schema_qualified_and_quoted_names_keep_their_schema() {
    assert_eq!(
        tables(r#"SELECT * FROM inventory.products p JOIN "orders"."Lines" l ON l.p = p.id"#),
        set(&["inventory.products", "orders.lines"])
    );
    assert_eq!(tables(r#"SELECT * FROM "order""#), set(&["order"]));
}

#[test]
fn comments_strings_and_placeholders_hide_nothing_and_invent_nothing() {
    assert_eq!(
        tables(
            "SELECT 'FROM fake' AS x, $1 -- FROM commented\n FROM real_table /* JOIN hidden */ \
             WHERE note = 'it''s FROM here' AND id = ?"
        ),
        set(&["real_table"])
    );
    // Postgres function bodies in dollar quotes are scanned.
    assert_eq!(
        tables("CREATE FUNCTION f() RETURNS TABLE (n INT) AS $$ SELECT n FROM counters $$"),
        set(&["counters"])
    );
}

#[test]
fn only_statements_that_start_like_sql_are_sql() {
    let sql = |s: &str| looks_like_sql(&with_lines(s, 1));
    for yes in [
        "SELECT 1",
        "select id from t",
        "  \n INSERT INTO t (a) VALUES ($1)",
        "insert or replace into t values (1)",
        "UPDATE t SET a = 1",
        "DELETE FROM t",
        "WITH x AS (SELECT 1) SELECT * FROM x",
        "CREATE UNIQUE INDEX i ON t (a)",
        "ALTER TABLE t ADD COLUMN b TEXT",
        "-- leading comment\nSELECT 1",
        "BEGIN; UPDATE t SET a = 1; COMMIT",
    ] {
        assert!(sql(yes), "{yes:?} is SQL");
    }
    for no in [
        "Select a warehouse from the list first",
        "update failed: order not found",
        "update the order from the admin page",
        "delete the order first",
        "failed to insert into the outbox",
        "insert failed",
        "create order",
        "with the customer from {name}",
        "customer {id} was not found",
        "",
    ] {
        assert!(!sql(no), "{no:?} is prose");
    }
}

// ---- the Rust literal scanner -----------------------------------------------------------------

#[test]
fn rust_literals_of_every_kind_are_found_with_their_lines() {
    let src = r####"// "not a literal"
/* "nor this" /* nested "one" */ */
fn f<'a>(x: &'a str) -> char {
    let _ = ("plain \"quoted\"", b"bytes", c"cstr", r"raw", br#"raw "bytes""#);
    let _ = "continued \
             here";
    let _ = r##"multi
line "# still"##;
    let _ = sqlx::migrate!( "../m" );
    '"'
}
"####;
    let found: Vec<(usize, String, bool)> = string_literals(src)
        .iter()
        .map(|l| (l.line, l.value(), l.migrate_path))
        .collect();
    let expected = [
        (4, "plain \"quoted\"", false),
        (4, "bytes", false),
        (4, "cstr", false),
        (4, "raw", false),
        (4, "raw \"bytes\"", false),
        (5, "continued here", false),
        (7, "multi\nline \"# still", false),
        (9, "../m", true),
    ];
    let expected: Vec<(usize, String, bool)> = expected
        .iter()
        .map(|&(l, v, m)| (l, v.to_owned(), m))
        .collect();
    assert_eq!(found, expected);
    // Every char knows its line: the continued literal's second word is on line 6.
    let continued = &string_literals(src)[5];
    assert_eq!(continued.chars.last().map(|&(_, line)| line), Some(6));
}

#[test]
fn sql_line_numbers_follow_the_source() {
    let facts = sql::analyze(&with_lines("SELECT *\n\n  FROM far_away", 10));
    assert_eq!(facts.refs[0].line, 12);
}

#[test]
fn subscribing_to_events_is_an_event_edge_not_a_call_edge() {
    let report = check(&real_root()).unwrap();
    let edge = |a: &str, b: &str| (a.to_owned(), b.to_owned());
    assert!(
        report
            .graph
            .event_edges
            .contains(&edge("customers", "orders"))
    );
    assert!(
        report
            .graph
            .event_edges
            .contains(&edge("customers", "payments"))
    );
    // Inventory only reacts to orders' events; orders calls customers and inventory at
    // placement, and hears back from inventory and payments through events.
    assert!(
        !report
            .graph
            .call_edges
            .contains(&edge("inventory", "orders"))
    );
    assert!(
        report
            .graph
            .call_edges
            .contains(&edge("orders", "customers"))
    );
    assert!(
        report
            .graph
            .event_edges
            .contains(&edge("payments", "orders"))
    );
    let mermaid = report.graph.mermaid();
    assert!(
        mermaid.contains("customers -.->|events| orders"),
        "{mermaid}"
    );
    assert!(
        mermaid.contains("orders -.->|events| inventory"),
        "{mermaid}"
    );
}
