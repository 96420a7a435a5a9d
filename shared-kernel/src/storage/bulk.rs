//! Multi-row `INSERT`s for bulk loads (benchmark history): the placeholder list of
//! `rows × columns` values. Postgres gets `$N`; SQLite gets anonymous `?`, bound in order:
//! SQLite looks each *named* parameter (`$N` is a name to it) up among those seen before, so a
//! statement of n `$N` placeholders takes O(n²) to prepare (30 000 took ~3 s).

/// Bind parameters per statement kept below both backends' limits (SQLite 32 766,
/// Postgres 65 535).
pub const MAX_BINDS: usize = 30_000;

/// Statements of at most this many rows stay prepared on their connection.
///
/// A multi-row statement's text depends on its row count (SQLite has no arrays), so each
/// count is a statement of its own. The small counts are what a busy system runs over and
/// over (a subscription batch or a group commit of a few events), and preparing them anew
/// each time cost about 7 % of the server's CPU on SQLite; larger ones are rare and would
/// only crowd the connection's statement cache.
pub const CACHED_ROWS: usize = 16;

/// Whether a multi-row statement of `rows` rows is kept prepared (see [`CACHED_ROWS`]).
pub fn cached(rows: usize) -> bool {
    rows <= CACHED_ROWS
}

/// Rows of `columns` values per multi-row statement, within [`MAX_BINDS`].
pub fn rows_per_statement(columns: usize) -> usize {
    (MAX_BINDS / columns.max(1)).max(1)
}

/// `($1, $2), ($3, $4), …` (Postgres) or `(?, ?), (?, ?), …` (SQLite): `rows` tuples of
/// `columns` placeholders, bound in order.
pub fn values(rows: usize, columns: usize, postgres: bool) -> String {
    let mut sql = String::with_capacity(rows * columns * 6);
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for column in 0..columns {
            if column > 0 {
                sql.push_str(", ");
            }
            if postgres {
                sql.push('$');
                sql.push_str(&(row * columns + column + 1).to_string());
            } else {
                sql.push('?');
            }
        }
        sql.push(')');
    }
    sql
}

/// `?, ?, …`: `count` anonymous SQLite placeholders, for an `IN (…)` list.
pub fn placeholders(count: usize) -> String {
    vec!["?"; count].join(", ")
}

/// Inserts `rows` with multi-row `INSERT`s of at most [`MAX_BINDS`] parameters inside the
/// transaction `tx`: `bulk_insert!(tx, "INSERT INTO t (a, b)", 2, rows, |q, row| q.bind(row.0).bind(row.1))`.
/// `head` is the statement up to `VALUES`; the binder gets the query and one row, and binds
/// exactly `columns` values. Evaluates to `Result<(), sqlx::Error>`.
#[macro_export]
macro_rules! bulk_insert {
    ($tx:expr, $head:expr, $columns:expr, $rows:expr, |$query:ident, $row:ident| $bind:expr) => {{
        let columns: usize = $columns;
        let postgres = $tx.is_postgres();
        let mut result: Result<(), ::sqlx::Error> = Ok(());
        for chunk in $rows.chunks($crate::storage::bulk::rows_per_statement(columns)) {
            let sql = format!(
                "{} VALUES {}",
                $head,
                $crate::storage::bulk::values(chunk.len(), columns, postgres)
            );
            result = $crate::with_tx!($tx, |conn| {
                let mut $query = ::sqlx::query(::sqlx::AssertSqlSafe(sql))
                    .persistent($crate::storage::bulk::cached(chunk.len()));
                for $row in chunk {
                    $query = $bind;
                }
                $query.execute(&mut *conn).await.map(drop)
            });
            if result.is_err() {
                break;
            }
        }
        result
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_row_by_row() {
        assert_eq!(values(2, 3, true), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(values(1, 1, true), "($1)");
        assert_eq!(values(2, 2, false), "(?, ?), (?, ?)");
        assert_eq!(rows_per_statement(8), 3_750);
        assert_eq!(rows_per_statement(0), MAX_BINDS);
    }
}
