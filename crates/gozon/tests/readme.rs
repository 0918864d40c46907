//! The README documents every setting: a new environment variable without a row in its table
//! fails here.

use clap::CommandFactory;

#[test]
fn every_environment_variable_of_every_role_is_in_the_readme() {
    let readme = include_str!("../../../README.md");
    let commands = [
        gozon_orders::Settings::command(),
        gozon_payments::Settings::command(),
        gozon_gateway::Settings::command(),
    ];
    let mut missing = Vec::new();
    for command in &commands {
        for arg in command.get_arguments() {
            if let Some(env) = arg.get_env() {
                let row = format!("| `{}` |", env.to_string_lossy());
                if !readme.contains(&row) {
                    missing.push(row);
                }
            }
        }
    }
    assert!(missing.is_empty(), "README.md has no row for {missing:?}");
}
