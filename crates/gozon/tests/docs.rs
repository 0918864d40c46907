//! What the documentation and the deployment files say about settings stays true: every
//! environment variable of every role has a row in the settings table (docs/operations.md), and
//! every variable the compose file sets is a setting of the role that service runs.

use clap::CommandFactory;
use std::collections::{BTreeSet, HashMap};

fn variables(command: clap::Command) -> BTreeSet<String> {
    command
        .get_arguments()
        .filter_map(|arg| arg.get_env().map(|env| env.to_string_lossy().into_owned()))
        .collect()
}

fn roles() -> HashMap<&'static str, BTreeSet<String>> {
    HashMap::from([
        ("identity", variables(gozon_identity::Settings::command())),
        ("orders", variables(gozon_orders::Settings::command())),
        ("payments", variables(gozon_payments::Settings::command())),
        ("gateway", variables(gozon_gateway::Settings::command())),
    ])
}

#[test]
fn every_environment_variable_of_every_role_is_in_the_settings_table() {
    let operations = include_str!("../../../docs/operations.md");
    let table = operations
        .split_once("\n## Settings\n")
        .and_then(|(_, rest)| rest.split("\n## ").next())
        .expect("docs/operations.md has a Settings section");
    let missing: Vec<_> = roles()
        .into_values()
        .flatten()
        .filter(|env| !table.contains(&format!("| `{env}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "the settings table of docs/operations.md has no row for {missing:?}"
    );
}

#[test]
fn every_variable_the_compose_file_sets_is_a_setting_of_its_role() {
    let compose = include_str!("../../../docker-compose.yml");
    let roles = roles();
    let (mut role, mut in_environment, mut checked) = (None, false, 0);
    for line in compose.lines() {
        let indent = line.len() - line.trim_start().len();
        let line = line.trim();
        if indent == 4 && line.starts_with("command:") {
            role = roles
                .keys()
                .find(|r| line.contains(&format!("\"{r}\"")))
                .copied();
        }
        if indent == 2 {
            role = None;
        }
        if indent == 4 {
            in_environment = line == "environment:";
            continue;
        }
        if in_environment
            && indent == 6
            && !line.starts_with("<<:")
            && let (Some(role), Some((name, _))) = (role, line.split_once(':'))
        {
            // OpenTelemetry's own variables are read by its exporter (see `telemetry`).
            assert!(
                roles[role].contains(name) || name.starts_with("OTEL_"),
                "docker-compose.yml sets {name} for {role}, which has no such setting"
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 8,
        "found only {checked} service variables: did the file's shape change?"
    );
}

#[test]
fn the_broker_definitions_for_containers_grant_what_the_code_grants() {
    use clap::Parser;
    use gozon_messaging::broker_logins::Role;
    #[derive(clap::Parser)]
    struct Settings {
        #[command(flatten)]
        broker: gozon_messaging::amqp::BrokerSettings,
    }
    let broker = Settings::parse_from(["x"]).broker;
    let definitions: serde_json::Value =
        serde_json::from_str(include_str!("../../../deploy/rabbitmq/definitions.json")).unwrap();
    for (user, role) in [
        ("gozon-orders", Role::Orders),
        ("gozon-payments", Role::Payments),
    ] {
        let granted = definitions["permissions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["user"] == user)
            .unwrap_or_else(|| panic!("no permissions for {user}"));
        let expected = broker.permissions(role);
        assert_eq!(
            (&granted["configure"], &granted["write"], &granted["read"]),
            (
                &serde_json::json!(expected.configure),
                &serde_json::json!(expected.write),
                &serde_json::json!(expected.read)
            ),
            "{user}"
        );
    }
    for queue in broker.work_queues() {
        let exchange = gozon_messaging::amqp::BrokerSettings::publish_exchange(queue);
        let bound = definitions["bindings"].as_array().unwrap().iter().any(|b| {
            b["source"] == exchange.as_str()
                && b["destination"] == queue
                && b["routing_key"] == queue
        });
        assert!(bound, "{exchange} is not bound to {queue}");
        let declared = definitions["queues"]
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["name"] == queue)
            .unwrap_or_else(|| panic!("{queue} is not declared"));
        assert_eq!(declared["arguments"]["x-queue-type"], "quorum");
        assert_eq!(
            declared["arguments"]["x-delivery-limit"],
            broker.delivery_limit
        );
    }
}
