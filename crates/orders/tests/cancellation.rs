//! Cancellation, refunds and the payment deadline on the orders side, against the real
//! PostgreSQL and RabbitMQ, with the payment and refund results published by the test: every
//! order ends with its money back whichever way a cancel and a payment race, a refund completes
//! once, and instances sweeping deadlines together cancel each overdue order once.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::{Orders, WAIT, result};
use gozon_test_support::eventually;
use serde_json::Value;

fn id(order: &Value) -> &str {
    order["id"].as_str().unwrap()
}

/// The SQLSTATE of the database's refusal and the unique index it names, if any (a trigger's
/// and a CHECK's refusal are both 23514; the transition trigger names no constraint).
fn sqlstate<T>(outcome: sqlx::Result<T>) -> (String, Option<String>) {
    let Err(sqlx::Error::Database(error)) = outcome else {
        panic!("the database accepted it, or failed otherwise");
    };
    let code = error.code().unwrap_or_default().into_owned();
    let unique = (code == "23505").then(|| error.constraint().unwrap_or_default().to_owned());
    (code, unique)
}

#[tokio::test]
async fn cancel_racing_its_payment_asks_for_the_refund_whichever_comes_first() {
    let orders = Orders::start(&[]).await;

    // Cancel first; the debit lands after: the order stays CANCELLED, its refund is asked for.
    let early = orders.place("ann", 700).await;
    let (status, cancelled) = orders.cancel("ann", id(&early), None).await;
    assert_eq!(
        (status, cancelled["status"].as_str()),
        (202, Some("CANCELLED"))
    );
    assert_eq!(cancelled["reason"], "cancelled");
    orders
        .publish_result("paid-early", &result(&early, "SUCCEEDED", None))
        .await;
    // Payment result first; the cancel after: the order is refunded.
    let late = orders.place("ann", 300).await;
    orders
        .publish_result("paid-late", &result(&late, "SUCCEEDED", None))
        .await;
    orders.wait_status(id(&late), "FINISHED").await;
    let (status, refunding) = orders.cancel("ann", id(&late), None).await;
    assert_eq!(
        (status, refunding["status"].as_str()),
        (202, Some("REFUNDING"))
    );

    let mut requests = orders.take_refund_requests(2).await;
    requests.sort_by_key(|request| request["amount"].as_i64());
    assert_eq!(
        requests,
        [
            serde_json::json!({"order_id": late["id"], "user_id": "ann", "amount": 300}),
            serde_json::json!({"order_id": early["id"], "user_id": "ann", "amount": 700}),
        ]
    );
    let early_now = orders.order(id(&early)).await;
    assert_eq!(
        (early_now["status"].as_str(), early_now["refund"].as_str()),
        (Some("CANCELLED"), Some("REQUESTED"))
    );

    orders.publish_refund_result("refunded-early", &early).await;
    orders.publish_refund_result("refunded-late", &late).await;
    orders.wait_status(id(&late), "REFUNDED").await;
    eventually("the early refund complete", WAIT, || async {
        (orders.order(id(&early)).await["refund"] == "COMPLETED").then_some(())
    })
    .await;
    assert_eq!(orders.order(id(&early)).await["status"], "CANCELLED");
    assert_eq!(
        orders.history("ann", id(&early)).await,
        [
            "placed",
            "payment_requested",
            "cancel_requested",
            "paid",
            "refund_requested",
            "refunded"
        ]
    );
    assert_eq!(
        orders.history("ann", id(&late)).await,
        [
            "placed",
            "payment_requested",
            "paid",
            "cancel_requested",
            "refund_requested",
            "refunded"
        ]
    );
    // Nothing left to cancel.
    for order in [&early, &late] {
        assert_eq!(orders.cancel("ann", id(order), None).await.0, 409);
    }
    orders.stop().await;
}

#[tokio::test]
async fn a_cancel_is_the_owners_and_a_retried_cancel_with_its_key_answers_the_same() {
    let orders = Orders::start(&[]).await;
    let order = orders.place("bea", 500).await;
    assert_eq!(orders.cancel("eve", id(&order), None).await.0, 404);
    assert_eq!(orders.order(id(&order)).await["status"], "NEW");

    let first = orders.cancel("bea", id(&order), Some("cancel-1")).await;
    let again = orders.cancel("bea", id(&order), Some("cancel-1")).await;
    assert_eq!(first.0, 202);
    assert_eq!(again, first, "the first answer, replayed");
    assert_eq!(orders.cancel("bea", id(&order), None).await.0, 409);
    assert_eq!(
        orders.history("bea", id(&order)).await,
        ["placed", "payment_requested", "cancel_requested"]
    );
    let (status, _) = (orders.cancel("bea", "not-a-uuid", None).await.0, ());
    assert_eq!(status, 400);
    orders.stop().await;
}

#[tokio::test]
async fn a_refund_result_delivered_twice_completes_the_refund_once() {
    let orders = Orders::start(&[]).await;
    let order = orders.place("cid", 400).await;
    orders
        .publish_result("paid", &result(&order, "SUCCEEDED", None))
        .await;
    orders.wait_status(id(&order), "FINISHED").await;
    assert_eq!(orders.cancel("cid", id(&order), None).await.0, 202);
    orders.take_refund_requests(1).await;

    orders.publish_refund_result("refund-a", &order).await;
    orders.publish_refund_result("refund-b", &order).await;
    orders.publish_refund_result("refund-a", &order).await;
    let refunded = orders.wait_status(id(&order), "REFUNDED").await;
    // A marker after the copies, of the same order — so applied after them, by the consumer's
    // order per key — that can never apply (another amount): once it is dead-lettered, every
    // copy was handled.
    let mut marker = order.clone();
    marker["amount"] = serde_json::json!(401);
    orders.publish_refund_result("marker", &marker).await;
    let dlq = format!("{}.dlq", orders.names.refund_status_queue);
    let dead = orders.broker.take(&dlq, 1, WAIT).await;
    assert_eq!(
        dead.iter().map(|(id, _)| id.as_deref()).collect::<Vec<_>>(),
        [Some("marker")],
        "the copies are not errors"
    );
    let now = orders.order(id(&order)).await;
    assert_eq!(now["updated_at"], refunded["updated_at"], "changed once");
    let refunded_events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM order_events WHERE order_id = $1::uuid AND event = 'refunded'",
    )
    .bind(id(&order))
    .fetch_one(&orders.pool)
    .await
    .unwrap();
    assert_eq!(refunded_events, 1);
    assert_eq!(
        orders.broker.ready_count(&dlq).await.unwrap(),
        0,
        "nothing else dead-lettered"
    );
    orders.stop().await;
}

#[tokio::test]
async fn a_refund_result_for_an_order_that_asked_none_is_dead_lettered() {
    let orders = Orders::start(&[]).await;
    let order = orders.place("dan", 400).await;
    orders
        .publish_result("paid", &result(&order, "SUCCEEDED", None))
        .await;
    orders.wait_status(id(&order), "FINISHED").await;
    orders.publish_refund_result("forged", &order).await;
    let dlq = format!("{}.dlq", orders.names.refund_status_queue);
    eventually("dead-lettered", WAIT, || async {
        (orders.broker.ready_count(&dlq).await.ok()? == 1).then_some(())
    })
    .await;
    assert_eq!(orders.order(id(&order)).await["status"], "FINISHED");
    orders.stop().await;
}

#[tokio::test]
async fn instances_sweeping_deadlines_while_results_arrive_leave_each_order_paid_or_refunded() {
    let sweep = [
        "--payment-deadline",
        "5s",
        "--deadline-sweep-interval",
        "20ms",
    ];
    let first = Orders::start(&sweep).await;
    let second = first.another(&sweep).await;
    // Four kinds of order, alternating between the instances: paid at once (long before the
    // deadline), paid only once the sweep has cancelled it, paid just as the sweep begins, and
    // never paid.
    let (mut early, mut late, mut racing, mut unpaid) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for n in 0..60 {
        let instance = if n % 2 == 0 { &first } else { &second };
        let order = instance.place(&format!("u{}", n % 5), 10 + n).await;
        match n % 4 {
            0 => {
                first
                    .publish_result(&format!("r{n}"), &result(&order, "SUCCEEDED", None))
                    .await;
                early.push(order);
            }
            1 => late.push(order),
            2 => racing.push(order),
            _ => unpaid += 1,
        }
    }
    for order in &early {
        first.wait_status(id(order), "FINISHED").await;
    }
    let count_cancelled = |orders: &[Value]| {
        let ids: Vec<String> = orders.iter().map(|order| id(order).to_owned()).collect();
        let pool = first.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM orders WHERE id::text = ANY($1) AND status = 'CANCELLED'",
            )
            .bind(ids)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    // The racing orders' results go out as soon as the sweep cancels its first order.
    let everything: Vec<Value> = late.iter().chain(&racing).cloned().collect();
    eventually("the sweep begun", WAIT, || async {
        (count_cancelled(&everything).await > 0).then_some(())
    })
    .await;
    for (n, order) in racing.iter().enumerate() {
        second
            .publish_result(&format!("racing-{n}"), &result(order, "SUCCEEDED", None))
            .await;
    }
    eventually("the late ones cancelled by the sweep", WAIT, || async {
        (count_cancelled(&late).await == late.len() as i64).then_some(())
    })
    .await;
    for (n, order) in late.iter().enumerate() {
        first
            .publish_result(&format!("late-{n}"), &result(order, "SUCCEEDED", None))
            .await;
    }
    let paid_orders = early.len() + late.len() + racing.len();
    eventually(
        "every order final and every result applied",
        WAIT,
        || async {
            let (open, paid): (i64, i64) = sqlx::query_as(
                "SELECT (SELECT count(*) FROM orders WHERE status = 'NEW'), \
                    (SELECT count(*) FROM order_events WHERE event = 'paid')",
            )
            .fetch_one(&first.pool)
            .await
            .ok()?;
            (open == 0 && paid == paid_orders as i64).then_some(())
        },
    )
    .await;
    /// Status, reason, refund, whether paid, deadline_passed events.
    type Outcome = (String, Option<String>, Option<String>, bool, i64);
    type Row = (String, String, Option<String>, Option<String>, bool, i64);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT o.id::text, o.status, o.reason, o.refund, \
           EXISTS (SELECT 1 FROM order_events e WHERE e.order_id = o.id AND e.event = 'paid'), \
           (SELECT count(*) FROM order_events e WHERE e.order_id = o.id AND e.event = 'deadline_passed') \
         FROM orders o",
    )
    .fetch_all(&first.pool)
    .await
    .unwrap();
    let outcomes: Vec<(String, Outcome)> = rows
        .into_iter()
        .map(|(id, status, reason, refund, paid, passed)| {
            (id, (status, reason, refund, paid, passed))
        })
        .collect();
    assert_eq!(outcomes.len(), 60);
    let ended = |orders: &[Value]| -> Vec<&'static str> {
        orders
            .iter()
            .map(|order| {
                let (_, outcome) = outcomes
                    .iter()
                    .find(|(found, _)| found == id(order))
                    .unwrap();
                match outcome {
                    (status, None, None, true, 0) if status == "FINISHED" => "kept",
                    (status, Some(reason), Some(refund), true, 1)
                        if status == "CANCELLED"
                            && reason == "payment_timeout"
                            && refund == "REQUESTED" =>
                    {
                        "refunded"
                    }
                    other => panic!("a paid order ended as {other:?}"),
                }
            })
            .collect()
    };
    assert!(
        ended(&early).iter().all(|&how| how == "kept"),
        "paid before the deadline: kept"
    );
    assert!(
        ended(&late).iter().all(|&how| how == "refunded"),
        "paid after the sweep: refunded"
    );
    let racing_refunded = ended(&racing)
        .iter()
        .filter(|&&how| how == "refunded")
        .count();
    let timed_out = outcomes
        .iter()
        .filter(|(_, outcome)| {
            matches!(outcome, (status, Some(reason), None, false, 1)
                if status == "CANCELLED" && reason == "payment_timeout")
        })
        .count();
    assert_eq!(timed_out, unpaid, "every unpaid order timed out once");
    let refunded = late.len() + racing_refunded;
    let requests = first.take_refund_requests(refunded).await;
    assert_eq!(
        requests.len(),
        refunded,
        "one refund request per late debit"
    );
    second.stop().await;
    first.stop().await;
}

#[tokio::test]
async fn the_database_refuses_any_move_off_the_state_machine() {
    let orders = Orders::start(&[]).await;
    let paid = orders.place("fay", 100).await;
    orders
        .publish_result("paid", &result(&paid, "SUCCEEDED", None))
        .await;
    orders.wait_status(id(&paid), "FINISHED").await;
    let declined = orders.place("fay", 100).await;
    orders
        .publish_result(
            "declined",
            &result(&declined, "FAILED", Some("insufficient_funds")),
        )
        .await;
    orders.wait_status(id(&declined), "CANCELLED").await;

    for (order, set) in [
        (&paid, "status = 'NEW'"),
        (&paid, "status = 'CANCELLED', reason = 'cancelled'"),
        (&paid, "status = 'REFUNDED', refund = 'COMPLETED'"),
        (&paid, "refund = 'REQUESTED'"),
        (&declined, "status = 'FINISHED', reason = NULL"),
        // A declined order was never paid: there is nothing to refund.
        (&declined, "refund = 'REQUESTED'"),
    ] {
        let sql = format!("UPDATE orders SET {set} WHERE id = $1::uuid");
        let refused = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id(order))
            .execute(&orders.pool)
            .await;
        assert_eq!(
            sqlstate(refused),
            ("23514".to_owned(), None),
            "{set} on a {} order: refused as a check violation",
            order["status"]
        );
    }
    let second_outcome =
        sqlx::query("INSERT INTO order_events (order_id, event) VALUES ($1::uuid, 'declined')")
            .bind(id(&paid))
            .execute(&orders.pool)
            .await;
    assert_eq!(
        sqlstate(second_outcome),
        (
            "23505".to_owned(),
            Some("order_events_one_payment_outcome".to_owned())
        ),
        "one payment outcome per order"
    );
    assert_eq!(orders.order(id(&paid)).await["status"], "FINISHED");
    orders.stop().await;
}
