//! `GET /orders`: every order of the caller, newest first, read and sent a page at a time; and
//! optional pages (`limit`, `before`) that chain through `Link` headers to the same list.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::Orders;
use serde_json::Value;

/// `count` orders of `user`, a millisecond apart, written straight to the database.
async fn many_orders(orders: &Orders, user: &str, count: i64) -> Vec<String> {
    sqlx::query(
        "INSERT INTO orders (id, user_id, seq, amount, description, created_at, updated_at, \
           payment_deadline) \
         SELECT gen_random_uuid(), $1, $2 + 1 - n, n, 'bulk ' || n, \
           now() - n * interval '1 millisecond', now(), now() + interval '1 hour' \
         FROM generate_series(1, $2) AS n",
    )
    .bind(user)
    .bind(count)
    .execute(&orders.pool)
    .await
    .unwrap();
    sqlx::query_scalar("SELECT id::text FROM orders WHERE user_id = $1 ORDER BY seq DESC")
        .bind(user)
        .fetch_all(&orders.pool)
        .await
        .unwrap()
}

async fn get(orders: &Orders, user: &str, path: &str) -> reqwest::Response {
    orders
        .http
        .get(format!("{}{path}", orders.base))
        .bearer_auth(orders.token(user))
        .send()
        .await
        .unwrap()
}

fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|order| order["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_whole_list_comes_back_newest_first_across_many_pages() {
    let orders = Orders::start(&[]).await;
    // More than two of the pages the service reads at a time.
    let expected = many_orders(&orders, "hoarder", 1_234).await;
    many_orders(&orders, "someone-else", 3).await;
    let whole = get(&orders, "hoarder", "/orders").await;
    assert_eq!(whole.status(), 200);
    let whole: Value = whole.json().await.unwrap();
    assert_eq!(ids(&whole), expected);
    orders.stop().await;
}

#[tokio::test]
async fn pages_chained_by_their_link_headers_give_the_same_list() {
    let orders = Orders::start(&[]).await;
    let expected = many_orders(&orders, "pager", 25).await;
    let mut seen = Vec::new();
    let mut next = Some("/orders?limit=10".to_owned());
    while let Some(path) = next {
        let page = get(&orders, "pager", &path).await;
        assert_eq!(page.status(), 200, "{path}");
        next = page.headers().get("link").map(|link| {
            let link = link.to_str().unwrap();
            assert!(link.ends_with(r#">; rel="next""#), "{link}");
            link.trim_start_matches('<')
                .split('>')
                .next()
                .unwrap()
                .to_owned()
        });
        let page: Value = page.json().await.unwrap();
        assert!(page.as_array().unwrap().len() <= 10);
        seen.extend(ids(&page));
    }
    assert_eq!(seen, expected);

    for (bad, status) in [
        ("/orders?limit=0", 400),
        ("/orders?limit=1001", 400),
        ("/orders?limit=ten", 400),
        ("/orders?before=not-a-uuid", 400),
        (
            "/orders?limit=5&before=0190b7c4-1c1d-7000-8000-000000000001",
            404,
        ),
    ] {
        assert_eq!(get(&orders, "pager", bad).await.status(), status, "{bad}");
    }
    // Another user's order is no cursor either.
    let theirs = &many_orders(&orders, "stranger", 1).await[0];
    assert_eq!(
        get(
            &orders,
            "pager",
            &format!("/orders?limit=5&before={theirs}")
        )
        .await
        .status(),
        404
    );
    orders.stop().await;
}
