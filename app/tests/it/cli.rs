//! The `bounded` binary itself: `serve` with no flags, graceful stop, `arch check`.

use std::path::Path;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_bounded");

fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

#[test]
fn serve_without_flags_starts_on_sqlite_under_data_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .arg("serve")
        .current_dir(dir.path())
        // Port 0 through the environment: every flag has a BOUNDED_* variable.
        .env("BOUNDED_LISTEN", "127.0.0.1:0")
        .env_remove("BOUNDED_DATABASE_URL")
        .env_remove("BOUNDED_DATA_DIR")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read the log on a thread, so that a server that never says where it listens fails the
    // test at the deadline instead of blocking it.
    let (reader, lines, url) = crate::support::read_log_until_url(&mut child);
    let health = http_get(&url, "/health");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.ends_with(r#"{"status":"ok"}"#), "{health}");
    for module in app::config::MODULES {
        assert!(
            dir.path()
                .join("data")
                .join(format!("{module}.sqlite"))
                .is_file()
        );
    }

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "graceful stop exits 0, got {status}");
    reader.join().unwrap();
    let rest: Vec<String> = lines.try_iter().collect();
    assert!(
        rest.iter().any(|l| l.contains("SIGTERM received")),
        "{rest:?}"
    );
}

/// A bare HTTP/1.1 GET, so the test does not depend on a client crate's defaults.
fn http_get(base: &str, path: &str) -> String {
    http_request(base, "GET", path, None)
}

/// A bare HTTP/1.1 request, with a JSON body if one is given.
fn http_request(base: &str, method: &str, path: &str, json: Option<&str>) -> String {
    use std::io::{Read, Write};
    let host = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    // Headers end with an empty line; a body follows it.
    let rest = json.map_or("\r\n".to_owned(), |json| {
        format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}",
            json.len()
        )
    });
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{rest}"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn arch_check_passes_on_the_tree() {
    let output = Command::new(BIN)
        .args(["arch", "check", "--workspace"])
        .arg(workspace_root())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn arch_check_exits_1_naming_the_rule_when_orders_depends_on_inventory() {
    let copy = tempfile::tempdir().unwrap();
    copy_tree(workspace_root(), copy.path());
    let manifest = copy.path().join("modules/orders/Cargo.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let text = text.replace(
        "[dependencies]\n",
        "[dependencies]\ninventory.workspace = true\n",
    );
    std::fs::write(&manifest, text).unwrap();

    let output = Command::new(BIN)
        .args(["arch", "check", "--workspace"])
        .arg(copy.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("rule 1"), "{stderr}");
    assert!(
        stderr.contains("orders") && stderr.contains("inventory"),
        "{stderr}"
    );
}

/// Copies the sources of the workspace (not `target/`, `.git/` or data).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if [".git", "target", "data"].iter().any(|skip| name == *skip) {
            continue;
        }
        let path = entry.path();
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&path, &to.join(&name));
        } else {
            std::fs::copy(&path, to.join(&name)).unwrap();
        }
    }
}

/// `bounded serve` on SQLite in `dir`, on a free port; returns the process and its URL.
fn serve_on_sqlite(dir: &Path) -> (std::process::Child, String) {
    let (server, _lines, url) = serve_on_sqlite_logged(dir);
    (server, url)
}

/// [`serve_on_sqlite`], with the lines the server logs (at `info`) after its URL.
fn serve_on_sqlite_logged(
    dir: &Path,
) -> (
    std::process::Child,
    std::sync::mpsc::Receiver<String>,
    String,
) {
    let dir = dir.to_str().unwrap();
    start_logged(&["serve", "--listen", "127.0.0.1:0", "--data-dir", dir])
}

/// `bounded <args>` (a server) logging at `info`; returns it, the lines it logs after its URL,
/// and the URL.
fn start_logged(
    args: &[&str],
) -> (
    std::process::Child,
    std::sync::mpsc::Receiver<String>,
    String,
) {
    let mut server = Command::new(BIN)
        .args(args)
        .env_remove("BOUNDED_DATABASE_URL")
        .env("BOUNDED_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (_log, lines, url) = crate::support::read_log_until_url(&mut server);
    (server, lines, url)
}

#[test]
fn demo_seeds_a_running_instance_and_every_order_settles() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, url) = serve_on_sqlite(dir.path());
    let demo = Command::new(BIN)
        .args([
            "demo",
            "--url",
            &url,
            "--orders",
            "25",
            "--customers",
            "3",
            "--products",
            "3",
        ])
        .output()
        .unwrap();
    server.kill().unwrap();
    server.wait().unwrap();
    let stdout = String::from_utf8_lossy(&demo.stdout);
    assert!(
        demo.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&demo.stderr)
    );
    assert!(stdout.contains("registered 3 customers"), "{stdout}");
    assert!(stdout.contains("placed 25/25 orders"), "{stdout}");
    assert!(stdout.contains("settled 25 orders"), "{stdout}");
    assert!(stdout.contains("CONFIRMED"), "{stdout}");

    let unreachable = Command::new(BIN)
        .args(["demo", "--url", "http://127.0.0.1:9", "--orders", "1"])
        .output()
        .unwrap();
    assert!(!unreachable.status.success());
    assert!(String::from_utf8_lossy(&unreachable.stderr).contains("is `bounded serve` running"));
}

/// `bounded bench` with a small catalog and 4 clients for `duration`, figures into `json`.
fn small_bench(url: &str, duration: &str, json: &Path) -> std::process::Output {
    small_bench_with(url, duration, json, &[])
}

fn small_bench_with(
    url: &str,
    duration: &str,
    json: &Path,
    extra: &[&str],
) -> std::process::Output {
    let args = [
        "bench",
        "--url",
        url,
        "--duration",
        duration,
        "--clients",
        "4",
        "--customers",
        "5",
        "--products",
        "10",
        "--warehouses",
        "2",
        "--json",
    ];
    Command::new(BIN)
        .args(args)
        .arg(json)
        .args(extra)
        .output()
        .unwrap()
}

/// The open loop (`--rate`) starts orders on its schedule: 25/s for 2 s is 50 orders, all
/// settled, with their latency measured from their scheduled start.
#[test]
fn bench_open_loop_starts_orders_at_the_given_rate() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, url) = serve_on_sqlite(dir.path());
    let json = dir.path().join("bench.json");
    let bench = small_bench_with(&url, "2s", &json, &["--rate", "25"]);
    server.kill().unwrap();
    server.wait().unwrap();
    let stdout = String::from_utf8_lossy(&bench.stdout);
    let stderr = String::from_utf8_lossy(&bench.stderr);
    assert!(bench.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("open loop of 25 orders/s"), "{stderr}");
    let figures: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(figures["rate"], 25.0, "{figures}");
    assert_eq!(figures["placed"], 50, "{figures}");
    assert_eq!(figures["errors"], 0, "{figures}");
    let settled = figures["confirmed"].as_u64().unwrap() + figures["rejected"].as_u64().unwrap();
    assert_eq!(settled, 50, "{figures}");
    // Each latency is its own order's: far below the run's 2 s, which a latency measured when
    // the run ends (from a start up to 2 s earlier, so a p95 near 1.9 s) would reach. The p95
    // rather than the max, so that one order slowed by a busy machine does not fail the run.
    let latency = &figures["place_to_terminal_ms"];
    assert!(latency["p50"].as_f64().unwrap() > 0.0, "{figures}");
    assert!(latency["p95"].as_f64().unwrap() < 1_500.0, "{figures}");
    // A server not counting statements: said so, never a number; commits are always counted.
    let stdout = String::from_utf8_lossy(&bench.stdout);
    assert!(stdout.contains("statements not counted"), "{stdout}");
    assert!(
        figures["server"]["statements_per_order"].is_null(),
        "{figures}"
    );
    assert!(
        figures["server"]["commits_per_order"].as_f64().unwrap() > 0.0,
        "{figures}"
    );
}

/// What the bench reports the server paid per confirmed order (`server` in its JSON), as
/// `(statements, commits, CPU ms)`, after checking the printed line and the CPU figures.
fn server_cost(figures: &serde_json::Value, stdout: &str) -> (f64, f64, f64) {
    let cost = &figures["server"];
    let per_order = |name: &str| {
        cost[name]
            .as_f64()
            .unwrap_or_else(|| panic!("{name} not counted: {figures}"))
    };
    let line = stdout
        .lines()
        .find(|l| l.starts_with("server per confirmed order:"))
        .unwrap_or_else(|| panic!("no cost line: {stdout}"));
    assert!(!line.contains("not counted"), "{line}");
    assert!(
        line.contains(" statements, ") && line.contains(" commits, "),
        "{line}"
    );
    let cpu_ms = per_order("cpu_ms_per_order");
    assert!(cpu_ms > 0.0, "{figures}");
    let confirmed = figures["confirmed"].as_f64().unwrap();
    let per_cpu_second = per_order("orders_per_cpu_second");
    let cpu_seconds = per_order("cpu_seconds");
    assert!(
        (per_cpu_second * cpu_seconds - confirmed).abs() < 1e-6,
        "{figures}"
    );
    (
        per_order("statements_per_order"),
        per_order("commits_per_order"),
        cpu_ms,
    )
}

/// The load generator's smoke run, so that it cannot rot: a couple of seconds against the real
/// binary, figures that add up, and what the orders cost the server, counted.
#[test]
fn bench_smoke_run_reports_throughput_and_latency() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, _lines, url) = start_logged(&[
        "serve",
        "--count-statements",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    let json = dir.path().join("bench.json");
    let bench = small_bench(&url, "2s", &json);
    server.kill().unwrap();
    server.wait().unwrap();
    let stdout = String::from_utf8_lossy(&bench.stdout);
    let stderr = String::from_utf8_lossy(&bench.stderr);
    assert!(bench.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("placements/s"), "{stdout}");
    assert!(stderr.contains("placed"), "a progress line: {stderr}");
    let figures: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let placed = figures["placed"].as_u64().unwrap();
    let settled = figures["confirmed"].as_u64().unwrap() + figures["rejected"].as_u64().unwrap();
    assert!(placed > 0, "{figures}");
    assert_eq!(figures["errors"], 0, "{figures}");
    assert_eq!(settled, placed, "every placed order settled: {figures}");
    let latency = &figures["place_to_terminal_ms"];
    assert!(latency["p50"].as_f64().unwrap() > 0.0);
    assert!(
        latency["p50"].as_f64() <= latency["p99"].as_f64()
            && latency["p99"].as_f64() <= latency["max"].as_f64()
    );
    // The saga commits in several modules and runs tens of statements per order.
    let (statements, commits, _) = server_cost(&figures, &stdout);
    assert!(commits > 2.0, "{figures}");
    assert!(statements > commits, "{figures}");
}

/// The single-transaction baseline serves what the load generator calls, and stock and credit
/// hold in it too: the same smoke run against it.
#[test]
fn the_baseline_answers_the_load_generator_with_settled_orders() {
    let dir = tempfile::tempdir().unwrap();
    let (mut baseline, _lines, url) = start_logged(&[
        "baseline",
        "--count-statements",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    let json = dir.path().join("baseline.json");
    let bench = small_bench(&url, "1s", &json);
    baseline.kill().unwrap();
    baseline.wait().unwrap();
    assert!(
        bench.status.success(),
        "{}",
        String::from_utf8_lossy(&bench.stderr)
    );
    let figures: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert!(figures["confirmed"].as_u64().unwrap() > 0, "{figures}");
    assert_eq!(figures["errors"], 0, "{figures}");
    assert_eq!(figures["confirmed"], figures["placed"], "{figures}");
    assert!(dir.path().join("baseline.sqlite").is_file());
    // One transaction per order; at least 9 statements: the customer, a price and the stock
    // per line, the account twice, a stock update per warehouse drawn from, the order and
    // its lines, and the long poll's read.
    let (statements, commits, _) = server_cost(&figures, &String::from_utf8_lossy(&bench.stdout));
    assert_eq!(commits, 1.0, "{figures}");
    assert!(statements >= 9.0, "{figures}");
}

/// `--count-statements` counts each statement once, the same on both backends' paths, and
/// leaves the log as `BOUNDED_LOG` says: one `POST /customers` of the baseline is one
/// transaction of one `INSERT` (plus, on Postgres, the `COMMIT` sqlx sends as a statement).
fn one_insert_is_counted_once(storage: [&str; 2]) -> (f64, f64) {
    let mut args = vec!["baseline", "--count-statements", "--listen", "127.0.0.1:0"];
    args.extend_from_slice(&storage);
    let (mut baseline, lines, url) = start_logged(&args);
    let counts = || tools::bench::Counts::parse(&http_get(&url, "/metrics"));
    let before = counts();
    let created = http_post(
        &url,
        "/customers",
        r#"{"name":"Ada","email":"ada@example.com"}"#,
    );
    assert!(created.starts_with("HTTP/1.1 201"), "{created}");
    let after = counts();
    baseline.kill().unwrap();
    baseline.wait().unwrap();
    let log: Vec<String> = lines.try_iter().collect();
    assert!(!log.iter().any(|l| l.contains("sqlx")), "{log:?}");
    // The commit counter appears at the first commit.
    let delta = |b: Option<f64>, a: Option<f64>| a.unwrap() - b.unwrap_or(0.0);
    // The CPU gauge is exported (at 10 ms resolution a process this idle may still read 0;
    // that it rises under work is the kernel's `prometheus` test).
    assert!(after.cpu_seconds.is_some_and(|cpu| cpu >= 0.0), "{after:?}");
    (
        delta(before.statements, after.statements),
        delta(before.commits, after.commits),
    )
}

#[test]
fn statements_are_counted_exactly_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let (statements, commits) =
        one_insert_is_counted_once(["--data-dir", dir.path().to_str().unwrap()]);
    assert_eq!((statements, commits), (1.0, 1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_are_counted_exactly_on_postgres() {
    let Some(database) = fresh_postgres("count_statements").await else {
        return;
    };
    let url = database.url().to_owned();
    let (statements, commits) =
        tokio::task::spawn_blocking(move || one_insert_is_counted_once(["--database-url", &url]))
            .await
            .unwrap();
    assert_eq!((statements, commits), (2.0, 1.0));
}

/// Runs `bounded <args>` with no storage settings from the environment, failing the test if
/// it has not exited within 60 s (a server that retries forever instead of giving up).
fn run_to_exit(args: &[&str], dir: &Path) -> std::process::Output {
    let child = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("BOUNDED_DATABASE_URL")
        .env_remove("BOUNDED_DATA_DIR")
        .env("BOUNDED_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (done, exited) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(child.wait_with_output().unwrap()));
    match exited.recv_timeout(std::time::Duration::from_secs(60)) {
        Ok(output) => output,
        Err(_) => {
            Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status()
                .ok();
            panic!("`bounded {}` did not exit within 60 s", args.join(" "));
        }
    }
}

/// Lines of the process's stderr that report an error.
fn error_lines(output: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter(|line| line.to_lowercase().contains("error"))
        .map(str::to_owned)
        .collect()
}

/// Every file and directory under `dir`.
fn tree(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(tree(&path));
        }
        out.push(path);
    }
    out.sort();
    out
}

#[test]
fn reconcile_on_a_missing_data_dir_exits_2_naming_the_path_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // A typo: the directory does not exist.
    let output = run_to_exit(&["reconcile", "--data-dir", "./dta"], dir.path());
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let errors = error_lines(&output);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("dta/customers.sqlite"), "{errors:?}");
    assert!(tree(dir.path()).is_empty(), "{:?}", tree(dir.path()));

    // A directory that exists but holds no stores: nothing created in it either.
    std::fs::create_dir(dir.path().join("empty")).unwrap();
    let output = run_to_exit(&["reconcile", "--data-dir", "empty"], dir.path());
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(error_lines(&output)[0].contains("empty/customers.sqlite"));
    assert_eq!(tree(dir.path()), [dir.path().join("empty")]);
}

#[test]
fn migrate_says_what_it_applied_per_store_then_up_to_date() {
    let dir = tempfile::tempdir().unwrap();
    let first = run_to_exit(&["migrate", "--data-dir", "data"], dir.path());
    let stdout = String::from_utf8_lossy(&first.stdout).into_owned();
    assert!(first.status.success(), "{first:?}");
    assert!(
        stdout.contains("customers: applied 1 migration (0001) and "),
        "{stdout}"
    );
    assert!(stdout.contains("orders_read: applied "), "{stdout}");
    assert!(!stdout.contains("up to date"), "{stdout}");
    // The log says where the data lives.
    let stderr = String::from_utf8_lossy(&first.stderr).into_owned();
    assert!(
        stderr.contains("backend=\"sqlite\"") && stderr.contains("data_dir=data"),
        "{stderr}"
    );

    let again = run_to_exit(&["migrate", "--data-dir", "data"], dir.path());
    let stdout = String::from_utf8_lossy(&again.stdout).into_owned();
    assert!(again.status.success(), "{again:?}");
    assert_eq!(stdout.lines().count(), 5, "{stdout}");
    assert!(
        stdout.lines().all(|line| line.ends_with(": up to date")),
        "{stdout}"
    );

    // Migrated stores are what reconcile reads.
    let reconciled = run_to_exit(&["reconcile", "--data-dir", "data"], dir.path());
    assert!(reconciled.status.success(), "{reconciled:?}");
}

/// `admin_url` naming `database` instead of its own.
fn with_database(admin_url: &str, database: &str) -> String {
    let (base, query) = admin_url.split_once('?').unwrap_or((admin_url, ""));
    let host_end = base
        .rfind('/')
        .filter(|&at| at > base.find("://").unwrap() + 2);
    let base = host_end.map_or(base, |at| &base[..at]);
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    format!("{base}/{database}{query}")
}

#[test]
fn serve_and_reconcile_on_a_missing_postgres_database_exit_2_in_one_clear_line() {
    let Some(admin) = shared_kernel::storage::testing::postgres_url("missing_database") else {
        return;
    };
    let database = format!("bounded_t_missing_{}", uuid::Uuid::now_v7().simple());
    // A password, to see that the log leaves it out (trust authentication ignores it).
    let url = with_database(&admin, &database).replacen("postgres@", "postgres:hunter2@", 1);
    let dir = tempfile::tempdir().unwrap();
    let mut serve_log = String::new();
    for command in ["serve", "reconcile"] {
        let output = run_to_exit(&[command, "--database-url", &url], dir.path());
        assert_eq!(output.status.code(), Some(2), "{command}: {output:?}");
        let errors = error_lines(&output);
        assert_eq!(errors.len(), 1, "{command}: {errors:?}");
        assert!(
            errors[0].contains(&format!("database \"{database}\" does not exist")),
            "{errors:?}"
        );
        assert!(errors[0].contains("createdb"), "{errors:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("hunter2"), "{stderr}");
        if command == "serve" {
            serve_log = stderr.into_owned();
        }
    }
    assert!(
        serve_log.contains("database_url=postgres://postgres:***@"),
        "{serve_log}"
    );
    assert!(tree(dir.path()).is_empty(), "nothing on disk either");
}

/// A throwaway Postgres database, or `None` when Postgres tests are not configured.
async fn fresh_postgres(test: &str) -> Option<shared_kernel::storage::testing::TestDatabase> {
    let admin = shared_kernel::storage::testing::postgres_url(test)?;
    Some(shared_kernel::storage::testing::TestDatabase::create(&admin).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_reconcile_needs_migrated_schemas_and_prints_no_notices() {
    let Some(database) = fresh_postgres("reconcile_notices").await else {
        return;
    };
    let url = database.url().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let outputs = tokio::task::spawn_blocking(move || {
        let path = dir.path();
        [
            run_to_exit(&["reconcile", "--database-url", &url], path),
            run_to_exit(&["migrate", "--database-url", &url], path),
            run_to_exit(&["migrate", "--database-url", &url], path),
            run_to_exit(&["reconcile", "--database-url", &url], path),
        ]
    })
    .await
    .unwrap();
    let [unmigrated, first, again, reconciled] = outputs;
    assert_eq!(unmigrated.status.code(), Some(2), "{unmigrated:?}");
    assert!(
        error_lines(&unmigrated)[0].contains("(schema customers) does not exist"),
        "{unmigrated:?}"
    );
    assert!(
        String::from_utf8_lossy(&first.stdout)
            .contains("customers: applied 1 migration (0001) and "),
        "{first:?}"
    );
    assert!(
        String::from_utf8_lossy(&again.stdout)
            .lines()
            .all(|l| l.ends_with(": up to date")),
        "{again:?}"
    );
    assert!(reconciled.status.success(), "{reconciled:?}");
    for output in [&first, &again, &reconciled] {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.to_lowercase().contains("notice"), "{stderr}");
    }
}

#[test]
fn version_is_the_crate_version() {
    let output = Command::new(BIN).arg("--version").output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    assert_eq!(
        stdout.trim(),
        format!("bounded {}", env!("CARGO_PKG_VERSION"))
    );
    assert_ne!(env!("CARGO_PKG_VERSION"), "0.0.0");
}

fn http_post(base: &str, path: &str, json: &str) -> String {
    http_request(base, "POST", path, Some(json))
}

#[test]
fn a_rewind_is_logged_with_the_peer_and_the_positions() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, lines, url) = serve_on_sqlite_logged(dir.path());
    let created = http_post(
        &url,
        "/customers",
        r#"{"name":"Ada","email":"ada@example.com"}"#,
    );
    assert!(created.starts_with("HTTP/1.1 201"), "{created}");
    let settled = http_get(&url, "/ops/subscriptions?wait=settled&timeout_ms=30000");
    assert!(
        settled.contains(
            r#""name":"orders<-customers","source":"customers","consumer":"orders","checkpoint":1"#
        ),
        "{settled}"
    );
    let rewound = http_post(
        &url,
        "/ops/subscriptions/orders%3C-customers/rewind",
        r#"{"to_seq":0}"#,
    );
    assert!(rewound.starts_with("HTTP/1.1 200"), "{rewound}");

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let logged = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains("Subscription rewound") => break Some(line),
            Ok(_) => {}
            Err(_) => break None,
        }
    };
    server.kill().unwrap();
    server.wait().unwrap();
    let line = logged.expect("the rewind is logged");
    assert!(line.contains("INFO"), "{line}");
    assert!(line.contains("peer=127.0.0.1:"), "{line}");
    assert!(line.contains("subscription=orders<-customers"), "{line}");
    assert!(
        line.contains("from_seq=1") && line.contains("to_seq=0"),
        "{line}"
    );
}

/// The body of a raw HTTP/1.1 response, as JSON.
fn body_json(response: &str) -> serde_json::Value {
    let (_, body) = response.split_once("\r\n\r\n").expect("a body");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {response}"))
}

/// The value of a header of a raw HTTP/1.1 response.
fn header<'a>(response: &'a str, name: &str) -> &'a str {
    response
        .lines()
        .take_while(|line| !line.is_empty())
        .find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
        .unwrap_or_else(|| panic!("no {name}: {response}"))
}

#[test]
fn an_order_is_followed_through_every_module_by_its_correlation_id_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env_remove("BOUNDED_DATABASE_URL")
        // Each applied event is a debug line inside its handler's span.
        .env(
            "BOUNDED_LOG",
            "info,shared_kernel::messaging::subscription=debug",
        )
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (_log, lines, url) = crate::support::read_log_until_url(&mut server);
    let customer = body_json(&http_post(
        &url,
        "/customers",
        r#"{"name":"Ada","email":"ada@example.com"}"#,
    ));
    let product = body_json(&http_post(
        &url,
        "/products",
        r#"{"sku":"A1","name":"Widget","price_cents":100}"#,
    ));
    let product = product["id"].as_str().unwrap();
    let stocked = http_request(
        &url,
        "PUT",
        &format!("/products/{product}/stock/east"),
        Some(r#"{"on_hand":5}"#),
    );
    assert!(stocked.starts_with("HTTP/1.1 200"), "{stocked}");
    let placed = http_post(
        &url,
        "/orders",
        &format!(
            r#"{{"customer_id":"{}","items":[{{"product_id":"{product}","quantity":1}}]}}"#,
            customer["id"].as_str().unwrap()
        ),
    );
    assert!(placed.starts_with("HTTP/1.1 202"), "{placed}");
    let request_id = header(&placed, "x-request-id").to_owned();
    let order = body_json(&placed)["id"].as_str().unwrap().to_owned();
    let settled = http_get(
        &url,
        &format!("/orders/{order}?wait=terminal&timeout_ms=30000"),
    );
    assert!(settled.contains(r#""status":"CONFIRMED""#), "{settled}");
    let all = http_get(&url, "/ops/subscriptions?wait=settled&timeout_ms=30000");
    assert!(all.starts_with("HTTP/1.1 200"), "{all}");

    // Every subscription the order's events travel through applied them in a span naming the
    // request that started it all, and the order.
    let mut waiting: Vec<&str> = vec![
        "inventory<-orders",
        "payments<-orders",
        "orders<-inventory",
        "orders<-payments",
        "order_summaries<-orders",
        "order_summaries<-payments",
    ];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !waiting.is_empty() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Ok(line) = lines.recv_timeout(left) else {
            break;
        };
        if line.contains("Event applied")
            && line.contains(&format!("correlation_id={request_id}"))
            && line.contains(&format!("order.id={order}"))
        {
            waiting.retain(|name| !line.contains(&format!("subscription={name} ")));
        }
    }
    server.kill().unwrap();
    server.wait().unwrap();
    assert!(
        waiting.is_empty(),
        "no span with correlation_id={request_id} order.id={order} for {waiting:?}"
    );
}
