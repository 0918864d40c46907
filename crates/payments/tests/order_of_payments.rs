//! Each user's payment requests are decided in the order the user placed the orders, whatever
//! order they arrive in: an early one waits (parked) for its predecessor, and nobody else's
//! request waits for it; one whose predecessor never comes is declined at its own deadline and
//! the line moves on.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::{Payments, request_due};
use gozon_test_support::eventually;
use std::time::Duration;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(20);

async fn parked(payments: &Payments) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM parked_requests")
        .fetch_one(&payments.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn requests_that_arrive_in_reverse_are_decided_in_the_order_placed_and_hold_up_no_one_else() {
    // One message per transaction: each arrival is its own decision.
    let payments =
        Payments::start(&["--consumer-concurrency", "1", "--consumer-batch-size", "1"]).await;
    payments.open_account("ann", 200).await;
    payments.open_account("bob", 100).await;
    let placed: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    let bodies: Vec<Vec<u8>> = placed
        .iter()
        .map(|order| payments.request(*order, "ann", 100))
        .collect();
    // The third and second arrive first: they wait, and bob's goes on meanwhile.
    payments.publish(Some("ann-3"), &bodies[2]).await;
    payments.publish(Some("ann-2"), &bodies[1]).await;
    let bobs = Uuid::now_v7();
    payments
        .publish(Some("bob-1"), &payments.request(bobs, "bob", 100))
        .await;
    payments.wait_decided(&[bobs]).await;
    assert_eq!(payments.balance("bob").await, 0);
    assert_eq!(parked(&payments).await, 2, "ann's later two wait");
    assert_eq!(payments.decided_count().await, 1);

    payments.publish(Some("ann-1"), &bodies[0]).await;
    payments.wait_decided(&placed).await;
    let decided: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT order_id, status FROM payments WHERE user_id = 'ann' ORDER BY decided_at",
    )
    .fetch_all(&payments.pool)
    .await
    .unwrap();
    assert_eq!(
        decided,
        [
            (placed[0], "SUCCEEDED".to_owned()),
            (placed[1], "SUCCEEDED".to_owned()),
            (placed[2], "FAILED".to_owned())
        ],
        "the first two placed are paid, in order; the third finds the balance spent"
    );
    assert_eq!(parked(&payments).await, 0);
    for order in &placed {
        assert_eq!(payments.payment_results_for(*order).await.len(), 1);
    }
    payments.assert_ledger_balances().await;
    payments.stop().await;
}

#[tokio::test]
async fn a_request_whose_predecessor_never_comes_is_declined_at_its_deadline_and_the_line_moves_on()
{
    let payments = Payments::start(&["--parked-sweep-interval", "100ms"]).await;
    payments.open_account("cid", 500).await;
    let [first, second, third] = [Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7()];
    let now = time::OffsetDateTime::now_utc();
    let soon = now + time::Duration::seconds(1);
    let later = now + time::Duration::hours(1);
    let first_body = request_due(&payments.orders, first, "cid", 100, soon);
    // The first never arrives (lost, dead-lettered); the second is due in a second.
    let second_body = request_due(&payments.orders, second, "cid", 100, soon);
    let third_body = request_due(&payments.orders, third, "cid", 100, later);
    payments.publish(Some("second"), &second_body).await;
    payments.publish(Some("third"), &third_body).await;
    eventually("both parked", WAIT, || async {
        (parked(&payments).await == 2).then_some(())
    })
    .await;
    assert_eq!(payments.decided_count().await, 0);

    // Its deadline passes: declined as late, the missing first passed over, the third paid.
    payments.wait_decided(&[second, third]).await;
    assert_eq!(
        payments.payment_results_field(second, "reason").await,
        ["payment_timeout"]
    );
    assert_eq!(
        payments.payment_results_field(third, "status").await,
        ["SUCCEEDED"]
    );
    assert_eq!(payments.balance("cid").await, 400);

    // The first, arriving after all: its place is gone, and so is its deadline.
    payments.publish(Some("first"), &first_body).await;
    payments.wait_decided(&[first]).await;
    assert_eq!(
        payments.payment_results_field(first, "reason").await,
        ["payment_timeout"]
    );
    assert_eq!(payments.balance("cid").await, 400);
    payments.assert_ledger_balances().await;
    payments.stop().await;
}
