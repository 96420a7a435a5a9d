//! `/customers`, as API.md describes it.

use axum::http::Method;
use serde_json::{Value, json};

use crate::support::TestApp;

pub async fn register(app: &TestApp, name: &str, email: &str) -> Value {
    app.post("/customers", json!({"name": name, "email": email}))
        .await
        .ok(201)
        .clone()
}

/// Bodies of `POST /customers` that must be refused, with the status and the field named.
fn bad_registrations() -> Vec<(&'static str, String, u16, Option<&'static str>)> {
    let long_name = "n".repeat(201);
    let long_email = format!("{}@example.com", "a".repeat(243));
    vec![
        (
            "malformed JSON",
            r#"{"name": "Ada", "email": "#.into(),
            400,
            None,
        ),
        ("not an object", "[1, 2]".into(), 422, Some("body")),
        (
            "trailing garbage",
            r#"{"name": "Ada", "email": "ada@example.com"} x"#.into(),
            400,
            None,
        ),
        (
            "name of wrong type",
            r#"{"name": 5, "email": "ada@example.com"}"#.into(),
            422,
            Some("name"),
        ),
        (
            "email null",
            r#"{"name": "Ada", "email": null}"#.into(),
            422,
            Some("email"),
        ),
        (
            "missing email",
            r#"{"name": "Ada"}"#.into(),
            422,
            Some("email"),
        ),
        (
            "unknown field",
            r#"{"name": "Ada", "email": "ada@example.com", "admin": true}"#.into(),
            422,
            Some("admin"),
        ),
        (
            "empty name",
            r#"{"name": "", "email": "ada@example.com"}"#.into(),
            422,
            Some("name"),
        ),
        (
            "blank name",
            r#"{"name": "   ", "email": "ada@example.com"}"#.into(),
            422,
            Some("name"),
        ),
        (
            "name with a right-to-left override",
            r#"{"name": "\u202eecalevoL adA", "email": "ada@example.com"}"#.into(),
            422,
            Some("name"),
        ),
        (
            "name of zero-width characters only",
            r#"{"name": "\u200b\u200d\ufeff", "email": "ada@example.com"}"#.into(),
            422,
            Some("name"),
        ),
        (
            "over-long name",
            format!(r#"{{"name": "{long_name}", "email": "ada@example.com"}}"#),
            422,
            Some("name"),
        ),
        (
            "invalid email",
            r#"{"name": "Ada", "email": "not-an-email"}"#.into(),
            422,
            Some("email"),
        ),
        (
            "email without domain dot",
            r#"{"name": "Ada", "email": "ada@localhost"}"#.into(),
            422,
            Some("email"),
        ),
        (
            "email with display name",
            r#"{"name": "Ada", "email": "Ada <ada@example.com>"}"#.into(),
            422,
            Some("email"),
        ),
        (
            "over-long email",
            format!(r#"{{"name": "Ada", "email": "{long_email}"}}"#),
            422,
            Some("email"),
        ),
    ]
}

shared_kernel::both_backends! {
    async fn registering_returns_the_customer_and_it_is_readable_at_once(app: crate::support::TestApp) {
        let customer = register(&app, "  Ada Lovelace ", "Ada@Example.com").await;
        assert_eq!(customer["name"], "Ada Lovelace");
        assert_eq!(customer["email"], "Ada@Example.com");
        assert_eq!(customer["created_at"], customer["updated_at"]);
        assert!(customer["created_at"].as_str().unwrap().ends_with('Z'));
        let id = customer["id"].as_str().unwrap();
        assert_eq!(app.get(&format!("/customers/{id}")).await.ok(200), &customer);
        assert_eq!(app.list_all("/customers").await, vec![customer.clone()]);
    }

    async fn an_email_is_unique_whatever_its_case(app: crate::support::TestApp) {
        register(&app, "Ada", "ada@example.com").await;
        let answer = app.post("/customers", json!({"name": "Other", "email": "ADA@example.COM"})).await;
        answer.problem(409);
        assert_eq!(app.list_all("/customers").await.len(), 1);
    }

    async fn an_email_is_one_address_whether_its_accents_are_composed_or_not(app: crate::support::TestApp) {
        let decomposed = register(&app, "Jose\u{301}", "jose\u{301}@example.com").await;
        assert_eq!(decomposed["email"], "jos\u{e9}@example.com");
        assert_eq!(decomposed["name"], "Jos\u{e9}");
        let composed = app.post("/customers", json!({"name": "Other", "email": "JOS\u{c9}@example.com"})).await;
        composed.problem(409);
        assert_eq!(app.list_all("/customers").await.len(), 1);
    }

    async fn bad_registrations_are_refused_and_store_nothing(app: crate::support::TestApp) {
        for (case, body, status, field) in bad_registrations() {
            let answer = app.raw(Method::POST, "/customers", Some("application/json"), body).await;
            assert_eq!(answer.status.as_u16(), status, "{case}: {}", answer.body);
            answer.problem(status);
            if let Some(field) = field {
                assert!(answer.fields().contains(&field.to_owned()), "{case}: {}", answer.body);
            }
        }
        let text = app.raw(Method::POST, "/customers", Some("text/plain"), r#"{"name":"A","email":"a@b.co"}"#).await;
        text.problem(415);
        let none = app.raw(Method::POST, "/customers", None, r#"{"name":"A","email":"a@b.co"}"#).await;
        none.problem(415);
        let huge = format!(r#"{{"name": "{}", "email": "a@b.co"}}"#, "x".repeat(1024 * 1024));
        app.raw(Method::POST, "/customers", Some("application/json"), huge).await.problem(413);
        assert!(app.list_all("/customers").await.is_empty());
    }

    async fn several_invalid_fields_are_all_named(app: crate::support::TestApp) {
        let answer = app.post("/customers", json!({"name": "", "email": "nope"})).await;
        answer.problem(422);
        assert_eq!(answer.fields(), ["name", "email"]);
    }

    async fn patching_changes_only_the_given_fields(app: crate::support::TestApp) {
        let customer = register(&app, "Ada", "ada@example.com").await;
        let id = customer["id"].as_str().unwrap();
        let renamed = app.json(Method::PATCH, &format!("/customers/{id}"), json!({"name": "Ada King"})).await;
        let renamed = renamed.ok(200);
        assert_eq!(renamed["name"], "Ada King");
        assert_eq!(renamed["email"], "ada@example.com");
        assert_eq!(renamed["created_at"], customer["created_at"]);
        assert!(renamed["updated_at"].as_str().unwrap() > customer["updated_at"].as_str().unwrap());
        let moved = app.json(Method::PATCH, &format!("/customers/{id}"), json!({"email": "king@example.com", "name": null})).await;
        assert_eq!(moved.ok(200)["email"], "king@example.com");
        assert_eq!(app.get(&format!("/customers/{id}")).await.ok(200)["name"], "Ada King");
    }

    async fn patching_refuses_bad_input_and_taken_emails(app: crate::support::TestApp) {
        let ada = register(&app, "Ada", "ada@example.com").await;
        register(&app, "Bob", "bob@example.com").await;
        let path = format!("/customers/{}", ada["id"].as_str().unwrap());
        app.json(Method::PATCH, &path, json!({"email": "BOB@example.com"})).await.problem(409);
        let invalid = app.json(Method::PATCH, &path, json!({"name": " "})).await;
        assert_eq!(invalid.problem(422)["errors"][0]["field"], "name");
        app.json(Method::PATCH, &path, json!({"id": "x"})).await.problem(422);
        app.json(Method::PATCH, &path, json!({"name": 3})).await.problem(422);
        assert_eq!(app.get(&path).await.ok(200), &ada);
    }

    async fn unknown_and_malformed_ids_are_not_found(app: crate::support::TestApp) {
        let unknown = uuid::Uuid::now_v7();
        app.get(&format!("/customers/{unknown}")).await.problem(404);
        app.get("/customers/not-a-uuid").await.problem(404);
        app.json(Method::PATCH, &format!("/customers/{unknown}"), json!({"name": "X"})).await.problem(404);
        app.json(Method::PATCH, "/customers/123", json!({"name": "X"})).await.problem(404);
    }

    async fn a_repeated_idempotency_key_returns_the_original_response(app: crate::support::TestApp) {
        let body = json!({"name": "Ada", "email": "ada@example.com"});
        let first = app.post_with_key("/customers", "key-1", body.clone()).await;
        let first = first.ok(201).clone();
        let again = app.post_with_key("/customers", "key-1", body).await;
        assert_eq!(again.ok(201), &first);
        let other = app.post_with_key("/customers", "key-1", json!({"name": "Eve", "email": "eve@example.com"})).await;
        assert_eq!(other.problem(422)["errors"][0]["field"], "Idempotency-Key");
        let too_long = app.post_with_key("/customers", &"k".repeat(256), json!({"name": "Eve", "email": "eve@example.com"})).await;
        too_long.problem(422);
        assert_eq!(app.list_all("/customers").await.len(), 1);
    }

    async fn concurrent_first_uses_of_one_key_create_one_customer(app: crate::support::TestApp) {
        let body = json!({"name": "Ada", "email": "ada@example.com"});
        let answers = futures::future::join_all(
            (0..8).map(|_| app.post_with_key("/customers", "same-key", body.clone())),
        )
        .await;
        let first = answers[0].ok(201);
        for answer in &answers {
            assert_eq!(answer.ok(201), first);
        }
        assert_eq!(app.list_all("/customers").await.len(), 1);
    }

    async fn lists_page_with_opaque_cursors(app: crate::support::TestApp) {
        let mut created = Vec::new();
        for i in 0..5 {
            created.push(register(&app, &format!("C{i}"), &format!("c{i}@example.com")).await["id"].clone());
        }
        let first = app.get("/customers?limit=2").await;
        let first = first.ok(200);
        assert_eq!(first["items"].as_array().unwrap().len(), 2);
        let mut seen: Vec<Value> = first["items"].as_array().unwrap().iter().map(|c| c["id"].clone()).collect();
        let mut next = first["next"].as_str().map(str::to_owned);
        while let Some(cursor) = next {
            let page = app.get(&format!("/customers?limit=2&after={cursor}")).await;
            let page = page.ok(200);
            seen.extend(page["items"].as_array().unwrap().iter().map(|c| c["id"].clone()));
            next = page["next"].as_str().map(str::to_owned);
        }
        assert_eq!(seen, created);
        assert_eq!(app.get("/customers").await.ok(200)["next"], Value::Null);
        for bad in ["limit=0", "limit=501", "limit=abc", "limit=-1", "after=garbage!"] {
            let answer = app.get(&format!("/customers?{bad}")).await;
            answer.problem(422);
        }
    }
}
