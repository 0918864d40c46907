//! A broker password read from a file (a secret mounted into a container) rather than written
//! into the URL and so into the environment.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use gozon_test_support::{TestNames, amqp_url};
use lapin::uri::AMQPUri;
use std::{path::PathBuf, str::FromStr};

/// The test broker's password, as its URL gives it.
fn password() -> String {
    AMQPUri::from_str(&amqp_url())
        .unwrap()
        .authority
        .userinfo
        .password
}

fn file_holding(text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("gozon-test-{}", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn the_password_in_the_file_is_the_one_used_and_a_wrong_or_missing_one_is_refused() {
    let names = TestNames::new();
    // The URL carries the right password too: a refusal below shows the file's is the one used.
    let mut broker = names.broker(amqp_url());

    let right = file_holding(&format!("{}\n", password()));
    broker.amqp_password_file = Some(right.clone());
    let connection = broker.connect_once("test").await.unwrap();
    connection.close(200, "done".into()).await.unwrap();

    let wrong = file_holding("not-the-password");
    broker.amqp_password_file = Some(wrong.clone());
    let refused = broker.connect_once("test").await.unwrap_err();
    assert!(refused.contains("ACCESS_REFUSED"), "{refused}");

    let missing = std::env::temp_dir().join("gozon-test-no-such-password-file");
    broker.amqp_password_file = Some(missing.clone());
    let unread = broker.connect_once("test").await.unwrap_err();
    assert!(unread.contains(&missing.display().to_string()), "{unread}");

    for file in [right, wrong] {
        std::fs::remove_file(file).unwrap();
    }
}
