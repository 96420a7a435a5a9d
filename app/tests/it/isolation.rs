//! Data isolation at run time: a module's connections cannot reach another module's data.

use shared_kernel::storage::Reader;
use shared_kernel::with_reader;

shared_kernel::both_backends! {
    async fn the_orders_module_cannot_read_inventory_or_customers_tables(app: crate::support::TestApp) {
        crate::inventory::create_product(&app, "A1", 100).await;
        crate::customers::register(&app, "Ada", "ada@example.com").await;
        let orders = app.db("orders");
        let reader = orders.reader().unwrap();

        // Unqualified names resolve only inside the module's own database or schema.
        for sql in ["SELECT * FROM products", "SELECT * FROM customers"] {
            let error = with_reader!(reader, |pool| sqlx::query(sql).fetch_all(pool).await.map(drop))
                .expect_err("orders must not see another module's table");
            let message = error.to_string();
            assert!(
                message.contains("no such table") || message.contains("does not exist"),
                "{sql}: {message}"
            );
        }

        if let Reader::Postgres(pool) = reader {
            // Naming the other schema, or borrowing its role, is refused by the server.
            for sql in [
                "SELECT * FROM inventory.products",
                "SELECT * FROM customers.customers",
                "CREATE TABLE inventory.sneaky (id int)",
                "SET ROLE bounded_inventory",
            ] {
                let error = sqlx::query(sql).execute(pool).await.expect_err(sql);
                let code = error.as_database_error().and_then(|e| e.code()).map(|c| c.into_owned());
                assert_eq!(code.as_deref(), Some("42501"), "{sql}: {error}");
            }
            let role: (String,) = sqlx::query_as("SELECT current_user::text").fetch_one(pool).await.unwrap();
            assert_eq!(role.0, "bounded_orders");
        }
    }

    async fn each_module_owns_only_its_tables(app: crate::support::TestApp) {
        // The customers module's database holds customers and nothing of inventory's.
        let reader = app.db("customers").reader().unwrap();
        let error = with_reader!(reader, |pool| sqlx::query("SELECT * FROM stock_levels").fetch_all(pool).await.map(drop));
        assert!(error.is_err());
        let own = with_reader!(reader, |pool| sqlx::query("SELECT * FROM customers").fetch_all(pool).await.map(drop));
        assert!(own.is_ok());
    }
}

#[tokio::test]
async fn sqlite_modules_live_in_separate_files() {
    let app = crate::support::TestApp::spawn(crate::support::Kind::Sqlite, "files")
        .await
        .unwrap();
    let shared_kernel::storage::Backend::Sqlite { data_dir } = app.backend() else {
        unreachable!("a SQLite app has a data dir");
    };
    for module in app::config::MODULES {
        assert!(
            data_dir.join(format!("{module}.sqlite")).is_file(),
            "{module}.sqlite is missing"
        );
    }
}
