//! Pieces of `WHERE` clauses that keep reads on their indexes.
//!
//! [`equal_filters`]: list filters that are set, and only those. Writing
//! `($2 IS NULL OR customer_id = $2)` instead makes SQLite walk the primary key (its planner
//! cannot use an index for an `OR` with a parameter), and a Postgres generic plan can do the
//! same.
//!
//! [`IdSet`]: many rows by id in one statement, `WHERE order_id IN (…ids…)` with the ids bound
//! as one parameter, so a batch is one prepared statement whatever its size, and each id is an
//! index lookup. Postgres gets `column = ANY($n)` over a `uuid[]`. SQLite has no arrays: it gets the ids as
//! a JSON array of hex strings and `column IN (SELECT unhex(value) FROM json_each($n))`, which
//! its planner runs as one index search per id (UUIDs are 16-byte blobs in SQLite).

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgRow};
use sqlx::sqlite::{SqliteArgumentsBuffer, SqliteRow};
use sqlx::{Encode, FromRow, Postgres, Sqlite, Type};
use uuid::Uuid;

use super::{ModuleDb, StorageError};

/// ` AND customer_id = $2 AND status = $3`: equality filters on the columns whose filter is
/// set, numbered from `$first`, and the number of the next placeholder. The caller binds the
/// set filters' values in the same order.
pub fn equal_filters(first: usize, filters: &[(&str, bool)]) -> (String, usize) {
    let mut sql = String::new();
    let mut next = first;
    for (column, set) in filters {
        if *set {
            sql.push_str(&format!(" AND {column} = ${next}"));
            next += 1;
        }
    }
    (sql, next)
}

/// Ids bound as one parameter of either backend; see [`IdSet::matches`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdSet(pub Vec<Uuid>);

impl IdSet {
    /// `column` is one of the ids bound at `$placeholder`, in the backend's dialect.
    pub fn matches(column: &str, placeholder: usize, postgres: bool) -> String {
        if postgres {
            format!("{column} = ANY(${placeholder})")
        } else {
            format!("{column} IN (SELECT unhex(value) FROM json_each(${placeholder}))")
        }
    }

    /// The rows of `sql` — its text in the reader's dialect, `sql(postgres)`, with this set bound
    /// at `$1` (see [`IdSet::matches`]) — read on `db`'s reader: one statement for any number
    /// of ids.
    ///
    /// # Errors
    /// The storage error, classified by `db` (unavailable or unexpected).
    pub async fn read<T>(
        &self,
        db: &ModuleDb,
        sql: fn(bool) -> String,
    ) -> Result<Vec<T>, StorageError>
    where
        T: for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin,
    {
        let reader = db.reader()?;
        let sql = sql(reader.is_postgres());
        crate::with_reader!(reader, |pool| {
            // Only the placeholder is generated; the ids are bound.
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(self)
                .fetch_all(pool)
                .await
        })
        .map_err(|e| db.classify(e))
    }

    /// The SQLite form: `["<32 hex digits>", …]`.
    fn json(&self) -> String {
        let hex: Vec<String> = self.0.iter().map(|id| id.simple().to_string()).collect();
        serde_json::Value::from(hex).to_string()
    }
}

impl Type<Postgres> for IdSet {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <Vec<Uuid> as Type<Postgres>>::type_info()
    }
}

impl Encode<'_, Postgres> for IdSet {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <Vec<Uuid> as Encode<Postgres>>::encode_by_ref(&self.0, buf)
    }
}

impl Type<Sqlite> for IdSet {
    fn type_info() -> sqlx::sqlite::SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }
}

impl Encode<'_, Sqlite> for IdSet {
    fn encode_by_ref(&self, buf: &mut SqliteArgumentsBuffer) -> Result<IsNull, BoxDynError> {
        <String as Encode<Sqlite>>::encode(self.json(), buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_set_filters_are_in_the_sql_numbered_in_order() {
        let both = equal_filters(2, &[("customer_id", true), ("status", true)]);
        assert_eq!(
            both,
            (" AND customer_id = $2 AND status = $3".to_owned(), 4)
        );
        let status = equal_filters(2, &[("customer_id", false), ("status", true)]);
        assert_eq!(status, (" AND status = $2".to_owned(), 3));
        assert_eq!(equal_filters(2, &[("status", false)]), (String::new(), 2));
    }

    #[test]
    fn each_backend_gets_its_dialect() {
        assert_eq!(IdSet::matches("order_id", 1, true), "order_id = ANY($1)");
        assert_eq!(
            IdSet::matches("r.order_id", 2, false),
            "r.order_id IN (SELECT unhex(value) FROM json_each($2))"
        );
        let ids = IdSet(vec![Uuid::from_u128(0xab), Uuid::from_u128(1)]);
        assert_eq!(
            ids.json(),
            r#"["000000000000000000000000000000ab","00000000000000000000000000000001"]"#
        );
    }
}
