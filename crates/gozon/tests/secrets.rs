//! `gozon run` hands each role the broker credentials it needs and no other's: orders and
//! payments their own login, identity and the gateway none.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::binary::Processes;

/// The environment of process `pid`, as `NAME=value` lines.
fn environment(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap()
        .split(|&byte| byte == 0)
        .map(|entry| String::from_utf8_lossy(entry).into_owned())
        .collect()
}

/// The role each child of `pid` runs (its first argument) and its environment.
fn children(pid: u32) -> Vec<(String, Vec<String>)> {
    let listed = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    listed
        .split_whitespace()
        .map(|child| {
            let child: u32 = child.parse().unwrap();
            let arguments = std::fs::read(format!("/proc/{child}/cmdline")).unwrap();
            let role = arguments
                .split(|&byte| byte == 0)
                .nth(1)
                .map(|role| String::from_utf8_lossy(role).into_owned())
                .unwrap_or_default();
            (role, environment(child))
        })
        .collect()
}

#[tokio::test]
async fn each_role_of_gozon_run_holds_only_its_own_broker_credentials() {
    let (orders_secret, payments_secret, admin_secret) =
        ("orders-secret-1", "payments-secret-2", "admin-secret-3");
    let processes = Processes::start(&[
        ("ORDERS_AMQP_PASSWORD", orders_secret.to_owned()),
        ("PAYMENTS_AMQP_PASSWORD", payments_secret.to_owned()),
        ("GOZON_ADMIN_AMQP_PASSWORD", admin_secret.to_owned()),
        (
            "AMQP_URL",
            "amqp://guest:guest-secret@127.0.0.1:5672/%2f".to_owned(),
        ),
    ])
    .await;
    let children = children(processes.pid());
    let roles: Vec<&str> = children.iter().map(|(role, _)| role.as_str()).collect();
    assert_eq!(roles.len(), 4, "{roles:?}");
    for (role, environment) in &children {
        let holds = |secret: &str| environment.iter().any(|entry| entry.contains(secret));
        let expected: &[&str] = match role.as_str() {
            "orders" => &[orders_secret],
            "payments" => &[payments_secret],
            _ => &[],
        };
        for secret in [orders_secret, payments_secret, admin_secret, "guest-secret"] {
            assert_eq!(
                holds(secret),
                expected.contains(&secret),
                "{role} and {secret}"
            );
        }
    }
    processes.stop().await;
}
