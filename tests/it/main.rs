//! Integration tests, one binary (linking kube and the Azure SDK once, not once per file).

mod controller;
mod controller_run;
mod diff;
mod fuzz;
mod ownership;
mod parts;
mod permissions;
mod pipeline;
mod plan_writes;
mod removal;
mod resolver;
mod security;
mod service_tags;
mod strict_input;
mod tenancy_controller;
mod tenancy_pipeline;
mod tunneling;
