//! The two databases at the end of a run, read into what the checks need.

use gozon_loadgen::invariants::{Account, Movement, Refund, Status};
use sqlx::{Connection, PgConnection};
use std::collections::HashMap;

/// An order as the orders database holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredOrder {
    pub id: String,
    pub user_id: String,
    pub amount: i64,
    pub status: Status,
    pub refund: Option<Refund>,
}

/// The two databases at the end of a run, as the checks need them.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub orders: Vec<StoredOrder>,
    /// The ledger's rows for each order.
    pub moved: HashMap<String, Vec<(Movement, i64)>>,
    /// Every account, with the sums of its ledger.
    pub accounts: HashMap<String, Account>,
    /// The orders whose payment payments decided, in the order it decided them.
    pub decided: Vec<String>,
}

/// Reads the snapshot from the orders and payments databases.
pub async fn snapshot(
    orders_database_url: &str,
    payments_database_url: &str,
) -> anyhow::Result<Snapshot> {
    let mut orders_db = PgConnection::connect(orders_database_url).await?;
    let mut payments_db = PgConnection::connect(payments_database_url).await?;
    let rows: Vec<(String, String, i64, String, Option<String>)> =
        sqlx::query_as("SELECT id::text, user_id, amount, status, refund FROM orders")
            .fetch_all(&mut orders_db)
            .await?;
    let mut orders = Vec::with_capacity(rows.len());
    for (id, user_id, amount, status, refund) in rows {
        orders.push(StoredOrder {
            id,
            user_id,
            amount,
            status: status.parse()?,
            refund: refund.map(|refund| refund.parse()).transpose()?,
        });
    }
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT order_id::text, kind, amount FROM ledger WHERE order_id IS NOT NULL",
    )
    .fetch_all(&mut payments_db)
    .await?;
    let mut moved: HashMap<String, Vec<(Movement, i64)>> = HashMap::new();
    for (order_id, kind, amount) in rows {
        moved
            .entry(order_id)
            .or_default()
            .push((kind.parse()?, amount));
    }
    let accounts = gozon_loadgen::audit::accounts(&mut payments_db, None).await?;
    // A user's decisions are taken one at a time, under that user's lock: `decided_at` orders
    // them.
    let decided = sqlx::query_scalar("SELECT order_id::text FROM payments ORDER BY decided_at")
        .fetch_all(&mut payments_db)
        .await?;
    Ok(Snapshot {
        orders,
        moved,
        accounts,
        decided,
    })
}
