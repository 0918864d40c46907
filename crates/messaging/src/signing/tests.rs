//! What one service signs, the other accepts exactly as sent, and nothing else.

use super::*;

/// Orders' and payments' rings, each knowing the other's keys as if fetched.
fn pair() -> (KeyRing, KeyRing) {
    let (orders_key, payments_key) = (keys::generated(), keys::generated());
    let orders = KeyRing::of_keys(Role::Orders, vec![orders_key.clone()], PeerKeys::at(""));
    let payments = KeyRing::of_keys(Role::Payments, vec![payments_key.clone()], PeerKeys::at(""));
    knows(&orders, &[&payments_key]);
    knows(&payments, &[&orders_key]);
    (orders, payments)
}

/// Makes `ring` know `keys` as its peer's (the first current).
fn knows(ring: &KeyRing, keys: &[&OwnKey]) {
    ring.write().peer = Some(PeerState {
        current: keys[0].kid.clone(),
        keys: keys
            .iter()
            .map(|key| (key.kid.clone(), key.public))
            .collect(),
    });
}

#[tokio::test]
async fn a_message_signed_by_one_service_is_accepted_by_the_other_exactly_as_sent() {
    let (orders, payments) = pair();
    let header = orders.sign("order.payments", "m-1", b"{}").await.unwrap();
    assert_eq!(
        payments
            .verify("order.payments", "m-1", b"{}", Some(&header))
            .await,
        Ok(())
    );
    for (queue, id, body) in [
        ("order.payments", "m-1", &b"{ }"[..]),
        ("order.payments", "m-2", b"{}"),
        ("order.refunds", "m-1", b"{}"),
    ] {
        assert_eq!(
            payments.verify(queue, id, body, Some(&header)).await,
            Err(Refusal::Forged.into()),
            "{queue} {id}"
        );
    }
}

#[tokio::test]
async fn a_message_cannot_be_passed_off_as_sent_the_other_way() {
    let (orders, _payments) = pair();
    let header = orders.sign("payment.status", "m-1", b"{}").await.unwrap();
    // The same agreement, named the other way round: a MAC of orders' direction does not
    // pass for one of payments'.
    let [version, producer, consumer, mac]: [&str; 4] =
        header.split(' ').collect::<Vec<_>>().try_into().unwrap();
    let swapped = format!("{version} {consumer} {producer} {mac}");
    assert_eq!(
        orders
            .verify("payment.status", "m-1", b"{}", Some(&swapped))
            .await,
        Err(Refusal::Forged.into())
    );
}

#[tokio::test]
async fn unsigned_malformed_and_unannounced_messages_are_refused() {
    let (orders, payments) = pair();
    assert_eq!(
        payments.verify("q", "m", b"{}", None).await,
        Err(Refusal::Unsigned.into())
    );
    assert_eq!(
        payments.verify("q", "m", b"{}", Some("v1 a b")).await,
        Err(Refusal::Malformed.into())
    );
    let header = orders.sign("q", "m", b"{}").await.unwrap();
    let stranger = keys::generated();
    let foreign = header.replacen(header.split(' ').nth(1).unwrap(), &stranger.kid, 1);
    assert!(matches!(
        payments.verify("q", "m", b"{}", Some(&foreign)).await,
        Err(Unverified::Refused(Refusal::UnknownKey(_)))
    ));
}

#[tokio::test]
async fn after_a_rotation_messages_under_the_previous_key_verify_while_it_is_announced() {
    let (orders, payments) = pair();
    let before = orders.sign("q", "m-1", b"{}").await.unwrap();
    // Orders rotates: a new current key, the previous one still announced.
    let previous = orders.read().own[0].clone();
    let next = keys::generated();
    orders.write().own = vec![next.clone(), previous.clone()];
    knows(&payments, &[&next, &previous]);
    let after = orders.sign("q", "m-2", b"{}").await.unwrap();
    assert_ne!(before.split(' ').nth(1), after.split(' ').nth(1));
    assert_eq!(
        payments.verify("q", "m-1", b"{}", Some(&before)).await,
        Ok(())
    );
    assert_eq!(
        payments.verify("q", "m-2", b"{}", Some(&after)).await,
        Ok(())
    );
    // Retired: no longer announced, no longer accepted.
    knows(&payments, &[&next]);
    payments.write().macs.clear();
    assert!(matches!(
        payments.verify("q", "m-1", b"{}", Some(&before)).await,
        Err(Unverified::Refused(Refusal::UnknownKey(_)))
    ));
}
